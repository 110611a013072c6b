//! The supervisor's control interface `org.shoal.Supervisor1` at `/org/shoal/Supervisor`.
//!
//! The daemon owns the state; this module owns the wire. The server turns each method call into
//! a [`Request`] on a bounded channel and awaits the daemon's answer, and turns every
//! [`StateChange`] the daemon broadcasts into a `StateChanged` signal to each connected peer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Type;

/// Where the supervisor listens.
pub const SOCKET: &str = "/run/shoal/supervisor.sock";
pub const OBJECT_PATH: &str = "/org/shoal/Supervisor";
pub const INTERFACE: &str = "org.shoal.Supervisor1";

/// One service as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
pub struct ServiceInfo {
    pub name: String,
    /// `inactive`, `waiting`, `starting`, `ready`, `done`, `stopping`, `backing-off`, `failed`.
    pub state: String,
    /// Why it is in that state (the last transition's reason, e.g. the failure).
    pub reason: String,
    /// The main process, 0 when none.
    pub pid: i32,
    pub restarts: u32,
    /// Seconds since the current process started, 0 when none.
    pub uptime_s: f64,
    /// `memory.current` of its cgroup, 0 when unknown.
    pub memory_bytes: u64,
    /// `usage_usec` of its cgroup's `cpu.stat`, 0 when unknown.
    pub cpu_usec: u64,
    /// The service's last sd_notify `STATUS=` text.
    pub status: String,
}

/// One captured line of a service's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
pub struct LogLine {
    pub seq: u64,
    /// Seconds since boot when the line was read.
    pub time_s: f64,
    /// `stdout`, `stderr`, `kernel` or `supervisor`.
    pub stream: String,
    pub text: String,
}

/// A page of log lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
pub struct LogChunk {
    pub lines: Vec<LogLine>,
    /// Ask for this next to follow the log.
    pub next_seq: u64,
    /// Lines that fell out of the ring before they could be read.
    pub dropped: u64,
}

/// A service changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct StateChange {
    pub name: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// What the daemon answers an operator request with; the message is shown to the operator.
pub type Reply<T> = oneshot::Sender<Result<T, String>>;

/// A method call, for the daemon to carry out.
#[derive(Debug)]
pub enum Request {
    List(Reply<Vec<ServiceInfo>>),
    Start(String, Reply<()>),
    Stop(String, Reply<()>),
    Restart(String, Reply<()>),
    /// Lines of `name` from `since` (a sequence number; 0 = the oldest kept), at most `limit`.
    Logs {
        name: String,
        since: u64,
        limit: u32,
        reply: Reply<LogChunk>,
    },
}

/// Errors of the API as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("{0}")]
    Failed(String),
}

/// Who may connect: root, and members of `admin_gid` if given.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub admin_gid: Option<u32>,
}

impl Access {
    /// Whether a peer with these credentials is root or in the admin group.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        uid == 0 || self.admin_gid == Some(gid)
    }
}

struct Interface {
    requests: mpsc::Sender<Request>,
}

impl Interface {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> zbus::fdo::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| zbus::fdo::Error::Failed("the supervisor is shutting down".into()))?;
        rx.await
            .map_err(|_| zbus::fdo::Error::Failed("the supervisor dropped the request".into()))?
            .map_err(zbus::fdo::Error::Failed)
    }
}

#[zbus::interface(name = "org.shoal.Supervisor1")]
impl Interface {
    async fn list(&self) -> zbus::fdo::Result<Vec<ServiceInfo>> {
        self.ask(Request::List).await
    }

    async fn start(&self, name: String) -> zbus::fdo::Result<()> {
        self.ask(|r| Request::Start(name, r)).await
    }

    async fn stop(&self, name: String) -> zbus::fdo::Result<()> {
        self.ask(|r| Request::Stop(name, r)).await
    }

    async fn restart(&self, name: String) -> zbus::fdo::Result<()> {
        self.ask(|r| Request::Restart(name, r)).await
    }

    async fn logs(&self, name: String, since: u64, limit: u32) -> zbus::fdo::Result<LogChunk> {
        self.ask(|reply| Request::Logs {
            name,
            since,
            limit,
            reply,
        })
        .await
    }

    #[zbus(signal)]
    async fn state_changed(emitter: &SignalEmitter<'_>, change: StateChange) -> zbus::Result<()>;
}

/// Binds the socket (replacing a stale one), readable and writable by owner and group only.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    crate::bind_socket(path, 0o660)
}

/// Serves the interface on `listener` until the request channel closes. Each peer gets its own
/// connection; a peer that is neither root nor in the admin group is refused before any
/// D-Bus traffic, and the refusal is logged.
pub async fn serve(
    listener: UnixListener,
    access: Access,
    requests: mpsc::Sender<Request>,
    changes: broadcast::Sender<StateChange>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("supervisor API: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = requests.closed() => return,
        };
        let creds = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("supervisor API: peer credentials: {e}");
                continue;
            }
        };
        if !access.allows(creds.uid(), creds.gid()) {
            tracing::warn!(
                uid = creds.uid(),
                gid = creds.gid(),
                pid = creds.pid(),
                "supervisor API: refused a peer that is neither root nor an admin"
            );
            continue;
        }
        let requests = requests.clone();
        let changes = changes.subscribe();
        tokio::spawn(async move {
            if let Err(e) = serve_peer(stream, requests, changes).await {
                tracing::debug!("supervisor API peer: {e}");
            }
        });
    }
}

async fn serve_peer(
    stream: UnixStream,
    requests: mpsc::Sender<Request>,
    mut changes: broadcast::Receiver<StateChange>,
) -> Result<(), ApiError> {
    let connection = zbus::connection::Builder::unix_stream(stream)
        .server(crate::server_guid())?
        .p2p()
        .serve_at(OBJECT_PATH, Interface { requests })?
        .build()
        .await?;
    let emitter = SignalEmitter::new(&connection, OBJECT_PATH)?;
    loop {
        // A peer that hangs up frees its task at once, not at the next state change.
        let received = tokio::select! {
            received = changes.recv() => received,
            () = connection.closed() => return Ok(()),
        };
        match received {
            Ok(change) => {
                if Interface::state_changed(&emitter, change).await.is_err() {
                    return Ok(()); // the peer went away
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!("supervisor API peer missed {n} state changes");
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

// In p2p mode the destination is not routed anywhere, but zbus wants one.
#[zbus::proxy(
    interface = "org.shoal.Supervisor1",
    default_service = "org.shoal.Supervisor",
    default_path = "/org/shoal/Supervisor"
)]
pub trait Supervisor {
    fn list(&self) -> zbus::Result<Vec<ServiceInfo>>;
    fn start(&self, name: &str) -> zbus::Result<()>;
    fn stop(&self, name: &str) -> zbus::Result<()>;
    fn restart(&self, name: &str) -> zbus::Result<()>;
    fn logs(&self, name: &str, since: u64, limit: u32) -> zbus::Result<LogChunk>;
    #[zbus(signal)]
    fn state_changed(&self, change: StateChange) -> zbus::Result<()>;
}

/// A connection to the supervisor, for `shoalctl` and tests.
pub struct Client {
    proxy: SupervisorProxy<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Self, ApiError> {
        let connection = crate::connect_p2p(path).await?;
        let proxy = SupervisorProxy::builder(&connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        Ok(Self { proxy })
    }

    pub async fn list(&self) -> Result<Vec<ServiceInfo>, ApiError> {
        self.proxy.list().await.map_err(failed)
    }

    pub async fn start(&self, name: &str) -> Result<(), ApiError> {
        self.proxy.start(name).await.map_err(failed)
    }

    pub async fn stop(&self, name: &str) -> Result<(), ApiError> {
        self.proxy.stop(name).await.map_err(failed)
    }

    pub async fn restart(&self, name: &str) -> Result<(), ApiError> {
        self.proxy.restart(name).await.map_err(failed)
    }

    pub async fn logs(&self, name: &str, since: u64, limit: u32) -> Result<LogChunk, ApiError> {
        self.proxy.logs(name, since, limit).await.map_err(failed)
    }

    /// The `StateChanged` signals from now on (a `futures` stream of signal messages; `args()`
    /// gives the [`StateChange`]).
    pub async fn changes(&self) -> Result<StateChangedStream, ApiError> {
        Ok(self.proxy.receive_state_changed().await?)
    }
}

/// A D-Bus error reply becomes the daemon's own message.
fn failed(e: zbus::Error) -> ApiError {
    match e {
        zbus::Error::MethodError(_, Some(message), _) => ApiError::Failed(message),
        zbus::Error::FDO(fdo) => match *fdo {
            zbus::fdo::Error::Failed(message) => ApiError::Failed(message),
            other => ApiError::Bus(zbus::Error::FDO(Box::new(other))),
        },
        other => ApiError::Bus(other),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A daemon stand-in: two services, `web` can be stopped, anything else is unknown.
    fn fake_daemon(mut requests: mpsc::Receiver<Request>, changes: broadcast::Sender<StateChange>) {
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                match request {
                    Request::List(reply) => {
                        let info = |name: &str, state: &str| ServiceInfo {
                            name: name.into(),
                            state: state.into(),
                            reason: "started".into(),
                            pid: 42,
                            restarts: 1,
                            uptime_s: 1.5,
                            memory_bytes: 4096,
                            cpu_usec: 7,
                            status: String::new(),
                        };
                        let _ = reply.send(Ok(vec![info("db", "ready"), info("web", "ready")]));
                    }
                    Request::Stop(name, reply) if name == "web" => {
                        let _ = changes.send(StateChange {
                            name,
                            from: "ready".into(),
                            to: "stopping".into(),
                            reason: "stop requested".into(),
                        });
                        let _ = reply.send(Ok(()));
                    }
                    Request::Start(name, reply)
                    | Request::Stop(name, reply)
                    | Request::Restart(name, reply) => {
                        let _ = reply.send(Err(format!("no service named {name}")));
                    }
                    Request::Logs {
                        since,
                        limit,
                        reply,
                        ..
                    } => {
                        let lines = (since..since + u64::from(limit))
                            .map(|seq| LogLine {
                                seq,
                                time_s: 0.5,
                                stream: "stdout".into(),
                                text: format!("line {seq}"),
                            })
                            .collect();
                        let _ = reply.send(Ok(LogChunk {
                            lines,
                            next_seq: since + u64::from(limit),
                            dropped: 0,
                        }));
                    }
                }
            }
        });
    }

    async fn server(dir: &Path) -> (PathBuf, mpsc::Sender<Request>) {
        let path = dir.join("supervisor.sock");
        let listener = bind(&path).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let (changes, _) = broadcast::channel(16);
        fake_daemon(rx, changes.clone());
        tokio::spawn(serve(
            listener,
            Access { admin_gid: None },
            tx.clone(),
            changes,
        ));
        (path, tx)
    }

    #[tokio::test]
    async fn calls_go_to_the_daemon_and_errors_come_back_as_its_messages() {
        use futures_util_free::next;
        let dir = tempfile::tempdir().unwrap();
        let (path, _keep) = server(dir.path()).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);

        let client = Client::connect(&path).await.unwrap();
        let services = client.list().await.unwrap();
        assert_eq!(
            services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["db", "web"]
        );
        assert_eq!(services[0].memory_bytes, 4096);

        let err = client.start("nope").await.unwrap_err();
        assert_eq!(err.to_string(), "no service named nope");

        let mut changes = client.changes().await.unwrap();
        client.stop("web").await.unwrap();
        let signal = tokio::time::timeout(std::time::Duration::from_secs(5), next(&mut changes))
            .await
            .expect("a StateChanged signal")
            .expect("stream open");
        let change = signal.args().unwrap().change;
        assert_eq!(
            (change.name.as_str(), change.to.as_str()),
            ("web", "stopping")
        );

        let chunk = client.logs("web", 10, 3).await.unwrap();
        assert_eq!(chunk.next_seq, 13);
        assert_eq!(chunk.lines[2].text, "line 12");
    }

    /// Peers that are neither root nor admins are dropped before any D-Bus traffic, even when
    /// the socket's permissions would let them connect.
    #[test]
    fn non_admin_peers_are_refused() {
        const CHILD: &str = "SHOAL_API_CHILD_SOCKET";
        if let Some(path) = std::env::var_os(CHILD) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let outcome = rt.block_on(async {
                match Client::connect(Path::new(&path)).await {
                    Ok(client) => client.list().await.map(|_| ()),
                    Err(e) => Err(e),
                }
            });
            println!(
                "\nCHILD-OUTCOME {}",
                if outcome.is_ok() {
                    "allowed"
                } else {
                    "refused"
                }
            );
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            panic!("this test runs as root (CI does): it switches a child to uid 65534");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (path, _keep) = rt.block_on(server(dir.path()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();

        let run_as = |uid: u32| {
            crate::test_support::rerun_as(
                "supervisor::tests::non_admin_peers_are_refused",
                uid,
                CHILD,
                &path,
            )
        };
        assert_eq!(run_as(65534), "refused");
        assert_eq!(run_as(0), "allowed");
    }

    #[test]
    fn access_rules() {
        let root_only = Access { admin_gid: None };
        assert!(root_only.allows(0, 0));
        assert!(!root_only.allows(1000, 1000));
        let admins = Access {
            admin_gid: Some(10),
        };
        assert!(admins.allows(1000, 10));
        assert!(!admins.allows(1000, 11));
    }

    /// `StreamExt::next` without pulling in a futures crate for one call.
    mod futures_util_free {
        use std::future::poll_fn;
        use std::pin::Pin;

        pub async fn next<S: zbus::export::futures_core::Stream + Unpin>(
            s: &mut S,
        ) -> Option<S::Item> {
            poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
        }
    }
}
