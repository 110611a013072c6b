//! The local API (`org.shoal.Cluster1`, D-Bus peer to peer) of real shoal-clusterd processes
//! on loopback, each node on its own `--local-socket`: what a service on a node sees through
//! its own node's socket, and who may use the key-value space.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use shoal_api::cluster::{ClusterClient, ClusterError};
use support::{Node, SECRET, client, free_port, runtime, settled_leader, write_config};

/// Set in the child this test runs as another user: the socket it talks to.
const CHILD: &str = "SHOAL_CLUSTERD_LOCAL_API_CHILD_SOCKET";
const TEST: &str = "a_cluster_serves_its_nodes_local_services_over_their_own_sockets";

#[test]
fn a_cluster_serves_its_nodes_local_services_over_their_own_sockets() {
    if let Some(path) = std::env::var_os(CHILD) {
        let outcome = runtime().block_on(unprivileged(Path::new(&path)));
        println!("\nCHILD-OUTCOME {outcome}");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        panic!("this test runs as root (CI does): it switches a child to uid 65534");
    }
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "local", SECRET, 3, 3, &ports);
    let mut nodes: Vec<Node> = ports.iter().map(|p| Node::start(&config, *p)).collect();
    let members: Vec<_> = nodes
        .iter()
        .map(|n| n.membership(Duration::from_secs(20)))
        .collect();
    let cluster_id = members[0].0.clone();
    let leader = settled_leader(&nodes, Duration::from_secs(20));
    let rt = runtime();
    let clients: Vec<ClusterClient> = nodes
        .iter()
        .map(|n| rt.block_on(ClusterClient::connect(&n.local)).unwrap())
        .collect();

    // Each node's socket answers for that node: a member of the one cluster, same leader.
    for (i, client) in clients.iter().enumerate() {
        let status = rt.block_on(client.status()).unwrap();
        let (_, id, _, _) = members[i];
        assert_eq!(
            (
                status.cluster.as_str(),
                status.cluster_id.as_str(),
                status.node.clone(),
                status.leader.clone()
            ),
            (
                "proc",
                cluster_id.as_str(),
                format!("{id:016x}"),
                format!("{leader:016x}")
            ),
            "{status:?}"
        );
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(status.role, role, "{status:?}");
        assert_eq!(
            (status.member_count(), status.voter_count(), status.quorum),
            (3, 3, true),
            "{status:?}"
        );
    }

    // Every node registers itself; one node by id or hostname, and a clear miss.
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = rt.block_on(clients[0].nodes()).unwrap();
        if view.len() == 3 && view.iter().all(|n| n.healthy) {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "nodes never all registered: {view:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(view.iter().filter(|n| n.role == "leader").count(), 1);
    let leader_id = format!("{leader:016x}");
    assert!(view.iter().any(|n| n.id == leader_id), "{view:?}");
    let one = rt.block_on(clients[1].node(&view[2].id)).unwrap();
    assert_eq!((&one.id, &one.addr), (&view[2].id, &view[2].addr));
    match rt.block_on(clients[1].node("nope")) {
        Err(ClusterError::NotFound(m)) => assert_eq!(m, "no node nope"),
        other => panic!("{other:?}"),
    }

    // Slots as the HTTPS API reports them, `null` an empty string. No node here booted from
    // a disk slot (a unit test in local.rs covers one that did).
    let https = rt.block_on(client(SECRET, &[&nodes[0]]).nodes()).unwrap();
    for node in view.iter().chain([&one]) {
        let same = https
            .iter()
            .find(|n| n.id == node.id)
            .unwrap_or_else(|| panic!("{} in {https:?}", node.id));
        let slot = |s: &Option<String>| s.clone().unwrap_or_default();
        assert_eq!(
            (node.slot.clone(), node.slot_state.clone()),
            (slot(&same.slot), slot(&same.slot_state)),
            "{node:?} against {same:?}"
        );
        assert_eq!(
            (node.slot.as_str(), node.slot_state.as_str()),
            ("", ""),
            "{node:?}"
        );
    }

    // Writes through one follower, a linearizable read through another node.
    let follower = members.iter().position(|m| m.1 != leader).unwrap();
    let other = (follower + 1) % 3;
    let first = rt
        .block_on(clients[follower].kv_put("app/config", "v0"))
        .unwrap();
    assert!(first.previous.is_empty(), "{first:?}");
    let put = rt
        .block_on(clients[follower].kv_put("app/config", "v1"))
        .unwrap();
    assert_eq!(
        (put.previous[0].value.as_str(), put.previous[0].revision),
        ("v0", first.revision)
    );
    let read = rt
        .block_on(clients[other].kv_get("app/config"))
        .unwrap()
        .expect("the key exists");
    assert_eq!((read.value.as_str(), read.revision), ("v1", put.revision));
    assert_eq!(rt.block_on(clients[other].kv_get("absent")).unwrap(), None);

    // Compare-and-set: a stale revision is refused and says what the key holds.
    refused_as_stale(
        rt.block_on(clients[other].kv_cas("app/config", first.revision, "v2")),
        "app/config",
        put.revision,
        first.revision,
    );
    let cas = rt
        .block_on(clients[other].kv_cas("app/config", put.revision, "v2"))
        .unwrap();
    assert_eq!(cas.previous[0].value, "v1");

    // A watch from before both writes answers at once; one from now is woken by the next
    // write under its prefix and not by another key's.
    let both = rt
        .block_on(clients[0].watch("app/", first.revision, Duration::from_secs(5)))
        .unwrap();
    let seen: Vec<(u64, &str)> = both
        .changes
        .iter()
        .map(|c| (c.revision, c.value.as_str()))
        .collect();
    assert_eq!(seen, [(put.revision, "v1"), (cas.revision, "v2")]);
    let waiting = std::thread::spawn({
        let path = nodes[0].local.clone();
        let after = cas.revision;
        move || {
            runtime().block_on(async {
                let client = ClusterClient::connect(&path).await.unwrap();
                let started = Instant::now();
                let watched = client.watch("app/", after, Duration::from_secs(20)).await;
                (watched, started.elapsed())
            })
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    rt.block_on(clients[follower].kv_put("elsewhere", "x"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let deleted = rt
        .block_on(clients[follower].kv_delete("app/config"))
        .unwrap();
    assert_eq!(deleted.previous[0].value, "v2");
    let (woken, waited) = waiting.join().unwrap();
    let woken = woken.unwrap();
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    assert_eq!(woken.changes.len(), 1, "{woken:?}");
    let change = &woken.changes[0];
    assert_eq!(
        (change.key.as_str(), change.revision, change.deleted),
        ("app/config", deleted.revision, true)
    );
    assert_eq!(woken.revision, deleted.revision);

    // A compare-and-set that deletes: a stale revision is refused and leaves the key; the
    // current one deletes it for every node, and answers with what it held.
    let leased = rt
        .block_on(clients[follower].kv_put("app/lease", "holder-1"))
        .unwrap();
    let renewed = rt
        .block_on(clients[follower].kv_put("app/lease", "holder-2"))
        .unwrap();
    refused_as_stale(
        rt.block_on(clients[other].kv_cas_delete("app/lease", leased.revision)),
        "app/lease",
        renewed.revision,
        leased.revision,
    );
    let kept = rt
        .block_on(clients[0].kv_get("app/lease"))
        .unwrap()
        .expect("a refused compare-and-delete leaves the key");
    assert_eq!(
        (kept.value.as_str(), kept.revision),
        ("holder-2", renewed.revision)
    );
    let removed = rt
        .block_on(clients[other].kv_cas_delete("app/lease", renewed.revision))
        .unwrap();
    assert_eq!(
        removed
            .previous
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str(), kv.revision))
            .collect::<Vec<_>>(),
        [("app/lease", "holder-2", renewed.revision)]
    );
    assert!(removed.revision > renewed.revision, "{removed:?}");
    assert_eq!(
        rt.block_on(clients[follower].kv_get("app/lease")).unwrap(),
        None,
        "deleted, as another node reads it"
    );
    // Gone: its last revision no longer matches; 0 (absent) does, as in the HTTPS API's
    // compare-and-set with a `null` value: nothing to remove, yet a revision is written.
    match rt.block_on(clients[other].kv_cas_delete("app/lease", renewed.revision)) {
        Err(ClusterError::CasFailed(m)) => assert_eq!(
            m,
            format!(
                "\"app/lease\" was not changed: it does not exist (expected revision {})",
                renewed.revision
            )
        ),
        other => panic!("a compare-and-delete of a deleted key: {other:?}"),
    }
    let absent = rt
        .block_on(clients[other].kv_cas_delete("app/lease", 0))
        .unwrap();
    assert!(absent.previous.is_empty(), "{absent:?}");
    assert!(absent.revision > removed.revision, "{absent:?}");
    rt.block_on(clients[follower].kv_put("app/lease", "holder-3"))
        .unwrap();
    match rt.block_on(clients[other].kv_cas_delete("app/lease", 0)) {
        Err(ClusterError::CasFailed(m)) => assert!(
            m.starts_with("\"app/lease\" was not changed: it exists (expected it absent)"),
            "{m}"
        ),
        other => panic!("a compare-and-delete expecting an absent key: {other:?}"),
    }

    // The HTTPS API's refusals, by name.
    match rt.block_on(clients[0].kv_put(&"k".repeat(600), "v")) {
        Err(ClusterError::Invalid(m)) => {
            assert_eq!(m, "the key is 600 bytes; the limit is 512")
        }
        other => panic!("{other:?}"),
    }

    // A local user who is neither root nor an admin sees the cluster but not its keys, and
    // changes none: the key-value space's revision stays.
    let revision = |client: &ClusterClient| {
        rt.block_on(client.kv_get("app/lease")).unwrap();
        rt.block_on(client.status()).unwrap().revision
    };
    let before = revision(&clients[other]);
    let outcome = rerun_as(65534, &nodes[follower].local);
    let denied = "the cluster's key-value space needs root or the admin group (the cluster's \
                  status and nodes are open to every local user)";
    assert_eq!(
        outcome,
        format!(
            "status={cluster_id} nodes=3 | get=AccessDenied({denied}) | \
             put=AccessDenied({denied}) | cas=AccessDenied({denied}) | \
             cas delete=AccessDenied({denied}) | delete=AccessDenied({denied}) | \
             watch=AccessDenied({denied})"
        )
    );
    assert_eq!(
        rt.block_on(clients[other].kv_get("app/config")).unwrap(),
        None,
        "the refused put wrote nothing"
    );
    assert_eq!(
        rt.block_on(clients[other].kv_get("app/lease"))
            .unwrap()
            .map(|kv| kv.value),
        Some("holder-3".into()),
        "the refused compare-and-delete left the key"
    );
    assert_eq!(
        revision(&clients[other]),
        before,
        "the refused writes wrote nothing"
    );

    // Two of three nodes gone: no quorum, and the survivor's socket says so.
    let survivor = other;
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != survivor {
            node.child.kill().unwrap();
        }
    }
    let started = Instant::now();
    match rt.block_on(clients[survivor].kv_put("after-partition", "x")) {
        Err(ClusterError::Unavailable(m)) => assert!(
            m.contains("no quorum") || m.contains("no leader") || m.contains("cannot reach"),
            "{m}"
        ),
        other => panic!("a write without quorum: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the refusal took {:?}",
        started.elapsed()
    );
}

/// Runs this test again as `uid` (and its gid) against the socket at `path`, and returns what
/// the child printed after `CHILD-OUTCOME `.
fn rerun_as(uid: u32, path: &Path) -> String {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, path)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-OUTCOME ").map(|(_, o)| o.to_owned()))
        .unwrap_or_else(|| {
            format!(
                "no outcome: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// In the child: what a peer that is neither root nor an admin may do.
async fn unprivileged(path: &Path) -> String {
    fn outcome<T>(r: Result<T, ClusterError>) -> String {
        match r {
            Ok(_) => "allowed".into(),
            Err(ClusterError::AccessDenied(m)) => format!("AccessDenied({m})"),
            Err(e) => format!("{e:?}"),
        }
    }
    let client = match ClusterClient::connect(path).await {
        Ok(c) => c,
        Err(e) => return format!("connect: {e}"),
    };
    let status = match client.status().await {
        Ok(s) => s.cluster_id,
        Err(e) => format!("{e:?}"),
    };
    let nodes = match client.nodes().await {
        Ok(n) => n.len().to_string(),
        Err(e) => format!("{e:?}"),
    };
    // Each write would succeed if it were allowed: `app/config` is absent, `app/lease` exists.
    format!(
        "status={status} nodes={nodes} | get={} | put={} | cas={} | cas delete={} | delete={} | \
         watch={}",
        outcome(client.kv_get("app/config").await),
        outcome(client.kv_put("app/config", "intruder").await),
        outcome(client.kv_cas("app/config", 0, "intruder").await),
        outcome(client.kv_cas_delete("app/config", 0).await),
        outcome(client.kv_delete("app/lease").await),
        outcome(client.watch("", 0, Duration::ZERO).await),
    )
}

/// A compare-and-set refused because `key` is at revision `current`, not `expected`.
fn refused_as_stale<T: std::fmt::Debug>(
    outcome: Result<T, ClusterError>,
    key: &str,
    current: u64,
    expected: u64,
) {
    match outcome {
        Err(ClusterError::CasFailed(m)) => assert_eq!(
            m,
            format!("{key:?} was not changed: its revision is {current}, not {expected}")
        ),
        other => panic!("a stale compare-and-set on {key}: {other:?}"),
    }
}
