//! The harness for tests that run shoal-clusterd processes on loopback: each node listens on
//! its own ports and names the others as seeds (broadcast needs a LAN; the VM tests cover it).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, parse_line};
use shoal_cluster_api::client::Client;
use shoal_cluster_api::identity::{Identity, admin_credential};
use shoal_config::secret::Secret;

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal-clusterd");

/// A running shoal-clusterd and its boot events.
pub struct Node {
    pub child: Child,
    pub events: Receiver<Event>,
    pub port: u16,
    /// The cluster API's port.
    pub api: u16,
    /// The local API's socket (`--local-socket`), in a directory of its own that every user
    /// may enter.
    pub local: PathBuf,
    pub started: Instant,
    /// Removed after the process is killed (fields drop after `Drop::drop`).
    _local_dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    pub fn start(config: &Path, port: u16) -> Node {
        Node::start_with(config, port, None)
    }

    /// Starts a node that keeps its identity and consensus state in `data` (else in memory).
    pub fn start_with(config: &Path, port: u16, data: Option<&Path>) -> Node {
        Node::start_args(config, port, data, &[])
    }

    pub fn start_args(config: &Path, port: u16, data: Option<&Path>, extra: &[&str]) -> Node {
        Node::start_full(config, port, free_port(), data, extra)
    }

    /// Starts a node with its API on a given port (a restarted node keeps its address).
    pub fn start_full(
        config: &Path,
        port: u16,
        api: u16,
        data: Option<&Path>,
        extra: &[&str],
    ) -> Node {
        Node::start_on(config, Ipv4Addr::LOCALHOST, port, api, data, extra)
    }

    /// Starts a node on another loopback address than 127.0.0.1 (its API stays there). A
    /// node bound to one address hears no broadcast, so nodes on one port but several
    /// addresses find each other only through what they are told.
    pub fn start_on(
        config: &Path,
        ip: Ipv4Addr,
        port: u16,
        api: u16,
        data: Option<&Path>,
        extra: &[&str],
    ) -> Node {
        let addr = format!("{ip}:{port}");
        let local_dir = tempfile::tempdir().expect("a directory for the local socket");
        std::fs::set_permissions(
            local_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod the local socket's directory");
        let local = local_dir.path().join("clusterd.sock");
        let mut command = Command::new(BIN);
        // Never the node's real /run/shoal/clusterd.sock; `extra` may name another.
        command.arg("--local-socket").arg(&local);
        command.args(extra);
        match data {
            Some(dir) => command.arg("--data-dir").arg(dir),
            None => command.arg("--diskless"),
        };
        let mut child = command
            .args(["--config"])
            .arg(config)
            .args(["--listen", &addr, "--advertise", &addr])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
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
            api,
            local,
            started: Instant::now(),
            _local_dir: local_dir,
        }
    }

    /// Fails the test if the process has exited (a panic, a fatal storage error).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("node on port {} exited: {status}", self.port);
        }
    }

    /// Waits for the first event `pick` accepts.
    pub fn wait_for<T>(
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
    pub fn membership(&self, within: Duration) -> (String, u64, u64, bool) {
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
pub fn free_port() -> u16 {
    free_port_on(&[Ipv4Addr::LOCALHOST])
}

/// A port free for both TCP and UDP on each of these addresses.
pub fn free_port_on(ips: &[Ipv4Addr]) -> u16 {
    loop {
        let tcp = TcpListener::bind((ips[0], 0)).expect("bind tcp");
        let port = tcp.local_addr().expect("local addr").port();
        let free = |ip: &Ipv4Addr| {
            UdpSocket::bind((*ip, port)).is_ok()
                && (*ip == ips[0] || TcpListener::bind((*ip, port)).is_ok())
        };
        if ips.iter().all(free) {
            return port;
        }
    }
}

pub fn write_config(
    dir: &Path,
    name: &str,
    secret: &str,
    expected: u32,
    voters: u32,
    ports: &[u16],
) -> PathBuf {
    let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    write_config_seeds(dir, name, secret, expected, voters, &seeds)
}

/// A configuration with these `cluster.seeds` (`host:port`).
pub fn write_config_seeds(
    dir: &Path,
    name: &str,
    secret: &str,
    expected: u32,
    voters: u32,
    seeds: &[String],
) -> PathBuf {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
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

pub const SECRET: &str = "c2hvYWwgdGVzdCBzZWNyZXQsIDMyIGJ5dGVzIGxvbmch";
pub const OTHER_SECRET: &str = "YW5vdGhlciBjbHVzdGVyJ3Mgc2VjcmV0LCAzMiBieXRlcw==";

pub fn client(secret: &str, endpoints: &[&Node]) -> Client {
    let secret: Secret = secret.parse().expect("a valid secret");
    Client::new(
        endpoints
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.api))
            .collect(),
        admin_credential(&secret),
        Identity::derive(&secret).public_key,
    )
    .expect("a client")
}

/// A client for one node's API port.
pub fn client_at(secret: &str, api: u16) -> Client {
    let secret: Secret = secret.parse().expect("a valid secret");
    Client::new(
        vec![format!("127.0.0.1:{api}")],
        admin_credential(&secret),
        Identity::derive(&secret).public_key,
    )
    .expect("a client")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

pub fn signal(node: &Node, signal: libc::c_int) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    let rc = unsafe { libc::kill(node.child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({signal})");
}

/// A nameserver on 127.0.0.1 (any port: clusterd's `--nameserver`) that knows one name. Until
/// [`FakeDns::answer`], it says the name does not exist (NXDOMAIN); then it answers A questions
/// with its addresses and AAAA questions with none. Other names do not exist.
pub struct FakeDns {
    pub address: std::net::SocketAddr,
    answering: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// A questions for the name so far.
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeDns {
    pub fn start(name: &str, addresses: &[Ipv4Addr]) -> FakeDns {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the fake nameserver");
        let address = socket.local_addr().expect("local addr");
        let answering = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let mut wire = Vec::new();
        for label in name.split('.') {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        let addresses = addresses.to_vec();
        let (on, count) = (answering.clone(), asked.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buffer) {
                let query = &buffer[..n];
                // Header, then the question: the name, type and class.
                let Some(question) = query.get(12..) else {
                    continue;
                };
                let ours = question.len() >= wire.len() + 4
                    && question[..wire.len()].eq_ignore_ascii_case(&wire);
                let qtype = if ours {
                    u16::from_be_bytes([question[wire.len()], question[wire.len() + 1]])
                } else {
                    0
                };
                if ours && qtype == 1 {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let known = ours && on.load(Ordering::SeqCst);
                let answers: &[Ipv4Addr] = if known && qtype == 1 { &addresses } else { &[] };
                let mut reply = query[..2].to_vec();
                // QR, RD, RA; NOERROR or NXDOMAIN.
                reply.extend_from_slice(if known { &[0x81, 0x80] } else { &[0x81, 0x83] });
                reply.extend_from_slice(&[0, 1, 0, answers.len() as u8, 0, 0, 0, 0]);
                reply.extend_from_slice(question);
                for ip in answers {
                    // A pointer to the question's name; A, IN, TTL 60, the address.
                    reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    reply.extend_from_slice(&ip.octets());
                }
                let _ = socket.send_to(&reply, from);
            }
        });
        FakeDns {
            address,
            answering,
            asked,
        }
    }

    /// From now on the name resolves.
    pub fn answer(&self) {
        self.answering
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A questions asked for the name so far.
    pub fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `127.0.0.n`.
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// The leader every node names, once each of them names the same one and has a quorum, twice
/// in a row. The `cluster.member` events name the leader of their moment; on a loaded machine
/// a slow heartbeat can start an election soon after, so a test about one leader asks this.
pub fn settled_leader(nodes: &[Node], within: Duration) -> u64 {
    let rt = runtime();
    let deadline = Instant::now() + within;
    let mut previous = None;
    loop {
        let named: Vec<Option<String>> = nodes
            .iter()
            .map(|n| {
                let status = rt.block_on(client(SECRET, &[n]).status()).ok()?;
                status.quorum.then_some(status.leader).flatten()
            })
            .collect();
        let agreed = named
            .first()
            .cloned()
            .flatten()
            .filter(|l| named.iter().all(|n| n.as_ref() == Some(l)));
        if let Some(leader) = agreed {
            if previous.as_ref() == Some(&leader) {
                return u64::from_str_radix(&leader, 16).expect("a leader id in hex");
            }
            previous = Some(leader);
        } else {
            previous = None;
            assert!(
                Instant::now() < deadline,
                "no leader all agree on: {named:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
