//! shoal-configd: the node's configuration, from its sources to `/run/shoal/config.toml`.
//!
//! | module | what | I/O? |
//! | --- | --- | --- |
//! | `http` | the HTTP/1.1 a configuration fetch needs (parser sans-IO, fetch blocking) | thin |
//! | `facts` | MACs, SMBIOS UUID and serial, hostname, from a sysfs root | root as parameter |
//! | `daemon` | gather, resolve (shoal-config), write, report, retry in maintenance | yes |

pub mod daemon;
pub mod facts;
pub mod http;
