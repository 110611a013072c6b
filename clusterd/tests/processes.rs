//! shoal-clusterd processes on loopback, a few per test: formation, failover, later joins and
//! a node with another secret. Each node listens on its own port and names the others as
//! seeds (broadcast needs a LAN; the VM tests cover it).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, parse_line};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-clusterd");

/// A running shoal-clusterd and its boot events.
struct Node {
    child: Child,
    events: Receiver<Event>,
    port: u16,
    started: Instant,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(config: &Path, port: u16) -> Node {
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(["--config"])
            .arg(config)
            .args(["--listen", &addr, "--advertise", &addr])
            .env("SHOAL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shoal-clusterd");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(record) = parse_line(&line)
                    && tx.send(record.event).is_err()
                {
                    break;
                }
            }
        });
        Node {
            child,
            events: rx,
            port,
            started: Instant::now(),
        }
    }

    /// Waits for the first event `pick` accepts.
    fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("node on port {}: no {what} within {within:?}", self.port)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("node on port {} exited before {what}", self.port)
                }
            }
        }
    }

    /// (cluster id, this node's id, leader, voter) once it is a member.
    fn membership(&self, within: Duration) -> (String, u64, u64, bool) {
        self.wait_for(within, "cluster.member", |e| match e {
            Event::ClusterMember {
                cluster_id,
                node,
                leader,
                voter,
                ..
            } => Some((cluster_id, node, leader, voter)),
            _ => None,
        })
    }
}

/// A port free for both TCP and UDP on 127.0.0.1.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn write_config(
    dir: &Path,
    name: &str,
    secret: &str,
    expected: u32,
    voters: u32,
    ports: &[u16],
) -> PathBuf {
    let seeds: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "version = 1\n[cluster]\nname = \"proc\"\nsecret = \"{secret}\"\nexpected_size = {expected}\nvoters = {voters}\nseeds = [{}]\n",
            seeds.join(", ")
        ),
    )
    .expect("write config");
    path
}

const SECRET: &str = "c2hvYWwgdGVzdCBzZWNyZXQsIDMyIGJ5dGVzIGxvbmch";
const OTHER_SECRET: &str = "YW5vdGhlciBjbHVzdGVyJ3Mgc2VjcmV0LCAzMiBieXRlcw==";

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
    let (cluster, _, leader, _) = members[0].clone();
    for (c, _, l, voter) in &members {
        assert_eq!((c, *l), (&cluster, leader), "{members:?}");
        assert!(voter, "the three initial nodes vote: {members:?}");
    }
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
