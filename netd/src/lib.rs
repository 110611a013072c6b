//! shoal-netd: the network daemon's logic. Everything here except `netlink` and `daemon` is
//! sans-IO: packets, configuration and timers in, decisions out.
//!
//! | module | what |
//! | --- | --- |
//! | `config` | the `[network]` schema, validated |
//! | `cmdline` | the kernel command line's `ip=`, `vlan=`, `bond=`, ... |
//! | `merge` | the command line folded into the configuration |
//! | `plan` | links seen + configuration → renames, devices to create, ports, addressing |
//! | `dhcp` | DHCPv4 wire format, leases, the client state machine |
//! | `online` | when the node counts as online |
//! | `resolv` | resolv.conf and NTP servers |
//! | `netlink` | the rtnetlink adapter (I/O) |
//! | `daemon` | the event loop tying it together (I/O) |

pub mod cli;
pub mod cmdline;
/// The `[network]` schema lives with the rest of the machine configuration.
pub use shoal_config::network as config;
pub mod daemon;
pub mod dhcp;
pub mod merge;
pub mod netlink;
pub mod online;
pub mod plan;
pub mod resolv;
