//! The real `shoalctl` binary against the supervisor's and netd's API servers, each with a
//! stand-in daemon behind it.

// Helpers are test code too: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use shoal_api::network::{
    self as net, LeaseStatus, LinkStatus, NetworkRequest, NetworkStatus, RouteStatus,
};
use shoal_api::supervisor::{self as api, Access, LogChunk, LogLine, Request, ServiceInfo};
use tokio::sync::{broadcast, mpsc};

fn service(name: &str, state: &str) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        state: state.into(),
        reason: "started".into(),
        pid: 7,
        restarts: 2,
        uptime_s: 3.0,
        memory_bytes: 1 << 20,
        cpu_usec: 1_000_000,
        status: String::new(),
    }
}

/// Serves on `socket` from a thread with its own runtime; answers like a daemon with one
/// service `web` and a 3-line log.
fn serve(socket: &Path) {
    let listener_path = socket.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = api::bind(&listener_path).unwrap();
            let (tx, mut rx) = mpsc::channel(8);
            let (changes, _) = broadcast::channel(8);
            tokio::spawn(api::serve(
                listener,
                Access { admin_gid: None },
                tx,
                changes,
            ));
            ready_tx.send(()).unwrap();
            while let Some(request) = rx.recv().await {
                match request {
                    Request::List(reply) => {
                        let _ = reply.send(Ok(vec![service("web", "ready")]));
                    }
                    Request::Restart(name, reply)
                    | Request::Start(name, reply)
                    | Request::Stop(name, reply) => {
                        let _ = reply.send(if name == "web" {
                            Ok(())
                        } else {
                            Err(format!("no service named {name}"))
                        });
                    }
                    Request::Logs {
                        since,
                        limit,
                        reply,
                        ..
                    } => {
                        let end = 3u64;
                        let from = since.min(end);
                        let to = (from + u64::from(limit)).min(end);
                        let lines = (from..to)
                            .map(|seq| LogLine {
                                seq,
                                time_s: 1.0,
                                stream: "stdout".into(),
                                text: format!("line {seq}"),
                            })
                            .collect();
                        let _ = reply.send(Ok(LogChunk {
                            lines,
                            next_seq: to,
                            dropped: 0,
                        }));
                    }
                }
            }
        });
    });
    ready_rx.recv().unwrap();
}

fn shoalctl(socket: &Path, args: &[&str]) -> (bool, String, String) {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_shoalctl"))
            .args(args)
            .arg("--socket")
            .arg(socket),
    )
}

/// Success, stdout and stderr.
fn outcome(command: &mut Command) -> (bool, String, String) {
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lists_controls_and_reads_logs() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("supervisor.sock");
    serve(&socket);

    let (ok, out, err) = shoalctl(&socket, &["service", "list"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines().nth(1).unwrap().starts_with("web   ready  7"),
        "{out}"
    );

    let (ok, out, _) = shoalctl(&socket, &["service", "list", "-o", "json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["restarts"], 2);

    assert!(shoalctl(&socket, &["service", "restart", "web"]).0);
    let (ok, _, err) = shoalctl(&socket, &["service", "stop", "nope"]);
    assert!(!ok);
    assert_eq!(err.trim(), "shoalctl: no service named nope");

    let (ok, out, _) = shoalctl(&socket, &["service", "logs", "web", "-n", "2"]);
    assert!(ok);
    let texts: Vec<&str> = out
        .lines()
        .map(|l| l.rsplit("stdout ").next().unwrap().trim())
        .collect();
    assert_eq!(texts, ["line 1", "line 2"]);
}

#[test]
fn an_unreachable_supervisor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = shoalctl(&dir.path().join("absent.sock"), &["service", "list"]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the supervisor at") && err.contains("absent.sock"),
        "{err}"
    );
}

fn network_status() -> NetworkStatus {
    NetworkStatus {
        online: true,
        links: vec![
            LinkStatus {
                name: "eth0".into(),
                index: 2,
                mac: "52:54:00:12:34:56".into(),
                up: true,
                carrier: true,
                mtu: 1500,
                managed: true,
                addresses: vec!["10.0.2.15/24".into()],
                dhcp: vec![LeaseStatus {
                    state: "bound".into(),
                    address: "10.0.2.15/24".into(),
                    server: "10.0.2.2".into(),
                    gateway: "10.0.2.2".into(),
                    lease_s: 3600,
                    remaining_s: 3000,
                    dns: vec!["10.0.2.3".into()],
                    ..LeaseStatus::default()
                }],
                ..LinkStatus::default()
            },
            LinkStatus {
                name: "eth1".into(),
                index: 3,
                up: true,
                mtu: 9000,
                managed: true,
                ..LinkStatus::default()
            },
        ],
        routes: vec![RouteStatus {
            destination: "0.0.0.0/0".into(),
            gateway: "10.0.2.2".into(),
            link: "eth0".into(),
            metric: 1024,
            protocol: "dhcp".into(),
        }],
        dns_servers: vec!["10.0.2.3".into()],
        dns_search: vec!["example.com".into()],
        ntp_servers: vec!["10.0.2.4".into()],
        config_sources: vec!["/etc/shoal/network.toml".into()],
        ..NetworkStatus::default()
    }
}

/// Serves netd's API on `socket` from a thread with its own runtime; answers `Status` with
/// [`network_status`] and `Reload` with `reload_errors`.
fn serve_netd(socket: &Path, reload_errors: Vec<String>) {
    let listener_path = socket.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = net::bind(&listener_path).unwrap();
            let (tx, mut rx) = mpsc::channel(8);
            tokio::spawn(net::serve(listener, Access { admin_gid: None }, tx));
            ready_tx.send(()).unwrap();
            while let Some(request) = rx.recv().await {
                match request {
                    NetworkRequest::Status(reply) => {
                        let _ = reply.send(network_status());
                    }
                    NetworkRequest::Reload(reply) => {
                        let _ = reply.send(reload_errors.clone());
                    }
                }
            }
        });
    });
    ready_rx.recv().unwrap();
}

#[test]
fn shows_the_network_as_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("netd.sock");
    serve_netd(&socket, Vec::new());

    let (ok, out, err) = shoalctl(&socket, &["network"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "\
online: yes
configuration: /etc/shoal/network.toml
links:
  eth0  up          10.0.2.15/24  dhcp bound
  eth1  no-carrier  -             -
default route: via 10.0.2.2 dev eth0 (dhcp, metric 1024)
DNS: 10.0.2.3 (search: example.com)
"
    );
    assert_eq!(shoalctl(&socket, &["network", "status"]).1, out);

    let (ok, out, err) = shoalctl(&socket, &["network", "links"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "\
NAME  KIND  MAC                MTU   STATE       ADDRESSES     DHCP
eth0  -     52:54:00:12:34:56  1500  up          10.0.2.15/24  dhcp bound
eth1  -     -                  9000  no-carrier  -             -
"
    );

    let (ok, out, err) = shoalctl(&socket, &["network", "routes"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "\
DESTINATION  GATEWAY   LINK  METRIC  PROTOCOL
0.0.0.0/0    10.0.2.2  eth0  1024    dhcp
"
    );

    let (ok, out, err) = shoalctl(&socket, &["network", "leases"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "\
LINK  ADDRESS       SERVER    GATEWAY   LEASE  REMAINING  STATE
eth0  10.0.2.15/24  10.0.2.2  10.0.2.2  1h     50m        bound
"
    );

    let (ok, out, err) = shoalctl(&socket, &["network", "dns"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "\
DNS servers     10.0.2.3
search domains  example.com
NTP servers     10.0.2.4
"
    );

    // JSON: the whole status, or the part asked for.
    let json = |args: &[&str]| -> serde_json::Value {
        let (ok, out, err) = shoalctl(&socket, args);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let status: NetworkStatus = serde_json::from_value(json(&["network", "-o", "json"])).unwrap();
    assert_eq!(status, network_status());
    let links = json(&["network", "links", "-o", "json"]);
    assert_eq!(links[1]["mtu"], 9000);
    assert_eq!(links[0]["dhcp"][0]["server"], "10.0.2.2");
    let routes = json(&["network", "routes", "--output", "json"]);
    assert_eq!(routes[0]["gateway"], "10.0.2.2");
    let dns = json(&["network", "dns", "-o", "json"]);
    assert_eq!(dns["dns_search"][0], "example.com");
    assert_eq!(dns["ntp_servers"][0], "10.0.2.4");
    let leases = json(&["network", "leases", "-o", "json"]);
    assert_eq!(leases.as_array().unwrap().len(), 1);
    assert_eq!(
        (&leases[0]["link"], &leases[0]["remaining_s"]),
        (&"eth0".into(), &3000.into())
    );

    let (ok, out, err) = shoalctl(&socket, &["network", "reload"]);
    assert!(ok, "{err}");
    assert_eq!(out, "configuration reloaded\n");
}

#[test]
fn a_rejected_reload_exits_1_with_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("netd.sock");
    let errors = [
        "/etc/shoal/network.toml: line 3, column 1: unknown field `mtuu`",
        "/etc/shoal/network.toml: links[1].match: give at least one of mac, name, path, driver",
    ];
    serve_netd(&socket, errors.map(String::from).to_vec());

    let (ok, out, err) = shoalctl(&socket, &["network", "reload"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "shoalctl: netd rejected the configuration; the last good one stays in force:\n  \
             {}\n  {}\n",
            errors[0], errors[1]
        )
    );

    let (ok, out, _) = shoalctl(&socket, &["network", "reload", "-o", "json"]);
    assert!(!ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["errors"][1], errors[1]);
}

/// Any user may look; reloading takes root or the admin group.
#[test]
fn an_unprivileged_user_may_look_but_not_reload() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    if !nix::unistd::geteuid().is_root() {
        panic!("this test runs as root (CI does): it runs shoalctl as uid 65534");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("netd.sock");
    serve_netd(&socket, Vec::new());

    let as_nobody = |args: &[&str]| {
        outcome(
            Command::new(env!("CARGO_BIN_EXE_shoalctl"))
                .args(args)
                .arg("--socket")
                .arg(&socket)
                .uid(65534)
                .gid(65534),
        )
    };
    let (ok, out, err) = as_nobody(&["network", "links"]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with("eth0"), "{out}");
    let (ok, _, err) = as_nobody(&["network", "reload"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "shoalctl: reloading the network configuration needs root or the admin group"
    );
}

#[test]
fn an_unreachable_netd_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let (ok, out, err) = shoalctl(&socket, &["network"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err.trim(),
        format!(
            "shoalctl: cannot reach netd at {}: No such file or directory (os error 2)",
            socket.display()
        )
    );
}
