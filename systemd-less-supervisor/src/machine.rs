//! The supervisor's state machine, sans-IO: inputs (a process exited, a service said it is
//! ready, a timer fired, an operator asked for something) go in, [`Action`]s (spawn this, send
//! that signal, kill that cgroup) come out. The daemon carries the actions out and feeds the
//! results back; tests drive whole systems of services through it with a fake clock.
//!
//! Semantics:
//! - A service starts once every service it is ordered `after` or `requires` is settled: ready
//!   (or, for a oneshot, finished). An `after` dependency that failed counts as settled (it only
//!   orders); a `requires` dependency that failed fails its dependents.
//! - A service that `requires` another stops when that one stops or crashes, and starts again
//!   when it is ready again.
//! - A process that exits is restarted according to its policy after a delay that doubles up to
//!   a maximum; more than `max_restarts` restarts within `window` mark the service failed (a
//!   crash loop), and only an explicit start clears that.
//! - Stopping sends the stop signal, then kills the whole cgroup after the stop timeout.
//! - Shutdown stops services in reverse dependency order: a service is stopped only once every
//!   service that depends on it is down.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::config::{Readiness, RestartPolicy, RestartWhen, Service};

/// What the state machine knows about a service: the parts of its definition that drive
/// decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpec {
    pub name: String,
    pub readiness: Readiness,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub restart: RestartPolicy,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub stop_signal: Signal,
    /// Consecutive failed health checks that make the service restart; `None`: no checks.
    pub health_threshold: Option<u32>,
}

impl From<&Service> for UnitSpec {
    fn from(s: &Service) -> Self {
        Self {
            name: s.name.as_str().to_string(),
            readiness: s.readiness,
            after: s.after.iter().map(|n| n.as_str().to_string()).collect(),
            requires: s.requires.iter().map(|n| n.as_str().to_string()).collect(),
            restart: s.restart.clone(),
            start_timeout: s.start_timeout,
            stop_timeout: s.stop_timeout,
            stop_signal: s.stop_signal,
            health_threshold: s.health.as_ref().map(|h| h.failure_threshold),
        }
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not wanted, not running.
    Inactive,
    /// Wanted; waiting for its dependencies.
    Waiting,
    /// Spawn requested, or running but not ready yet.
    Starting { since: Instant },
    /// Running and ready (for a target: all it requires is ready).
    Ready { since: Instant },
    /// A oneshot that finished successfully.
    Done,
    /// Stop signal sent; waiting for the process to exit.
    Stopping { since: Instant, killed: bool },
    /// Exited; restarts at `until`.
    BackingOff { until: Instant },
    /// Given up on; only an explicit start brings it back.
    Failed { reason: String },
}

impl State {
    /// A short name for APIs and logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Waiting => "waiting",
            State::Starting { .. } => "starting",
            State::Ready { .. } => "ready",
            State::Done => "done",
            State::Stopping { .. } => "stopping",
            State::BackingOff { .. } => "backing-off",
            State::Failed { .. } => "failed",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

impl Exit {
    fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by {}", s.as_str()),
        }
    }
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the service's cgroup and start its process; report back with
    /// [`Supervisor::spawned`] or [`Supervisor::spawn_failed`].
    Spawn { service: String },
    /// Send `signal` to the service's main process.
    Signal {
        service: String,
        pid: i32,
        signal: Signal,
    },
    /// Kill every process in the service's cgroup (`cgroup.kill`).
    KillCgroup { service: String },
    /// Start probing readiness on 127.0.0.1:`port`; report with [`Supervisor::ready`].
    ProbeTcp { service: String, port: u16 },
    /// Start (or stop) running the service's health checks.
    HealthChecks { service: String, enabled: bool },
    /// A state change, for logs and the API's change signals.
    Changed {
        service: String,
        from: &'static str,
        to: &'static str,
        reason: String,
    },
}

#[derive(Debug)]
struct Unit {
    spec: UnitSpec,
    state: State,
    /// Whether it should be running (an operator or the boot asked for it).
    wanted: bool,
    pid: Option<i32>,
    /// When the current process started.
    started_at: Option<Instant>,
    /// Times of recent automatic restarts, for crash-loop detection.
    restarts: VecDeque<Instant>,
    /// Total automatic restarts (for the API).
    restart_count: u32,
    next_delay: Duration,
    health_failures: u32,
    /// What to do when the process exits while stopping.
    after_stop: AfterStop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    /// Stay down (or wait for dependencies if still wanted).
    Settle,
    /// Start again at once (an operator restart).
    Restart,
    /// The stop was a failure (start timeout, unhealthy): apply the restart policy.
    Fail,
}

/// A read-only view of one service, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub state: State,
    pub wanted: bool,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub started_at: Option<Instant>,
}

/// Errors for operator requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no service named {0}")]
    Unknown(String),
    #[error("the system is shutting down")]
    ShuttingDown,
}

/// The whole system of services.
#[derive(Debug)]
pub struct Supervisor {
    units: BTreeMap<String, Unit>,
    pids: BTreeMap<i32, String>,
    shutting_down: bool,
}

impl Supervisor {
    /// A supervisor for `specs`, all inactive. Dependencies on services that are not in `specs`
    /// are ignored (config validation reports them before this point).
    pub fn new(specs: Vec<UnitSpec>) -> Self {
        let units = specs
            .into_iter()
            .map(|spec| {
                let unit = Unit {
                    next_delay: spec.restart.delay,
                    spec,
                    state: State::Inactive,
                    wanted: false,
                    pid: None,
                    started_at: None,
                    restarts: VecDeque::new(),
                    restart_count: 0,
                    health_failures: 0,
                    after_stop: AfterStop::Settle,
                };
                (unit.spec.name.clone(), unit)
            })
            .collect();
        Self {
            units,
            pids: BTreeMap::new(),
            shutting_down: false,
        }
    }

    pub fn status(&self, name: &str) -> Option<Status> {
        self.units.get(name).map(|u| Status {
            name: name.to_string(),
            state: u.state.clone(),
            wanted: u.wanted,
            pid: u.pid,
            restarts: u.restart_count,
            started_at: u.started_at,
        })
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.units.keys().filter_map(|n| self.status(n)).collect()
    }

    /// The service a process belongs to, if it is a main process.
    pub fn service_of(&self, pid: i32) -> Option<&str> {
        self.pids.get(&pid).map(String::as_str)
    }

    /// Wants every service: the boot.
    pub fn start_all(&mut self, now: Instant) -> Vec<Action> {
        for unit in self.units.values_mut() {
            unit.wanted = true;
            if unit.state == State::Inactive {
                unit.state = State::Waiting;
            }
        }
        self.evaluate(now)
    }

    /// An operator start: wants the service and everything it requires. Clears a failure.
    pub fn start(&mut self, name: &str, now: Instant) -> Result<Vec<Action>, RequestError> {
        self.check_request(name)?;
        let mut todo = vec![name.to_string()];
        let mut seen = BTreeSet::new();
        let mut actions = Vec::new();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            let Some(unit) = self.units.get_mut(&n) else {
                continue;
            };
            unit.wanted = true;
            todo.extend(unit.spec.requires.iter().cloned());
            if matches!(unit.state, State::Inactive | State::Failed { .. }) {
                unit.restarts.clear();
                unit.next_delay = unit.spec.restart.delay;
                set_state(&mut actions, &n, unit, State::Waiting, "start requested");
            }
        }
        actions.extend(self.evaluate(now));
        Ok(actions)
    }

    /// An operator stop: the service goes down and stays down; what requires it goes down too
    /// and waits for it to be started again.
    pub fn stop(&mut self, name: &str, now: Instant) -> Result<Vec<Action>, RequestError> {
        self.check_request(name)?;
        let mut actions = Vec::new();
        if let Some(unit) = self.units.get_mut(name) {
            unit.wanted = false;
        }
        self.stop_unit(name, AfterStop::Settle, "stop requested", now, &mut actions);
        actions.extend(self.evaluate(now));
        Ok(actions)
    }

    /// An operator restart: stop, then start at once (no backoff, not counted as a crash).
    pub fn restart(&mut self, name: &str, now: Instant) -> Result<Vec<Action>, RequestError> {
        self.check_request(name)?;
        let running = self.units.get(name).is_some_and(|u| u.pid.is_some());
        if !running {
            return self.start(name, now);
        }
        let mut actions = Vec::new();
        if let Some(unit) = self.units.get_mut(name) {
            unit.wanted = true;
        }
        self.stop_unit(
            name,
            AfterStop::Restart,
            "restart requested",
            now,
            &mut actions,
        );
        Ok(actions)
    }

    /// Stops everything, dependents before what they depend on.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        self.shutting_down = true;
        for unit in self.units.values_mut() {
            unit.wanted = false;
        }
        self.evaluate(now)
    }

    /// True once no service has a process (after [`shutdown`](Self::shutdown): all stopped).
    pub fn idle(&self) -> bool {
        self.units.values().all(|u| u.pid.is_none())
    }

    /// The process for `name` started.
    pub fn spawned(&mut self, name: &str, pid: i32, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(unit) = self.units.get_mut(name) else {
            return actions;
        };
        unit.pid = Some(pid);
        unit.started_at = Some(now);
        unit.health_failures = 0;
        self.pids.insert(pid, name.to_string());
        match unit.spec.readiness {
            Readiness::Started => {
                become_ready(&mut actions, name, unit, now, "started");
            }
            Readiness::TcpPort(port) => actions.push(Action::ProbeTcp {
                service: name.into(),
                port,
            }),
            Readiness::Notify | Readiness::ExitSuccess | Readiness::Dependencies => {}
        }
        actions.extend(self.evaluate(now));
        actions
    }

    /// The service's main process is now `pid` (sd_notify `MAINPID=`, which the daemon accepts
    /// only for a process inside the service's own cgroup): from now on that process's exit,
    /// not the old one's, is the service's. Returns false, changing nothing, when the service
    /// has no process or `pid` is another service's main process.
    pub fn set_main_pid(&mut self, name: &str, pid: i32) -> bool {
        let Some(unit) = self.units.get_mut(name) else {
            return false;
        };
        let Some(old) = unit.pid else {
            return false;
        };
        if old == pid {
            return true;
        }
        if self.pids.contains_key(&pid) {
            return false;
        }
        self.pids.remove(&old);
        self.pids.insert(pid, name.to_string());
        unit.pid = Some(pid);
        true
    }

    /// The process for `name` could not be started: counts as a failure.
    pub fn spawn_failed(&mut self, name: &str, error: &str, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.failed_run(
            name,
            &format!("could not start: {error}"),
            now,
            &mut actions,
        );
        actions.extend(self.evaluate(now));
        actions
    }

    /// The service says it is ready (sd_notify READY=1, or its TCP port accepts).
    pub fn ready(&mut self, name: &str, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(unit) = self.units.get_mut(name) else {
            return actions;
        };
        if matches!(unit.state, State::Starting { .. }) && unit.pid.is_some() {
            become_ready(&mut actions, name, unit, now, "reported ready");
            actions.extend(self.evaluate(now));
        }
        actions
    }

    /// A health check ran.
    pub fn health(&mut self, name: &str, healthy: bool, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(unit) = self.units.get_mut(name) else {
            return actions;
        };
        if !matches!(unit.state, State::Ready { .. }) {
            return actions;
        }
        if healthy {
            unit.health_failures = 0;
            return actions;
        }
        unit.health_failures += 1;
        let threshold = unit.spec.health_threshold.unwrap_or(u32::MAX);
        if unit.health_failures >= threshold {
            let reason = format!("unhealthy: {} failed checks in a row", unit.health_failures);
            self.stop_unit(name, AfterStop::Fail, &reason, now, &mut actions);
            actions.extend(self.evaluate(now));
        }
        actions
    }

    /// A child exited. Processes that are not a service's main process are ignored.
    pub fn exited(&mut self, pid: i32, exit: Exit, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(name) = self.pids.remove(&pid) else {
            return actions;
        };
        let Some(unit) = self.units.get_mut(&name) else {
            return actions;
        };
        unit.pid = None;
        if unit.spec.health_threshold.is_some() {
            actions.push(Action::HealthChecks {
                service: name.clone(),
                enabled: false,
            });
        }
        match unit.state.clone() {
            State::Stopping { .. } => match unit.after_stop {
                AfterStop::Settle => {
                    let next = if unit.wanted {
                        State::Waiting
                    } else {
                        State::Inactive
                    };
                    set_state(
                        &mut actions,
                        &name,
                        unit,
                        next,
                        &format!("stopped ({exit})"),
                    );
                }
                AfterStop::Restart => {
                    unit.after_stop = AfterStop::Settle;
                    set_state(&mut actions, &name, unit, State::Waiting, "restarting");
                }
                AfterStop::Fail => {
                    unit.after_stop = AfterStop::Settle;
                    self.failed_run(
                        &name,
                        &format!("stopped after failure ({exit})"),
                        now,
                        &mut actions,
                    );
                }
            },
            _ if unit.spec.readiness == Readiness::ExitSuccess && exit.success() => {
                set_state(&mut actions, &name, unit, State::Done, "finished");
            }
            _ if exit.success() && unit.spec.restart.when != RestartWhen::Always => {
                let next = State::Inactive;
                unit.wanted = false;
                set_state(&mut actions, &name, unit, next, "exited (exit code 0)");
            }
            _ if exit.success() => {
                self.restart_later(&name, "exited (exit code 0)", now, &mut actions)
            }
            _ => self.failed_run(&name, &format!("{exit}"), now, &mut actions),
        }
        actions.extend(self.evaluate(now));
        actions
    }

    /// Timers: start and stop timeouts, restart delays. Call at [`next_deadline`](Self::next_deadline).
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let names: Vec<String> = self.units.keys().cloned().collect();
        for name in names {
            let Some(unit) = self.units.get_mut(&name) else {
                continue;
            };
            match unit.state.clone() {
                // While shutting down, stopping follows dependency order, not timeouts.
                State::Starting { since }
                    if !self.shutting_down
                        && unit.pid.is_some()
                        && now >= since + unit.spec.start_timeout =>
                {
                    let reason = format!("not ready within {:?}", unit.spec.start_timeout);
                    self.stop_unit(&name, AfterStop::Fail, &reason, now, &mut actions);
                }
                State::Stopping {
                    since,
                    killed: false,
                } if now >= since + unit.spec.stop_timeout => {
                    unit.state = State::Stopping {
                        since,
                        killed: true,
                    };
                    actions.push(Action::KillCgroup {
                        service: name.clone(),
                    });
                    actions.push(Action::Changed {
                        service: name.clone(),
                        from: "stopping",
                        to: "stopping",
                        reason: format!(
                            "did not stop within {:?}; killing its cgroup",
                            unit.spec.stop_timeout
                        ),
                    });
                }
                State::BackingOff { until } if now >= until => {
                    set_state(
                        &mut actions,
                        &name,
                        unit,
                        State::Waiting,
                        "restart delay over",
                    );
                }
                _ => {}
            }
        }
        actions.extend(self.evaluate(now));
        actions
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.units
            .values()
            .filter_map(|u| match u.state {
                State::Starting { since } if u.pid.is_some() && !self.shutting_down => {
                    Some(since + u.spec.start_timeout)
                }
                State::Stopping {
                    since,
                    killed: false,
                } => Some(since + u.spec.stop_timeout),
                State::BackingOff { until } => Some(until),
                _ => None,
            })
            .min()
    }

    fn check_request(&self, name: &str) -> Result<(), RequestError> {
        if self.shutting_down {
            return Err(RequestError::ShuttingDown);
        }
        if !self.units.contains_key(name) {
            return Err(RequestError::Unknown(name.to_string()));
        }
        Ok(())
    }

    /// A run ended badly: restart according to the policy, or fail.
    fn failed_run(&mut self, name: &str, reason: &str, now: Instant, actions: &mut Vec<Action>) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if unit.spec.restart.when == RestartWhen::Never || !unit.wanted || self.shutting_down {
            set_state(
                actions,
                name,
                unit,
                State::Failed {
                    reason: reason.to_string(),
                },
                reason,
            );
            return;
        }
        self.restart_later(name, reason, now, actions);
    }

    fn restart_later(&mut self, name: &str, reason: &str, now: Instant, actions: &mut Vec<Action>) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        let policy = &unit.spec.restart;
        // A process that stayed up for a whole window earns a fresh backoff.
        if unit
            .started_at
            .is_some_and(|t| now.duration_since(t) >= policy.window)
        {
            unit.next_delay = policy.delay;
        }
        while unit
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.window)
        {
            unit.restarts.pop_front();
        }
        if unit.restarts.len() as u32 >= policy.max_restarts {
            let failed = format!(
                "crash loop: {} restarts within {:?}, last: {reason}",
                unit.restarts.len(),
                policy.window
            );
            set_state(
                actions,
                name,
                unit,
                State::Failed {
                    reason: failed.clone(),
                },
                &failed,
            );
            return;
        }
        unit.restarts.push_back(now);
        unit.restart_count += 1;
        let delay = unit.next_delay;
        unit.next_delay = (delay * 2).min(policy.max_delay);
        let why = format!("{reason}; restarting in {delay:?}");
        set_state(
            actions,
            name,
            unit,
            State::BackingOff { until: now + delay },
            &why,
        );
    }

    /// Sends the stop signal (or settles a unit without a process).
    fn stop_unit(
        &mut self,
        name: &str,
        then: AfterStop,
        reason: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        match unit.pid {
            Some(pid) => {
                if matches!(unit.state, State::Stopping { .. }) {
                    // Already stopping: a restart request upgrades what happens next.
                    if then == AfterStop::Restart {
                        unit.after_stop = then;
                    }
                    return;
                }
                unit.after_stop = then;
                actions.push(Action::Signal {
                    service: name.into(),
                    pid,
                    signal: unit.spec.stop_signal,
                });
                set_state(
                    actions,
                    name,
                    unit,
                    State::Stopping {
                        since: now,
                        killed: false,
                    },
                    reason,
                );
            }
            None => {
                let next = if unit.wanted && !self.shutting_down {
                    State::Waiting
                } else {
                    State::Inactive
                };
                if !matches!(unit.state, State::Failed { .. }) && unit.state != next {
                    set_state(actions, name, unit, next, reason);
                }
            }
        }
    }

    /// Moves every unit as far as its dependencies allow, until nothing changes.
    fn evaluate(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        loop {
            let before = actions.len();
            let names: Vec<String> = self.units.keys().cloned().collect();
            for name in &names {
                self.evaluate_one(name, now, &mut actions);
            }
            if actions.len() == before {
                return actions;
            }
        }
    }

    fn evaluate_one(&mut self, name: &str, now: Instant, actions: &mut Vec<Action>) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let state = unit.state.clone();
        let wanted = unit.wanted && !self.shutting_down;

        // Going down: not wanted (or shutting down) and every dependent is down already.
        if !wanted {
            let running = unit.pid.is_some()
                || matches!(
                    state,
                    State::Ready { .. } | State::Waiting | State::BackingOff { .. }
                );
            if running && !matches!(state, State::Stopping { .. }) && self.dependents_down(name) {
                self.stop_unit(name, AfterStop::Settle, "no longer wanted", now, actions);
            }
            return;
        }

        // A required dependency that is not up takes its dependents down with it.
        let required_down = unit.spec.requires.iter().any(|d| !self.settled(d));
        if required_down && matches!(state, State::Ready { .. } | State::Starting { .. }) {
            let dep = unit
                .spec
                .requires
                .iter()
                .find(|d| !self.settled(d))
                .cloned()
                .unwrap_or_default();
            let reason = format!("required {dep} is not ready");
            if unit.pid.is_some() {
                self.stop_unit(name, AfterStop::Settle, &reason, now, actions);
            } else if unit.spec.readiness == Readiness::Dependencies
                && let Some(unit) = self.units.get_mut(name)
            {
                set_state(actions, name, unit, State::Waiting, &reason);
            }
            return;
        }

        if state != State::Waiting {
            return;
        }
        if let Some(dep) = unit.spec.requires.iter().find(|d| self.failed(d)).cloned() {
            if let Some(unit) = self.units.get_mut(name) {
                let reason = format!("required {dep} failed");
                set_state(
                    actions,
                    name,
                    unit,
                    State::Failed {
                        reason: reason.clone(),
                    },
                    &reason,
                );
            }
            return;
        }
        // `requires` needs the dependency up; `after` only orders, so a dependency that failed
        // or is not part of the system does not hold the service back.
        let requires_up = unit.spec.requires.iter().all(|d| self.settled(d));
        let after_settled = unit
            .spec
            .after
            .iter()
            .all(|d| self.settled(d) || self.failed(d) || !self.wanted(d));
        let deps_settled = requires_up && after_settled;
        if !deps_settled {
            return;
        }
        let Some(unit) = self.units.get_mut(name) else {
            return;
        };
        if unit.spec.readiness == Readiness::Dependencies {
            set_state(
                actions,
                name,
                unit,
                State::Ready { since: now },
                "dependencies ready",
            );
        } else {
            set_state(
                actions,
                name,
                unit,
                State::Starting { since: now },
                "dependencies ready",
            );
            actions.push(Action::Spawn {
                service: name.to_string(),
            });
        }
    }

    /// Ready, or a finished oneshot.
    fn settled(&self, name: &str) -> bool {
        self.units
            .get(name)
            .is_none_or(|u| matches!(u.state, State::Ready { .. } | State::Done))
    }

    fn failed(&self, name: &str) -> bool {
        self.units
            .get(name)
            .is_some_and(|u| matches!(u.state, State::Failed { .. }))
    }

    fn wanted(&self, name: &str) -> bool {
        self.units.get(name).is_some_and(|u| u.wanted)
    }

    /// Whether every service ordered after `name` has no process left.
    fn dependents_down(&self, name: &str) -> bool {
        self.units.values().all(|u| {
            let depends = u
                .spec
                .after
                .iter()
                .chain(&u.spec.requires)
                .any(|d| d == name);
            !depends || (u.pid.is_none() && !matches!(u.state, State::Ready { .. }))
        })
    }
}

/// Ready, and from now on health-checked if it has checks.
fn become_ready(
    actions: &mut Vec<Action>,
    name: &str,
    unit: &mut Unit,
    now: Instant,
    reason: &str,
) {
    set_state(actions, name, unit, State::Ready { since: now }, reason);
    if unit.spec.health_threshold.is_some() {
        actions.push(Action::HealthChecks {
            service: name.into(),
            enabled: true,
        });
    }
}

fn set_state(actions: &mut Vec<Action>, name: &str, unit: &mut Unit, to: State, reason: &str) {
    let from = unit.state.name();
    unit.state = to;
    actions.push(Action::Changed {
        service: name.to_string(),
        from,
        to: unit.state.name(),
        reason: reason.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn spec(name: &str) -> UnitSpec {
        UnitSpec {
            name: name.into(),
            readiness: Readiness::Started,
            after: vec![],
            requires: vec![],
            restart: RestartPolicy {
                when: RestartWhen::OnFailure,
                delay: 100 * MS,
                max_delay: 1000 * MS,
                max_restarts: 3,
                window: Duration::from_secs(60),
            },
            start_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(2),
            stop_signal: Signal::SIGTERM,
            health_threshold: None,
        }
    }

    fn requires(mut s: UnitSpec, deps: &[&str]) -> UnitSpec {
        s.requires = deps.iter().map(|d| d.to_string()).collect();
        s
    }

    fn with(mut s: UnitSpec, readiness: Readiness) -> UnitSpec {
        s.readiness = readiness;
        s
    }

    /// A fake daemon: carries out spawns at once with increasing pids, records everything else.
    struct Sim {
        sup: Supervisor,
        now: Instant,
        next_pid: i32,
        spawned: Vec<String>,
        signals: Vec<(String, Signal)>,
        kills: Vec<String>,
        probes: Vec<(String, u16)>,
    }

    impl Sim {
        fn new(specs: Vec<UnitSpec>) -> Self {
            Self {
                sup: Supervisor::new(specs),
                now: Instant::now(),
                next_pid: 100,
                spawned: vec![],
                signals: vec![],
                kills: vec![],
                probes: vec![],
            }
        }

        fn run(&mut self, actions: Vec<Action>) {
            let mut queue: VecDeque<Action> = actions.into();
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::Spawn { service } => {
                        self.next_pid += 1;
                        self.spawned.push(service.clone());
                        queue.extend(self.sup.spawned(&service, self.next_pid, self.now));
                    }
                    Action::Signal {
                        service, signal, ..
                    } => self.signals.push((service, signal)),
                    Action::KillCgroup { service } => self.kills.push(service),
                    Action::ProbeTcp { service, port } => self.probes.push((service, port)),
                    Action::HealthChecks { .. } | Action::Changed { .. } => {}
                }
            }
        }

        fn start_all(&mut self) {
            let a = self.sup.start_all(self.now);
            self.run(a);
        }

        fn pid(&self, name: &str) -> i32 {
            self.sup
                .status(name)
                .and_then(|s| s.pid)
                .unwrap_or_else(|| panic!("{name} has no process"))
        }

        fn exit(&mut self, name: &str, exit: Exit) {
            let pid = self.pid(name);
            let a = self.sup.exited(pid, exit, self.now);
            self.run(a);
        }

        fn ready(&mut self, name: &str) {
            let a = self.sup.ready(name, self.now);
            self.run(a);
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            let a = self.sup.tick(self.now);
            self.run(a);
        }

        fn state(&self, name: &str) -> &'static str {
            self.sup.status(name).unwrap().state.name()
        }
    }

    #[test]
    fn starts_in_dependency_order_waiting_for_readiness() {
        let mut sim = Sim::new(vec![
            requires(spec("clusterd"), &["netd"]),
            with(spec("netd"), Readiness::Notify),
            spec("logger"),
        ]);
        sim.start_all();
        assert_eq!(sim.spawned, vec!["logger", "netd"]);
        assert_eq!(sim.state("netd"), "starting");
        assert_eq!(sim.state("clusterd"), "waiting");
        sim.ready("netd");
        assert_eq!(sim.spawned, vec!["logger", "netd", "clusterd"]);
        assert_eq!(sim.state("clusterd"), "ready");
    }

    #[test]
    fn targets_are_ready_when_what_they_require_is() {
        let mut sim = Sim::new(vec![
            requires(
                with(spec("network-online"), Readiness::Dependencies),
                &["netd"],
            ),
            with(spec("netd"), Readiness::Notify),
            requires(spec("clusterd"), &["network-online"]),
        ]);
        sim.start_all();
        assert_eq!(sim.state("network-online"), "waiting");
        sim.ready("netd");
        assert_eq!(sim.state("network-online"), "ready");
        assert_eq!(sim.spawned, vec!["netd", "clusterd"]);
        // netd crashes: the target and what requires it go down, and come back with netd.
        sim.exit("netd", Exit::Code(1));
        assert_eq!(sim.state("network-online"), "waiting");
        assert_eq!(sim.state("clusterd"), "stopping");
        sim.exit("clusterd", Exit::Signal(Signal::SIGTERM));
        assert_eq!(sim.state("clusterd"), "waiting");
        sim.advance(100 * MS);
        assert_eq!(sim.state("netd"), "starting");
        sim.ready("netd");
        assert_eq!(sim.state("clusterd"), "ready");
        assert_eq!(sim.spawned, vec!["netd", "clusterd", "netd", "clusterd"]);
    }

    #[test]
    fn tcp_readiness_asks_for_a_probe() {
        let mut sim = Sim::new(vec![
            with(spec("api"), Readiness::TcpPort(8080)),
            requires(spec("b"), &["api"]),
        ]);
        sim.start_all();
        assert_eq!(sim.probes, vec![("api".to_string(), 8080)]);
        assert_eq!(sim.state("b"), "waiting");
        sim.ready("api");
        assert_eq!(sim.state("b"), "ready");
    }

    #[test]
    fn crashes_restart_with_growing_delays_then_fail_as_a_crash_loop() {
        let mut sim = Sim::new(vec![spec("crashy")]);
        sim.start_all();
        let mut delays = vec![];
        loop {
            sim.exit("crashy", Exit::Code(3));
            match sim.sup.status("crashy").unwrap().state {
                State::BackingOff { until } => {
                    delays.push(until - sim.now);
                    sim.advance(until - sim.now);
                    assert_eq!(sim.state("crashy"), "ready", "restarted after its delay");
                }
                State::Failed { reason } => {
                    assert!(
                        reason.starts_with("crash loop: 3 restarts within 60s"),
                        "{reason}"
                    );
                    assert!(reason.contains("exit code 3"), "{reason}");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, vec![100 * MS, 200 * MS, 400 * MS]);
        assert_eq!(sim.spawned.len(), 4);
        assert_eq!(sim.sup.status("crashy").unwrap().restarts, 3);
        // Failed stays failed...
        sim.advance(Duration::from_secs(3600));
        assert_eq!(sim.state("crashy"), "failed");
        // ...until an operator starts it, with a fresh budget.
        let a = sim.sup.start("crashy", sim.now).unwrap();
        sim.run(a);
        assert_eq!(sim.state("crashy"), "ready");
        sim.exit("crashy", Exit::Code(3));
        assert_eq!(sim.state("crashy"), "backing-off");
    }

    #[test]
    fn delays_are_capped_and_reset_after_a_good_run() {
        let mut s = spec("svc");
        s.restart.max_restarts = 100;
        s.restart.window = Duration::from_secs(10);
        let mut sim = Sim::new(vec![s]);
        sim.start_all();
        let mut last = Duration::ZERO;
        for _ in 0..6 {
            sim.exit("svc", Exit::Code(1));
            let State::BackingOff { until } = sim.sup.status("svc").unwrap().state else {
                panic!()
            };
            last = until - sim.now;
            sim.advance(last);
        }
        assert_eq!(last, 1000 * MS, "capped at max_delay");
        // Up for a whole window: the next crash starts from the first delay again.
        sim.now += Duration::from_secs(11);
        sim.exit("svc", Exit::Code(1));
        let State::BackingOff { until } = sim.sup.status("svc").unwrap().state else {
            panic!()
        };
        assert_eq!(until - sim.now, 100 * MS);
    }

    #[test]
    fn restart_policies() {
        let mut always = spec("always");
        always.restart.when = RestartWhen::Always;
        let mut never = spec("never");
        never.restart.when = RestartWhen::Never;
        let mut sim = Sim::new(vec![always, never, spec("onfail")]);
        sim.start_all();
        sim.exit("always", Exit::Code(0));
        assert_eq!(sim.state("always"), "backing-off");
        sim.exit("onfail", Exit::Code(0));
        assert_eq!(sim.state("onfail"), "inactive");
        sim.exit("never", Exit::Signal(Signal::SIGSEGV));
        match sim.sup.status("never").unwrap().state {
            State::Failed { reason } => assert_eq!(reason, "killed by SIGSEGV"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oneshots_finish_and_release_dependents_or_fail_them() {
        let mut setup = with(spec("setup"), Readiness::ExitSuccess);
        setup.restart.when = RestartWhen::Never;
        let mut bad = with(spec("bad"), Readiness::ExitSuccess);
        bad.restart.when = RestartWhen::Never;
        let mut loose = spec("loose");
        loose.after = vec!["bad".into()];
        let mut sim = Sim::new(vec![
            setup,
            bad,
            requires(spec("app"), &["setup"]),
            requires(spec("strict"), &["bad"]),
            loose,
        ]);
        sim.start_all();
        assert_eq!(sim.spawned, vec!["bad", "setup"]);
        sim.exit("setup", Exit::Code(0));
        assert_eq!(sim.state("setup"), "done");
        assert_eq!(sim.state("app"), "ready");
        sim.exit("bad", Exit::Code(2));
        assert_eq!(sim.state("bad"), "failed");
        match sim.sup.status("strict").unwrap().state {
            State::Failed { reason } => assert_eq!(reason, "required bad failed"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sim.state("loose"), "ready", "after only orders");
    }

    #[test]
    fn stop_escalates_to_killing_the_cgroup_after_the_timeout() {
        let mut sim = Sim::new(vec![spec("stubborn")]);
        sim.start_all();
        let a = sim.sup.stop("stubborn", sim.now).unwrap();
        sim.run(a);
        assert_eq!(sim.signals, vec![("stubborn".to_string(), Signal::SIGTERM)]);
        sim.advance(1999 * MS);
        assert!(sim.kills.is_empty());
        assert_eq!(sim.sup.next_deadline(), Some(sim.now + MS));
        sim.advance(MS);
        assert_eq!(sim.kills, vec!["stubborn"]);
        sim.exit("stubborn", Exit::Signal(Signal::SIGKILL));
        assert_eq!(sim.state("stubborn"), "inactive");
        assert!(sim.sup.idle());
    }

    #[test]
    fn a_service_that_never_becomes_ready_is_stopped_and_restarted() {
        let mut sim = Sim::new(vec![with(spec("slow"), Readiness::Notify)]);
        sim.start_all();
        sim.advance(Duration::from_secs(5));
        assert_eq!(sim.state("slow"), "stopping");
        assert_eq!(sim.signals.len(), 1);
        sim.exit("slow", Exit::Signal(Signal::SIGTERM));
        assert_eq!(sim.state("slow"), "backing-off");
        sim.advance(100 * MS);
        assert_eq!(sim.spawned.len(), 2);
    }

    #[test]
    fn shutdown_stops_dependents_first() {
        let mut sim = Sim::new(vec![
            spec("a"),
            requires(spec("b"), &["a"]),
            requires(spec("c"), &["b"]),
            spec("lone"),
        ]);
        sim.start_all();
        let a = sim.sup.shutdown(sim.now);
        sim.run(a);
        let stopped = |sim: &Sim| {
            sim.signals
                .iter()
                .map(|(s, _)| s.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(stopped(&sim), vec!["c", "lone"]);
        sim.exit("c", Exit::Signal(Signal::SIGTERM));
        assert_eq!(stopped(&sim), vec!["c", "lone", "b"]);
        sim.exit("lone", Exit::Code(0));
        sim.exit("b", Exit::Code(0));
        assert_eq!(stopped(&sim), vec!["c", "lone", "b", "a"]);
        sim.exit("a", Exit::Code(0));
        assert!(sim.sup.idle());
        assert!(
            sim.sup
                .statuses()
                .iter()
                .all(|s| s.state == State::Inactive),
            "{:?}",
            sim.sup.statuses()
        );
        assert_eq!(sim.sup.start("a", sim.now), Err(RequestError::ShuttingDown));
    }

    #[test]
    fn unhealthy_services_are_restarted() {
        let mut s = spec("web");
        s.health_threshold = Some(3);
        let mut sim = Sim::new(vec![s]);
        sim.start_all();
        for healthy in [false, false, true, false, false] {
            let a = sim.sup.health("web", healthy, sim.now);
            sim.run(a);
        }
        assert_eq!(sim.state("web"), "ready", "failures must be consecutive");
        let a = sim.sup.health("web", false, sim.now);
        sim.run(a);
        assert_eq!(sim.state("web"), "stopping");
        sim.exit("web", Exit::Signal(Signal::SIGTERM));
        assert_eq!(sim.state("web"), "backing-off");
    }

    #[test]
    fn operator_restart_and_stop_and_unknown_names() {
        let mut sim = Sim::new(vec![spec("svc"), requires(spec("dep"), &["svc"])]);
        sim.start_all();
        let a = sim.sup.restart("svc", sim.now).unwrap();
        sim.run(a);
        assert_eq!(sim.state("svc"), "stopping");
        sim.exit("svc", Exit::Signal(Signal::SIGTERM));
        assert_eq!(sim.state("svc"), "ready", "restarted at once, no delay");
        assert_eq!(
            sim.sup.status("svc").unwrap().restarts,
            0,
            "not counted as a crash"
        );
        // dep went down with svc and came back.
        assert_eq!(sim.state("dep"), "stopping");
        sim.exit("dep", Exit::Signal(Signal::SIGTERM));
        assert_eq!(sim.state("dep"), "ready");

        let a = sim.sup.stop("svc", sim.now).unwrap();
        sim.run(a);
        // An operator stop is immediate; what requires svc goes down with it.
        assert_eq!(sim.state("dep"), "stopping");
        sim.exit("svc", Exit::Signal(Signal::SIGTERM));
        sim.exit("dep", Exit::Signal(Signal::SIGTERM));
        assert_eq!(sim.state("svc"), "inactive");
        assert_eq!(
            sim.state("dep"),
            "waiting",
            "waits for svc to be started again"
        );
        let a = sim.sup.start("dep", sim.now).unwrap();
        sim.run(a);
        assert_eq!(sim.state("svc"), "ready", "start pulls in what it requires");
        assert_eq!(sim.state("dep"), "ready");
        assert_eq!(
            sim.sup.start("nope", sim.now),
            Err(RequestError::Unknown("nope".into()))
        );
    }

    #[test]
    fn exits_of_unknown_processes_are_ignored() {
        let mut sim = Sim::new(vec![spec("svc")]);
        sim.start_all();
        assert!(sim.sup.exited(99_999, Exit::Code(0), sim.now).is_empty());
        assert_eq!(sim.state("svc"), "ready");
    }

    #[test]
    fn a_new_main_pid_takes_over_the_service() {
        let mut sim = Sim::new(vec![spec("forking"), spec("other")]);
        sim.start_all();
        let old = sim.sup.status("forking").unwrap().pid.unwrap();
        let other = sim.sup.status("other").unwrap().pid.unwrap();
        assert!(
            !sim.sup.set_main_pid("forking", other),
            "another service's process"
        );
        assert!(!sim.sup.set_main_pid("nope", 4242));
        assert!(sim.sup.set_main_pid("forking", 4242));
        assert_eq!(sim.sup.service_of(4242), Some("forking"));
        assert!(sim.sup.exited(old, Exit::Code(0), sim.now).is_empty());
        assert_eq!(
            sim.state("forking"),
            "ready",
            "the old process no longer counts"
        );
        sim.exit("forking", Exit::Code(1));
        assert_eq!(sim.state("forking"), "backing-off");
        assert!(
            !sim.sup.set_main_pid("forking", 4343),
            "no process to replace"
        );
    }
}

/// Whole systems of services driven by random event sequences: whatever happens, a service
/// never starts before what it requires is up, has at most one process, and shutdown always
/// ends with every process stopped, dependents first.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Exit { unit: usize, code: i32 },
        Ready(usize),
        Advance(u64),
        Stop(usize),
        Start(usize),
        Restart(usize),
        Unhealthy(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..6usize, 0..3i32).prop_map(|(unit, code)| Step::Exit { unit, code }),
            (0..6usize).prop_map(Step::Ready),
            (1..3000u64).prop_map(Step::Advance),
            (0..6usize).prop_map(Step::Stop),
            (0..6usize).prop_map(Step::Start),
            (0..6usize).prop_map(Step::Restart),
            (0..6usize).prop_map(Step::Unhealthy),
        ]
    }

    /// Six services; each may require or be ordered after lower-numbered ones (so no cycles).
    fn system() -> impl Strategy<Value = Vec<UnitSpec>> {
        proptest::collection::vec((0..4u8, 0..64u8, 0..64u8, 0..3u8), 6).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (kind, req_bits, after_bits, policy))| {
                    let deps = |bits: u8| {
                        (0..i)
                            .filter(|j| bits & (1 << j) != 0)
                            .map(|j| format!("s{j}"))
                            .collect()
                    };
                    UnitSpec {
                        name: format!("s{i}"),
                        readiness: match kind {
                            0 => Readiness::Started,
                            1 => Readiness::Notify,
                            2 => Readiness::ExitSuccess,
                            _ => Readiness::Dependencies,
                        },
                        requires: deps(req_bits),
                        after: deps(after_bits),
                        restart: RestartPolicy {
                            when: [
                                RestartWhen::Always,
                                RestartWhen::OnFailure,
                                RestartWhen::Never,
                            ][policy as usize],
                            delay: Duration::from_millis(100),
                            max_delay: Duration::from_secs(1),
                            max_restarts: 3,
                            window: Duration::from_secs(10),
                        },
                        start_timeout: Duration::from_secs(2),
                        stop_timeout: Duration::from_secs(1),
                        stop_signal: Signal::SIGTERM,
                        health_threshold: Some(1),
                    }
                })
                .collect()
        })
    }

    struct World {
        sup: Supervisor,
        specs: Vec<UnitSpec>,
        now: Instant,
        next_pid: i32,
    }

    impl World {
        fn apply(&mut self, actions: Vec<Action>) -> Result<(), TestCaseError> {
            let mut queue: VecDeque<Action> = actions.into();
            while let Some(action) = queue.pop_front() {
                if let Action::Spawn { service } = action {
                    let spec = self.specs.iter().find(|s| s.name == service).unwrap();
                    prop_assert!(
                        spec.readiness != Readiness::Dependencies,
                        "a target was spawned"
                    );
                    for dep in &spec.requires {
                        let st = self.sup.status(dep).unwrap().state;
                        prop_assert!(
                            matches!(st, State::Ready { .. } | State::Done),
                            "{service} spawned while required {dep} is {}",
                            st.name()
                        );
                    }
                    prop_assert!(
                        self.sup.status(&service).unwrap().pid.is_none(),
                        "{service} spawned twice"
                    );
                    self.next_pid += 1;
                    queue.extend(self.sup.spawned(&service, self.next_pid, self.now));
                } else if let Action::KillCgroup { service } = action {
                    // A killed cgroup's main process dies; a plain signal may be ignored.
                    if let Some(pid) = self.sup.status(&service).and_then(|s| s.pid) {
                        queue.extend(
                            self.sup
                                .exited(pid, Exit::Signal(Signal::SIGKILL), self.now),
                        );
                    }
                }
            }
            Ok(())
        }

        fn pid(&self, unit: usize) -> Option<i32> {
            self.sup.status(&format!("s{unit}")).and_then(|s| s.pid)
        }
    }

    proptest! {
        #[test]
        fn invariants_hold_and_shutdown_completes(specs in system(), steps in proptest::collection::vec(step(), 0..60)) {
            let mut w = World { sup: Supervisor::new(specs.clone()), specs, now: Instant::now(), next_pid: 1 };
            let a = w.sup.start_all(w.now);
            w.apply(a)?;
            for step in steps {
                let a = match step {
                    Step::Exit { unit, code } => match w.pid(unit) {
                        Some(pid) => w.sup.exited(pid, Exit::Code(code), w.now),
                        None => vec![],
                    },
                    Step::Ready(u) => w.sup.ready(&format!("s{u}"), w.now),
                    Step::Advance(ms) => {
                        w.now += Duration::from_millis(ms);
                        w.sup.tick(w.now)
                    }
                    Step::Stop(u) => w.sup.stop(&format!("s{u}"), w.now).unwrap(),
                    Step::Start(u) => w.sup.start(&format!("s{u}"), w.now).unwrap(),
                    Step::Restart(u) => w.sup.restart(&format!("s{u}"), w.now).unwrap(),
                    Step::Unhealthy(u) => w.sup.health(&format!("s{u}"), false, w.now),
                };
                w.apply(a)?;
                for s in w.sup.statuses() {
                    let has_pid = s.pid.is_some();
                    let may_have_pid = matches!(s.state, State::Starting { .. } | State::Ready { .. } | State::Stopping { .. });
                    prop_assert!(!has_pid || may_have_pid, "{} has a process in state {}", s.name, s.state.name());
                }
            }

            // Shutdown: signalled processes exit; stubborn ones are killed at the timeout.
            // Stops that began before the shutdown (an operator's) are exempt from its order.
            let already_stopping: Vec<String> = w.sup.statuses().into_iter()
                .filter(|s| matches!(s.state, State::Stopping { .. }))
                .map(|s| s.name)
                .collect();
            let a = w.sup.shutdown(w.now);
            let mut signalled: Vec<String> = Vec::new();
            let mut pending: VecDeque<Action> = a.into();
            for _ in 0..200 {
                while let Some(action) = pending.pop_front() {
                    if let Action::Signal { service, pid, .. } = action.with_pid(&w.sup) {
                        // Dependents must already be down when something is stopped.
                        let spec = w.specs.iter().find(|s| s.name == service).unwrap().clone();
                        for other in w.specs.iter().filter(|_| !already_stopping.contains(&service)) {
                            if other.requires.contains(&spec.name) || other.after.contains(&spec.name) {
                                let st = w.sup.status(&other.name).unwrap();
                                prop_assert!(st.pid.is_none() || signalled.contains(&other.name),
                                    "{} stopped while its dependent {} still runs", spec.name, other.name);
                            }
                        }
                        signalled.push(service.clone());
                        if pid > 0 {
                            pending.extend(w.sup.exited(pid, Exit::Signal(Signal::SIGTERM), w.now));
                        }
                    }
                }
                if w.sup.idle() {
                    break;
                }
                w.now += Duration::from_secs(1);
                pending.extend(w.sup.tick(w.now));
            }
            prop_assert!(w.sup.idle(), "processes left after shutdown: {:?}", w.sup.statuses());
        }
    }

    impl Action {
        /// Signal and KillCgroup with the pid to feed back as exited (0 when none).
        fn with_pid(self, sup: &Supervisor) -> Action {
            match self {
                Action::KillCgroup { service } => {
                    let pid = sup.status(&service).and_then(|s| s.pid).unwrap_or(0);
                    Action::Signal {
                        service,
                        pid,
                        signal: Signal::SIGKILL,
                    }
                }
                other => other,
            }
        }
    }
}
