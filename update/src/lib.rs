//! shoal-update: what an A/B update is made of, independent of where it runs.
//!
//! | module | what | I/O? |
//! | --- | --- | --- |
//! | `bundle` | the signed bundle format: writing (image-build), streaming verification (the node) | over `Read`/`Write` |
//! | `node` | the updater on a node: status, apply to the other slot, bless, notice a failed update, rollback | roots as parameters |
//! | `entries` | the slots' Boot Loader Specification entries on the ESP: trial counters, blessing, the default, rollback | an ESP directory as parameter |

pub mod bundle;
pub mod entries;
pub mod node;
