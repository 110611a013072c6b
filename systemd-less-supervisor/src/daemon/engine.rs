//! The daemon's logic without its I/O: it feeds the [`Supervisor`] state machine and carries
//! out its [`Action`]s through a [`Host`], which is the real system in the daemon and a
//! recording fake in the tests below.
//!
//! Everything here runs on the daemon's one thread, so the order of inputs is the order they
//! were seen: a process is always registered as a service's main process before its exit can
//! be reaped (spawning is synchronous), and a main process's leftover processes are killed
//! before the same service is started again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shoal_boot_events::Event;

use crate::cgroup::Stats;
use crate::config::{Readiness, RestartPolicy, RestartWhen, Service};
use crate::machine::{Action, Exit, RequestError, State, Supervisor, UnitSpec};
use crate::notify::Notify;

use super::api::ServiceInfo;
use super::load::Loaded;

/// How many ancestors are searched for a service's main process when a notification comes
/// from a process that is not one (only without cgroups).
const MAX_ANCESTRY: usize = 32;

/// The system the engine acts on. Every method is a thin piece of I/O.
pub(crate) trait Host {
    /// Creates the service's cgroup, starts its process with its log pipe; the main pid.
    fn spawn(&mut self, service: &Service) -> Result<i32, String>;
    /// Sends `signal` to a main process.
    fn signal(&mut self, service: &str, pid: i32, signal: Signal);
    /// Kills every process of the service (its cgroup, or without cgroups the main process's
    /// process group).
    fn kill_service(&mut self, service: &str, main_pid: Option<i32>);
    /// A main process exited: stop its probes, kill what it left behind, remove its cgroup
    /// once empty.
    fn main_exited(&mut self, service: &str, pid: i32);
    /// A process that is no service's main process was reaped (a health probe, a leftover).
    fn other_exited(&mut self, pid: i32, exit: Exit);
    /// Starts probing `127.0.0.1:port` until it accepts, for the run with main pid `pid`.
    fn probe_tcp(&mut self, service: &str, pid: i32, port: u16);
    /// Starts (with the run's main pid) or stops the service's health checks.
    fn health_checks(&mut self, service: &Service, pid: Option<i32>, enabled: bool);
    /// Whether services get cgroups (false: running without, see the module docs).
    fn has_cgroups(&self) -> bool;
    /// The service whose cgroup holds `pid`.
    fn cgroup_service_of(&self, pid: i32) -> Option<String>;
    /// The parent of `pid`.
    fn parent_of(&self, pid: i32) -> Option<i32>;
    /// The service's cgroup statistics.
    fn stats(&self, service: &str) -> Option<Stats>;
    /// Prints a boot event.
    fn event(&mut self, event: Event);
    /// Adds a line of the supervisor's own to the service's log.
    fn log(&mut self, service: &str, text: &str);
}

/// The supervisor's inputs turned into actions on a [`Host`].
#[derive(Debug)]
pub(crate) struct Engine<H> {
    sup: Supervisor,
    services: BTreeMap<String, Service>,
    invalid: BTreeSet<String>,
    /// The latest `STATUS=` of each running service.
    status_text: BTreeMap<String, String>,
    /// The reason of each service's last state change.
    reasons: BTreeMap<String, String>,
    pub(crate) host: H,
}

impl<H: Host> Engine<H> {
    /// An engine for what startup loaded. A definition that could not be used stands in the
    /// state machine as a unit that never becomes ready, so what depends on it waits (and is
    /// told so in its log) instead of starting without it.
    pub(crate) fn new(loaded: &Loaded, mut host: H) -> Self {
        let mut specs: Vec<UnitSpec> = loaded.services.iter().map(UnitSpec::from).collect();
        let invalid: BTreeSet<String> = loaded
            .invalid
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        specs.extend(invalid.iter().map(|name| placeholder(name)));
        for service in &loaded.services {
            for dep in service.dependencies() {
                if invalid.contains(dep.as_str()) {
                    let text = format!(
                        "waiting for {dep}: its definition is invalid (see config_errors in the \
                         supervisor.started event)"
                    );
                    tracing::warn!(service = %service.name, "{text}");
                    host.log(service.name.as_str(), &text);
                }
            }
        }
        Self {
            sup: Supervisor::new(specs),
            services: loaded
                .services
                .iter()
                .map(|s| (s.name.as_str().to_owned(), s.clone()))
                .collect(),
            invalid,
            status_text: BTreeMap::new(),
            reasons: BTreeMap::new(),
            host,
        }
    }

    /// The boot: wants every service.
    pub(crate) fn start_all(&mut self, now: Instant) {
        let actions = self.sup.start_all(now);
        self.apply(actions, now);
    }

    /// Stops everything, dependents first.
    pub(crate) fn shutdown(&mut self, now: Instant) {
        let actions = self.sup.shutdown(now);
        self.apply(actions, now);
    }

    /// No service has a process.
    pub(crate) fn idle(&self) -> bool {
        self.sup.idle()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.sup.next_deadline()
    }

    pub(crate) fn tick(&mut self, now: Instant) {
        let actions = self.sup.tick(now);
        self.apply(actions, now);
    }

    /// Kills every service's processes, whatever its state (the end of a shutdown).
    pub(crate) fn kill_everything(&mut self) {
        for name in self.services.keys() {
            let pid = self.sup.status(name).and_then(|s| s.pid);
            self.host.kill_service(name, pid);
        }
    }

    /// A child was reaped.
    pub(crate) fn exited(&mut self, pid: i32, exit: Exit, now: Instant) {
        let Some(name) = self.sup.service_of(pid).map(str::to_owned) else {
            self.host.other_exited(pid, exit);
            return;
        };
        // Leftovers die before anything can start the service again in the same cgroup.
        self.host.main_exited(&name, pid);
        self.status_text.remove(&name);
        let actions = self.sup.exited(pid, exit, now);
        self.apply(actions, now);
    }

    /// A datagram on the notify socket from process `sender`.
    pub(crate) fn notified(&mut self, sender: i32, notifications: Vec<Notify>, now: Instant) {
        let Some(name) = self.owner_of(sender) else {
            tracing::debug!(sender, "notification from a process of no service ignored");
            return;
        };
        for notification in notifications {
            match notification {
                Notify::Ready => {
                    let actions = self.sup.ready(&name, now);
                    self.apply(actions, now);
                }
                Notify::Status(text) => {
                    self.status_text.insert(name.clone(), text);
                }
                Notify::MainPid(pid) => self.main_pid(&name, pid.as_raw()),
                Notify::Errno(errno) => {
                    self.host.log(
                        &name,
                        &format!("reports error {}", nix::Error::from_raw(errno)),
                    );
                }
                Notify::Stopping
                | Notify::Reloading
                | Notify::Watchdog
                | Notify::WatchdogTrigger => {
                    tracing::debug!(service = %name, ?notification, "notification not acted on");
                }
            }
        }
    }

    /// `MAINPID=`: accepted only for a process in the service's own cgroup, so a service can
    /// neither hand us another service's process nor an unrelated one (whose exit would then
    /// be taken for the service's). Without cgroups nothing proves where a process belongs,
    /// so it is ignored.
    fn main_pid(&mut self, name: &str, pid: i32) {
        let inside =
            self.host.has_cgroups() && self.host.cgroup_service_of(pid).as_deref() == Some(name);
        if inside && self.sup.set_main_pid(name, pid) {
            self.host.log(name, &format!("main process is now {pid}"));
        } else {
            tracing::warn!(
                service = name,
                pid,
                "MAINPID ignored: the process is not in the service's cgroup"
            );
        }
    }

    /// The service a process speaks for: a main process; else the cgroup it is in; else,
    /// without cgroups, the nearest ancestor that is a main process.
    fn owner_of(&self, pid: i32) -> Option<String> {
        if let Some(name) = self.sup.service_of(pid) {
            return Some(name.to_owned());
        }
        if self.host.has_cgroups() {
            return self
                .host
                .cgroup_service_of(pid)
                .filter(|name| self.services.contains_key(name));
        }
        let mut current = pid;
        for _ in 0..MAX_ANCESTRY {
            current = self.host.parent_of(current)?;
            if current <= 1 {
                return None;
            }
            if let Some(name) = self.sup.service_of(current) {
                return Some(name.to_owned());
            }
        }
        None
    }

    /// A readiness probe's port accepted, for the run whose main pid was `pid`.
    pub(crate) fn port_ready(&mut self, service: &str, pid: i32, now: Instant) {
        if self.current_pid(service) == Some(pid) {
            let actions = self.sup.ready(service, now);
            self.apply(actions, now);
        }
    }

    /// A health check of the run whose main pid was `pid` ended.
    pub(crate) fn health(&mut self, service: &str, pid: i32, healthy: bool, now: Instant) {
        if self.current_pid(service) != Some(pid) {
            return;
        }
        if !healthy {
            self.host.log(service, "health check failed");
        }
        let actions = self.sup.health(service, healthy, now);
        self.apply(actions, now);
    }

    pub(crate) fn start(&mut self, name: &str, now: Instant) -> Result<(), RequestError> {
        let actions = self.sup.start(name, now)?;
        self.apply(actions, now);
        Ok(())
    }

    pub(crate) fn stop(&mut self, name: &str, now: Instant) -> Result<(), RequestError> {
        let actions = self.sup.stop(name, now)?;
        self.apply(actions, now);
        Ok(())
    }

    pub(crate) fn restart(&mut self, name: &str, now: Instant) -> Result<(), RequestError> {
        let actions = self.sup.restart(name, now)?;
        self.apply(actions, now);
        Ok(())
    }

    /// Every service, valid or not, by name.
    pub(crate) fn list(&self, now: Instant) -> Vec<ServiceInfo> {
        self.sup
            .statuses()
            .iter()
            .filter_map(|s| self.info(&s.name, now))
            .collect()
    }

    pub(crate) fn info(&self, name: &str, now: Instant) -> Option<ServiceInfo> {
        let status = self.sup.status(name)?;
        let service = self.services.get(name);
        let invalid = self.invalid.contains(name);
        let reason = match &status.state {
            State::Failed { reason } => Some(reason.clone()),
            _ => self.reasons.get(name).cloned(),
        };
        Some(ServiceInfo {
            name: name.to_owned(),
            description: service.map(|s| s.description.clone()).unwrap_or_default(),
            state: if invalid {
                "invalid"
            } else {
                status.state.name()
            },
            reason,
            wanted: status.wanted,
            pid: status.pid,
            restarts: status.restarts,
            uptime: status
                .pid
                .and(status.started_at)
                .map(|t| now.saturating_duration_since(t)),
            status_text: self.status_text.get(name).cloned(),
            stats: if service.is_some() {
                self.host.stats(name)
            } else {
                None
            },
        })
    }

    fn current_pid(&self, service: &str) -> Option<i32> {
        self.sup.status(service).and_then(|s| s.pid)
    }

    /// Carries out actions, feeding results back until nothing is left to do.
    fn apply(&mut self, actions: Vec<Action>, now: Instant) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Spawn { service } => {
                    let result = match self.services.get(&service) {
                        Some(definition) => self.host.spawn(definition),
                        None => Err("the definition is invalid".to_owned()),
                    };
                    match result {
                        Ok(pid) => {
                            self.host.log(&service, &format!("started process {pid}"));
                            queue.extend(self.sup.spawned(&service, pid, now));
                        }
                        Err(error) => {
                            tracing::error!(%service, "cannot start: {error}");
                            self.host.log(&service, &format!("cannot start: {error}"));
                            queue.extend(self.sup.spawn_failed(&service, &error, now));
                        }
                    }
                }
                Action::Signal {
                    service,
                    pid,
                    signal,
                } => self.host.signal(&service, pid, signal),
                Action::KillCgroup { service } => {
                    let pid = self.current_pid(&service);
                    self.host.kill_service(&service, pid);
                }
                Action::ProbeTcp { service, port } => {
                    if let Some(pid) = self.current_pid(&service) {
                        self.host.probe_tcp(&service, pid, port);
                    }
                }
                Action::HealthChecks { service, enabled } => {
                    let pid = self.current_pid(&service);
                    if let Some(definition) = self.services.get(&service) {
                        self.host.health_checks(definition, pid, enabled);
                    }
                }
                Action::Changed {
                    service,
                    from,
                    to,
                    reason,
                } => {
                    // The event line says it on the console already; failures also as a
                    // log line for whoever reads the console.
                    if to == "failed" {
                        tracing::warn!(%service, from, to, "{reason}");
                    } else {
                        tracing::debug!(%service, from, to, "{reason}");
                    }
                    self.host
                        .log(&service, &format!("{from} -> {to}: {reason}"));
                    self.reasons.insert(service.clone(), reason.clone());
                    self.host.event(Event::Service {
                        name: service,
                        from: from.to_owned(),
                        to: to.to_owned(),
                        reason,
                    });
                }
            }
        }
    }
}

/// The stand-in for a definition that could not be used: a target that requires itself, so
/// it never becomes ready and never runs anything.
fn placeholder(name: &str) -> UnitSpec {
    UnitSpec {
        name: name.to_owned(),
        readiness: Readiness::Dependencies,
        after: Vec::new(),
        requires: vec![name.to_owned()],
        restart: RestartPolicy {
            when: RestartWhen::Never,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            max_restarts: 0,
            window: Duration::from_secs(1),
        },
        start_timeout: Duration::from_secs(1),
        stop_timeout: Duration::from_secs(1),
        stop_signal: Signal::SIGTERM,
        health_threshold: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::users::Users;

    /// Records what the engine asked for; spawns succeed with increasing pids unless the
    /// service is in `refuse`.
    #[derive(Debug, Default)]
    struct Fake {
        next_pid: i32,
        refuse: BTreeSet<String>,
        cgroups: bool,
        /// pid -> service cgroup, pid -> parent.
        cgroup_of: BTreeMap<i32, String>,
        parents: BTreeMap<i32, i32>,
        calls: Vec<String>,
        events: Vec<(String, String, String)>,
        logs: Vec<(String, String)>,
    }

    impl Host for Fake {
        fn spawn(&mut self, service: &Service) -> Result<i32, String> {
            if self.refuse.contains(service.name.as_str()) {
                return Err("refused".into());
            }
            self.next_pid += 1;
            self.calls
                .push(format!("spawn {} {}", service.name, self.next_pid));
            Ok(self.next_pid)
        }
        fn signal(&mut self, service: &str, pid: i32, signal: Signal) {
            self.calls
                .push(format!("signal {service} {pid} {}", signal.as_str()));
        }
        fn kill_service(&mut self, service: &str, main_pid: Option<i32>) {
            self.calls.push(format!("kill {service} {main_pid:?}"));
        }
        fn main_exited(&mut self, service: &str, pid: i32) {
            self.calls.push(format!("cleanup {service} {pid}"));
        }
        fn other_exited(&mut self, pid: i32, _exit: Exit) {
            self.calls.push(format!("other {pid}"));
        }
        fn probe_tcp(&mut self, service: &str, pid: i32, port: u16) {
            self.calls.push(format!("probe {service} {pid} {port}"));
        }
        fn health_checks(&mut self, service: &Service, pid: Option<i32>, enabled: bool) {
            self.calls
                .push(format!("health {} {pid:?} {enabled}", service.name));
        }
        fn has_cgroups(&self) -> bool {
            self.cgroups
        }
        fn cgroup_service_of(&self, pid: i32) -> Option<String> {
            self.cgroup_of.get(&pid).cloned()
        }
        fn parent_of(&self, pid: i32) -> Option<i32> {
            self.parents.get(&pid).copied()
        }
        fn stats(&self, _service: &str) -> Option<Stats> {
            None
        }
        fn event(&mut self, event: Event) {
            if let Event::Service {
                name, to, reason, ..
            } = event
            {
                self.events.push((name, to, reason));
            }
        }
        fn log(&mut self, service: &str, text: &str) {
            self.logs.push((service.into(), text.into()));
        }
    }

    fn loaded(files: &[(&str, &str)]) -> (tempfile::TempDir, Loaded) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
        }
        let loaded = super::super::load::load(dir.path(), &Users::parse("", ""));
        (dir, loaded)
    }

    fn engine(files: &[(&str, &str)]) -> (Engine<Fake>, Instant) {
        let (_dir, loaded) = loaded(files);
        let host = Fake {
            next_pid: 100,
            ..Fake::default()
        };
        (Engine::new(&loaded, host), Instant::now())
    }

    fn calls(e: &mut Engine<Fake>) -> Vec<String> {
        std::mem::take(&mut e.host.calls)
    }

    fn state(e: &Engine<Fake>, name: &str) -> &'static str {
        e.info(name, Instant::now()).unwrap().state
    }

    const SIMPLE: &str = "command = [\"/bin/sleep\", \"100\"]\n";
    const NOTIFY: &str = "type = \"notify\"\ncommand = [\"/bin/sleep\", \"100\"]\n";

    #[test]
    fn dependents_start_once_a_notify_service_is_ready() {
        let app = format!("{SIMPLE}requires = [\"db\"]\n");
        let (mut e, now) = engine(&[("db", NOTIFY), ("app", &app)]);
        e.start_all(now);
        assert_eq!(calls(&mut e), ["spawn db 101"]);
        assert_eq!(state(&e, "db"), "starting");
        // A process of no service, then the right one.
        e.notified(999, vec![Notify::Ready], now);
        assert_eq!(state(&e, "db"), "starting");
        e.notified(
            101,
            vec![Notify::Ready, Notify::Status("serving".into())],
            now,
        );
        assert_eq!(calls(&mut e), ["spawn app 102"]);
        let db = e.info("db", now).unwrap();
        assert_eq!(db.state, "ready");
        assert_eq!(db.status_text.as_deref(), Some("serving"));
        assert!(
            e.host
                .events
                .iter()
                .any(|(n, to, r)| n == "db" && to == "ready" && r == "reported ready")
        );
    }

    #[test]
    fn notifications_from_children_are_mapped_by_cgroup_or_ancestry() {
        let (mut e, now) = engine(&[("db", NOTIFY)]);
        e.start_all(now);
        // Without cgroups: the sender's parent is db's main process.
        e.host.parents.insert(500, 101);
        e.notified(500, vec![Notify::Ready], now);
        assert_eq!(state(&e, "db"), "ready");

        let (mut e, now) = engine(&[("db", NOTIFY)]);
        e.host.cgroups = true;
        e.start_all(now);
        e.host.parents.insert(500, 101);
        e.notified(500, vec![Notify::Ready], now);
        assert_eq!(
            state(&e, "db"),
            "starting",
            "with cgroups, ancestry is not proof"
        );
        e.host.cgroup_of.insert(500, "db".into());
        e.notified(500, vec![Notify::Ready], now);
        assert_eq!(state(&e, "db"), "ready");
    }

    #[test]
    fn mainpid_is_taken_only_from_the_services_own_cgroup() {
        let (mut e, now) = engine(&[("fork", NOTIFY), ("other", SIMPLE)]);
        e.start_all(now);
        calls(&mut e);
        e.notified(
            101,
            vec![Notify::MainPid(nix::unistd::Pid::from_raw(700))],
            now,
        );
        assert_eq!(
            e.info("fork", now).unwrap().pid,
            Some(101),
            "no cgroups: ignored"
        );
        e.host.cgroups = true;
        e.host.cgroup_of.insert(700, "other".into());
        e.notified(
            101,
            vec![Notify::MainPid(nix::unistd::Pid::from_raw(700))],
            now,
        );
        assert_eq!(
            e.info("fork", now).unwrap().pid,
            Some(101),
            "not its cgroup"
        );
        e.host.cgroup_of.insert(700, "fork".into());
        e.notified(
            101,
            vec![Notify::MainPid(nix::unistd::Pid::from_raw(700))],
            now,
        );
        assert_eq!(e.info("fork", now).unwrap().pid, Some(700));
        e.exited(101, Exit::Code(0), now);
        assert_eq!(
            calls(&mut e),
            ["other 101"],
            "the old process is no longer the service"
        );
    }

    #[test]
    fn an_exit_cleans_up_before_the_restart_and_stale_results_are_dropped() {
        let web = format!(
            "{SIMPLE}[ready]\ntcp_port = 8080\n[restart]\ndelay = \"1s\"\n[health]\n\
             check = {{ tcp = 8080 }}\n"
        );
        let (mut e, now) = engine(&[("web", &web)]);
        e.start_all(now);
        assert_eq!(calls(&mut e), ["spawn web 101", "probe web 101 8080"]);
        e.port_ready("web", 101, now);
        assert_eq!(calls(&mut e), ["health web Some(101) true"]);
        e.exited(101, Exit::Code(3), now);
        assert_eq!(calls(&mut e), ["cleanup web 101", "health web None false"]);
        assert_eq!(state(&e, "web"), "backing-off");
        e.tick(now + Duration::from_secs(1));
        assert_eq!(calls(&mut e), ["spawn web 102", "probe web 102 8080"]);
        // Results for the old run change nothing.
        e.port_ready("web", 101, now);
        e.health("web", 101, false, now);
        assert_eq!(state(&e, "web"), "starting");
        e.port_ready("web", 102, now);
        assert_eq!(state(&e, "web"), "ready");
        for _ in 0..3 {
            e.health("web", 102, false, now);
        }
        assert_eq!(state(&e, "web"), "stopping");
        assert!(calls(&mut e).contains(&"signal web 102 SIGTERM".to_owned()));
    }

    #[test]
    fn a_failed_spawn_counts_as_a_failure() {
        let (mut e, now) = engine(&[(
            "broken",
            "command = [\"/nope\"]\n[restart]\npolicy = \"never\"\n",
        )]);
        e.host.refuse.insert("broken".into());
        e.start_all(now);
        assert_eq!(state(&e, "broken"), "failed");
        assert_eq!(
            e.info("broken", now).unwrap().reason.as_deref(),
            Some("could not start: refused")
        );
        assert!(
            e.host
                .logs
                .contains(&("broken".into(), "cannot start: refused".into()))
        );
    }

    #[test]
    fn dependents_of_an_invalid_definition_wait_and_say_why() {
        let needs = format!("{SIMPLE}requires = [\"bad\"]\n");
        let after = format!("{SIMPLE}after = [\"bad\"]\n");
        let (mut e, now) = engine(&[
            ("bad", "command = \"not a list\"\n"),
            ("needs", &needs),
            ("after", &after),
            ("fine", SIMPLE),
        ]);
        assert!(
            e.host.logs.iter().any(|(n, t)| n == "needs"
                && t.starts_with("waiting for bad: its definition is invalid"))
        );
        e.start_all(now);
        assert_eq!(calls(&mut e), ["spawn fine 101"]);
        assert_eq!(state(&e, "bad"), "invalid");
        assert_eq!(state(&e, "needs"), "waiting");
        assert_eq!(state(&e, "after"), "waiting");
        // An operator start of the invalid one does not run anything either.
        e.start("bad", now).unwrap();
        assert!(calls(&mut e).is_empty());
        e.shutdown(now);
        assert_eq!(calls(&mut e), ["signal fine 101 SIGTERM"]);
        e.exited(101, Exit::Signal(Signal::SIGTERM), now);
        assert!(e.idle());
    }

    #[test]
    fn shutdown_stops_in_reverse_dependency_order_and_kills_at_the_end() {
        let b = format!("{SIMPLE}requires = [\"a\"]\n");
        let c = format!("{SIMPLE}after = [\"b\"]\n");
        let (mut e, now) = engine(&[("a", SIMPLE), ("b", &b), ("c", &c)]);
        e.start_all(now);
        calls(&mut e);
        e.shutdown(now);
        assert_eq!(calls(&mut e), ["signal c 103 SIGTERM"]);
        e.exited(103, Exit::Signal(Signal::SIGTERM), now);
        assert_eq!(calls(&mut e), ["cleanup c 103", "signal b 102 SIGTERM"]);
        e.kill_everything();
        assert_eq!(
            calls(&mut e),
            ["kill a Some(101)", "kill b Some(102)", "kill c None"]
        );
        assert_eq!(
            e.start("a", now),
            Err(RequestError::ShuttingDown),
            "no starts while shutting down"
        );
    }

    #[test]
    fn operator_requests_and_the_listing() {
        let (mut e, now) = engine(&[("svc", SIMPLE), ("bad", "nonsense = true\n")]);
        e.start_all(now);
        calls(&mut e);
        assert_eq!(
            e.stop("nope", now),
            Err(RequestError::Unknown("nope".into()))
        );
        e.restart("svc", now).unwrap();
        assert_eq!(calls(&mut e), ["signal svc 101 SIGTERM"]);
        e.exited(101, Exit::Signal(Signal::SIGTERM), now);
        assert_eq!(calls(&mut e), ["cleanup svc 101", "spawn svc 102"]);
        e.stop("svc", now).unwrap();
        e.exited(102, Exit::Signal(Signal::SIGTERM), now);
        let list = e.list(now);
        let summary: Vec<(&str, &str, Option<i32>)> = list
            .iter()
            .map(|s| (s.name.as_str(), s.state, s.pid))
            .collect();
        assert_eq!(
            summary,
            [("bad", "invalid", None), ("svc", "inactive", None)]
        );
        e.start("svc", now).unwrap();
        let info = e.info("svc", now + Duration::from_secs(2)).unwrap();
        assert_eq!(info.pid, Some(103));
        assert_eq!(info.reason.as_deref(), Some("started"));
        assert_eq!(info.uptime, Some(Duration::from_secs(2)));
    }
}
