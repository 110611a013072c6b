//! Shoal's local control APIs, shared by the daemons that serve them and by `shoalctl`.
//!
//! Every API is D-Bus in peer-to-peer mode on a unix socket under `/run/shoal` (no bus daemon),
//! served with zbus on tokio. Only root, or members of the admin group, may connect: the
//! server checks the peer's credentials from the socket before it speaks a single message.

pub mod supervisor;
