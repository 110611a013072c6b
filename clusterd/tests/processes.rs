//! shoal-clusterd processes on loopback, a few per test: formation, failover, later joins and
//! a node with another secret. Each node listens on its own port and names the others as
//! seeds (broadcast needs a LAN; the VM tests cover it).

mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use shoal_boot_events::Event;
use shoal_cluster_api::client::{CasOutcome, Client, ClientError};
use shoal_cluster_api::identity::Identity;
use support::{
    FakeDns, Node, OTHER_SECRET, SECRET, client, free_port, free_port_on, loopback, runtime,
    settled_leader, signal, write_config, write_config_seeds,
};

#[test]
fn three_nodes_form_one_cluster_survive_the_leader_and_take_in_late_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "c", SECRET, 3, 3, &ports);
    let nodes: Vec<Node> = ports[..3]
        .iter()
        .map(|p| Node::start(&config, *p))
        .collect();

    let members: Vec<_> = nodes
        .iter()
        .map(|n| n.membership(Duration::from_secs(20)))
        .collect();
    let formed = nodes[0].started.elapsed();
    let cluster = members[0].0.clone();
    for (c, _, _, voter) in &members {
        assert_eq!(c, &cluster, "{members:?}");
        assert!(voter, "the three initial nodes vote: {members:?}");
    }
    let leader = settled_leader(&nodes, Duration::from_secs(20));
    eprintln!(
        "formed: all three members {:.2} s after start",
        formed.as_secs_f64()
    );

    // Power cut on the leader: the other two elect one of themselves.
    let leader_index = members
        .iter()
        .position(|(_, id, _, _)| *id == leader)
        .expect("leader is a node");
    let mut nodes: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    let mut dead = nodes[leader_index].take().expect("running");
    dead.child.kill().unwrap();
    let cut = Instant::now();
    for node in nodes.iter().flatten() {
        let new_leader = node.wait_for(Duration::from_secs(10), "a new leader", |e| match e {
            Event::ClusterLeader { leader: l, .. } if l != leader => Some(l),
            _ => None,
        });
        assert!(members.iter().any(|(_, id, _, _)| *id == new_leader));
    }
    eprintln!(
        "failover: new leader seen by both {:.2} s after the kill",
        cut.elapsed().as_secs_f64()
    );
    drop(dead);

    // Two late nodes join the same cluster as non-voters (three voters are configured).
    let late: Vec<Node> = ports[3..]
        .iter()
        .map(|p| Node::start(&config, *p))
        .collect();
    for node in &late {
        let (c, _, _, voter) = node.membership(Duration::from_secs(20));
        assert_eq!(c, cluster, "a late node joined another cluster");
        assert!(!voter, "a late node starts as a learner");
    }
}

#[test]
fn a_node_with_another_secret_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let ours = write_config(dir.path(), "ours", SECRET, 2, 3, &ports);
    let theirs = write_config(dir.path(), "theirs", OTHER_SECRET, 2, 3, &ports);
    let a = Node::start(&ours, ports[0]);
    let b = Node::start(&ours, ports[1]);
    let stranger = Node::start(&theirs, ports[2]);
    let (ca, _, _, _) = a.membership(Duration::from_secs(20));
    let (cb, _, _, _) = b.membership(Duration::from_secs(20));
    assert_eq!(ca, cb);
    // The stranger, alone with its secret and expecting two, forms nothing and joins nothing.
    match stranger.events.recv_timeout(Duration::from_secs(3)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("the stranger should stay out: {other:?}"),
    }
}

#[test]
fn the_api_reads_and_writes_through_any_node_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "api", SECRET, 3, 3, &ports);
    let mut nodes: Vec<Node> = ports.iter().map(|p| Node::start(&config, *p)).collect();
    let members: Vec<_> = nodes
        .iter()
        .map(|n| n.membership(Duration::from_secs(20)))
        .collect();
    let cluster_id = members[0].0.clone();
    let leader = settled_leader(&nodes, Duration::from_secs(20));
    let rt = runtime();

    // Status and membership from a follower's point of view.
    let follower = members
        .iter()
        .position(|m| m.1 != leader)
        .expect("two followers");
    let api = client(SECRET, &[&nodes[follower]]);
    let status = rt.block_on(api.status()).unwrap();
    assert_eq!(status.cluster_id, cluster_id);
    assert_eq!(status.leader, Some(format!("{leader:016x}")));
    assert_eq!(
        (status.voters.len(), status.quorum),
        (3, true),
        "{status:?}"
    );
    let members_view = rt.block_on(api.members()).unwrap();
    assert_eq!(members_view.voters.len(), 3);

    // Writes through a follower, reads through another node, compare-and-set, watch.
    let other = client(SECRET, &[&nodes[(follower + 1) % 3]]);
    let first = rt.block_on(api.put("app/config", "v1")).unwrap();
    assert_eq!(first.previous, None);
    let read = rt
        .block_on(other.get("app/config"))
        .unwrap()
        .expect("the key exists");
    assert_eq!((read.value.as_str(), read.revision), ("v1", first.revision));
    assert_eq!(rt.block_on(other.get("absent")).unwrap(), None);
    match rt.block_on(other.cas("app/config", 0, Some("v2"))).unwrap() {
        CasOutcome::Failed(f) => assert_eq!(f.current.map(|c| c.value), Some("v1".into())),
        other => panic!("a stale compare-and-set succeeded: {other:?}"),
    }
    let second = match rt
        .block_on(other.cas("app/config", first.revision, Some("v2")))
        .unwrap()
    {
        CasOutcome::Written(w) => w,
        other => panic!("{other:?}"),
    };
    let watched = rt
        .block_on(api.watch(first.revision - 1, Duration::from_secs(5)))
        .unwrap();
    let seen: Vec<(u64, Option<&str>)> = watched
        .changes
        .iter()
        .map(|c| (c.revision, c.value.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [(first.revision, Some("v1")), (second.revision, Some("v2"))]
    );
    // A watch from the current revision waits for the next write.
    let waiting = std::thread::spawn({
        let api = client(SECRET, &[&nodes[0]]);
        let after = second.revision;
        move || runtime().block_on(api.watch(after, Duration::from_secs(10)))
    });
    std::thread::sleep(Duration::from_millis(300));
    rt.block_on(api.delete("app/config")).unwrap();
    let woken = waiting.join().unwrap().unwrap();
    assert_eq!(woken.changes.len(), 1);
    assert_eq!(woken.changes[0].value, None, "the delete");

    // Every node registers itself and heartbeats.
    let deadline = Instant::now() + Duration::from_secs(10);
    let nodes_view = loop {
        let view = rt.block_on(api.nodes()).unwrap();
        if view.len() == 3 && view.iter().all(|n| n.healthy) {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "nodes never all registered: {view:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(nodes_view.iter().filter(|n| n.role == "leader").count(), 1);
    let one = rt.block_on(api.node(&nodes_view[0].id)).unwrap();
    assert_eq!(
        (&one.id, &one.addr, &one.role),
        (&nodes_view[0].id, &nodes_view[0].addr, &nodes_view[0].role)
    );

    // A wrong token, a wrong server key, a bad key.
    let wrong_token = Client::new(
        vec![format!("127.0.0.1:{}", nodes[0].api)],
        "not-a-token".into(),
        Identity::derive(&SECRET.parse().unwrap()).public_key,
    )
    .unwrap();
    match rt.block_on(wrong_token.status()) {
        Err(ClientError::Api { status: 401, .. }) => {}
        other => panic!("a wrong token was let in: {other:?}"),
    }
    let impostor = client(OTHER_SECRET, &[&nodes[0]]);
    match rt.block_on(impostor.status()) {
        Err(ClientError::Unreachable(reason)) => assert!(reason.contains("TLS"), "{reason}"),
        other => panic!("a server with another key was trusted: {other:?}"),
    }
    match rt.block_on(api.put(&"k".repeat(600), "v")) {
        Err(ClientError::Api {
            status: 400,
            message,
        }) => assert!(message.contains("512"), "{message}"),
        other => panic!("{other:?}"),
    }

    // Two of three voters gone: no quorum, and the survivor says so.
    let survivor = (follower + 1) % 3;
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != survivor {
            node.child.kill().unwrap();
        }
    }
    let lonely = client(SECRET, &[&nodes[survivor]]).with_timeout(Duration::from_secs(15));
    let started = Instant::now();
    match rt.block_on(lonely.put("after-partition", "x")) {
        Err(ClientError::Api {
            status: 503,
            message,
        }) => {
            assert!(
                message.contains("no quorum")
                    || message.contains("no leader")
                    || message.contains("cannot reach"),
                "{message}"
            );
        }
        other => panic!("a write without quorum: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the refusal took {:?}",
        started.elapsed()
    );
    match rt.block_on(lonely.get("app/config")) {
        Err(ClientError::Api { status: 503, .. }) => {}
        other => panic!("a linearizable read without quorum: {other:?}"),
    }
}

#[test]
fn a_partitioned_leader_cannot_commit_while_the_majority_elects_and_writes_then_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, leader_id, leader) = three_members(dir.path(), "part");
    let majority: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let rt = runtime();
    rt.block_on(client(SECRET, &[&nodes[leader]]).put("k", "before"))
        .unwrap();

    // Cut the two followers off (stopped processes: they neither send nor answer), write on
    // the leader: the write must not commit.
    for i in &majority {
        signal(&nodes[*i], libc::SIGSTOP);
    }
    let minority = client(SECRET, &[&nodes[leader]]).with_timeout(Duration::from_secs(15));
    match rt.block_on(minority.put("k", "minority")) {
        Err(ClientError::Api {
            status: 503,
            message,
        }) => {
            assert!(message.contains("no quorum"), "{message}")
        }
        other => panic!("the minority side committed: {other:?}"),
    }
    // Swap the sides: the leader is cut off, the majority comes back, elects, and writes.
    signal(&nodes[leader], libc::SIGSTOP);
    for i in &majority {
        signal(&nodes[*i], libc::SIGCONT);
    }
    let majority_client = client(SECRET, &[&nodes[majority[0]], &nodes[majority[1]]]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let written = loop {
        match rt.block_on(majority_client.put("k", "majority")) {
            Ok(w) => break w,
            Err(e) => {
                assert!(Instant::now() < deadline, "the majority never wrote: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // The old leader comes back as a follower and serves the majority's value.
    signal(&nodes[leader], libc::SIGCONT);
    let healed = client(SECRET, &[&nodes[leader]]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(kv)) = rt.block_on(healed.get("k")) {
            assert_eq!(kv.value, "majority", "the minority's write survived");
            assert_eq!(kv.revision, written.revision);
            break;
        }
        assert!(Instant::now() < deadline, "the old leader never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = rt.block_on(healed.status()).unwrap();
    assert_ne!(
        status.leader,
        Some(format!("{leader_id:016x}")),
        "{status:?}"
    );
}

#[test]
fn a_watch_on_a_node_that_missed_a_write_waits_to_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _, leader) = three_members(dir.path(), "w");
    let (lagging, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let rt = runtime();
    let on_leader = client(SECRET, &[&nodes[leader]]);
    let on_lagging = client(SECRET, &[&nodes[lagging]]);
    let first = rt.block_on(on_leader.put("k", "v1")).unwrap();
    let seen = rt
        .block_on(on_lagging.watch(first.revision - 1, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(seen.changes.len(), 1, "{seen:?}");

    // One follower misses the second write (it is stopped; the other follower makes the
    // quorum), then the leader stops before it can send it on. The lagging node comes back
    // with only the first write: a watch there from before both must not answer with that
    // alone, but wait until it has the second, from whichever node leads by then.
    signal(&nodes[lagging], libc::SIGSTOP);
    let second = rt.block_on(on_leader.put("k", "v2")).unwrap();
    signal(&nodes[leader], libc::SIGSTOP);
    signal(&nodes[lagging], libc::SIGCONT);
    let watched = rt
        .block_on(on_lagging.watch(first.revision - 1, Duration::from_secs(15)))
        .unwrap();
    let revisions: Vec<u64> = watched.changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, [first.revision, second.revision], "{watched:?}");
    signal(&nodes[leader], libc::SIGCONT);
    let back = client(SECRET, &[&nodes[other]]);
    eventually("a quorum again", Duration::from_secs(10), || {
        rt.block_on(back.status()).ok().filter(|s| s.quorum)
    });
}

#[test]
fn a_whole_cluster_restarts_from_its_data_with_the_same_ids_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "disk", SECRET, 3, 3, &ports);
    let data: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("data{i}")))
        .collect();
    let start_all = || -> Vec<Node> {
        ports
            .iter()
            .zip(&data)
            .map(|(p, d)| Node::start_with(&config, *p, Some(d)))
            .collect()
    };
    let nodes = start_all();
    let before: Vec<_> = nodes
        .iter()
        .map(|n| n.membership(Duration::from_secs(20)))
        .collect();
    let rt = runtime();
    let written = rt
        .block_on(client(SECRET, &[&nodes[0]]).put("durable", "yes"))
        .unwrap();
    // A power cut on every node at once.
    drop(nodes);

    let nodes = start_all();
    let after: Vec<_> = nodes
        .iter()
        .map(|n| n.membership(Duration::from_secs(20)))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((&a.0, a.1), (&b.0, b.1), "same cluster, same node id");
    }
    let kv = rt
        .block_on(client(SECRET, &[&nodes[1]]).get("durable"))
        .unwrap()
        .expect("the write survived");
    assert_eq!((kv.value.as_str(), kv.revision), ("yes", written.revision));
    // Nobody formed anything the second time.
    for node in &nodes {
        while let Ok(event) = node.events.try_recv() {
            assert!(
                !matches!(event, Event::ClusterInitialize { .. }),
                "re-initialised"
            );
        }
    }
    // A node whose data is wiped comes back as a new member with a new id.
    let mut nodes = nodes;
    let wiped = nodes.pop().unwrap();
    drop(wiped);
    std::fs::remove_dir_all(&data[2]).unwrap();
    let fresh = Node::start_with(&config, ports[2], Some(&data[2]));
    let (cluster, id, _, _) = fresh.membership(Duration::from_secs(20));
    assert_eq!(cluster, after[0].0);
    assert_ne!(id, after[2].1, "a wiped node never reuses its id");
    // The others keep running: the old id's address now answers for another node, which
    // must not make the leader take it for the old member with a lost log.
    std::thread::sleep(Duration::from_secs(1));
    for node in &mut nodes {
        node.assert_running();
    }
}

#[test]
fn a_node_far_behind_catches_up_from_a_snapshot_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "snap", SECRET, 3, 3, &ports);
    let data: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("data{i}")))
        .collect();
    let start = |i: usize| {
        Node::start_args(
            &config,
            ports[i],
            Some(&data[i]),
            &["--snapshot-every", "20"],
        )
    };
    let mut nodes: Vec<Option<Node>> = (0..3).map(|i| Some(start(i))).collect();
    let members: Vec<_> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().membership(Duration::from_secs(20)))
        .collect();
    let leader = members.iter().position(|m| m.1 == m.2).unwrap();
    let behind = (leader + 1) % 3;
    let writer = (leader + 2) % 3;
    drop(nodes[behind].take());
    let rt = runtime();
    let api = client(SECRET, &[nodes[writer].as_ref().unwrap()]);
    for i in 0..60 {
        rt.block_on(api.put(&format!("key{i}"), &i.to_string()))
            .unwrap();
    }
    // The leader has snapshotted and dropped the log the stopped node misses.
    assert!(data[leader].join("snapshot.json").exists());
    let back = start(behind);
    let (_, id, _, _) = back.membership(Duration::from_secs(20));
    assert_eq!(id, members[behind].1, "the same identity");
    let status_api = client(SECRET, &[&back]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = rt.block_on(status_api.status()).unwrap();
        if status.revision >= 60 {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {status:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        data[behind].join("snapshot.json").exists(),
        "installed from a snapshot"
    );
}

#[test]
fn voters_grow_to_the_configured_count_and_a_dead_voter_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    // One node forms the cluster alone; three voters are wanted.
    let config = write_config(dir.path(), "grow", SECRET, 1, 3, &ports);
    let fast = ["--replace-after", "2s"];
    let first = Node::start_args(&config, ports[0], None, &fast);
    let (cluster, _, _, voter) = first.membership(Duration::from_secs(20));
    assert!(voter);
    let rt = runtime();
    let api = client(SECRET, &[&first]);
    let voters = |api: &shoal_cluster_api::client::Client| {
        rt.block_on(api.members())
            .map(|m| (m.voters.len(), m.learners.len()))
            .unwrap_or((0, 0))
    };
    assert_eq!(voters(&api), (1, 0));

    // A second node alone would make two voters, no safer than one: it stays a learner.
    let second = Node::start_args(&config, ports[1], None, &fast);
    let (second_cluster, second_id, _, _) = second.membership(Duration::from_secs(20));
    assert_eq!(second_cluster, cluster);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(voters(&api), (1, 1));

    // A third: both are promoted together.
    let third = Node::start_args(&config, ports[2], None, &fast);
    assert_eq!(third.membership(Duration::from_secs(20)).0, cluster);
    let deadline = Instant::now() + Duration::from_secs(15);
    while voters(&api) != (3, 0) {
        assert!(
            Instant::now() < deadline,
            "never three voters: {:?}",
            voters(&api)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A fourth joins as a learner; then a voter dies and the learner takes its place.
    let fourth = Node::start_args(&config, ports[3], None, &fast);
    let (_, fourth_id, _, _) = fourth.membership(Duration::from_secs(20));
    eventually(
        "three voters and one learner",
        Duration::from_secs(10),
        || (voters(&api) == (3, 1)).then_some(()),
    );
    let second_id = format!("{second_id:016x}");
    // The fourth registers about a second after it is a member; the view to watch from must
    // have it, or the watch would report that instead of the death.
    let fourth_hex = format!("{fourth_id:016x}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let view = rt.block_on(api.watch_nodes("", Duration::ZERO)).unwrap();
        if view.nodes.len() == 4 && view.nodes.iter().all(|n| n.healthy) {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "the fourth never registered: {view:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(before.nodes.iter().any(|n| n.id == fourth_hex));
    drop(second);
    // A watcher of the nodes hears of it: unhealthy, then replaced.
    let watched = Instant::now();
    let changed = rt
        .block_on(api.watch_nodes(&before.tag, Duration::from_secs(15)))
        .unwrap();
    assert_ne!(
        changed.tag, before.tag,
        "the watch timed out instead of reporting the change"
    );
    assert!(watched.elapsed() < Duration::from_secs(10));
    let gone = changed
        .nodes
        .iter()
        .find(|n| n.id == second_id)
        .expect("still listed");
    assert!(!gone.healthy || gone.role != "voter", "{gone:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let members = rt.block_on(api.members()).unwrap();
        let ids: Vec<&str> = members.voters.iter().map(|m| m.id.as_str()).collect();
        if members.voters.len() == 3 && ids.contains(&format!("{fourth_id:016x}").as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead voter was never replaced: {members:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((third, fourth));
}

/// Waits until `check` passes on a call's result (the cluster applies things within seconds).
fn eventually<T>(what: &str, within: Duration, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts a node on each port with `flag` naming its own file, and waits until all are members:
/// the nodes and their ids (16 hex digits).
/// Three nodes started together, once they are members: the nodes, the leader they agree on
/// and its index.
fn three_members(dir: &Path, name: &str) -> (Vec<Node>, u64, usize) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = write_config(dir, name, SECRET, 3, 3, &ports);
    let nodes: Vec<Node> = ports.iter().map(|p| Node::start(&config, *p)).collect();
    let ids: Vec<u64> = nodes
        .iter()
        .map(|n| n.membership(Duration::from_secs(20)).1)
        .collect();
    let leader_id = settled_leader(&nodes, Duration::from_secs(20));
    let leader = ids
        .iter()
        .position(|id| *id == leader_id)
        .expect("a node leads");
    (nodes, leader_id, leader)
}

fn start_members_each_with(
    config: &Path,
    ports: &[u16],
    flag: &str,
    files: &[PathBuf],
) -> (Vec<Node>, Vec<String>) {
    let nodes: Vec<Node> = ports
        .iter()
        .zip(files)
        .map(|(p, f)| Node::start_args(config, *p, None, &[flag, &f.to_string_lossy()]))
        .collect();
    let ids = nodes
        .iter()
        .map(|n| format!("{:016x}", n.membership(Duration::from_secs(20)).1))
        .collect();
    (nodes, ids)
}

#[test]
fn each_node_publishes_its_hardware_inventory_and_republishes_it_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "hw", SECRET, 2, 3, &ports);
    // A real inventory (this machine's) and a changed copy, as after a disk hotplug.
    let mut inventory =
        shoal_inventory::collect(&shoal_inventory::Roots::host(), &shoal_inventory::Live);
    let files: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("inventory-{i}.json")))
        .collect();
    std::fs::write(&files[0], serde_json::to_vec(&inventory).unwrap()).unwrap();
    let (nodes, ids) = start_members_each_with(&config, &ports, "--inventory", &files);
    let rt = runtime();
    let api = client(SECRET, &[&nodes[1]]);

    let published = eventually("node 0's inventory", Duration::from_secs(10), || {
        rt.block_on(api.inventory(&ids[0])).ok()
    });
    assert_eq!(published.labels, inventory.labels);
    assert_eq!(published.cpu, inventory.cpu);
    let view = rt.block_on(api.node(&ids[0])).unwrap();
    assert_eq!(view.hardware_labels, inventory.labels);
    assert!(view.hardware.unwrap().contains("threads"));

    // Node 1 has no inventory file: a clear 404, and its node view says nothing.
    match rt.block_on(api.inventory(&ids[1])) {
        Err(ClientError::Api {
            status: 404,
            message,
        }) => {
            assert!(message.contains("no hardware inventory"), "{message}")
        }
        other => panic!("an inventory out of nowhere: {other:?}"),
    }
    assert_eq!(rt.block_on(api.node(&ids[1])).unwrap().hardware, None);
    match rt.block_on(api.inventory("no-such-node")) {
        Err(ClientError::Api {
            status: 404,
            message,
        }) => {
            assert!(message.contains("no node"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // The file appears on node 1, and changes on node 0 (a disk came): both show up.
    std::fs::write(&files[1], serde_json::to_vec(&inventory).unwrap()).unwrap();
    inventory
        .storage
        .disks
        .push(shoal_inventory::storage::Disk {
            name: "sdz".into(),
            size_bytes: 1 << 30,
            ..Default::default()
        });
    inventory.labels.insert("disk.count".into(), "99".into());
    std::fs::write(&files[0], serde_json::to_vec(&inventory).unwrap()).unwrap();
    eventually("node 1's inventory", Duration::from_secs(10), || {
        rt.block_on(api.inventory(&ids[1])).ok()
    });
    eventually("node 0's new disk", Duration::from_secs(10), || {
        let got = rt.block_on(api.inventory(&ids[0])).ok()?;
        got.storage
            .disks
            .iter()
            .any(|d| d.name == "sdz")
            .then_some(())
    });
    assert_eq!(
        rt.block_on(api.node(&ids[0])).unwrap().hardware_labels["disk.count"],
        "99"
    );

    // A broken file is not published: the last good inventory stays.
    std::fs::write(&files[0], b"{\"schema\": \"garbage\"").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let still = rt.block_on(api.inventory(&ids[0])).unwrap();
    assert!(still.storage.disks.iter().any(|d| d.name == "sdz"));
}

#[test]
fn a_silent_non_voter_is_forgotten_and_taken_back_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "forget", SECRET, 3, 3, &ports);
    let fast = ["--forget-after", "3s"];
    let nodes: Vec<Node> = ports[..3]
        .iter()
        .map(|p| Node::start_args(&config, *p, None, &fast))
        .collect();
    for n in &nodes {
        n.membership(Duration::from_secs(20));
    }
    let late = Node::start_args(&config, ports[3], None, &fast);
    let (_, late_id, _, voter) = late.membership(Duration::from_secs(20));
    assert!(!voter);
    let late_id = format!("{late_id:016x}");
    let rt = runtime();
    let api = client(SECRET, &[&nodes[0], &nodes[1], &nodes[2]]);
    let listed = |api: &Client| {
        let nodes = rt.block_on(api.nodes()).unwrap_or_default();
        let learners = rt
            .block_on(api.members())
            .map(|m| m.learners.iter().map(|l| l.id.clone()).collect::<Vec<_>>())
            .unwrap_or_default();
        (
            nodes.iter().any(|n| n.id == late_id && n.healthy),
            nodes.iter().any(|n| n.id == late_id),
            learners.contains(&late_id),
        )
    };
    eventually("the late node registered", Duration::from_secs(10), || {
        (listed(&api) == (true, true, true)).then_some(())
    });

    // Silent (stopped) past the forget delay: out of the membership and the node list.
    signal(&late, libc::SIGSTOP);
    let stopped = Instant::now();
    eventually(
        "the silent learner forgotten",
        Duration::from_secs(20),
        || (listed(&api) == (false, false, false)).then_some(()),
    );
    eprintln!(
        "forgotten {:.1} s after it went silent (forget delay 3 s)",
        stopped.elapsed().as_secs_f64()
    );

    // Back: told it is unknown, it registers again and is a learner once more.
    signal(&late, libc::SIGCONT);
    eventually("the node taken back", Duration::from_secs(20), || {
        (listed(&api) == (true, true, true)).then_some(())
    });
    let members = rt.block_on(api.members()).unwrap();
    assert_eq!(members.voters.len(), 3, "{members:?}");
}

#[test]
fn nodes_publish_their_image_version_and_boot_slot() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let config = write_config(dir.path(), "image", SECRET, 2, 3, &ports);
    // Node 0 runs an image (its os-release as image-build writes it); node 1 has no os-release
    // and publishes clusterd's own version.
    let os_release = dir.path().join("os-release");
    std::fs::write(
        &os_release,
        "NAME=Shoal\nID=shoal\nVERSION_ID=7.7.7-test\nVERSION=\"7.7.7-test (test)\"\n",
    )
    .unwrap();
    let missing = dir.path().join("no-os-release");
    let (nodes, ids) =
        start_members_each_with(&config, &ports, "--os-release", &[os_release, missing]);
    let rt = runtime();
    let api = client(SECRET, &[&nodes[1]]);
    let listed = eventually("both nodes registered", Duration::from_secs(10), || {
        let all = rt.block_on(api.nodes()).ok()?;
        (all.len() == 2).then_some(all)
    });
    let published = |id: &str| {
        let n = listed.iter().find(|n| n.id == id).expect("listed");
        (
            n.version.as_str(),
            n.slot.as_deref(),
            n.slot_state.as_deref(),
        )
    };
    // Processes on a host are not booted from a slot: like a PXE node, no slot at all.
    assert_eq!(published(&ids[0]), ("7.7.7-test", None, None));
    assert_eq!(published(&ids[1]), (env!("CARGO_PKG_VERSION"), None, None));
    let one = rt.block_on(api.node(&ids[0])).unwrap();
    assert_eq!((one.version.as_str(), one.slot), ("7.7.7-test", None));
}

#[test]
fn nodes_find_each_other_through_a_seed_name_alone() {
    // Three nodes on one port and three loopback addresses, each bound to its own: they hear
    // no broadcast, and their only seed is a name whose nameserver answers with all three
    // addresses. A node that ignored names would never hear of the others.
    let dir = tempfile::tempdir().unwrap();
    let ips = [loopback(1), loopback(2), loopback(3)];
    // The nameserver first, so that the nodes' port is not the one it took.
    let dns = FakeDns::start("cluster.shoal.test", &ips);
    let port = free_port_on(&ips);
    let apis: Vec<u16> = ips
        .iter()
        .map(|_| {
            std::iter::repeat_with(free_port)
                .find(|p| *p != port)
                .unwrap()
        })
        .collect();
    let config = write_config_seeds(
        dir.path(),
        "names",
        SECRET,
        3,
        3,
        &[format!("cluster.shoal.test:{port}")],
    );
    let nameserver = dns.address.to_string();
    let mut nodes: Vec<Node> = ips
        .iter()
        .zip(&apis)
        .map(|(ip, api)| {
            Node::start_on(
                &config,
                *ip,
                port,
                *api,
                None,
                &["--nameserver", &nameserver],
            )
        })
        .collect();

    // The name does not exist yet (the nameserver is behind, or the DNS record not there):
    // every node asks again, and none forms anything alone.
    eventually("each node asking twice", Duration::from_secs(20), || {
        nodes.iter_mut().for_each(Node::assert_running);
        (dns.asked() >= 2 * ips.len()).then_some(())
    });
    for node in &nodes {
        match node.events.try_recv() {
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            other => panic!("a node went ahead without its seed: {other:?}"),
        }
    }

    dns.answer();
    let members: Vec<_> = nodes
        .iter()
        .map(|n| n.membership(Duration::from_secs(20)))
        .collect();
    for (cluster, _, leader, voter) in &members {
        assert_eq!(
            (cluster, *leader),
            (&members[0].0, members[0].2),
            "{members:?}"
        );
        assert!(voter, "{members:?}");
    }
    let rt = runtime();
    let api = client(SECRET, &[&nodes[0]]);
    let mut addresses = eventually("three nodes registered", Duration::from_secs(10), || {
        let all = rt.block_on(api.nodes()).ok()?;
        (all.len() == 3).then(|| all.into_iter().map(|n| n.addr).collect::<Vec<_>>())
    });
    addresses.sort();
    assert_eq!(
        addresses,
        ips.iter()
            .map(|ip| format!("{ip}:{port}"))
            .collect::<Vec<_>>()
    );
}
