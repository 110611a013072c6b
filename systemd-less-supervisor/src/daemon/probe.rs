//! Readiness and health probes, each a task reporting to the daemon's loop.
//!
//! Results carry the main pid of the run they were started for, so a result that arrives after
//! the service was restarted is recognised and dropped.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::{sleep, timeout};

use crate::cgroup::CgroupTree;
use crate::config::{HealthCheck, Probe};
use crate::machine::Exit;
use crate::spawn::{CapMask, ProcessSpec, spawn};
use crate::users::Ids;

use super::api::Msg;

/// How often a readiness port is tried.
const PORT_RETRY: Duration = Duration::from_millis(100);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most of an HTTP answer read: its status line.
const HTTP_HEAD: usize = 256;

/// Exec probes waiting for their process to be reaped, by pid. The daemon's one reaper
/// completes them.
pub(crate) type Watchers = Arc<Mutex<HashMap<i32, oneshot::Sender<Exit>>>>;

/// Tries `127.0.0.1:port` every 100 ms until it accepts, then reports the service ready.
pub(crate) fn port_probe(
    tx: mpsc::Sender<Msg>,
    service: String,
    pid: i32,
    port: u16,
) -> AbortHandle {
    tokio::spawn(async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Ok(Ok(_)) = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                let _ = tx.send(Msg::PortReady { service, pid }).await;
                return;
            }
            sleep(PORT_RETRY).await;
        }
    })
    .abort_handle()
}

/// How to run an exec health check: the service's identity, capabilities and cgroup.
#[derive(Debug, Clone)]
pub(crate) struct ExecProbe {
    pub service: String,
    pub argv: Vec<String>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub ids: Ids,
    pub keep_caps: CapMask,
    pub cgroups: Option<CgroupTree>,
    pub watchers: Watchers,
}

/// Runs the service's health check every `interval`, starting after `start_period`, and
/// reports each result.
pub(crate) fn health_checks(
    tx: mpsc::Sender<Msg>,
    service: String,
    pid: i32,
    check: HealthCheck,
    exec: Option<ExecProbe>,
) -> AbortHandle {
    tokio::spawn(async move {
        sleep(check.start_period).await;
        loop {
            let healthy = match (&check.probe, &exec) {
                (Probe::Exec(_), Some(exec)) => run_exec(exec, check.timeout).await,
                (Probe::Exec(_), None) => false,
                (Probe::Tcp(port), _) => {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
                    matches!(
                        timeout(check.timeout, TcpStream::connect(addr)).await,
                        Ok(Ok(_))
                    )
                }
                (Probe::Http { host, port, path }, _) => {
                    timeout(check.timeout, http_ok(*host, *port, path))
                        .await
                        .unwrap_or(false)
                }
            };
            let report = Msg::Health {
                service: service.clone(),
                pid,
                healthy,
            };
            if tx.send(report).await.is_err() {
                return;
            }
            sleep(check.interval).await;
        }
    })
    .abort_handle()
}

/// Kills a probe process that is still running when its check is abandoned (timeout, or the
/// task aborted because the service stopped). Only a pid still registered, hence not reaped
/// yet, is signalled, so the pid cannot have been reused.
struct ProbeGuard {
    pid: i32,
    watchers: Watchers,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        let registered = self
            .watchers
            .lock()
            .map(|mut w| w.remove(&self.pid).is_some())
            .unwrap_or(false);
        if registered {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// Runs the command in the service's cgroup with its ids and capabilities; healthy when it
/// exits 0 within `limit`. Its output is discarded.
async fn run_exec(probe: &ExecProbe, limit: Duration) -> bool {
    let Some(program) = probe.argv.first() else {
        return false;
    };
    let mut spec = ProcessSpec::new(format!("{} health check", probe.service), program);
    spec.argv = probe.argv.iter().map(OsString::from).collect();
    spec.env = probe.env.clone();
    spec.cwd = probe.cwd.clone();
    spec.uid = probe.ids.uid;
    spec.gid = probe.ids.gid;
    spec.groups = probe.ids.groups.clone();
    spec.keep_caps = probe.keep_caps;
    if let Some(tree) = &probe.cgroups {
        match tree.open_procs(&probe.service) {
            Ok(fd) => spec.cgroup_procs = Some(fd),
            Err(error) => {
                tracing::warn!(service = %probe.service, "health check: {error}");
                return false;
            }
        }
    }
    // Spawning blocks this (the only) thread until exec; registering the pid happens before
    // the next await, so the reaper cannot see the exit first.
    let pid = match spawn(&spec) {
        Ok(pid) => pid.as_raw(),
        Err(error) => {
            tracing::warn!(service = %probe.service, "health check: {error}");
            return false;
        }
    };
    drop(spec);
    let (done, exited) = oneshot::channel();
    if let Ok(mut watchers) = probe.watchers.lock() {
        watchers.insert(pid, done);
    }
    let _guard = ProbeGuard {
        pid,
        watchers: Arc::clone(&probe.watchers),
    };
    matches!(timeout(limit, exited).await, Ok(Ok(Exit::Code(0))))
}

/// `GET path` over HTTP/1.0; healthy on a 2xx status.
async fn http_ok(host: IpAddr, port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect((host, port)).await else {
        return false;
    };
    let request = http_request(host, port, path);
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; HTTP_HEAD];
    let mut got = 0;
    while got < head.len() && !head[..got].contains(&b'\n') {
        match stream.read(&mut head[got..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    status_code(&head[..got]).is_some_and(|code| (200..300).contains(&code))
}

fn http_request(host: IpAddr, port: u16, path: &str) -> String {
    let authority = match host {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: shoal-supervisor\r\n\
         Connection: close\r\n\r\n"
    )
}

/// The status code of an HTTP status line (`HTTP/1.1 204 No Content`).
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|b| *b == b' ');
    if !parts.next()?.starts_with(b"HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn reads_status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nServer: x\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 204\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.1 503 Busy"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20"), None);
        assert_eq!(status_code(b"HTTP/1.1 2x0 OK"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn requests_name_the_host_with_its_port() {
        let v4 = http_request(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080, "/healthz?x=1");
        assert_eq!(
            v4,
            "GET /healthz?x=1 HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: shoal-supervisor\r\n\
             Connection: close\r\n\r\n"
        );
        let v6 = http_request(IpAddr::V6(Ipv6Addr::LOCALHOST), 80, "/");
        assert!(v6.contains("Host: [::1]:80\r\n"));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A one-shot HTTP server answering `status` on an ephemeral port.
    async fn server(status: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                .await;
        });
        port
    }

    #[test]
    fn http_checks_want_2xx() {
        runtime().block_on(async {
            let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let ok = server("200 OK").await;
            assert!(http_ok(localhost, ok, "/").await);
            let bad = server("500 Oops").await;
            assert!(!http_ok(localhost, bad, "/").await);
            let closed = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            assert!(!http_ok(localhost, closed, "/").await);
        });
    }

    #[test]
    fn port_probes_report_once_the_port_accepts() {
        runtime().block_on(async {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let (tx, mut rx) = mpsc::channel(4);
            let _probe = port_probe(tx, "web".into(), 42, port);
            sleep(Duration::from_millis(250)).await;
            assert!(rx.try_recv().is_err(), "nothing listens yet");
            let _listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            match timeout(Duration::from_secs(5), rx.recv()).await.unwrap() {
                Some(Msg::PortReady { service, pid }) => {
                    assert_eq!((service.as_str(), pid), ("web", 42));
                }
                other => panic!("{other:?}"),
            }
        });
    }
}
