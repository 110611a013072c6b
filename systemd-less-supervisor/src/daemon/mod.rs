//! The supervisor daemon: loads the definitions, runs the services, and stops them in order
//! when PID 1 sends SIGTERM.
//!
//! ```text
//!  SIGCHLD ─ waitpid(-1) ─┐            ┌─ spawn (cgroup leaf, ids, caps, log pipe)
//!  notify socket ─────────┤            ├─ kill / cgroup.kill
//!  timers ────────────────┼─> Engine ──┼─ probe tasks (tcp readiness, health checks)
//!  probe results ─────────┤ (Supervisor├─ `service` events on the console
//!  Daemon handle requests ┘  machine)  └─ per-service log rings (+ /var/log/shoal)
//! ```
//!
//! One thread runs everything (a tokio `current_thread` runtime), plus a tiny console writer
//! thread. Design choices:
//! - **One reaper.** The daemon is a child subreaper; its SIGCHLD handler reaps every child
//!   with `waitpid(-1, WNOHANG)` ([`reaper`]). Exits of main processes go to the state
//!   machine, exec health probes are completed, anything else is just collected.
//! - **Spawning is synchronous.** `spawn` blocks until the child has exec'd: a fork and a
//!   handful of system calls, well under a millisecond on a node's local, read-only image. Doing
//!   it on the loop's thread (rather than `spawn_blocking`) keeps one thread and gives an
//!   ordering guarantee for free: the pid is registered as the service's main process before
//!   the loop can reap it, so even an instant exit is never mistaken for a stranger's.
//! - **Bounded memory.** Log rings are bounded per service; the request channel is bounded;
//!   console echo drops (and counts) lines rather than queueing without limit.
//! - **Without cgroups** (no writable cgroup2 at `--cgroup-root`) services still run, but a
//!   service that sets `[resources]` limits fails to start with an error saying why, rather
//!   than silently running unlimited. Leftover processes are then killed by process group, and
//!   notifications from a main process's descendants are mapped by ancestry.
//! - **Invalid definitions** are reported in the `supervisor.started` event; valid services
//!   run, and a service that depends on an invalid one waits (its log says so).
//! - **`MAINPID=`** is honoured only for a process inside the service's own cgroup (never
//!   without cgroups): a service cannot make another service's process, or any unrelated
//!   one, its main process.

mod api;
mod console;
mod dbus;
mod engine;
mod host;
mod kmsg;
mod load;
mod options;
mod output;
mod probe;
mod reaper;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_boot_events::Event;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tokio::sync::{broadcast, mpsc};

use crate::notify::NotifySocket;
use crate::users::Users;

pub use api::{ApiError, Daemon, ServiceInfo, StateChange};
pub use options::{Command, Options, USAGE, parse as parse_args};

use api::Msg;
use console::Console;
use engine::Engine;
use host::RealHost;
use output::{LogMap, ServiceLog};

/// Requests and probe results waiting for the loop, at most.
const QUEUE: usize = 64;
/// How often emptied cgroups are checked for removal while some wait.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// After the shutdown timeout everything is killed; this long is then left for the exits.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// The log ring of a definition that could not be used (it only gets the supervisor's notes).
const INVALID_RING_BYTES: usize = 4096;

/// Why the daemon could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("installing the {0} handler: {1}")]
    Signal(&'static str, std::io::Error),
}

/// The running daemon, before and while its loop runs.
#[derive(Debug)]
pub struct Server {
    options: Options,
    engine: Engine<RealHost>,
    notify: Option<AsyncFd<NotifySocket>>,
    rx: mpsc::Receiver<Msg>,
    handle: Daemon,
    console: Console,
    services: u32,
    config_errors: Vec<String>,
    sigchld: SignalStream,
    sigterm: SignalStream,
    sigint: SignalStream,
}

impl Server {
    /// Sets everything up: subreaper, signal handlers, definitions, cgroups, notify socket,
    /// logs. Nothing is started yet. Must be called inside a tokio runtime.
    pub fn start(options: Options) -> Result<Server, DaemonError> {
        if let Err(error) = reaper::become_subreaper() {
            tracing::error!("cannot become a child subreaper ({error}); orphans go to PID 1");
        }
        // Before any child exists, so no exit can go unnoticed.
        let sigchld = signal(SignalKind::child()).map_err(|e| DaemonError::Signal("SIGCHLD", e))?;
        let sigterm =
            signal(SignalKind::terminate()).map_err(|e| DaemonError::Signal("SIGTERM", e))?;
        let sigint =
            signal(SignalKind::interrupt()).map_err(|e| DaemonError::Signal("SIGINT", e))?;
        let console = Console::start();

        let mut config_errors = Vec::new();
        let users = Users::load(&options.root).unwrap_or_else(|error| {
            config_errors.push(error.to_string());
            Users::parse("", "")
        });
        let loaded = load::load(&options.services_dir, &users);
        config_errors.extend(loaded.errors.iter().cloned());
        for error in &config_errors {
            tracing::error!("{error}");
        }

        let (cgroups, no_cgroups_reason) =
            match host::setup_cgroups(&options.cgroup_root, &options.proc_root) {
                Ok(cgroups) => (Some(cgroups), String::new()),
                Err(reason) => {
                    tracing::warn!(
                        "running services without cgroups ({reason}): no limits, and services \
                         that set limits will not start"
                    );
                    (None, reason)
                }
            };

        let notify = bind_notify(&options.notify_socket);
        let notify_path = notify.as_ref().map(|n| n.get_ref().path().to_owned());

        let log_dir = writable_dir(&options.log_dir);
        match &log_dir {
            Some(dir) => tracing::info!("service logs persisted under {}", dir.display()),
            None => tracing::info!(
                "{} is not writable: service logs are kept in memory only",
                options.log_dir.display()
            ),
        }
        let mut logs = BTreeMap::new();
        let mut kernel_log = None;
        for service in &loaded.services {
            let name = service.name.as_str();
            let log = ServiceLog::new(name, service.log_ring_bytes, log_dir);
            logs.insert(name.to_owned(), Arc::new(log));
        }
        for name in &loaded.invalid {
            let log = ServiceLog::new(name.as_str(), INVALID_RING_BYTES, None);
            logs.insert(name.as_str().to_owned(), Arc::new(log));
        }
        // The kernel log is readable through the API like a service's.
        if logs.contains_key(kmsg::NAME) {
            tracing::warn!(
                "a service is named {}: the kernel log is not in the API",
                kmsg::NAME
            );
        } else {
            let log = Arc::new(ServiceLog::new(kmsg::NAME, kmsg::RING_BYTES, None));
            logs.insert(kmsg::NAME.to_owned(), Arc::clone(&log));
            kernel_log = Some(log);
        }
        let logs: LogMap = Arc::new(logs);

        let (tx, rx) = mpsc::channel(QUEUE);
        let (changes, _) = broadcast::channel(QUEUE);
        let handle = Daemon::new(tx.clone(), Arc::clone(&logs), changes.clone());
        let host = RealHost::new(
            cgroups,
            no_cgroups_reason,
            options.proc_root.clone(),
            users,
            notify_path,
            logs,
            console.clone(),
            tx,
            changes,
        );
        if let Some(log) = kernel_log {
            kmsg::start(&options.kmsg, log);
        }
        Ok(Server {
            engine: Engine::new(&loaded, host),
            services: u32::try_from(loaded.services.len()).unwrap_or(u32::MAX),
            options,
            notify,
            rx,
            handle,
            console,
            config_errors,
            sigchld,
            sigterm,
            sigint,
        })
    }

    /// A handle for the control API.
    pub fn handle(&self) -> Daemon {
        self.handle.clone()
    }

    /// Starts every service and supervises them until SIGTERM or SIGINT has stopped them all.
    pub async fn run(mut self) -> Result<(), DaemonError> {
        // The control API comes up before the services, so an operator can watch them start.
        let api = &self.options.api_socket;
        match dbus::start(self.handle(), api, self.options.admin_gid) {
            Ok(()) => tracing::debug!("control API on {}", api.display()),
            Err(e) => tracing::warn!("no control API: {e}"),
        }
        self.engine.start_all(Instant::now());
        self.console.event(Event::SupervisorStarted {
            services: self.services,
            config_errors: std::mem::take(&mut self.config_errors),
        });

        let mut shutdown: Option<Shutdown> = None;
        loop {
            if shutdown.is_some() && self.engine.idle() {
                break;
            }
            let now = Instant::now();
            let mut wake = self.engine.next_deadline();
            if self.engine.host.draining() {
                wake = earliest(wake, now + DRAIN_POLL);
            }
            if let Some(s) = &shutdown {
                wake = earliest(wake, s.deadline);
            }
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let notify = self.notify.as_ref();
            let readable = async {
                match notify {
                    Some(fd) => fd.readable().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.sigchld.recv() => {
                    let now = Instant::now();
                    for (pid, exit) in reaper::reap_all() {
                        self.engine.exited(pid, exit, now);
                    }
                    self.engine.host.poll_draining();
                }
                _ = self.sigterm.recv() => begin_shutdown(&mut self.engine, &mut shutdown, "SIGTERM", self.options.shutdown_timeout),
                _ = self.sigint.recv() => begin_shutdown(&mut self.engine, &mut shutdown, "SIGINT", self.options.shutdown_timeout),
                guard = readable => {
                    match guard {
                        Ok(mut guard) => {
                            let socket = guard.get_inner();
                            loop {
                                match socket.recv() {
                                    Ok(Some(received)) => self.engine.notified(
                                        received.pid.as_raw(),
                                        received.notifications,
                                        Instant::now(),
                                    ),
                                    Ok(None) => break,
                                    Err(error) => {
                                        tracing::warn!("{error}");
                                        break;
                                    }
                                }
                            }
                            guard.clear_ready();
                        }
                        Err(error) => {
                            tracing::error!("notify socket: {error}; notifications are ignored from now on");
                            self.notify = None;
                        }
                    }
                }
                msg = self.rx.recv() => {
                    if let Some(msg) = msg {
                        self.handle_msg(msg);
                    }
                }
                () = sleep => {
                    let now = Instant::now();
                    self.engine.tick(now);
                    self.engine.host.poll_draining();
                    if let Some(s) = &mut shutdown && now >= s.deadline {
                        if s.killed {
                            tracing::error!("services still have processes after being killed; exiting anyway");
                            break;
                        }
                        tracing::warn!(
                            "services did not stop within {:?}; killing them",
                            self.options.shutdown_timeout
                        );
                        self.engine.kill_everything();
                        s.killed = true;
                        s.deadline = now + KILL_GRACE;
                    }
                }
            }
        }

        // Stragglers in the services' cgroups go too, then their leaves.
        self.engine.kill_everything();
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            for (pid, exit) in reaper::reap_all() {
                self.engine.exited(pid, exit, now);
            }
            self.engine.host.poll_draining();
            if !self.engine.host.draining() || now >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ms = shutdown.map_or(0.0, |s| {
            (s.started.elapsed().as_secs_f64() * 1e6).round() / 1e3
        });
        self.console.event(Event::SupervisorStopped { ms });
        self.console.flush(Duration::from_secs(2));
        if let Some(notify) = &self.notify {
            let _ = std::fs::remove_file(notify.get_ref().path());
        }
        Ok(())
    }

    fn handle_msg(&mut self, msg: Msg) {
        let now = Instant::now();
        let engine = &mut self.engine;
        match msg {
            Msg::PortReady { service, pid } => engine.port_ready(&service, pid, now),
            Msg::Health {
                service,
                pid,
                healthy,
            } => engine.health(&service, pid, healthy, now),
            Msg::List(reply) => {
                let _ = reply.send(engine.list(now));
            }
            Msg::Status(name, reply) => {
                let _ = reply.send(engine.info(&name, now));
            }
            Msg::Start(name, reply) => {
                let _ = reply.send(engine.start(&name, now));
            }
            Msg::Stop(name, reply) => {
                let _ = reply.send(engine.stop(&name, now));
            }
            Msg::Restart(name, reply) => {
                let _ = reply.send(engine.restart(&name, now));
            }
        }
    }
}

/// A shutdown in progress.
#[derive(Debug)]
struct Shutdown {
    started: Instant,
    deadline: Instant,
    /// Everything was killed at the first deadline.
    killed: bool,
}

fn begin_shutdown(
    engine: &mut Engine<RealHost>,
    shutdown: &mut Option<Shutdown>,
    signal: &str,
    timeout: Duration,
) {
    if shutdown.is_some() {
        tracing::info!("{signal}: already shutting down");
        return;
    }
    tracing::info!("{signal}: stopping every service");
    let now = Instant::now();
    *shutdown = Some(Shutdown {
        started: now,
        deadline: now + timeout,
        killed: false,
    });
    engine.shutdown(now);
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Binds the notify socket (creating its directory); `None`, logged, when that fails:
/// services then run, but `notify` services never become ready.
fn bind_notify(path: &Path) -> Option<AsyncFd<NotifySocket>> {
    if let Some(dir) = path.parent()
        && let Err(error) = std::fs::create_dir_all(dir)
    {
        tracing::error!("creating {}: {error}", dir.display());
    }
    let socket = match NotifySocket::bind(path) {
        Ok(socket) => socket,
        Err(error) => {
            tracing::error!("{error}; notify services will not become ready");
            return None;
        }
    };
    // SAFETY: the NotifySocket owns its descriptor, always returns that one from as_raw_fd, and
    // keeps it open until it is dropped, which only the AsyncFd that now owns it can do.
    match unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) } {
        Ok(fd) => Some(fd),
        Err(error) => {
            tracing::error!("watching the notify socket: {error}");
            None
        }
    }
}

/// `dir` when it exists or can be made, and accepts files.
fn writable_dir(dir: &Path) -> Option<&Path> {
    std::fs::create_dir_all(dir).ok()?;
    let probe = dir.join(".shoal-supervisor-probe");
    std::fs::write(&probe, b"").ok()?;
    let _ = std::fs::remove_file(&probe);
    Some(dir)
}
