//! shoal-configd: the node's configuration, from its sources to `/run/shoal/config.toml`.
//!
//! | module | what | I/O? |
//! | --- | --- | --- |
//! | `http` | the HTTP/1.1 a configuration fetch needs (parser sans-IO, fetch blocking) | thin |
//! | `volume` | labelled volumes: found with the inventory's probe, mounted read-only to read | roots as parameters; mounts to read |
//! | `esp` | `shoal/machine.toml` on a flashed disk's ESP (`SHOAL-ESP`) | through `volume` |
//! | `nocloud` | the `CIDATA` volume (found with the inventory's probe), its `user-data` and `meta-data` | roots as parameters; mounts to read |
//! | `imds` | EC2-style instance metadata (IMDSv2): `user-data`, `local-hostname`; asked only where SMBIOS names such a cloud | flow over any transport; thin HTTP adapter |
//! | `maintenance` | the maintenance API: a configuration pushed over HTTPS, authenticated by a one-time token shown on the console | yes (its own thread) |
//! | `netwatch` | wakes the retries when an address or route changes (a NETLINK_ROUTE socket) | yes (one socket) |
//! | `facts` | MACs, SMBIOS UUID and serial, hostname, from a sysfs root | root as parameter |
//! | `daemon` | gather, resolve (shoal-config), write, report, retry in maintenance | yes |

pub mod cli;
pub mod daemon;
pub use shoal_dns as dns;
pub mod esp;
pub mod facts;
pub mod http;
pub mod imds;
pub mod maintenance;
pub mod netwatch;
pub mod nocloud;
pub mod volume;
