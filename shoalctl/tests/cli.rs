//! The real `shoalctl` binary against a supervisor API server with a stand-in daemon behind it.

// Helpers are test code too: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

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
    let out = Command::new(env!("CARGO_BIN_EXE_shoalctl"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
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
