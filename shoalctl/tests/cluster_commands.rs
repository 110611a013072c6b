//! The real `shoalctl` binary's cluster commands against a stand-in cluster API server in the
//! test process: TLS with the key derived from the cluster secret (as clusterd serves it), the
//! API's paths and bodies (`shoal_cluster_api::types`), tokens as clusterd takes them (the
//! admin credential, or a token whose hash is in `[api.tokens]`). clusterd's own behaviour is
//! tested with clusterd.

// Helpers are test code too: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_cluster_api::identity::{Identity, admin_credential};
use shoal_cluster_api::types::{
    Cas, CasFailed, Change, ErrorBody, KeyValue, Member, Members, NodeView, Put, Status, Watch,
    Written,
};
use shoal_config::{MachineConfig, Secret};
use tokio_rustls::TlsAcceptor;

const SECRET: &str = "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";
const OTHER_SECRET: &str = "b3RoZXItY2x1c3Rlci1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";

/// The stand-in cluster: a key-value space with its change log, and canned nodes.
#[derive(Default)]
struct State {
    /// SHA-256 hex digests of the tokens taken.
    tokens: Vec<String>,
    /// Every answer is 503 "no leader".
    no_leader: bool,
    kv: BTreeMap<String, KeyValue>,
    revision: u64,
    changes: Vec<Change>,
    /// Watch calls answered.
    watches: u64,
    /// Bytes of update bundles received, per upload.
    uploads: Vec<u64>,
}

fn node(id: &str, hostname: &str, role: &str) -> NodeView {
    NodeView {
        id: id.into(),
        hostname: hostname.into(),
        addr: format!("10.0.0.{}:7700", &id[15..]),
        labels: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
        version: "0.1.0".into(),
        slot: Some("a".into()),
        slot_state: Some("good".into()),
        role: role.into(),
        healthy: true,
        heartbeat_age_ms: 300,
        joined_ms: 1_748_779_200_000,
        hardware: None,
        hardware_labels: BTreeMap::new(),
    }
}

/// A node on a good slot, one just updated (its new slot on trial), one booted over the
/// network (no slot).
fn nodes() -> Vec<NodeView> {
    let mut updated = node("0000000000000002", "node-2", "voter");
    updated.version = "0.2.0".into();
    updated.slot = Some("b".into());
    updated.slot_state = Some("trial".into());
    let mut netboot = node("0000000000000003", "node-3", "non-voter");
    netboot.slot = None;
    netboot.slot_state = None;
    vec![
        node("0000000000000001", "node-1", "leader"),
        updated,
        netboot,
    ]
}

fn status(revision: u64) -> Status {
    Status {
        cluster: "lab".into(),
        cluster_id: "00c0ffee00c0ffee".into(),
        node: "0000000000000001".into(),
        role: "leader".into(),
        leader: Some("0000000000000001".into()),
        term: 2,
        voters: vec!["0000000000000001".into(), "0000000000000002".into()],
        learners: vec!["0000000000000003".into()],
        quorum: true,
        applied: 10,
        revision,
    }
}

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())))
        .unwrap()
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_reply(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

fn digest(token: &str) -> String {
    shoal_cluster_api::identity::hex(&shoal_cluster_api::identity::token_digest(token))
}

async fn handle(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(digest);
    if !token.is_some_and(|t| state.lock().unwrap().tokens.contains(&t)) {
        return error(StatusCode::UNAUTHORIZED, "unknown token");
    }
    if state.lock().unwrap().no_leader {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader: this node hears from no quorum; try again when the cluster has one",
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    if method == Method::POST && path == "/v1/update" {
        return upload(state, request.into_body()).await;
    }
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let (response, nothing_yet) = answer(state, method, &path, &query, &body);
    if nothing_yet {
        // A watch with nothing to tell waits a little, as clusterd waits up to its timeout.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    response
}

/// `POST /v1/update` as clusterd takes it: read as it arrives, refused as soon as its start is
/// not a bundle's (without reading the rest), else counted to the end.
async fn upload(state: &Mutex<State>, mut body: Incoming) -> Response<Full<Bytes>> {
    let mut received = 0u64;
    let mut head = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return error(StatusCode::BAD_REQUEST, "the upload broke off");
        };
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if head.len() < 16 {
                head.extend_from_slice(&data[..data.len().min(16)]);
                if head.len() >= 13 && !head.starts_with(b"SHOAL-BUNDLE") {
                    state.lock().unwrap().uploads.push(received);
                    // As clusterd does: the rest is read and dropped, so that the answer is not
                    // lost to the reset a close with unread data sends.
                    while let Some(Ok(_)) = body.frame().await {}
                    return error(StatusCode::CONFLICT, "not an update bundle");
                }
            }
        }
    }
    state.lock().unwrap().uploads.push(received);
    json_reply(
        StatusCode::OK,
        &shoal_cluster_api::types::UpdateApplied {
            slot: "b".into(),
            version: "0.2.0".into(),
            signer: "ed25519:test".into(),
            bytes: received,
        },
    )
}

/// The answer, and whether it is a watch's with no changes.
fn answer(
    state: &Mutex<State>,
    method: Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> (Response<Full<Bytes>>, bool) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut s = state.lock().unwrap();
    let write = |s: &mut State, key: &str, value: Option<String>| -> Written {
        s.revision += 1;
        let revision = s.revision;
        let previous = match &value {
            Some(v) => s.kv.insert(
                key.into(),
                KeyValue {
                    key: key.into(),
                    value: v.clone(),
                    revision,
                },
            ),
            None => s.kv.remove(key),
        };
        s.changes.push(Change {
            revision,
            key: key.into(),
            value,
        });
        Written { revision, previous }
    };
    let response = match (method, segments.as_slice()) {
        (Method::GET, ["v1", "status"]) => json_reply(StatusCode::OK, &status(s.revision)),
        (Method::GET, ["v1", "nodes"]) => json_reply(StatusCode::OK, &nodes()),
        (Method::GET, ["v1", "nodes", id]) => {
            match nodes()
                .into_iter()
                .find(|n| n.id == *id || n.hostname == *id)
            {
                Some(n) => json_reply(StatusCode::OK, &n),
                None => error(StatusCode::NOT_FOUND, &format!("no node {id}")),
            }
        }
        (Method::GET, ["v1", "members"]) => {
            let member = |n: &NodeView| Member {
                id: n.id.clone(),
                addr: n.addr.clone(),
            };
            let all = nodes();
            json_reply(
                StatusCode::OK,
                &Members {
                    leader: Some(all[0].id.clone()),
                    voters: all[..2].iter().map(member).collect(),
                    learners: all[2..].iter().map(member).collect(),
                },
            )
        }
        (Method::GET, ["v1", "kv", key]) => match s.kv.get(*key) {
            Some(kv) => json_reply(StatusCode::OK, kv),
            None => error(StatusCode::NOT_FOUND, &format!("no key {key:?}")),
        },
        (Method::PUT, ["v1", "kv", key]) => {
            let put: Put = serde_json::from_slice(body).unwrap();
            let written = write(&mut s, key, Some(put.value));
            json_reply(StatusCode::OK, &written)
        }
        (Method::DELETE, ["v1", "kv", key]) => {
            let written = write(&mut s, key, None);
            json_reply(StatusCode::OK, &written)
        }
        (Method::POST, ["v1", "kv", key, "cas"]) => {
            let cas: Cas = serde_json::from_slice(body).unwrap();
            let current = s.kv.get(*key).cloned();
            if current.as_ref().map_or(0, |kv| kv.revision) != cas.expected {
                return (
                    json_reply(StatusCode::CONFLICT, &CasFailed { current }),
                    false,
                );
            }
            let written = write(&mut s, key, cas.value);
            json_reply(StatusCode::OK, &written)
        }
        (Method::GET, ["v1", "watch"]) => {
            let after: u64 = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("after="))
                .unwrap()
                .parse()
                .unwrap();
            s.watches += 1;
            // The log keeps the changes after revision 1 only: older ones are compacted.
            let watch = Watch {
                changes: s
                    .changes
                    .iter()
                    .filter(|c| c.revision > after.max(1))
                    .cloned()
                    .collect(),
                revision: s.revision,
                compacted: after < 1 && s.revision >= 1,
            };
            let nothing_yet = watch.changes.is_empty() && !watch.compacted;
            return (json_reply(StatusCode::OK, &watch), nothing_yet);
        }
        _ => error(StatusCode::NOT_FOUND, "not served"),
    };
    (response, false)
}

/// Serves the cluster API for `secret` on 127.0.0.1 from a thread with its own runtime;
/// returns the address.
fn serve(secret: &Secret, state: State) -> (String, Arc<Mutex<State>>) {
    let config = shoal_cluster_api::tls::server_config(&Identity::derive(secret)).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let state = Arc::new(Mutex::new(state));
    let served = state.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (acceptor, state) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    (address, state)
}

fn secret() -> Secret {
    SECRET.parse().unwrap()
}

/// A stand-in cluster that takes the admin credential, and a machine.toml for it.
fn cluster(dir: &Path) -> (String, Arc<Mutex<State>>, String) {
    let machine = dir.join("machine.toml");
    std::fs::write(&machine, format!("[cluster]\nsecret = \"{SECRET}\"\n")).unwrap();
    let (address, state) = serve(
        &secret(),
        State {
            tokens: vec![digest(&admin_credential(&secret()))],
            ..State::default()
        },
    );
    (address, state, machine.to_str().unwrap().to_string())
}

/// Success, stdout and stderr.
fn shoalctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .args(args)
        .env_remove("SHOALCTL_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `args` with `--machine-config machine --endpoint address`.
fn on(machine: &str, address: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--machine-config", machine, "--endpoint", address]);
    shoalctl(&all)
}

#[test]
fn status_nodes_and_members_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let (address, _, machine) = cluster(dir.path());
    let run = |args: &[&str]| {
        let (ok, out, err) = on(&machine, &address, args);
        assert!(ok, "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
        out
    };

    let out = run(&["status", "-o", "json"]);
    assert_eq!(serde_json::from_str::<Status>(&out).unwrap(), status(0));
    let out = run(&["status"]);
    assert!(out.starts_with("cluster:     lab\n"), "{out}");
    assert!(out.contains("quorum:      yes\n"), "{out}");
    let out = run(&["status", "-o", "yaml"]);
    assert!(out.contains("\ncluster_id: 00c0ffee00c0ffee\n"), "{out}");
    assert!(
        out.contains("\nlearners:\n  - \"0000000000000003\"\n"),
        "{out}"
    );

    let out = run(&["nodes", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<Vec<NodeView>>(&out).unwrap(),
        nodes()
    );
    let out = run(&["nodes"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "ID                HOSTNAME  ADDRESS        ROLE       HEALTHY  HEARTBEAT  VERSION  SLOT       LABELS",
            "0000000000000001  node-1    10.0.0.1:7700  leader     yes      0.3s       0.1.0    a (good)   rack=r1",
            "0000000000000002  node-2    10.0.0.2:7700  voter      yes      0.3s       0.2.0    b (trial)  rack=r1",
            "0000000000000003  node-3    10.0.0.3:7700  non-voter  yes      0.3s       0.1.0    -          rack=r1",
        ]
    );
    // The wire names, as scripts read them: a network boot's slot is null.
    let raw: serde_json::Value = serde_json::from_str(&run(&["nodes", "-o", "json"])).unwrap();
    assert_eq!(
        (&raw[1]["version"], &raw[1]["slot"], &raw[1]["slot_state"]),
        (
            &serde_json::json!("0.2.0"),
            &serde_json::json!("b"),
            &serde_json::json!("trial")
        )
    );
    assert_eq!(
        (&raw[2]["slot"], &raw[2]["slot_state"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
    let out = run(&["nodes", "-o", "yaml"]);
    assert!(
        out.starts_with("- addr: 10.0.0.1:7700\n  healthy: true\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  slot: b\n  slot_state: trial\n  version: 0.2.0\n"),
        "{out}"
    );
    assert!(
        out.contains("\n  slot: null\n  slot_state: null\n"),
        "{out}"
    );

    let out = run(&["node", "node-2", "-o", "json"]);
    assert_eq!(serde_json::from_str::<NodeView>(&out).unwrap(), nodes()[1]);
    let out = run(&["node", "node-2"]);
    assert!(
        out.contains("\nversion:    0.2.0\nslot:       b (trial)\n"),
        "{out}"
    );
    let out = run(&["node", "0000000000000003"]);
    assert!(out.starts_with("id:         0000000000000003\n"), "{out}");
    assert!(
        out.contains("\nslot:       - (booted over the network)\n"),
        "{out}"
    );
    assert!(
        out.contains("joined:     2025-06-01 12:00:00 UTC\n"),
        "{out}"
    );

    let out = run(&["members"]);
    assert_eq!(
        out,
        "\
ID                ROLE            ADDRESS
0000000000000001  voter (leader)  10.0.0.1:7700
0000000000000002  voter           10.0.0.2:7700
0000000000000003  learner         10.0.0.3:7700
"
    );
    let out = run(&["members", "-o", "json"]);
    let members: Members = serde_json::from_str(&out).unwrap();
    assert_eq!(members.voters.len(), 2);

    // The server's own message, as it is.
    let (ok, out, err) = on(&machine, &address, &["node", "node-9"]);
    assert!(!ok);
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("", "shoalctl: no node node-9 (HTTP 404)\n")
    );
}

#[test]
fn keys_are_put_read_compared_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (address, _, machine) = cluster(dir.path());
    let run = |args: &[&str]| on(&machine, &address, args);

    let (ok, out, err) = run(&["kv", "put", "k", "v1", "-o", "json"]);
    assert!(ok, "{err}");
    let written: Written = serde_json::from_str(&out).unwrap();
    assert_eq!((written.revision, written.previous), (1, None));
    // A value that starts with '-' goes after `--`.
    let (ok, out, err) = shoalctl(&[
        "kv",
        "put",
        "--machine-config",
        &machine,
        "--endpoint",
        &address,
        "k",
        "--",
        "-v2",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "k: written at revision 2 (was revision 1)\n");

    // Exactly the KeyValue object.
    let (ok, out, _) = run(&["kv", "get", "k", "-o", "json"]);
    assert!(ok);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"key": "k", "value": "-v2", "revision": 2})
    );
    let (ok, out, _) = run(&["kv", "get", "k"]);
    assert!(ok);
    assert_eq!(out, "key:       k\nvalue:     -v2\nrevision:  2\n");
    let (ok, out, _) = run(&["kv", "get", "k", "-o", "yaml"]);
    assert!(ok);
    assert_eq!(out, "key: k\nrevision: 2\nvalue: \"-v2\"\n");

    let (ok, out, err) = run(&["kv", "get", "missing", "-o", "json"]);
    assert!(!ok);
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("", "shoalctl: no key \"missing\"\n")
    );

    // A compare-and-set at the wrong revision tells the current one and exits 1.
    let (ok, out, err) = run(&["kv", "cas", "k", "1", "v3"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "shoalctl: k was not changed: its revision is 2, not 1; value -v2\n"
    );
    let (ok, out, err) = run(&["kv", "cas", "k", "0", "v3", "-o", "json"]);
    assert!(!ok);
    assert_eq!(err, "");
    let failed: CasFailed = serde_json::from_str(&out).unwrap();
    assert_eq!(failed.current.unwrap().revision, 2);
    let (ok, out, _) = run(&["kv", "cas", "k", "2", "v3"]);
    assert!(ok);
    assert_eq!(out, "k: written at revision 3 (was revision 2)\n");
    let (ok, out, _) = run(&["kv", "cas", "new", "0", "x"]);
    assert!(ok);
    assert_eq!(out, "new: written at revision 4 (a new key)\n");
    // Without a value: delete if the revision matches.
    let (ok, out, _) = run(&["kv", "cas", "new", "4"]);
    assert!(ok);
    assert_eq!(out, "new: deleted at revision 5 (was revision 4)\n");
    let (ok, _, err) = run(&["kv", "cas", "new", "4"]);
    assert!(!ok);
    assert_eq!(
        err,
        "shoalctl: new was not changed: it does not exist (expected revision 4)\n"
    );

    let (ok, out, _) = run(&["kv", "delete", "k"]);
    assert!(ok);
    assert_eq!(out, "k: deleted at revision 6 (was revision 3)\n");
    let (ok, out, _) = run(&["kv", "delete", "k", "-o", "json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Written>(&out).unwrap(),
        Written {
            revision: 7,
            previous: None
        }
    );
}

#[test]
fn watch_prints_the_changes_and_warns_of_compacted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (address, state, machine) = cluster(dir.path());
    let run = |args: &[&str]| on(&machine, &address, args);
    for (key, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
        assert!(run(&["kv", "put", key, value]).0);
    }
    assert!(run(&["kv", "delete", "b"]).0);

    let (ok, out, err) = run(&["watch", "--after", "1", "--once", "-o", "json"]);
    assert!(ok, "{err}");
    assert_eq!(err, "");
    let watch: Watch = serde_json::from_str(&out).unwrap();
    assert_eq!(watch.revision, 4);
    assert!(!watch.compacted);
    assert_eq!(
        watch.changes.iter().map(|c| c.revision).collect::<Vec<_>>(),
        [2, 3, 4]
    );

    let (ok, out, err) = run(&["watch", "--after", "1", "--once"]);
    assert!(ok, "{err}");
    assert_eq!(out, "2  b  2\n3  a  3\n4  b  (deleted)\n");

    // Without --after: from the current revision, so only what is written next.
    let child = Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .args(["watch", "--once", "--machine-config", &machine])
        .args(["--endpoint", &address])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its first watch call comes after it read the revision.
    let watches = state.lock().unwrap().watches;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while state.lock().unwrap().watches == watches {
        assert!(std::time::Instant::now() < deadline, "no watch call");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(run(&["kv", "put", "c", "new value"]).0);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5  c  new value\n");

    // Revision 1 is no longer kept: a warning, and the rest.
    let (ok, out, err) = run(&["watch", "--after", "0", "--once", "-o", "json"]);
    assert!(ok);
    assert!(serde_json::from_str::<Watch>(&out).unwrap().compacted);
    assert_eq!(
        err,
        "shoalctl: warning: the changes after revision 0 are no longer kept: some were missed \
         (read the keys again); going on from revision 5\n"
    );
}

#[test]
fn no_leader_and_unreachable_nodes_are_told_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (address, state, machine) = cluster(dir.path());
    state.lock().unwrap().no_leader = true;
    for args in [
        &["status"][..],
        &["kv", "put", "k", "v"],
        &["kv", "get", "k"],
    ] {
        let (ok, out, err) = on(&machine, &address, args);
        assert!(!ok);
        assert_eq!(out, "");
        assert_eq!(
            err,
            "shoalctl: no leader: this node hears from no quorum; try again when the cluster has \
             one (HTTP 503)\n"
        );
    }

    // Nothing listens on the first; the second answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap().to_string();
    drop(closed);
    state.lock().unwrap().no_leader = false;
    let (ok, _, err) = shoalctl(&[
        "status",
        "--machine-config",
        &machine,
        "--endpoint",
        &closed_address,
        "--endpoint",
        &address,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = on(&machine, &closed_address, &["status"]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!(
            "shoalctl: no endpoint answered: {closed_address}: "
        )),
        "{err}"
    );
}

#[test]
fn a_server_without_the_clusters_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other: Secret = OTHER_SECRET.parse().unwrap();
    let (address, _) = serve(
        &other,
        State {
            tokens: vec![digest(&admin_credential(&secret()))],
            ..State::default()
        },
    );
    let machine = dir.path().join("machine.toml");
    std::fs::write(&machine, format!("[cluster]\nsecret = \"{SECRET}\"\n")).unwrap();
    let (ok, _, err) = on(machine.to_str().unwrap(), &address, &["status"]);
    assert!(!ok);
    assert!(
        err.contains("the server does not hold the cluster's API key"),
        "{err}"
    );
}

#[test]
fn gen_config_files_connect_with_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    assert!(shoalctl(&["gen", "config", "--name", "lab", "--out", out_dir]).0);
    let machine = MachineConfig::parse(
        "machine.toml",
        &std::fs::read_to_string(dir.path().join("machine.toml")).unwrap(),
        None,
    )
    .unwrap();
    let secret = machine.cluster.secret.clone().unwrap();
    let admin_hash = machine.api.tokens["admin"].strip_prefix("sha256:").unwrap();
    // The nodes take the token whose hash machine.toml holds, not the admin credential.
    let (address, _) = serve(
        &secret,
        State {
            tokens: vec![admin_hash.to_string()],
            ..State::default()
        },
    );
    let client = dir.path().join("shoalctl.toml");
    let text = std::fs::read_to_string(&client).unwrap();
    assert!(
        text.contains(&format!(
            "\nserver_key = \"{}\"\n",
            Identity::derive(&secret).server_key()
        )),
        "{text}"
    );

    // No endpoints yet: said so.
    let (ok, _, err) = shoalctl(&["status", "--config", client.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.starts_with("shoalctl: no endpoints: list the nodes' cluster API addresses"));

    let (ok, out, err) = shoalctl(&[
        "kv",
        "put",
        "k",
        "v",
        "--config",
        client.to_str().unwrap(),
        "--endpoint",
        &address,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "k: written at revision 1 (a new key)\n");

    // With the endpoint in the file, found through $SHOALCTL_CONFIG.
    std::fs::write(
        &client,
        text.replace("endpoints = []", &format!("endpoints = [\"{address}\"]")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .args(["kv", "get", "k", "-o", "json"])
        .env("SHOALCTL_CONFIG", &client)
        .output()
        .unwrap();
    assert!(out.status.success());
    let kv: KeyValue = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((kv.value.as_str(), kv.revision), ("v", 1));

    // A machine configuration's secret gives the admin credential, which these nodes (a token
    // list of their own) do not take.
    let (ok, _, err) = on(
        dir.path().join("machine.toml").to_str().unwrap(),
        &address,
        &["status"],
    );
    assert!(!ok);
    assert_eq!(err, "shoalctl: unknown token (HTTP 401)\n");
}

/// A plain HTTP server on 127.0.0.1 that serves `body` once per connection.
fn web_server(body: Arc<Vec<u8>>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            );
            let _ = stream.write_all(&body);
        }
    });
    address
}

#[test]
fn update_apply_streams_a_file_or_a_download_and_tells_why_the_node_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (address, state, machine) = cluster(dir.path());
    let mut bundle = b"SHOAL-BUNDLE\0\0\0".to_vec();
    bundle.resize(5 << 20, 7);
    let file = dir.path().join("update.bundle");
    std::fs::write(&file, &bundle).unwrap();
    let (ok, out, err) = on(
        &machine,
        &address,
        &["update", "apply", file.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("0.2.0 installed in slot b (5.0 MiB in "),
        "{out}"
    );
    // Not a terminal: a progress line per quarter.
    assert!(err.contains("5.0 of 5.0 MiB (100%)"), "{err}");
    assert!(err.contains("of 5.0 MiB (25%)"), "{err}");

    // The same bundle from a web server, streamed on as it downloads.
    let web = web_server(Arc::new(bundle));
    let url = format!("http://{web}/shoal/update.bundle");
    let (ok, out, err) = on(&machine, &address, &["update", "apply", &url]);
    assert!(ok, "{out}{err}");
    assert_eq!(state.lock().unwrap().uploads, [5 << 20, 5 << 20]);

    // Not a bundle: the node refuses it from its first bytes, and the answer says why (not
    // "no answer", however much was still being sent).
    let junk = dir.path().join("junk.bundle");
    std::fs::write(&junk, vec![0u8; 64 << 20]).unwrap();
    let started = std::time::Instant::now();
    let (ok, _, err) = on(
        &machine,
        &address,
        &["update", "apply", junk.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains("not an update bundle (HTTP 409)"), "{err}");
    let read = state.lock().unwrap().uploads[2];
    assert!(read < 1 << 20, "refused after {read} bytes");
    println!(
        "refused after {read} bytes, answered in {:?}",
        started.elapsed()
    );

    // Missing file, bad URL: said before anything is sent.
    let (ok, _, err) = on(
        &machine,
        &address,
        &["update", "apply", "/nonexistent.bundle"],
    );
    assert!(!ok && err.contains("/nonexistent.bundle"), "{err}");
    let (ok, _, err) = on(&machine, &address, &["update", "apply", "ftp://x/b"]);
    assert!(!ok && err.contains("http:// or https://"), "{err}");
}
