//! The local API: `org.shoal.Cluster1` over D-Bus peer to peer on a unix socket
//! (`/run/shoal/clusterd.sock`), for the services of this node. `shoal_api::cluster` owns the
//! wire and the access check (status and nodes for every local user, the key-value space for
//! root and the admin group); this module answers its requests with the functions the HTTPS
//! API answers with (`api.rs`), so a read is linearizable, a write goes to the leader, and an
//! error says what the HTTPS API would say.

use std::path::Path;
use std::sync::Arc;

use shoal_api::cluster::{self as wire, Access, ClusterError, ClusterRequest};
use shoal_cluster_api::types::{self as api, NodeView, Status};
use tokio::sync::{Semaphore, mpsc};

use crate::api::{
    WriteError, key_value, no_node, node_view, nodes, status, watch_changes, write_kv,
};
use crate::daemon::Node;
use crate::peer::Failure;
use crate::state::Command;

/// Requests waiting for their turn; more wait in the server.
const QUEUE: usize = 64;
/// Requests answered at once (a watch holds its place while it waits); more wait in the queue.
const IN_FLIGHT: usize = 64;

/// Binds `socket` and serves the local API for as long as the daemon runs. A socket that cannot
/// be bound is an error for the caller to log: the node runs on without it.
pub(crate) fn start(
    socket: &Path,
    admin_gid: Option<u32>,
    node: Arc<Node>,
) -> Result<(), wire::ApiError> {
    let listener = wire::bind(socket)?;
    let (tx, mut rx) = mpsc::channel(QUEUE);
    tokio::spawn(wire::serve(listener, Access { admin_gid }, tx));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let node = node.clone();
            tokio::spawn(async move {
                answer(&node, request).await;
                drop(permit);
            });
        }
    });
    Ok(())
}

/// Answers one request. A peer that hung up before the answer is no error of ours: failed
/// sends are ignored.
async fn answer(node: &Node, request: ClusterRequest) {
    match request {
        ClusterRequest::Status(reply) => {
            let _ = reply.send(Ok(to_status(status(node).await)));
        }
        ClusterRequest::Nodes(reply) => {
            let _ = reply.send(Ok(nodes(node).await.into_iter().map(to_node).collect()));
        }
        ClusterRequest::Node { name, reply } => {
            let found = node_view(node, &name).await;
            let _ = reply.send(
                found
                    .map(to_node)
                    .ok_or_else(|| ClusterError::NotFound(no_node(&name))),
            );
        }
        ClusterRequest::KvGet { key, reply } => {
            let read = node.read(key.clone(), false).await;
            let _ = reply.send(
                read.map(|v| v.map(|v| to_key_value(key_value(&key, v))))
                    .map_err(refused),
            );
        }
        ClusterRequest::KvPut { key, value, reply } => {
            let command = Command::Put {
                key: key.clone(),
                value,
            };
            let _ = reply.send(write(node, &key, None, command).await);
        }
        ClusterRequest::KvCas {
            key,
            expected,
            value,
            reply,
        } => {
            let command = Command::Cas {
                key: key.clone(),
                expected,
                value: Some(value),
            };
            let _ = reply.send(write(node, &key, Some(expected), command).await);
        }
        // The HTTPS API's compare-and-set with a `null` value: the same command, so 0 matches
        // only an absent key (and then still writes a revision, as a delete of one does).
        ClusterRequest::KvCasDelete {
            key,
            expected,
            reply,
        } => {
            let command = Command::Cas {
                key: key.clone(),
                expected,
                value: None,
            };
            let _ = reply.send(write(node, &key, Some(expected), command).await);
        }
        ClusterRequest::KvDelete { key, reply } => {
            let command = Command::Delete { key: key.clone() };
            let _ = reply.send(write(node, &key, None, command).await);
        }
        ClusterRequest::Watch {
            prefix,
            after,
            wait,
            reply,
        } => {
            let watched = watch_changes(node, after, &prefix, wait).await;
            let _ = reply.send(Ok(to_watch(watched)));
        }
    }
}

/// A write to the key-value space; `expected` is a compare-and-set's expected revision.
async fn write(
    node: &Node,
    key: &str,
    expected: Option<u64>,
    command: Command,
) -> Result<wire::Written, ClusterError> {
    match write_kv(node, key, command).await {
        Ok(written) => Ok(to_written(written)),
        Err(WriteError::Failure(f)) => Err(refused(f)),
        Err(WriteError::CasFailed(failed)) => Err(ClusterError::CasFailed(cas_failed(
            key,
            expected.unwrap_or(0),
            failed.current.as_ref(),
        ))),
        Err(WriteError::Unexpected(m)) => Err(ClusterError::Failed(m)),
    }
}

/// What the HTTPS API answers 400 (the request is wrong) or 503 (not now).
fn refused(failure: Failure) -> ClusterError {
    match failure {
        Failure::Invalid(m) => ClusterError::Invalid(m),
        Failure::Unavailable(m) => ClusterError::Unavailable(m),
    }
}

/// Why a compare-and-set changed nothing, with what the key holds now.
fn cas_failed(key: &str, expected: u64, current: Option<&api::KeyValue>) -> String {
    match current {
        None => {
            format!("{key:?} was not changed: it does not exist (expected revision {expected})")
        }
        Some(kv) if expected == 0 => format!(
            "{key:?} was not changed: it exists (expected it absent); its revision is {}",
            kv.revision
        ),
        Some(kv) => format!(
            "{key:?} was not changed: its revision is {}, not {expected}",
            kv.revision
        ),
    }
}

fn to_status(s: Status) -> wire::ClusterStatus {
    wire::ClusterStatus {
        cluster: s.cluster,
        cluster_id: s.cluster_id,
        node: s.node,
        role: s.role,
        leader: s.leader.unwrap_or_default(),
        term: s.term,
        voters: s.voters,
        learners: s.learners,
        quorum: s.quorum,
        applied: s.applied,
        revision: s.revision,
    }
}

/// A node for the local API; a missing slot, slot state or hardware summary is an empty string.
fn to_node(n: NodeView) -> wire::ClusterNode {
    wire::ClusterNode {
        id: n.id,
        hostname: n.hostname,
        addr: n.addr,
        labels: n.labels,
        version: n.version,
        slot: n.slot.unwrap_or_default(),
        slot_state: n.slot_state.unwrap_or_default(),
        role: n.role,
        healthy: n.healthy,
        heartbeat_age_ms: n.heartbeat_age_ms,
        joined_ms: n.joined_ms,
        hardware: n.hardware.unwrap_or_default(),
        hardware_labels: n.hardware_labels,
    }
}

fn to_key_value(kv: api::KeyValue) -> wire::KeyValue {
    wire::KeyValue {
        key: kv.key,
        value: kv.value,
        revision: kv.revision,
    }
}

fn to_written(w: api::Written) -> wire::Written {
    wire::Written {
        revision: w.revision,
        previous: w.previous.into_iter().map(to_key_value).collect(),
    }
}

fn to_watch(w: api::Watch) -> wire::WatchReply {
    wire::WatchReply {
        changes: w
            .changes
            .into_iter()
            .map(|c| wire::Change {
                revision: c.revision,
                key: c.key,
                deleted: c.value.is_none(),
                value: c.value.unwrap_or_default(),
            })
            .collect(),
        revision: w.revision,
        compacted: w.compacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(revision: u64) -> api::KeyValue {
        api::KeyValue {
            key: "k".into(),
            value: "v".into(),
            revision,
        }
    }

    #[test]
    fn a_refused_compare_and_set_says_what_the_key_holds() {
        assert_eq!(
            cas_failed("k", 3, None),
            "\"k\" was not changed: it does not exist (expected revision 3)"
        );
        assert_eq!(
            cas_failed("k", 0, Some(&kv(5))),
            "\"k\" was not changed: it exists (expected it absent); its revision is 5"
        );
        assert_eq!(
            cas_failed("k", 3, Some(&kv(5))),
            "\"k\" was not changed: its revision is 5, not 3"
        );
    }

    #[test]
    fn failures_keep_their_kind_and_message() {
        let e = refused(Failure::Invalid("the key is empty".into()));
        assert!(matches!(&e, ClusterError::Invalid(m) if m == "the key is empty"));
        let e = refused(Failure::Unavailable("no quorum".into()));
        assert!(matches!(&e, ClusterError::Unavailable(m) if m == "no quorum"));
    }

    #[test]
    fn missing_values_become_empty_strings_and_arrays() {
        let status = to_status(Status {
            cluster: "lab".into(),
            cluster_id: String::new(),
            node: "01".into(),
            role: "learner".into(),
            leader: None,
            term: 0,
            voters: vec![],
            learners: vec![],
            quorum: false,
            applied: 0,
            revision: 0,
        });
        assert_eq!((status.leader.as_str(), status.quorum), ("", false));

        let written = to_written(api::Written {
            revision: 6,
            previous: Some(kv(5)),
        });
        assert_eq!(written.previous.len(), 1);
        assert!(
            to_written(api::Written {
                revision: 1,
                previous: None
            })
            .previous
            .is_empty()
        );

        let watch = to_watch(api::Watch {
            changes: vec![
                api::Change {
                    revision: 7,
                    key: "a".into(),
                    value: Some("x".into()),
                },
                api::Change {
                    revision: 8,
                    key: "a".into(),
                    value: None,
                },
            ],
            revision: 8,
            compacted: false,
        });
        let changes: Vec<_> = watch
            .changes
            .iter()
            .map(|c| (c.value.as_str(), c.deleted))
            .collect();
        assert_eq!(changes, [("x", false), ("", true)]);

        let node = to_node(NodeView {
            id: "01".into(),
            hostname: "h".into(),
            addr: "10.0.0.1:7700".into(),
            labels: Default::default(),
            version: "0.1.0".into(),
            slot: None,
            slot_state: None,
            role: "voter".into(),
            healthy: true,
            heartbeat_age_ms: 10,
            joined_ms: 1,
            hardware: None,
            hardware_labels: Default::default(),
        });
        assert_eq!(
            (
                node.slot.as_str(),
                node.slot_state.as_str(),
                node.hardware.as_str()
            ),
            ("", "", ""),
            "a network boot, no inventory yet"
        );
    }

    #[test]
    fn a_node_booted_from_a_disk_slot_says_which_and_its_state() {
        let node = to_node(NodeView {
            id: "02".into(),
            hostname: "h2".into(),
            addr: "10.0.0.2:7700".into(),
            labels: [("rack".to_string(), "r1".to_string())].into(),
            version: "0.2.0".into(),
            slot: Some("b".into()),
            slot_state: Some("good".into()),
            role: "leader".into(),
            healthy: true,
            heartbeat_age_ms: 3,
            joined_ms: 2,
            hardware: Some("4 threads, 1 GiB".into()),
            hardware_labels: [("cpu.cores".to_string(), "4".to_string())].into(),
        });
        assert_eq!(
            node,
            wire::ClusterNode {
                id: "02".into(),
                hostname: "h2".into(),
                addr: "10.0.0.2:7700".into(),
                labels: [("rack".to_string(), "r1".to_string())].into(),
                version: "0.2.0".into(),
                slot: "b".into(),
                slot_state: "good".into(),
                role: "leader".into(),
                healthy: true,
                heartbeat_age_ms: 3,
                joined_ms: 2,
                hardware: "4 threads, 1 GiB".into(),
                hardware_labels: [("cpu.cores".to_string(), "4".to_string())].into(),
            }
        );
    }
}
