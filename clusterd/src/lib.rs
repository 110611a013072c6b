//! Shoal's cluster daemon: machines that boot the same image become one cluster with no manual
//! step. See README.md and docs/architecture.md.
//!
//! The decisions are sans-IO and tested on simulated clusters:
//! - [`formation`]: who forms the cluster, and who joins it;
//! - [`voters`]: which members vote.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod formation;
pub mod hardware;
pub mod identity;
pub mod image;
pub mod journal;
pub mod keys;
pub mod local;
pub mod network;
pub mod peer;
pub mod raft;
pub mod random;
pub mod seeds;
pub mod state;
pub mod update;
pub mod voters;
