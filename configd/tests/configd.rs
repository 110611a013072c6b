//! shoal-configd as a process on the host: a fixture sysfs/procfs, a kernel command line with
//! `shoal.config=` pointing at an HTTP server in the test, and the files it writes.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, parse_line};

const SECRET: &str = "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";
const UUID: &str = "4c4c4544-0042-3510-8051-b4c04f384b32";

/// A request's head, up to its blank line, read a byte at a time (these servers answer one
/// request per connection and never read a body).
fn read_head(stream: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    head
}

/// A tiny HTTP server: answers every GET with the current body for that path (404 otherwise).
struct Server {
    port: u16,
    files: Arc<Mutex<Vec<(String, String)>>>,
}

impl Server {
    fn start() -> Server {
        Server::start_on("127.0.0.1:0")
    }

    fn start_on(address: &str) -> Server {
        let listener = TcpListener::bind(address).unwrap();
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let f = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let head = read_head(&mut stream);
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = f
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.clone());
                let reply = match body {
                    Some(b) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Server { port, files }
    }

    fn serve(&self, path: &str, body: &str) {
        let mut files = self.files.lock().unwrap();
        files.retain(|(p, _)| p != path);
        files.push((path.to_string(), body.to_string()));
    }
}

/// A node's fixture tree and a running shoal-configd.
struct Node {
    dir: tempfile::TempDir,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn fixture(root: &Path, cmdline: &str) {
    let sys = root.join("sys");
    let device = sys.join("devices/pci0000:00/0000:00:03.0");
    std::fs::create_dir_all(&device).unwrap();
    std::fs::create_dir_all(sys.join("class/net/eth0")).unwrap();
    std::fs::write(sys.join("class/net/eth0/address"), "52:54:00:12:34:56\n").unwrap();
    std::os::unix::fs::symlink(&device, sys.join("class/net/eth0/device")).unwrap();
    std::fs::create_dir_all(sys.join("class/dmi/id")).unwrap();
    std::fs::write(
        sys.join("class/dmi/id/product_uuid"),
        format!("{}\n", UUID.to_uppercase()),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
    std::fs::write(root.join("proc/sys/kernel/hostname"), "shoal-1234\n").unwrap();
    std::fs::write(root.join("cmdline"), cmdline).unwrap();
}

impl Node {
    fn start(cmdline: &str, state: Option<&Path>) -> Node {
        Node::start_with(cmdline, state, &[], &[])
    }

    /// With more options, and more SMBIOS strings (`class/dmi/id/<name>`).
    fn start_with(
        cmdline: &str,
        state: Option<&Path>,
        args: &[&str],
        dmi: &[(&str, &str)],
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), cmdline);
        for (name, value) in dmi {
            std::fs::write(dir.path().join("sys/class/dmi/id").join(name), value).unwrap();
        }
        let state_dir: PathBuf =
            state.map_or_else(|| dir.path().join("var/lib/shoal"), Path::to_path_buf);
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-configd"))
            .arg("--cmdline")
            .arg(dir.path().join("cmdline"))
            .arg("--sys")
            .arg(dir.path().join("sys"))
            .arg("--proc")
            .arg(dir.path().join("proc"))
            .arg("--run-dir")
            .arg(dir.path().join("run/shoal"))
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--netd-socket")
            .arg(dir.path().join("run/shoal/netd.sock"))
            .arg("--source-wait")
            .arg("1s")
            .args(["--maintenance-port", "0"])
            .args(args)
            // The log lines tests look for, whatever the host's kernel command line says.
            .env("SHOAL_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Node { dir, child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until `find` finds something in the output so far; `what` names it in the panic.
    fn until<T>(&self, what: &str, timeout: Duration, find: impl Fn(&[String]) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = find(&self.lines.lock().unwrap()) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a line of output that contains `text`.
    fn line(&self, text: &str, timeout: Duration) -> String {
        self.until(&format!("line with {text:?}"), timeout, |lines| {
            lines.iter().find(|l| l.contains(text)).cloned()
        })
    }

    fn event(&self, name: &str, timeout: Duration) -> Event {
        self.until(name, timeout, |lines| {
            lines
                .iter()
                .filter_map(|l| parse_line(l))
                .find(|r| r.event.name() == name)
                .map(|r| r.event)
        })
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn resolved(&self) -> shoal_config::MachineConfig {
        let path = self.dir.path().join("run/shoal/config.toml");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the node's configuration holds the secret");
        shoal_config::MachineConfig::parse(
            "config.toml",
            &std::fs::read_to_string(path).unwrap(),
            None,
        )
        .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_config() -> String {
    format!(
        "[cluster]\nname = \"lab\"\nsecret = \"{SECRET}\"\nexpected_size = 1\nvoters = 1\n\
         [network]\nnaming = \"mac\"\n\
         [[nodes]]\nmatch = {{ uuid = \"{UUID}\" }}\nhostname = \"edge-7\"\nlabels = {{ gpu = \"true\" }}\n"
    )
}

#[test]
fn a_url_with_placeholders_gives_the_node_its_resolved_configuration() {
    let server = Server::start();
    server.serve(
        &format!("/nodes/52-54-00-12-34-56/{UUID}.toml"),
        &cluster_config(),
    );
    let mut node = Node::start(
        &format!(
            "console=ttyS0 shoal.config=http://127.0.0.1:{}/nodes/${{mac}}/${{uuid}}.toml shoal.node.labels=rack=r9",
            server.port
        ),
        None,
    );
    let Event::ConfigResolved {
        sources,
        node_section,
        ms,
        ..
    } = node.event("config.resolved", Duration::from_secs(10))
    else {
        unreachable!()
    };
    println!("configuration resolved in {ms} ms");
    assert_eq!(node_section, Some(0));
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert!(
        sources[0].starts_with("url: http://127.0.0.1:"),
        "{sources:?}"
    );
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    // It sets [network] and a hostname: netd is asked to reload (it is not running here).
    node.line("netd not reachable", Duration::from_secs(5));
    assert!(!node.output().contains("netd reload skipped"));
    let c = node.resolved();
    assert_eq!(c.cluster.name, "lab");
    assert_eq!(c.node.hostname.as_deref(), Some("edge-7"));
    assert_eq!(c.node.labels["gpu"], "true");
    assert_eq!(c.node.labels["rack"], "r9", "inline kernel keys merged in");
    assert!(c.nodes.is_empty(), "only this node's view is kept");
    assert!(
        !node.output().contains(SECRET),
        "the secret is never printed"
    );
    // Kept for the next boot.
    assert!(
        node.dir.path().join("var/lib/shoal/config.toml").exists()
            || !node.dir.path().join("var/lib/shoal").is_dir()
    );
}

#[test]
fn an_invalid_configuration_means_maintenance_until_a_valid_one_is_served() {
    let server = Server::start();
    server.serve("/c.toml", "[cluster]\nvoters = 4\n");
    let mut node = Node::start(
        &format!("shoal.config=http://127.0.0.1:{}/c.toml", server.port),
        None,
    );
    let Event::ConfigMaintenance { reason, .. } =
        node.event("config.maintenance", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(
        reason.ends_with(
            "c.toml: cluster.voters: 4 voters cannot keep a majority well; use 1, 3, 5 or 7"
        ),
        "{reason}"
    );
    assert!(node.child.try_wait().unwrap().is_none(), "it keeps trying");
    server.serve("/c.toml", &cluster_config());
    node.event("config.resolved", Duration::from_secs(15));
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(node.resolved().cluster.name, "lab");
}

#[test]
fn an_unreachable_source_falls_back_to_the_last_good_configuration() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("config.toml"), cluster_config()).unwrap();
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = Node::start(
        &format!("shoal.config=http://127.0.0.1:{port}/c.toml"),
        Some(state.path()),
    );
    let Event::ConfigSourceFailed { source, reason } =
        node.event("config.source_failed", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(
        source.starts_with("shoal.config=http://127.0.0.1:"),
        "{source}"
    );
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    let Event::ConfigResolved { sources, .. } =
        node.event("config.resolved", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(sources[0].starts_with("cache: "), "{sources:?}");
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(node.resolved().node.hostname.as_deref(), Some("edge-7"));
}

#[test]
fn without_any_source_the_defaults_apply_at_once() {
    let mut node = Node::start("console=ttyS0 quiet", None);
    let Event::ConfigResolved { sources, ms, .. } =
        node.event("config.resolved", Duration::from_secs(5))
    else {
        unreachable!()
    };
    assert!(sources.is_empty(), "{sources:?}");
    // Not after a source wait (there is no source to wait for); on a loaded machine a start
    // can still take a while.
    assert!(ms < 5000.0, "{ms}");
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(node.resolved().cluster.name, "shoal");
    // Nothing netd uses, and no file before: no reload on the boot's critical path.
    node.line("netd reload skipped", Duration::from_secs(5));
    assert!(!node.output().contains("netd not reachable"));
}

#[test]
fn a_source_unreachable_until_the_network_comes_up_is_tried_again_at_once() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root for a network namespace");
        return;
    }
    // On a thread of its own in a new network namespace (gone with the thread and its
    // children): `lo` is down, so 127.0.0.1 is unreachable, as a server is before netd has
    // a route to it.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let server = Server::start_on("0.0.0.0:0");
        server.serve("/c.toml", &cluster_config());
        let mut node = Node::start_with(
            &format!("shoal.config=http://127.0.0.1:{}/c.toml", server.port),
            None,
            &["--source-wait", "60s"],
            &[],
        );
        let Event::ConfigSourceFailed { reason, .. } =
            node.event("config.source_failed", Duration::from_secs(10))
        else {
            unreachable!()
        };
        assert!(reason.contains("unreachable"), "{reason}");
        // Between two of its retries.
        std::thread::sleep(Duration::from_millis(100));
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(status.success());
        let up = Instant::now();
        node.event("config.resolved", Duration::from_secs(10));
        let took = up.elapsed();
        println!("resolved {took:?} after the network came up");
        assert!(node.wait_exit(Duration::from_secs(5)).success());
        assert_eq!(node.resolved().cluster.name, "lab");
        // Woken by the change rather than its retry timer (unless the change came while it
        // was fetching, which the 100 ms above makes unlikely).
        // (The log line is on stderr, read by another thread than the event: wait for it.)
        if took >= Duration::from_millis(50) {
            node.line("the network changed", Duration::from_secs(5));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn an_invalid_document_never_replaces_the_last_good_configuration() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("config.toml"), cluster_config()).unwrap();
    let server = Server::start();
    server.serve("/c.toml", "[cluster]\nvoters = 4\n");
    let mut node = Node::start(
        &format!("shoal.config=http://127.0.0.1:{}/c.toml", server.port),
        Some(state.path()),
    );
    let Event::ConfigSourceFailed { reason, .. } =
        node.event("config.source_failed", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(reason.contains("cluster.voters: 4 voters"), "{reason}");
    let Event::ConfigResolved { sources, .. } =
        node.event("config.resolved", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(sources[0].starts_with("cache: "), "{sources:?}");
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(node.resolved().cluster.name, "lab");
    // The cache still holds the good one.
    let kept = std::fs::read_to_string(state.path().join("config.toml")).unwrap();
    assert!(kept.contains("lab"), "{kept}");
}

/// An EC2-style instance metadata service: IMDSv2 only (a GET without the session token is
/// refused, as on an instance with `HttpTokens=required`).
fn imds_server(user_data: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let head = read_head(&mut stream);
            let text = String::from_utf8_lossy(&head).to_string();
            let mut words = text.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            log.lock().unwrap().push(format!("{method} {path}"));
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let (status, body) = match (method, path) {
                ("PUT", "/latest/api/token")
                    if header("X-aws-ec2-metadata-token-ttl-seconds:").is_some() =>
                {
                    ("200 OK", "session-token-1")
                }
                ("GET", _)
                    if header("X-aws-ec2-metadata-token:").as_deref()
                        != Some("session-token-1") =>
                {
                    ("401 Unauthorized", "")
                }
                ("GET", "/latest/user-data") => ("200 OK", user_data),
                ("GET", "/latest/meta-data/local-hostname") => {
                    ("200 OK", "ip-10-1-2-3.eu-west-1.compute.internal")
                }
                _ => ("404 Not Found", ""),
            };
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, seen)
}

#[test]
fn on_a_cloud_the_instance_metadata_service_gives_the_configuration() {
    let user_data = "[cluster]\nname = \"aws\"\n\
                     secret = \"c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==\"\n";
    let (port, seen) = imds_server(user_data);
    let endpoint = format!("127.0.0.1:{port}");
    let mut node = Node::start_with(
        "console=ttyS0",
        None,
        &["--imds-endpoint", &endpoint],
        &[("sys_vendor", "Amazon EC2\n")],
    );
    let Event::ConfigResolved {
        sources, source_ms, ..
    } = node.event("config.resolved", Duration::from_secs(10))
    else {
        unreachable!()
    };
    println!("instance metadata read in {:?} ms", source_ms.get("imds"));
    assert!(source_ms.contains_key("imds"), "{source_ms:?}");
    assert_eq!(
        sources,
        [
            format!("imds: http://{endpoint}/latest/meta-data/local-hostname"),
            format!("imds: http://{endpoint}/latest/user-data"),
        ]
    );
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    let c = node.resolved();
    assert_eq!(c.cluster.name, "aws");
    assert_eq!(c.node.hostname.as_deref(), Some("ip-10-1-2-3"));
    assert_eq!(
        seen.lock().unwrap()[0],
        "PUT /latest/api/token",
        "IMDSv2: the token first"
    );

    // Not on a cloud: never asked, even with the service there.
    seen.lock().unwrap().clear();
    let mut plain = Node::start_with("console=ttyS0", None, &["--imds-endpoint", &endpoint], &[]);
    plain.event("config.resolved", Duration::from_secs(10));
    assert!(plain.wait_exit(Duration::from_secs(5)).success());
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    // ... unless the command line says so.
    let forced = Node::start_with("shoal.imds=on", None, &["--imds-endpoint", &endpoint], &[]);
    forced.event("config.resolved", Duration::from_secs(10));
    assert_eq!(forced.resolved().cluster.name, "aws");
}

/// The token the maintenance API shows on the console.
fn maintenance_token(node: &Node) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(token) = node
            .lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.split("--token ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
        {
            return token.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no token shown:\n{}",
            node.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn in_maintenance_a_configuration_pushed_with_the_token_completes_the_boot() {
    use shoal_cluster_api::client::{Client, ClientError};
    use shoal_cluster_api::identity::MaintenanceToken;

    let server = Server::start();
    server.serve("/c.toml", "[cluster]\nvoters = 4\n");
    let mut node = Node::start(
        &format!("shoal.config=http://127.0.0.1:{}/c.toml", server.port),
        None,
    );
    let Event::ConfigMaintenance { api_port, .. } =
        node.event("config.maintenance", Duration::from_secs(10))
    else {
        unreachable!()
    };
    let port = api_port.expect("the maintenance API is up");
    let shown = maintenance_token(&node);
    let token = MaintenanceToken::parse(&shown).unwrap();
    let endpoint = format!("127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Another token pins another key: the TLS handshake fails, nothing is sent.
    let stranger =
        Client::maintenance(endpoint.clone(), &MaintenanceToken::from_bytes([7; 16])).unwrap();
    let refused = runtime.block_on(stranger.maintenance_status()).unwrap_err();
    assert!(matches!(refused, ClientError::Unreachable(_)), "{refused}");

    let client = Client::maintenance(endpoint, &token).unwrap();
    let status = runtime.block_on(client.maintenance_status()).unwrap();
    assert!(status.reason.contains("cluster.voters"), "{status:?}");
    assert_eq!(status.mac.as_deref(), Some("52:54:00:12:34:56"));
    assert_eq!(status.uuid.as_deref(), Some(UUID));

    // An invalid configuration is refused with its errors; the token stays good.
    let invalid = runtime
        .block_on(client.push_config("[cluster]\nvoters = 2\nbogus = 1\n"))
        .unwrap_err();
    let ClientError::Api { status, message } = &invalid else {
        panic!("{invalid}")
    };
    assert_eq!(*status, 422);
    assert!(
        message.contains("pushed configuration") && message.contains("bogus"),
        "{message}"
    );
    assert!(node.child.try_wait().unwrap().is_none(), "still waiting");

    let accepted = runtime
        .block_on(client.push_config(&cluster_config()))
        .unwrap();
    assert_eq!(accepted.hostname.as_deref(), Some("edge-7"));
    let Event::ConfigResolved { sources, .. } =
        node.event("config.resolved", Duration::from_secs(5))
    else {
        unreachable!()
    };
    assert!(
        sources[0].starts_with("api: pushed from 127.0.0.1:"),
        "{sources:?}"
    );
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(node.resolved().cluster.name, "lab");
    assert_eq!(
        accepted.kept,
        node.dir.path().join("var/lib/shoal").is_dir()
    );
    assert!(
        !node.output().contains(SECRET),
        "the secret is never printed"
    );
}

/// An HTTPS server on 127.0.0.1 with a self-signed certificate, answering every request with
/// `body`; its port and the pin of its key (`sha256:<hex>` of the SubjectPublicKeyInfo).
fn https_server(body: String) -> (u16, String) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let generated = rcgen::generate_simple_self_signed(vec!["config.shoal.test".into()]).unwrap();
    let pin = shoal_configd::http::format_pin(
        &shoal_configd::http::spki_sha256(generated.cert.der()).unwrap(),
    );
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            read_head(&mut tls);
            let _ = tls.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, pin)
}

#[test]
fn an_https_url_is_trusted_through_its_pin_and_refused_without_the_right_one() {
    let (port, pin) = https_server(cluster_config());
    let url = format!("https://127.0.0.1:{port}/c.toml");
    let mut node = Node::start(&format!("shoal.config={url} shoal.config.pin={pin}"), None);
    let Event::ConfigResolved { sources, .. } =
        node.event("config.resolved", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert_eq!(sources[0], format!("url: {url}"));
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(node.resolved().cluster.name, "lab");

    // Another pin: the certificate is refused, and said why.
    let other = format!("sha256:{}", "ab".repeat(32));
    let refused = Node::start(
        &format!("shoal.config={url} shoal.config.pin={other}"),
        None,
    );
    let Event::ConfigSourceFailed { reason, .. } =
        refused.event("config.source_failed", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(reason.contains("does not match the pin"), "{reason}");
    // No pin: the public web PKI does not know a self-signed certificate.
    let unknown = Node::start(&format!("shoal.config={url}"), None);
    let Event::ConfigSourceFailed { reason, .. } =
        unknown.event("config.source_failed", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(reason.contains("unknown issuer"), "{reason}");
    // A malformed pin is named.
    let malformed = Node::start(&format!("shoal.config={url} shoal.config.pin=md5:00"), None);
    let Event::ConfigSourceFailed { reason, .. } =
        malformed.event("config.source_failed", Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert!(reason.starts_with("shoal.config.pin: "), "{reason}");
}
