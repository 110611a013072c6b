//! The cluster API over HTTPS (see `shoal-cluster-api` for the types and the OpenAPI
//! description): a thin adapter from HTTP requests to the node's reads and proposals.
//!
//! The functions that answer (status, nodes, writes, watch) are shared with the local D-Bus
//! interface (`local.rs`), so both APIs give the same answers and the same errors.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use openraft::ServerState;
use shoal_cluster_api::types::{
    self as api, CasFailed, Change, KeyValue, Members, NodeView, Status, Watch, Written, node_id,
};
use tokio::net::TcpListener;

use crate::daemon::Node;
use crate::peer::Failure;
use crate::state::{Command, Outcome, Value};
use crate::update::UpdateError;

/// The largest request body accepted (a value is at most 64 KiB).
const MAX_BODY: usize = 128 * 1024;
/// The longest a watch waits.
pub(crate) const MAX_WATCH: Duration = Duration::from_secs(60);
/// How long a watch lets its node try to catch up with the leader: its `wait`, but at least
/// the first and at most the second (then it goes on from what the node has applied).
pub(crate) const WATCH_CATCH_UP: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(5));

/// Who may call: the SHA-256 digests of the accepted tokens.
#[derive(Debug, Clone)]
pub(crate) struct Tokens(pub(crate) Vec<[u8; 32]>);

impl Tokens {
    fn allows(&self, token: &str) -> bool {
        let digest = shoal_cluster_api::identity::token_digest(token);
        // Compare every digest in full, so timing says nothing about near misses.
        self.0.iter().fold(false, |found, known| {
            found | (known.iter().zip(&digest).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0)
        })
    }
}

/// Accepts API connections for ever.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    node: Arc<Node>,
    tokens: Arc<Tokens>,
) {
    shoal_cluster_api::tls::serve_tls(listener, tls, "API", move |tls, from| {
        let (node, tokens) = (node.clone(), tokens.clone());
        async move {
            let service = hyper::service::service_fn(move |request| {
                let (node, tokens) = (node.clone(), tokens.clone());
                async move { Ok::<_, Infallible>(handle(&node, &tokens, request).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!("API connection from {from}: {e}");
            }
        }
    })
    .await;
}

use shoal_cluster_api::reply::{Reply, error, json};

fn failure(f: Failure) -> Reply {
    match f {
        Failure::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        Failure::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// A percent-encoded key from the path, or why it is not one.
fn decode_key(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {raw:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the key is not UTF-8".to_string())
}

pub(crate) fn key_value(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: v.value,
        revision: v.revision,
    }
}

async fn body<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> Result<T, Reply> {
    let bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

async fn handle(node: &Node, tokens: &Tokens, request: Request<Incoming>) -> Reply {
    let path = request.uri().path().to_owned();
    if path == "/v1/openapi.json" {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                shoal_cluster_api::OPENAPI.as_bytes(),
            )))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    }
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if tokens.allows(t) => {}
        Some(_) => return error(StatusCode::UNAUTHORIZED, "unknown token"),
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "no token: send Authorization: Bearer <token>",
            );
        }
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["v1", "status"]) => json(StatusCode::OK, &status(node).await),
        (Method::GET, ["v1", "nodes"]) => json(StatusCode::OK, &nodes(node).await),
        (Method::GET, ["v1", "nodes", "watch"]) => watch_nodes(node, &query).await,
        (Method::GET, ["v1", "nodes", id]) => match node_view(node, id).await {
            Some(n) => json(StatusCode::OK, &n),
            None => error(StatusCode::NOT_FOUND, no_node(id)),
        },
        (Method::GET, ["v1", "nodes", id, "inventory"]) => inventory(node, id).await,
        (Method::GET, ["v1", "members"]) => json(StatusCode::OK, &members(node)),
        (Method::GET, ["v1", "kv", key]) => {
            let key = match decode_key(key) {
                Ok(k) => k,
                Err(m) => return error(StatusCode::BAD_REQUEST, m),
            };
            match node.read(key.clone(), false).await {
                Ok(Some(v)) => json(StatusCode::OK, &key_value(&key, v)),
                Ok(None) => error(StatusCode::NOT_FOUND, format!("no key {key:?}")),
                Err(f) => failure(f),
            }
        }
        (Method::PUT, ["v1", "kv", key]) => {
            let key = match decode_key(key) {
                Ok(k) => k,
                Err(m) => return error(StatusCode::BAD_REQUEST, m),
            };
            let put: api::Put = match body(request).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            write(
                node,
                &key,
                Command::Put {
                    key: key.clone(),
                    value: put.value,
                },
            )
            .await
        }
        (Method::DELETE, ["v1", "kv", key]) => {
            let key = match decode_key(key) {
                Ok(k) => k,
                Err(m) => return error(StatusCode::BAD_REQUEST, m),
            };
            write(node, &key, Command::Delete { key: key.clone() }).await
        }
        (Method::POST, ["v1", "kv", key, "cas"]) => {
            let key = match decode_key(key) {
                Ok(k) => k,
                Err(m) => return error(StatusCode::BAD_REQUEST, m),
            };
            let cas: api::Cas = match body(request).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            write(
                node,
                &key,
                Command::Cas {
                    key: key.clone(),
                    expected: cas.expected,
                    value: cas.value,
                },
            )
            .await
        }
        (Method::GET, ["v1", "watch"]) => watch(node, &query).await,
        (Method::GET, ["v1", "update"]) => match node.updater.status() {
            Ok(status) => json(StatusCode::OK, &status),
            Err(e) => update_error(e),
        },
        (Method::POST, ["v1", "update"]) => apply_update(node, request).await,
        (Method::POST, ["v1", "update", "rollback"]) => {
            let updater = node.updater.clone();
            match tokio::task::spawn_blocking(move || updater.rollback()).await {
                Ok(Ok(status)) => json(StatusCode::OK, &status),
                Ok(Err(e)) => update_error(e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (
            method,
            [
                "v1",
                "status" | "nodes" | "members" | "watch" | "update",
                ..,
            ]
            | ["v1", "kv", ..],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {path} is not served (see /v1/openapi.json)"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path} (see /v1/openapi.json)"),
        ),
    }
}

fn update_error(e: UpdateError) -> Reply {
    match e {
        UpdateError::Refused(m) => error(StatusCode::CONFLICT, m),
        UpdateError::Failed(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// The request body as a blocking reader for the updater, fed chunk by chunk from the async
/// side (which never blocks: the channel is bounded and awaited).
struct BodyReader {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// How long the rest of a refused upload is read, so that its answer reaches the client.
const DRAIN: Duration = Duration::from_secs(30);

/// Streams a bundle from the request body into the updater, which verifies it as it goes.
async fn apply_update(node: &Node, request: Request<Incoming>) -> Reply {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let updater = node.updater.clone();
    let task = tokio::task::spawn_blocking(move || {
        updater.apply(BodyReader {
            chunks: rx,
            current: Bytes::new(),
        })
    });
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue, // trailers
            },
            Err(e) => Err(format!("reading the upload: {e}")),
        };
        let failed = chunk.is_err();
        if failed {
            break;
        }
        if tx.send(chunk).await.is_err() {
            // The updater refused the bundle and stopped reading. The rest of the upload is
            // read and dropped (for a while) before answering: closing a connection with
            // unread data sends a reset, and the client would lose the answer that says why.
            let _ = tokio::time::timeout(DRAIN, async {
                while let Some(Ok(_)) = body.frame().await {}
            })
            .await;
            break;
        }
    }
    drop(tx);
    match task.await {
        Ok(Ok(applied)) => json(StatusCode::OK, &applied),
        Ok(Err(e)) => update_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Why a write to the key-value space did not happen.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Refused before it was proposed, or not committed (see [`Failure`]).
    Failure(Failure),
    /// A compare-and-set whose expected revision did not match.
    CasFailed(CasFailed),
    /// The state machine answered something a key-value write never gets.
    Unexpected(String),
}

/// Proposes a write to the key-value space (on the leader, or forwarded to it once).
pub(crate) async fn write_kv(
    node: &Node,
    key: &str,
    command: Command,
) -> Result<Written, WriteError> {
    match node.propose(command, false).await {
        Ok(Outcome::Written { revision, previous }) => Ok(Written {
            revision,
            previous: previous.map(|v| key_value(key, v)),
        }),
        Ok(Outcome::CasFailed { current }) => Err(WriteError::CasFailed(CasFailed {
            current: current.map(|v| key_value(key, v)),
        })),
        Ok(other) => Err(WriteError::Unexpected(format!(
            "unexpected outcome {other:?}"
        ))),
        Err(f) => Err(WriteError::Failure(f)),
    }
}

async fn write(node: &Node, key: &str, command: Command) -> Reply {
    match write_kv(node, key, command).await {
        Ok(written) => json(StatusCode::OK, &written),
        Err(WriteError::CasFailed(failed)) => json(StatusCode::CONFLICT, &failed),
        Err(WriteError::Unexpected(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
        Err(WriteError::Failure(f)) => failure(f),
    }
}

/// The cluster as this node sees it.
pub(crate) async fn status(node: &Node) -> Status {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners: Vec<String> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !voters.contains(id))
        .map(node_id)
        .collect();
    let role = match metrics.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    };
    let (cluster_id, revision) = node.machine.read(|s| (s.cluster_id, s.revision)).await;
    Status {
        cluster: node.name.clone(),
        cluster_id: cluster_id
            .map(|id| format!("{id:016x}"))
            .unwrap_or_default(),
        node: node_id(node.id),
        role: role.into(),
        leader: metrics.current_leader.map(node_id),
        term: metrics.current_term,
        voters: voters.into_iter().map(node_id).collect(),
        learners,
        quorum: metrics.current_leader.is_some(),
        applied: node.machine.applied_index().await,
        revision,
    }
}

fn members(node: &Node) -> Members {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let member = |(id, n): (&u64, &openraft::BasicNode)| api::Member {
        id: node_id(*id),
        addr: n.addr.clone(),
    };
    Members {
        leader: metrics.current_leader.map(node_id),
        voters: membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(member)
            .collect(),
        learners: membership
            .nodes()
            .filter(|(id, _)| !voters.contains(id))
            .map(member)
            .collect(),
    }
}

/// Every node the state has a record of, with its role and health.
pub(crate) async fn nodes(node: &Node) -> Vec<NodeView> {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let now_ms = crate::daemon::unix_ms();
    let records = node.machine.read(|s| s.nodes.clone()).await;
    records
        .into_iter()
        .map(|(id, record)| {
            let role = if metrics.current_leader == Some(id) {
                "leader"
            } else if voters.contains(&id) {
                "voter"
            } else if membership.get_node(&id).is_some() {
                "non-voter"
            } else {
                "gone"
            };
            let age = now_ms.saturating_sub(record.heartbeat_ms);
            NodeView {
                id: node_id(id),
                hostname: record.info.hostname,
                addr: record.info.addr,
                labels: record.info.labels,
                version: record.info.version,
                slot: record.info.slot,
                slot_state: record.info.slot_state,
                role: role.into(),
                healthy: role != "gone" && Duration::from_millis(age) < node.unhealthy_after,
                heartbeat_age_ms: age,
                joined_ms: record.joined_ms,
                hardware: record.hardware.as_ref().map(|h| h.summary.clone()),
                hardware_labels: record.hardware.map(|h| h.labels).unwrap_or_default(),
            }
        })
        .collect()
}

/// One node, by id or hostname.
pub(crate) async fn node_view(node: &Node, name: &str) -> Option<NodeView> {
    nodes(node)
        .await
        .into_iter()
        .find(|n| n.id == name || n.hostname == name)
}

pub(crate) fn no_node(name: &str) -> String {
    format!("no node {name}")
}

/// A node's hardware inventory, as it published it; the node is named by id or hostname.
async fn inventory(node: &Node, name: &str) -> Reply {
    let records = node.machine.read(|s| s.nodes.clone()).await;
    let Some(record) = records
        .iter()
        .find(|(id, r)| node_id(**id) == name || r.info.hostname == name)
        .map(|(_, r)| r)
    else {
        return error(StatusCode::NOT_FOUND, no_node(name));
    };
    match &record.hardware {
        Some(hardware) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(hardware.json.clone())))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "node {name} has published no hardware inventory (yet): its collector writes \
                 /run/shoal/inventory.json at boot"
            ),
        ),
    }
}

/// A watch's query: the one parameter `name` (percent-decoded) and `timeout` in seconds
/// (default 30, at most [`MAX_WATCH`]); anything else is refused.
fn watch_query(query: &str, name: &str) -> Result<(Option<String>, Duration), String> {
    let mut value = None;
    let mut wait = Duration::from_secs(30);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            value = Some(decode_key(v)?);
        } else if k == "timeout" {
            let seconds = v
                .parse::<u64>()
                .map_err(|_| format!("timeout={v:?} is not seconds"))?;
            wait = Duration::from_secs(seconds).min(MAX_WATCH);
        } else {
            return Err(format!("unknown parameter {k:?}"));
        }
    }
    Ok((value, wait))
}

/// Long-polls the node view until its tag differs from `since` (health is time-based, so the
/// view is looked at every 250 ms).
async fn watch_nodes(node: &Node, query: &str) -> Reply {
    let (since, wait) = match watch_query(query, "since") {
        Ok((since, wait)) => (since.unwrap_or_default(), wait),
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let view = nodes(node).await;
        let tag = shoal_cluster_api::types::nodes_tag(&view);
        if tag != since || tokio::time::Instant::now() >= deadline {
            return json(
                StatusCode::OK,
                &shoal_cluster_api::types::NodesWatch { tag, nodes: view },
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn watch(node: &Node, query: &str) -> Reply {
    let (after, wait) = match watch_query(query, "after") {
        Ok((after, wait)) => (after, wait),
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let after = match after.map(|a| a.parse::<u64>().map_err(|_| a)).transpose() {
        Ok(a) => a,
        Err(a) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("after={a:?} is not a revision"),
            );
        }
    };
    let Some(after) = after else {
        return error(StatusCode::BAD_REQUEST, "after=<revision> is required");
    };
    json(StatusCode::OK, &watch_changes(node, after, "", wait).await)
}

/// Long-polls the key-value space: the changes after revision `after` to keys that start
/// with `prefix` (empty: every key), as soon as there is one, else when `wait` (at most
/// [`MAX_WATCH`]) has passed; at once when `after` is older than the changes kept.
///
/// The node first catches up with the leader, so the answer holds every change any node
/// acknowledged before the call, whichever node took it. If it cannot within
/// [`WATCH_CATCH_UP`] (no quorum, a leader of an older version), it watches what it applies.
pub(crate) async fn watch_changes(node: &Node, after: u64, prefix: &str, wait: Duration) -> Watch {
    let mut revisions = node.machine.revisions();
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WATCH);
    let (least, most) = WATCH_CATCH_UP;
    if tokio::time::timeout(wait.clamp(least, most), node.catch_up())
        .await
        .is_err()
    {
        tracing::debug!("a watch goes on from this node's state: it did not catch up in time");
    }
    loop {
        let (changes, compacted, revision) = node
            .machine
            .read(|s| {
                let (changes, compacted) = s.changes_after(after);
                (under(changes, prefix), compacted, s.revision)
            })
            .await;
        if !changes.is_empty() || compacted || tokio::time::Instant::now() >= deadline {
            return Watch {
                changes,
                revision: revision.max(after),
                compacted,
            };
        }
        if tokio::time::timeout_at(deadline, revisions.changed())
            .await
            .is_err()
        {
            continue;
        }
    }
}

/// The changes to keys under `prefix`, as the API shows them.
fn under(changes: Vec<crate::state::Change>, prefix: &str) -> Vec<Change> {
    changes
        .into_iter()
        .filter(|c| c.key.starts_with(prefix))
        .map(|c| Change {
            revision: c.revision,
            key: c.key,
            value: c.value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_by_digest() {
        let tokens = Tokens(vec![shoal_cluster_api::identity::token_digest("right")]);
        assert!(tokens.allows("right"));
        assert!(!tokens.allows("wrong"));
        assert!(!Tokens(vec![]).allows("right"));
    }

    #[test]
    fn watch_queries_are_checked() {
        assert_eq!(
            watch_query("after=5&timeout=2", "after"),
            Ok((Some("5".into()), Duration::from_secs(2)))
        );
        assert_eq!(
            watch_query("", "since"),
            Ok((None, Duration::from_secs(30)))
        );
        assert_eq!(watch_query("timeout=999", "after").unwrap().1, MAX_WATCH);
        assert!(
            watch_query("timeout=x", "after")
                .unwrap_err()
                .contains("seconds")
        );
        assert!(
            watch_query("bogus=1", "after")
                .unwrap_err()
                .contains("bogus")
        );
    }

    #[test]
    fn a_watch_sees_the_changes_under_its_prefix() {
        let change = |revision, key: &str, value: Option<&str>| crate::state::Change {
            revision,
            key: key.into(),
            value: value.map(Into::into),
        };
        let changes = vec![
            change(1, "app/a", Some("1")),
            change(2, "other", Some("2")),
            change(3, "app/b", None),
            change(4, "ap", Some("4")),
        ];
        let seen = |prefix| {
            under(changes.clone(), prefix)
                .into_iter()
                .map(|c| (c.revision, c.key, c.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seen("app/"),
            [
                (1, "app/a".to_string(), Some("1".to_string())),
                (3, "app/b".to_string(), None)
            ]
        );
        assert_eq!(seen("").len(), 4, "no prefix: every change");
        assert!(seen("zzz").is_empty());
    }

    #[test]
    fn keys_are_percent_decoded() {
        assert_eq!(decode_key("a%2Fb%20c").ok(), Some("a/b c".to_string()));
        assert!(decode_key("bad%zz").is_err());
        assert!(decode_key("%ff").is_err(), "not UTF-8");
    }
}
