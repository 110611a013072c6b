//! Shoal's local control APIs, shared by the daemons that serve them and by `shoalctl`.
//!
//! Every API is D-Bus in peer-to-peer mode on a unix socket under `/run/shoal` (no bus daemon),
//! served with zbus on tokio. The server reads the peer's credentials from the socket before it
//! speaks a single message: the supervisor serves only root and members of the admin group;
//! netd serves its state to every local user and its `Reload` to root and admins only.

pub mod network;
pub mod supervisor;
