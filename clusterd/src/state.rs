//! The replicated state, sans-IO: commands in, outcomes out, applied in log order on every
//! node. Consensus decides the order; this decides what each command does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::formation::NodeId;

/// What a node tells the cluster about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    pub hostname: String,
    /// Where its peer service listens.
    pub addr: String,
    /// `node.labels` from its machine configuration.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The image version it runs (`VERSION_ID` of the image's `/etc/os-release`; see
    /// [`crate::image::version`]).
    #[serde(default)]
    pub version: String,
    /// Its wish about voting (`node.voter`).
    #[serde(default)]
    pub hint: crate::formation::Hint,
    /// Its Ed25519 public key (hex), created with its identity.
    #[serde(default)]
    pub public_key: String,
    /// The root slot it booted from, `a` or `b`; none for a node booted over the network (PXE,
    /// an initramfs), and in records of nodes older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// The booted slot's update state: `trial` until the node is back in its cluster after an
    /// update, then `good`. Strings rather than an enum: nodes of different versions share one
    /// log, and a state an older node does not know must not stop it reading the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_state: Option<String>,
}

/// A node's hardware as the cluster keeps it: the inventory JSON exactly as the node published
/// it (a newer node's fields pass through older ones untouched), with the summary and labels
/// taken out of it so node listings need not parse it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HardwareRecord {
    pub json: String,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    /// Unix ms, by the leader's clock when it proposed the command.
    #[serde(default)]
    pub updated_ms: u64,
}

/// The largest inventory the state accepts (a big server's is about 30 KiB).
pub const MAX_INVENTORY: usize = 512 * 1024;

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub info: NodeInfo,
    /// Unix time (ms) of the first registration and of the last heartbeat, by the leader's
    /// clock when it proposed the command.
    pub joined_ms: u64,
    pub heartbeat_ms: u64,
    /// Its hardware, once it published an inventory.
    #[serde(default)]
    pub hardware: Option<HardwareRecord>,
}

/// A value in the key-value space, with the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub value: String,
    pub revision: u64,
}

/// A command proposed to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Command {
    /// The first command of a new cluster: its id and name. Later ones change nothing.
    Init {
        cluster_id: u64,
        name: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Writes `value` (or deletes with `None`) only if the key's revision is `expected`
    /// (0: the key must not exist).
    Cas {
        key: String,
        expected: u64,
        value: Option<String>,
    },
    /// Registers or updates a node.
    Node {
        id: NodeId,
        info: NodeInfo,
        now_ms: u64,
    },
    Heartbeat {
        id: NodeId,
        now_ms: u64,
    },
    /// Drops a node's record: the leader forgets a node that left the membership and stayed
    /// silent for the forget delay.
    Forget {
        id: NodeId,
    },
    /// A node's hardware inventory (see `shoal-inventory`), as it collected it.
    Inventory {
        id: NodeId,
        inventory: HardwareRecord,
    },
    /// Written by consensus itself (a new leader's blank entry, membership changes).
    Noop,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    #[default]
    Done,
    /// A write: the revision it created, and the value it replaced.
    Written {
        revision: u64,
        previous: Option<Value>,
    },
    /// A compare-and-set whose expectation failed: the current value.
    CasFailed { current: Option<Value> },
    /// A heartbeat from a node that has not registered.
    UnknownNode,
}

/// How many changes the state keeps for watchers; an older revision reads as compacted.
pub const MAX_CHANGES: usize = 1024;

/// One change of the key-value space, kept for watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    pub key: String,
    /// `None`: deleted.
    pub value: Option<String>,
}

/// Limits on what the key-value space accepts, checked before a command is proposed.
pub const MAX_KEY: usize = 512;
pub const MAX_VALUE: usize = 64 * 1024;

/// Why a command is refused before it is proposed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidCommand {
    #[error("the key is empty")]
    EmptyKey,
    #[error("the key is {0} bytes; the limit is {MAX_KEY}")]
    KeyTooLong(usize),
    #[error("the value is {0} bytes; the limit is {MAX_VALUE}")]
    ValueTooLarge(usize),
    #[error("the inventory is {0} bytes; the limit is {MAX_INVENTORY}")]
    InventoryTooLarge(usize),
}

impl Command {
    /// Checks the limits a client request must respect.
    pub fn validate(&self) -> Result<(), InvalidCommand> {
        let (key, value) = match self {
            Command::Put { key, value } => (key, Some(value)),
            Command::Delete { key } => (key, None),
            Command::Cas { key, value, .. } => (key, value.as_ref()),
            Command::Inventory { inventory, .. } if inventory.json.len() > MAX_INVENTORY => {
                return Err(InvalidCommand::InventoryTooLarge(inventory.json.len()));
            }
            _ => return Ok(()),
        };
        if key.is_empty() {
            return Err(InvalidCommand::EmptyKey);
        }
        if key.len() > MAX_KEY {
            return Err(InvalidCommand::KeyTooLong(key.len()));
        }
        if let Some(v) = value
            && v.len() > MAX_VALUE
        {
            return Err(InvalidCommand::ValueTooLarge(v.len()));
        }
        Ok(())
    }
}

/// The whole replicated state (also the snapshot format).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    /// From the [`Command::Init`] that began the cluster.
    pub cluster_id: Option<u64>,
    pub name: String,
    /// Bumped by every write to the key-value space.
    pub revision: u64,
    pub kv: BTreeMap<String, Value>,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// The last [`MAX_CHANGES`] changes, oldest first.
    #[serde(default)]
    pub changes: std::collections::VecDeque<Change>,
}

impl State {
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Init { cluster_id, name } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(*cluster_id);
                    self.name = name.clone();
                }
                Outcome::Done
            }
            Command::Put { key, value } => self.write(key, Some(value.clone())),
            Command::Delete { key } => self.write(key, None),
            Command::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.kv.get(key);
                if current.map_or(0, |v| v.revision) != *expected {
                    return Outcome::CasFailed {
                        current: current.cloned(),
                    };
                }
                self.write(key, value.clone())
            }
            Command::Node { id, info, now_ms } => {
                let previous = self.nodes.get(id);
                let joined_ms = previous.map_or(*now_ms, |n| n.joined_ms);
                let hardware = previous.and_then(|n| n.hardware.clone());
                self.nodes.insert(
                    *id,
                    NodeRecord {
                        info: info.clone(),
                        joined_ms,
                        heartbeat_ms: *now_ms,
                        hardware,
                    },
                );
                Outcome::Done
            }
            Command::Forget { id } => match self.nodes.remove(id) {
                Some(_) => Outcome::Done,
                None => Outcome::UnknownNode,
            },
            Command::Inventory { id, inventory } => match self.nodes.get_mut(id) {
                Some(n) => {
                    n.hardware = Some(inventory.clone());
                    Outcome::Done
                }
                None => Outcome::UnknownNode,
            },
            Command::Heartbeat { id, now_ms } => match self.nodes.get_mut(id) {
                Some(n) => {
                    n.heartbeat_ms = n.heartbeat_ms.max(*now_ms);
                    Outcome::Done
                }
                None => Outcome::UnknownNode,
            },
            Command::Noop => Outcome::Done,
        }
    }

    /// The changes after `after`, and whether some of them are no longer kept.
    pub fn changes_after(&self, after: u64) -> (Vec<Change>, bool) {
        let oldest_kept = self
            .changes
            .front()
            .map_or(self.revision + 1, |c| c.revision);
        let compacted = after + 1 < oldest_kept && after < self.revision;
        let changes = self
            .changes
            .iter()
            .filter(|c| c.revision > after)
            .cloned()
            .collect();
        (changes, compacted)
    }

    fn write(&mut self, key: &str, value: Option<String>) -> Outcome {
        self.revision += 1;
        if self.changes.len() == MAX_CHANGES {
            self.changes.pop_front();
        }
        self.changes.push_back(Change {
            revision: self.revision,
            key: key.to_owned(),
            value: value.clone(),
        });
        let previous = match value {
            Some(value) => self.kv.insert(
                key.to_owned(),
                Value {
                    value,
                    revision: self.revision,
                },
            ),
            None => self.kv.remove(key),
        };
        Outcome::Written {
            revision: self.revision,
            previous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn puts_and_deletes_bump_the_revision() {
        let mut s = State::default();
        assert_eq!(
            s.apply(&put("a", "1")),
            Outcome::Written {
                revision: 1,
                previous: None
            }
        );
        let Outcome::Written { revision, previous } = s.apply(&put("a", "2")) else {
            panic!()
        };
        assert_eq!(
            (revision, previous.map(|p| p.value)),
            (2, Some("1".to_owned()))
        );
        s.apply(&Command::Delete { key: "a".into() });
        assert_eq!(s.revision, 3);
        assert!(s.kv.is_empty());
    }

    #[test]
    fn compare_and_set_checks_the_revision() {
        let mut s = State::default();
        let cas = |expected, value: Option<&str>| Command::Cas {
            key: "k".into(),
            expected,
            value: value.map(Into::into),
        };
        // 0: create only if absent.
        assert!(matches!(
            s.apply(&cas(0, Some("a"))),
            Outcome::Written { revision: 1, .. }
        ));
        assert_eq!(
            s.apply(&cas(0, Some("b"))),
            Outcome::CasFailed {
                current: Some(Value {
                    value: "a".into(),
                    revision: 1
                })
            }
        );
        assert!(matches!(
            s.apply(&cas(1, Some("b"))),
            Outcome::Written { revision: 2, .. }
        ));
        assert!(matches!(
            s.apply(&cas(2, None)),
            Outcome::Written { revision: 3, .. }
        ));
        assert!(s.kv.is_empty());
        assert_eq!(s.apply(&cas(3, None)), Outcome::CasFailed { current: None });
    }

    #[test]
    fn the_first_init_names_the_cluster_for_good() {
        let mut s = State::default();
        let init = |id| Command::Init {
            cluster_id: id,
            name: format!("c{id}"),
        };
        s.apply(&init(5));
        s.apply(&init(6));
        assert_eq!((s.cluster_id, s.name.as_str()), (Some(5), "c5"));
    }

    #[test]
    fn nodes_register_and_heartbeat() {
        let mut s = State::default();
        assert_eq!(
            s.apply(&Command::Heartbeat { id: 7, now_ms: 5 }),
            Outcome::UnknownNode
        );
        let info = NodeInfo {
            hostname: "n7".into(),
            addr: "10.0.0.7:7700".into(),
            ..NodeInfo::default()
        };
        s.apply(&Command::Node {
            id: 7,
            info: info.clone(),
            now_ms: 10,
        });
        s.apply(&Command::Heartbeat { id: 7, now_ms: 20 });
        // A late heartbeat never moves the time back.
        s.apply(&Command::Heartbeat { id: 7, now_ms: 15 });
        s.apply(&Command::Node {
            id: 7,
            info,
            now_ms: 30,
        });
        let n = &s.nodes[&7];
        assert_eq!((n.joined_ms, n.heartbeat_ms), (10, 30));

        // Its inventory survives a re-registration; forgetting drops the record and all.
        let hardware = HardwareRecord {
            json: "{}".into(),
            summary: "s".into(),
            ..HardwareRecord::default()
        };
        s.apply(&Command::Inventory {
            id: 7,
            inventory: hardware.clone(),
        });
        s.apply(&Command::Node {
            id: 7,
            info: s.nodes[&7].info.clone(),
            now_ms: 40,
        });
        assert_eq!(s.nodes[&7].hardware, Some(hardware));
        assert_eq!(s.apply(&Command::Forget { id: 7 }), Outcome::Done);
        assert!(s.nodes.is_empty());
        assert_eq!(s.apply(&Command::Forget { id: 7 }), Outcome::UnknownNode);
        assert_eq!(
            s.apply(&Command::Inventory {
                id: 7,
                inventory: HardwareRecord::default()
            }),
            Outcome::UnknownNode
        );
    }

    #[test]
    fn a_record_from_an_older_node_reads_and_new_fields_round_trip() {
        // A node record as clusterd wrote it before the image version and slot were published
        // (and before labels, hints and keys): it must still read, with the defaults.
        let old = r#"{"op":"node","id":7,"info":{"hostname":"n7","addr":"10.0.0.7:7700",
            "version":"0.0.9"},"now_ms":10}"#;
        let command: Command = serde_json::from_str(old).unwrap();
        let Command::Node { info, .. } = &command else {
            panic!("{command:?}")
        };
        assert_eq!(
            (info.slot.as_deref(), info.slot_state.as_deref()),
            (None, None)
        );
        assert_eq!(info.version, "0.0.9");
        let mut s = State::default();
        s.apply(&command);
        // A snapshot of that state reads back too.
        let again: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(again, s);

        let info = NodeInfo {
            hostname: "n8".into(),
            addr: "10.0.0.8:7700".into(),
            version: "0.2.0".into(),
            slot: Some("b".into()),
            slot_state: Some("trial".into()),
            ..NodeInfo::default()
        };
        let text = serde_json::to_string(&info).unwrap();
        assert!(
            text.contains(r#""slot":"b","slot_state":"trial""#),
            "the wire names: {text}"
        );
        assert_eq!(serde_json::from_str::<NodeInfo>(&text).unwrap(), info);
        // A network-booted node's record carries no slot at all, as older records.
        let netboot = NodeInfo {
            slot: None,
            slot_state: None,
            ..info.clone()
        };
        assert!(!serde_json::to_string(&netboot).unwrap().contains("slot"));
        // A state a later version may add still reads.
        let later = text.replace(r#""trial""#, r#""probation""#);
        let read: NodeInfo = serde_json::from_str(&later).unwrap();
        assert_eq!(read.slot_state.as_deref(), Some("probation"));
    }

    #[test]
    fn watchers_get_the_changes_after_their_revision_or_learn_they_fell_behind() {
        let mut s = State::default();
        for i in 0..(MAX_CHANGES as u64 + 10) {
            s.apply(&put(&format!("k{}", i % 3), &i.to_string()));
        }
        s.apply(&Command::Delete { key: "k0".into() });
        let last = s.revision;
        let (changes, compacted) = s.changes_after(last - 2);
        assert!(!compacted);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].value, None, "the delete");
        assert_eq!(s.changes_after(last), (vec![], false));
        let (changes, compacted) = s.changes_after(1);
        assert!(compacted, "revision 1 is long gone");
        assert_eq!(changes.len(), MAX_CHANGES);
        // An empty cluster has nothing to miss.
        assert_eq!(State::default().changes_after(0), (vec![], false));
    }

    #[test]
    fn limits_are_checked_before_proposing() {
        assert_eq!(put("", "x").validate(), Err(InvalidCommand::EmptyKey));
        assert_eq!(
            put(&"k".repeat(MAX_KEY + 1), "x").validate(),
            Err(InvalidCommand::KeyTooLong(MAX_KEY + 1))
        );
        assert_eq!(
            put("k", &"v".repeat(MAX_VALUE + 1)).validate(),
            Err(InvalidCommand::ValueTooLarge(MAX_VALUE + 1))
        );
        assert_eq!(put("k", "v").validate(), Ok(()));
    }
}
