//! shoal-config: the machine configuration every Shoal daemon reads.
//!
//! | module | what |
//! | --- | --- |
//! | `machine` | the versioned schema (`MachineConfig`) and its checks |
//! | `network` | the `[network]` section (netd's schema) |
//! | `secret` | secrets: base64 in files, redacted everywhere else |
//! | `sources` | where configuration comes from, precedence, merging, inline kernel keys |
//! | `node` | node facts, `${...}` URL placeholders, per-node sections |
//! | `schema` | the JSON Schema for editors (`docs/machine-config.schema.json`) |
//!
//! Everything here is pure: fetching documents and reading node facts are the caller's job.

pub mod machine;
pub mod network;
pub mod node;
pub mod schema;
pub mod secret;
pub mod sources;

pub use machine::{ConfigError, MachineConfig};

/// Where a node keeps its resolved configuration (its `[[nodes]]` section applied, the
/// `nodes` list gone): written by shoal-configd, read by netd, clusterd and the rest.
pub const NODE_CONFIG: &str = "/run/shoal/config.toml";
pub use schema::schema;
pub use secret::Secret;
