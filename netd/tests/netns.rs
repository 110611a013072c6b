//! The real daemon on the host, in throwaway network namespaces: a veth pair, dnsmasq as the
//! DHCP server on one end, shoal-netd on the other (in its own UTS namespace too, so that a
//! hostname it sets stays there). Needs root; prints SKIPPED otherwise.
//!
//! VLANs and bonds are tested in VMs (`qemu-tests/tests/network.rs`): this host's kernel has
//! neither.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, parse_line};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair: `srv0` (10.99.0.1/24) and `cli0` (no address).
struct Pair {
    srv: String,
    cli: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
}

impl Pair {
    fn new() -> Pair {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let srv = format!("shoal-netd-s{id}");
        let cli = format!("shoal-netd-c{id}");
        run("ip", &["netns", "add", &srv]);
        run("ip", &["netns", "add", &cli]);
        let pair = Pair {
            srv,
            cli,
            dir: tempfile::tempdir().unwrap(),
            dnsmasq: None,
        };
        run(
            "ip",
            &[
                "-n", &pair.srv, "link", "add", "srv0", "type", "veth", "peer", "name", "cli0",
                "netns", &pair.cli,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &pair.srv,
                "addr",
                "add",
                "10.99.0.1/24",
                "dev",
                "srv0",
            ],
        );
        run("ip", &["-n", &pair.srv, "link", "set", "srv0", "up"]);
        run("ip", &["-n", &pair.cli, "link", "set", "lo", "up"]);
        pair
    }

    /// dnsmasq on srv0: 2-minute leases (its minimum) renewed after 3 s, rebound after 5 s.
    fn start_dnsmasq(&mut self) {
        self.start_dnsmasq_with(&[]);
    }

    /// The same with extra dnsmasq arguments.
    fn start_dnsmasq_with(&mut self, extra: &[String]) {
        let log = self.dir.path().join("dnsmasq.log");
        let leases = self.dir.path().join("dnsmasq.leases");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.srv,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
            ])
            .args([
                "--port=0",
                "--interface=srv0",
                "--bind-interfaces",
                "--no-ping",
                "--log-dhcp",
                "--dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0,2m",
                "--dhcp-option=3,10.99.0.1",
                "--dhcp-option=6,10.99.0.53,10.99.0.54",
                "--dhcp-option=15,lan.example",
                "--dhcp-option=42,10.99.0.123",
                "--dhcp-option=58,3",
                "--dhcp-option=59,5",
            ])
            .args(extra)
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.dnsmasq = Some(child);
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("DHCP, IP range"))
        });
    }

    fn cli0_mac(&self) -> String {
        let link = self.cli_ip(&["-o", "link", "show", "dev", "cli0"]);
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap()
            .to_string()
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    fn cli_ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.cli.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    /// Starts shoal-netd in the client namespace with this configuration and command line.
    fn netd(&self, config: &str, cmdline: &str) -> Netd {
        let root = self.root();
        std::fs::create_dir_all(root.join("etc/shoal")).unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(
            root.join("etc/shoal/config.toml"),
            as_machine_config(config),
        )
        .unwrap();
        std::fs::write(root.join("proc/cmdline"), cmdline).unwrap();
        let notify_path = self
            .dir
            .path()
            .join(format!("notify-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut child = Command::new("unshare")
            .args(["--uts", "--", "ip", "netns", "exec", &self.cli])
            .arg(env!("CARGO_BIN_EXE_shoal-netd"))
            .arg("--config")
            .arg(root.join("etc/shoal/config.toml"))
            .arg("--cmdline")
            .arg(root.join("proc/cmdline"))
            .arg("--run-dir")
            .arg(root.join("run/shoal"))
            .arg("--state-dir")
            .arg(root.join("run/shoal/netd"))
            .arg("--api-socket")
            .arg(root.join("run/shoal/netd.sock"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env("SHOAL_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Netd {
            child,
            lines,
            notify,
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
    }
}

struct Netd {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    notify: UnixDatagram,
}

impl Netd {
    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first event named `name` (waiting up to `timeout`) after the first `skip` ones.
    fn event(&self, name: &str, skip: usize, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| parse_line(l))
                .filter(|r| r.event.name() == name)
                .nth(skip);
            if let Some(record) = found {
                return record.event;
            }
            assert!(
                Instant::now() < deadline,
                "no {name} event within {timeout:?}; netd said:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn notifications(&self) -> Vec<String> {
        let mut all = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = self.notify.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        all
    }

    /// SIGHUP: re-read the configuration.
    fn hangup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "netd ignored SIGTERM:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the running netd for its state over its API (org.shoal.Network1).
fn api_status(pair: &Pair) -> shoal_api::network::NetworkStatus {
    api_call(pair, |c| Box::pin(async move { c.status().await }))
}

fn api_reload(pair: &Pair) -> Vec<String> {
    api_call(pair, |c| Box::pin(async move { c.reload().await }))
}

fn api_call<T>(
    pair: &Pair,
    call: impl for<'c> FnOnce(
        &'c shoal_api::network::NetworkClient,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, shoal_api::supervisor::ApiError>> + 'c>,
    >,
) -> T {
    let socket = pair.root().join("run/shoal/netd.sock");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = shoal_api::network::NetworkClient::connect(&socket)
                .await
                .unwrap();
            call(&client).await.unwrap()
        })
}

fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tests write netd's section; the file netd reads is a whole machine configuration.
fn as_machine_config(network: &str) -> String {
    let mut text = network.to_string();
    for kind in ["links", "vlans", "bonds", "bridges"] {
        text = text.replace(&format!("[[{kind}]]"), &format!("[[network.{kind}]]"));
    }
    format!("[network]\n{text}")
}

const MANAGE_CLI0: &str = "[[links]]\nmatch = { name = \"cli0\" }\n";

#[test]
fn dhcp_lease_is_applied_renewed_remembered_and_released() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let mut pair = Pair::new();
    pair.start_dnsmasq();
    let mut netd = pair.netd(MANAGE_CLI0, "console=ttyS0");

    let Event::DhcpBound {
        link,
        address,
        gateway,
        dns,
        lease_s,
        ms,
    } = netd.event("dhcp.bound", 0, Duration::from_secs(15))
    else {
        unreachable!()
    };
    println!("netd start -> lease applied: {ms} ms (host, veth)");
    assert_eq!(link, "cli0");
    assert!(
        address.starts_with("10.99.0.1") && address.ends_with("/24"),
        "{address}"
    );
    assert_eq!(gateway.as_deref(), Some("10.99.0.1"));
    assert_eq!(dns, ["10.99.0.53", "10.99.0.54"]);
    assert_eq!(lease_s, 120);

    // The kernel has the address (with the lease as its lifetime), the default route and the
    // prefix route; resolv.conf and the NTP list are written; the supervisor heard READY.
    let addr = pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "cli0"]);
    assert!(addr.contains(&format!("inet {address}")), "{addr}");
    assert!(
        addr.contains("valid_lft 1") || addr.contains("valid_lft 9"),
        "lifetime from the lease: {addr}"
    );
    let routes = pair.cli_ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 10.99.0.1 dev cli0"),
        "{routes}"
    );
    assert!(routes.contains("metric 1024"), "{routes}");
    netd.event("network.online", 0, Duration::from_secs(5));
    let resolv = std::fs::read_to_string(pair.root().join("run/shoal/resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver 10.99.0.53\nnameserver 10.99.0.54\nsearch lan.example\n"),
        "{resolv}"
    );
    let ntp = std::fs::read_to_string(pair.root().join("run/shoal/ntp-servers")).unwrap();
    assert_eq!(ntp, "10.99.0.123\n");
    wait_for(Duration::from_secs(2), || {
        netd.notifications().iter().any(|n| n.contains("READY=1"))
    });
    // The state API shows the same.
    let status = api_status(&pair);
    assert!(status.online && !status.online_timed_out, "{status:?}");
    let cli0 = status.links.iter().find(|l| l.name == "cli0").unwrap();
    assert!(cli0.managed && cli0.up && cli0.carrier, "{cli0:?}");
    assert_eq!(cli0.addresses[0], address, "{cli0:?}");
    assert!(
        cli0.addresses[1..].iter().all(|a| a.starts_with("fe80:")),
        "{cli0:?}"
    );
    assert_eq!(cli0.dhcp.len(), 1);
    assert_eq!(cli0.dhcp[0].state, "bound");
    assert_eq!(cli0.dhcp[0].server, "10.99.0.1");
    assert!(
        cli0.dhcp[0].remaining_s <= 120 && cli0.dhcp[0].renew_in_s <= 3,
        "{cli0:?}"
    );
    assert!(
        status.routes.iter().any(|r| r.destination == "0.0.0.0/0"
            && r.gateway == "10.99.0.1"
            && r.link == "cli0"
            && r.metric == 1024),
        "{:?}",
        status.routes
    );
    assert_eq!(status.dns_servers, ["10.99.0.53", "10.99.0.54"]);
    assert_eq!(status.dns_search, ["lan.example"]);
    assert_eq!(status.ntp_servers, ["10.99.0.123"]);

    // T1 is 3 s: the lease is renewed by unicast and the address stays.
    let Event::DhcpRenewed {
        address: renewed, ..
    } = netd.event("dhcp.renewed", 0, Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert_eq!(renewed, address);
    assert!(
        pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "cli0"])
            .contains(&address)
    );

    // netd killed without a chance to release: the next one asks for the same address again
    // (INIT-REBOOT) instead of discovering.
    netd.child.kill().unwrap();
    netd.child.wait().unwrap();
    let discovers_before = pair.dnsmasq_log().matches("DHCPDISCOVER").count();
    let mut netd = pair.netd(MANAGE_CLI0, "");
    let Event::DhcpBound { address: again, .. } =
        netd.event("dhcp.bound", 0, Duration::from_secs(15))
    else {
        unreachable!()
    };
    assert_eq!(again, address);
    assert_eq!(
        pair.dnsmasq_log().matches("DHCPDISCOVER").count(),
        discovers_before,
        "INIT-REBOOT, no discovery:\n{}",
        pair.dnsmasq_log()
    );

    // SIGTERM: the lease is released and the address removed.
    let status = netd.terminate();
    assert!(status.success(), "{status:?}\n{}", netd.output());
    let Event::DhcpLost { reason, .. } = netd.event("dhcp.lost", 0, Duration::from_secs(5)) else {
        unreachable!()
    };
    assert_eq!(reason, "released");
    wait_for(Duration::from_secs(5), || {
        pair.dnsmasq_log().contains("DHCPRELEASE")
    });
    let addr = pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "cli0"]);
    assert!(!addr.contains(&address), "{addr}");
}

#[test]
fn static_ip_from_the_command_line_needs_no_dhcp_server() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let pair = Pair::new();
    let netd = pair.netd(
        "",
        "quiet ip=10.99.0.7::10.99.0.1:255.255.255.0:static7:cli0:none:10.99.0.53 \
         rd.route=10.50.0.0/16:10.99.0.254:cli0",
    );
    let Event::NetworkStatic { link, addresses } =
        netd.event("network.static", 0, Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert_eq!(link, "cli0");
    assert_eq!(addresses, ["10.99.0.7/24"]);
    let Event::Hostname { hostname, .. } = netd.event("hostname", 0, Duration::from_secs(5)) else {
        unreachable!()
    };
    assert_eq!(hostname, "static7");
    let Event::NetworkOnline {
        timed_out, links, ..
    } = netd.event("network.online", 0, Duration::from_secs(5))
    else {
        unreachable!()
    };
    assert!(!timed_out);
    assert_eq!(links, ["cli0"]);
    let addr = pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "cli0"]);
    assert!(addr.contains("inet 10.99.0.7/24"), "{addr}");
    assert!(addr.contains("valid_lft forever"), "{addr}");
    let routes = pair.cli_ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 10.99.0.1 dev cli0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.50.0.0/16 via 10.99.0.254 dev cli0"),
        "{routes}"
    );
    let resolv = std::fs::read_to_string(pair.root().join("run/shoal/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.99.0.53\n"), "{resolv}");
    // No DHCP was attempted on a link with static addressing only.
    assert!(!netd.output().contains("DHCP started"), "{}", netd.output());
}

#[test]
fn a_bad_configuration_is_reported_and_the_defaults_keep_the_node_reachable() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let mut pair = Pair::new();
    pair.start_dnsmasq();
    // A typo in the file: the whole file is rejected with its position, the command line still
    // applies (it names cli0), and the node gets its lease.
    let netd = pair.netd(
        "[[links]]\nmatch = { name = \"cli0\" }\nmtu = 9000\naddreses = []\n",
        "ip=cli0:dhcp",
    );
    let Event::NetworkConfig { errors, sources } =
        netd.event("network.config", 0, Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("config.toml: line 5, column 1: unknown field `addreses`"),
        "{errors:?}"
    );
    netd.event("dhcp.bound", 0, Duration::from_secs(15));
}

#[test]
fn reload_applies_a_new_configuration_and_keeps_the_last_good_one_on_errors() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let pair = Pair::new();
    let config = |addr: &str| {
        format!(
            "[[links]]\nmatch = {{ name = \"cli0\" }}\naddresses = [\"{addr}\"]\ngateway = \"10.99.0.1\"\n"
        )
    };
    let mut netd = pair.netd(&config("10.99.0.7/24"), "");
    netd.event("network.static", 0, Duration::from_secs(10));
    let addresses = || pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "cli0"]);
    assert!(addresses().contains("inet 10.99.0.7/24"), "{}", addresses());

    // A new address: the old one and its route go, the new one comes.
    let file = pair.root().join("etc/shoal/config.toml");
    std::fs::write(&file, as_machine_config(&config("10.99.0.8/24"))).unwrap();
    netd.hangup();
    let Event::NetworkStatic { addresses: new, .. } =
        netd.event("network.static", 1, Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert_eq!(new, ["10.99.0.8/24"]);
    wait_for(Duration::from_secs(5), || {
        !addresses().contains("10.99.0.7/")
    });
    assert!(addresses().contains("inet 10.99.0.8/24"), "{}", addresses());
    let routes = pair.cli_ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("default via 10.99.0.1 dev cli0 proto static"),
        "{routes}"
    );

    // A broken file, reloaded through the API: rejected with its position, nothing changes.
    std::fs::write(
        &file,
        as_machine_config("[[links]]\nmatch = { name = \"cli0\" }\naddresses = [\"10.99.0.9\"]\n"),
    )
    .unwrap();
    let errors = api_reload(&pair);
    let status = api_status(&pair);
    assert_eq!(status.config_errors, errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("line 4, column 14"), "{errors:?}");
    assert!(errors[0].contains("needs a prefix length"), "{errors:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(addresses().contains("inet 10.99.0.8/24"), "{}", addresses());
    assert_eq!(
        netd.output()
            .matches("\"event\":\"network.static\"")
            .count(),
        2,
        "nothing reconfigured:\n{}",
        netd.output()
    );
    let status = netd.terminate();
    assert!(status.success());
}

#[test]
fn a_link_matched_by_mac_is_renamed_before_it_is_configured() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let mut pair = Pair::new();
    pair.start_dnsmasq();
    let mac = pair.cli0_mac();
    let netd = pair.netd(
        &format!("[[links]]\nmatch = {{ mac = \"{mac}\" }}\nname = \"lan0\"\n"),
        "",
    );
    let Event::DhcpBound { link, .. } = netd.event("dhcp.bound", 0, Duration::from_secs(15)) else {
        unreachable!()
    };
    assert_eq!(link, "lan0");
    let shown = pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "lan0"]);
    assert!(shown.contains("inet 10.99.0.1"), "{shown}");
    assert!(
        netd.output().contains("renamed cli0 to lan0"),
        "{}",
        netd.output()
    );
}

#[test]
fn a_lease_names_the_node_unless_its_hostname_was_chosen() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let mut pair = Pair::new();
    let mac = pair.cli0_mac();
    pair.start_dnsmasq_with(&[format!("--dhcp-host={mac},leased7")]);
    let netd = pair.netd(MANAGE_CLI0, "");
    netd.event("dhcp.bound", 0, Duration::from_secs(15));
    let Event::Hostname { hostname, source } = netd.event("hostname", 0, Duration::from_secs(2))
    else {
        unreachable!()
    };
    assert_eq!((hostname.as_str(), source.as_str()), ("leased7", "dhcp"));
    let file = std::fs::read_to_string(pair.root().join("run/shoal/hostname")).unwrap();
    assert_eq!(file, "leased7\n");
    drop(netd);

    // Chosen on the kernel command line: the lease's name is not applied.
    let netd = pair.netd(MANAGE_CLI0, "shoal.hostname=chosen");
    netd.event("dhcp.bound", 0, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !netd.output().contains("\"event\":\"hostname\""),
        "{}",
        netd.output()
    );
}

#[test]
fn a_bridge_is_created_with_its_port_and_gets_the_lease() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let mut pair = Pair::new();
    pair.start_dnsmasq();
    let netd = pair.netd(
        "[[links]]\nmatch = { name = \"cli0\" }\n[[bridges]]\nname = \"br7\"\nlinks = [\"cli0\"]\n",
        "",
    );
    let Event::DhcpBound { link, address, .. } =
        netd.event("dhcp.bound", 0, Duration::from_secs(15))
    else {
        unreachable!()
    };
    assert_eq!(link, "br7");
    let port = pair.cli_ip(&["-o", "link", "show", "dev", "cli0"]);
    assert!(port.contains("master br7"), "{port}");
    let on_port = pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "cli0"]);
    assert!(
        on_port.trim().is_empty(),
        "a port carries no address: {on_port}"
    );
    let on_bridge = pair.cli_ip(&["-4", "-o", "addr", "show", "dev", "br7"]);
    assert!(on_bridge.contains(&address), "{on_bridge}");
}

#[test]
fn without_a_server_the_node_reports_online_when_the_wait_runs_out() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let pair = Pair::new();
    let netd = pair.netd(
        &format!("online = {{ timeout = \"1s\" }}\n{MANAGE_CLI0}"),
        "",
    );
    let Event::NetworkOnline {
        timed_out,
        links,
        ms,
        ..
    } = netd.event("network.online", 0, Duration::from_secs(5))
    else {
        unreachable!()
    };
    assert!(timed_out && links.is_empty(), "{links:?}");
    // The 1 s wait, and not less; how late a loaded machine runs the timer is not the point.
    assert!((1000.0..10_000.0).contains(&ms), "{ms}");
    wait_for(Duration::from_secs(2), || {
        netd.notifications().iter().any(|n| n.contains("READY=1"))
    });
    // DHCP goes on in the background.
    assert!(netd.output().contains("DHCP started"), "{}", netd.output());
}
