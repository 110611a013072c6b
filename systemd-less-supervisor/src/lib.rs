//! The service supervisor: every long-running program on a Shoal node runs under it.
//!
//! Pure parts: `config` (service definitions), `users` (the image's passwd/group), `duration`,
//! `machine` (the state machine: dependencies, readiness, restarts, crash loops, shutdown
//! order). Thin I/O parts: `cgroup`, `spawn` (process setup: cgroup, ids, capabilities),
//! `notify` (sd_notify socket), `logs` (bounded per-service log rings). The daemon that ties
//! them together, `daemon`, runs as `shoal-supervisor`.

pub mod cgroup;
pub mod cli;
pub mod config;
pub mod daemon;
pub use shoal_units as duration;
pub mod logs;
pub mod machine;
pub mod notify;
pub mod spawn;
pub mod users;
