//! [`Daemon`]: the handle through which the control API (the D-Bus layer to come) reads and
//! steers the running supervisor. Requests travel over a bounded channel to the daemon's
//! loop, which owns all state; logs are read directly from the shared rings.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::cgroup::Stats;
use crate::logs::Since;
use crate::machine::RequestError;

use super::output::LogMap;

/// One service as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub description: String,
    /// `waiting`, `starting`, `ready`, `done`, `stopping`, `backing-off`, `failed`,
    /// `inactive`, or `invalid` for a definition that could not be used.
    pub state: &'static str,
    /// Why it is in its state: the last transition's reason (e.g. the failure).
    pub reason: Option<String>,
    pub wanted: bool,
    pub pid: Option<i32>,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// How long the current process has run.
    pub uptime: Option<Duration>,
    /// The latest sd_notify `STATUS=` text.
    pub status_text: Option<String>,
    /// Memory, CPU and pids from its cgroup (`None` without cgroups).
    pub stats: Option<Stats>,
}

/// A service changed state (the same as its `service` boot event); the D-Bus API's own type.
pub use shoal_api::supervisor::StateChange;

/// Why an API request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("no service named {0}")]
    Unknown(String),
    #[error("the supervisor has stopped")]
    Stopped,
}

/// What the daemon's loop is asked to do.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A readiness probe's port accepted (for the run with main pid `pid`).
    PortReady {
        service: String,
        pid: i32,
    },
    /// A health check ended.
    Health {
        service: String,
        pid: i32,
        healthy: bool,
    },
    List(oneshot::Sender<Vec<ServiceInfo>>),
    Status(String, oneshot::Sender<Option<ServiceInfo>>),
    Start(String, oneshot::Sender<Result<(), RequestError>>),
    Stop(String, oneshot::Sender<Result<(), RequestError>>),
    Restart(String, oneshot::Sender<Result<(), RequestError>>),
}

/// A handle on the running supervisor; cheap to clone, usable from any task or thread.
#[derive(Debug, Clone)]
pub struct Daemon {
    tx: mpsc::Sender<Msg>,
    logs: LogMap,
    changes: broadcast::Sender<StateChange>,
}

impl Daemon {
    pub(crate) fn new(
        tx: mpsc::Sender<Msg>,
        logs: LogMap,
        changes: broadcast::Sender<StateChange>,
    ) -> Self {
        Self { tx, logs, changes }
    }

    /// Every state change from now on. The channel is bounded: a subscriber that falls behind
    /// gets `RecvError::Lagged` and misses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    /// The sender behind [`Daemon::subscribe`], for the D-Bus server's per-peer subscriptions.
    pub(crate) fn changes(&self) -> broadcast::Sender<StateChange> {
        self.changes.clone()
    }

    /// Every service (including invalid definitions), sorted by name.
    pub async fn list(&self) -> Result<Vec<ServiceInfo>, ApiError> {
        self.ask(Msg::List).await
    }

    pub async fn status(&self, name: &str) -> Result<ServiceInfo, ApiError> {
        self.ask(|reply| Msg::Status(name.to_owned(), reply))
            .await?
            .ok_or_else(|| ApiError::Unknown(name.to_owned()))
    }

    /// Starts the service and everything it requires; clears a failure.
    pub async fn start(&self, name: &str) -> Result<(), ApiError> {
        Ok(self
            .ask(|reply| Msg::Start(name.to_owned(), reply))
            .await??)
    }

    /// Stops the service (and what requires it); it stays down until started.
    pub async fn stop(&self, name: &str) -> Result<(), ApiError> {
        Ok(self
            .ask(|reply| Msg::Stop(name.to_owned(), reply))
            .await??)
    }

    /// Stops and starts the service at once (not counted as a crash).
    pub async fn restart(&self, name: &str) -> Result<(), ApiError> {
        Ok(self
            .ask(|reply| Msg::Restart(name.to_owned(), reply))
            .await??)
    }

    /// At most `limit` stored log lines from sequence number `seq` on (0: the oldest kept);
    /// `next_seq` of the answer is where to continue.
    pub fn logs(&self, name: &str, seq: u64, limit: usize) -> Result<Since, ApiError> {
        let log = self
            .logs
            .get(name)
            .ok_or_else(|| ApiError::Unknown(name.to_owned()))?;
        Ok(log.since(seq, limit))
    }

    /// As [`Daemon::logs`], but waits until there is at least one line from `seq` on.
    pub async fn follow_logs(&self, name: &str, seq: u64, limit: usize) -> Result<Since, ApiError> {
        let log = self
            .logs
            .get(name)
            .ok_or_else(|| ApiError::Unknown(name.to_owned()))?;
        Ok(log.follow(seq, limit).await)
    }

    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(request(reply))
            .await
            .map_err(|_| ApiError::Stopped)?;
        answer.await.map_err(|_| ApiError::Stopped)
    }
}
