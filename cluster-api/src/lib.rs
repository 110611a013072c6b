//! The cluster API: what `shoal-clusterd` serves on every node (HTTP/JSON over TLS, port
//! `api.port`, 7443 by default) and `shoalctl` uses.
//!
//! - [`types`]: the JSON bodies, one type per endpoint (see `openapi.json`, served at
//!   `/v1/openapi.json`).
//! - [`identity`]: keys derived from the cluster secret: the TLS key every node serves with
//!   (clients pin its public key) and the admin credential.
//! - [`tls`]: rustls configurations: the server's, and the client's that trusts only the pinned
//!   key.
//! - [`client`]: an async client that tries the endpoints in turn.

pub mod client;
pub mod identity;
pub mod reply;
pub mod tls;
pub mod types;

/// The OpenAPI description of the API.
pub const OPENAPI: &str = include_str!("openapi.json");
