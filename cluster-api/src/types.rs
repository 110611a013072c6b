//! The API's JSON bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/status`: the cluster as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub cluster: String,
    /// 16 hex digits; empty while the cluster is being formed.
    pub cluster_id: String,
    /// The node that answered.
    pub node: String,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub role: String,
    pub leader: Option<String>,
    pub term: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// Whether the answering node hears from a leader (writes and reads can succeed).
    pub quorum: bool,
    /// Last log index applied on the answering node.
    pub applied: u64,
    /// The key-value space's revision on the answering node.
    pub revision: u64,
}

/// A node as the cluster knows it (`GET /v1/nodes`, `GET /v1/nodes/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// 16 hex digits.
    pub id: String,
    pub hostname: String,
    /// Its peer address.
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    /// The image version it runs (its `/etc/os-release` `VERSION_ID`).
    pub version: String,
    /// The root slot it booted from, `a` or `b`; `None` (`null`) for a node booted over the
    /// network, and for nodes too old to say.
    #[serde(default)]
    pub slot: Option<String>,
    /// The booted slot's update state: `trial` (a new image not yet blessed: it is once the
    /// node is back in its cluster) or `good`; `None` without a slot.
    #[serde(default)]
    pub slot_state: Option<String>,
    /// `leader`, `voter` or `non-voter`; `gone` when it left the membership.
    pub role: String,
    /// Heard from within the health window (heartbeats every second).
    pub healthy: bool,
    /// Milliseconds since its last heartbeat, by the leader's clock.
    pub heartbeat_age_ms: u64,
    /// Unix milliseconds of its registration.
    pub joined_ms: u64,
    /// One line about its hardware (`4 threads (2 sockets, 4 cores), 1 GiB, 3 disks, ...`),
    /// once it published an inventory (`GET /v1/nodes/{id}/inventory` has all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// Capability labels derived from its inventory (`cpu.cores`, `disk.nvme`, `gpu.nvidia`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hardware_labels: BTreeMap<String, String>,
}

/// `GET /v1/nodes/watch?since=TAG&timeout=SECONDS`: the nodes once their membership, roles,
/// health, image versions or slots differ from the view `since` names (at once when `since` is
/// empty or stale), or as they are when `timeout` passes. `tag` names this view for the next call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesWatch {
    pub tag: String,
    pub nodes: Vec<NodeView>,
}

/// The tag of a node view: what a watcher cares about (who, where, role, health, the image
/// and slot it runs, so a rolling update shows node by node), not the heartbeat ages that
/// change every second.
pub fn nodes_tag(nodes: &[NodeView]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for n in nodes {
        for field in [
            n.id.as_str(),
            &n.addr,
            &n.hostname,
            &n.role,
            &n.version,
            n.slot.as_deref().unwrap_or("-"),
            n.slot_state.as_deref().unwrap_or("-"),
        ] {
            hash.update(field.as_bytes());
            hash.update([0]);
        }
        hash.update([u8::from(n.healthy)]);
    }
    crate::identity::hex(&hash.finalize()[..12])
}

/// One root slot in `GET /v1/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSlot {
    /// `a` or `b`.
    pub slot: String,
    pub booted: bool,
    /// The slot the boot loader starts next.
    pub default: bool,
    /// The version its boot entry starts, if it has one.
    pub version: Option<String>,
    /// `good`, `trial` (on probation, `tries_left`), `failed` (no tries left) or `empty`.
    pub state: String,
    pub tries_left: Option<u32>,
}

/// `GET /v1/update`: the answering node's slots and its last update's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub booted: String,
    pub slots: Vec<UpdateSlot>,
    pub last_result: Option<String>,
}

/// `POST /v1/update` (the body is the bundle): what was installed, on trial until the node is
/// healthy after the reboot into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateApplied {
    pub slot: String,
    pub version: String,
    /// The key that signed the bundle.
    pub signer: String,
    pub bytes: u64,
}

/// `GET /v1/maintenance`: why a node in maintenance has no configuration (served by
/// shoal-configd, authenticated by the node's one-time token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceStatus {
    pub reason: String,
    /// What the node knows about itself (its `[[nodes]]` match keys): first MAC, SMBIOS UUID
    /// and serial, where known.
    pub mac: Option<String>,
    pub uuid: Option<String>,
    pub serial: Option<String>,
}

/// `PUT /v1/maintenance/config` (the body is a machine configuration, TOML): it was valid and
/// the node now boots with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceAccepted {
    /// The node's hostname under this configuration, if it names one.
    pub hostname: Option<String>,
    /// Whether the configuration was kept on persistent storage for the next boots.
    pub kept: bool,
}

/// `GET /v1/members`: consensus membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub leader: Option<String>,
    pub voters: Vec<Member>,
    pub learners: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub addr: String,
}

/// A key's value (`GET /v1/kv/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// The revision that last wrote it.
    pub revision: u64,
}

/// `PUT /v1/kv/{key}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub value: String,
}

/// `POST /v1/kv/{key}/cas` body: write `value` (or delete with `null`) only if the key's
/// revision is `expected` (0: only if absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cas {
    pub expected: u64,
    pub value: Option<String>,
}

/// The answer to a write (`PUT`, `DELETE`, a successful `cas`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub revision: u64,
    pub previous: Option<KeyValue>,
}

/// The answer to a failed compare-and-set (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasFailed {
    pub current: Option<KeyValue>,
}

/// One change in the key-value space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    pub key: String,
    /// `None`: deleted.
    pub value: Option<String>,
}

/// `GET /v1/watch?after=REV&timeout=SECONDS`: the changes after `after`, waiting up to
/// `timeout` for the first one. `compacted` when `after` is older than the changes kept: the
/// watcher must read the keys again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub changes: Vec<Change>,
    /// Where to continue from.
    pub revision: u64,
    pub compacted: bool,
}

/// Every error body: what went wrong, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Node ids travel as 16 hex digits.
pub fn node_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses a node id: 16 hex digits, or a unique prefix is the caller's business.
pub fn parse_node_id(text: &str) -> Option<u64> {
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, healthy: bool, age: u64) -> NodeView {
        NodeView {
            id: id.into(),
            hostname: "h".into(),
            addr: "10.0.0.1:7700".into(),
            labels: BTreeMap::new(),
            version: "0.1.0".into(),
            slot: Some("a".into()),
            slot_state: Some("good".into()),
            role: "voter".into(),
            healthy,
            heartbeat_age_ms: age,
            joined_ms: 0,
            hardware: None,
            hardware_labels: Default::default(),
        }
    }

    #[test]
    fn the_tag_follows_health_and_membership_not_heartbeat_ages() {
        let a = nodes_tag(&[view("1", true, 100)]);
        assert_eq!(a, nodes_tag(&[view("1", true, 900)]));
        assert_ne!(a, nodes_tag(&[view("1", false, 900)]));
        assert_ne!(a, nodes_tag(&[view("1", true, 100), view("2", true, 100)]));
        // A node rebooted into a new image, and its slot blessed.
        let mut updated = view("1", true, 100);
        updated.version = "0.2.0".into();
        updated.slot_state = Some("trial".into());
        let trial = nodes_tag(std::slice::from_ref(&updated));
        assert_ne!(a, trial);
        updated.slot_state = Some("good".into());
        assert_ne!(trial, nodes_tag(&[updated]));
    }

    #[test]
    fn a_node_view_without_a_slot_reads_from_an_older_server() {
        let old = r#"{"id":"0000000000000001","hostname":"h","addr":"10.0.0.1:7700",
            "labels":{},"version":"0.1.0","role":"voter","healthy":true,
            "heartbeat_age_ms":5,"joined_ms":0}"#;
        let n: NodeView = serde_json::from_str(old).unwrap();
        assert_eq!((n.slot, n.slot_state), (None, None));
        let text = serde_json::to_string(&view("1", true, 1)).unwrap();
        assert!(text.contains(r#""slot":"a","slot_state":"good""#), "{text}");
    }
}
