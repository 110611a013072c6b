//! The real `shoal-supervisor` binary against temporary service directories with small
//! `/bin/sh` services and re-executions of this test binary (helpers below that send
//! `READY=1` with `shoal_supervisor::notify::send` or listen on a port).
//!
//! Every daemon gets its own services, notify socket and log directory. Cgroups: most tests
//! pass a plain directory as `--cgroup-root`, which makes the daemon run without cgroups; the
//! tests that check cleanup also run against a private cgroup below the host's cgroup2 mount
//! when they run as root and one is writable (on this dev host: /sys/fs/cgroup/unified, with
//! no controllers, so no limits are checked there).

// The harness's helpers are test code too: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, Record, parse_line};

const TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helper roles: this binary re-executed as a service.

/// `SHOAL_TEST_ROLE=notify`: waits `DELAY_MS`, says READY=1 (with a STATUS), then runs until
/// killed. Ignored in normal runs; without the variable it returns at once.
#[test]
#[ignore = "a helper the daemon tests run as a service"]
fn helper_role() {
    let Ok(role) = std::env::var("SHOAL_TEST_ROLE") else {
        return;
    };
    let delay: u64 = std::env::var("DELAY_MS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(delay));
    match role.as_str() {
        "notify" => {
            let socket = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is set");
            shoal_supervisor::notify::send(Path::new(&socket), "READY=1\nSTATUS=serving")
                .expect("notify");
            println!("helper: notified");
        }
        "listen" => {
            let port = std::env::var("PORT").expect("PORT is set");
            let listener = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
            println!("helper: listening on {port}");
            std::thread::spawn(move || for _ in listener.incoming() {});
        }
        other => panic!("unknown role {other}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The command line of a helper service, as a TOML array.
fn helper(role: &str, delay_ms: u64, extra_env: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    format!(
        "command = [{}, \"--exact\", \"helper_role\", \"--ignored\", \"--nocapture\", \
         \"--test-threads=1\"]\nenvironment = {{ SHOAL_TEST_ROLE = \"{role}\", DELAY_MS = \
         \"{delay_ms}\"{extra_env} }}\n",
        toml_str(&exe.display().to_string())
    )
}

/// The same helper behind a shell that forks it (so the notifying process is not the main
/// process: the daemon must map it to the service by ancestry or cgroup).
fn helper_in_shell(role: &str, delay_ms: u64) -> String {
    let exe = std::env::current_exe().unwrap();
    format!(
        "command = [\"/bin/sh\", \"-c\", {}]\nenvironment = {{ SHOAL_TEST_ROLE = \"{role}\", \
         DELAY_MS = \"{delay_ms}\" }}\n",
        toml_str(&format!(
            "{} --exact helper_role --ignored --nocapture --test-threads=1; true",
            exe.display()
        ))
    )
}

fn toml_str(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn sh(script: &str) -> String {
    format!("command = [\"/bin/sh\", \"-c\", {}]\n", toml_str(script))
}

// ---------------------------------------------------------------------------------------------
// The harness

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cgroups {
    /// `--cgroup-root` is a plain directory: the daemon runs without cgroups.
    Without,
    /// A private cgroup below the host's cgroup2 mount.
    Real,
}

struct Daemon {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Every line so far, stdout and stderr (stderr prefixed with `E `).
    seen: Vec<String>,
    dir: tempfile::TempDir,
    cgroup: Option<PathBuf>,
}

impl Daemon {
    fn start(services: &[(&str, &str)], cgroups: Cgroups) -> Daemon {
        Daemon::start_with(cgroups, |_| {
            services
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect()
        })
    }

    /// A daemon on the definitions `services` makes, given the daemon's temporary directory.
    fn start_with(
        cgroups: Cgroups,
        services: impl FnOnce(&Path) -> Vec<(String, String)>,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let services_dir = dir.path().join("services");
        std::fs::create_dir(&services_dir).unwrap();
        for (name, text) in services(dir.path()) {
            std::fs::write(services_dir.join(format!("{name}.toml")), text).unwrap();
        }
        let (cgroup_root, cgroup) = match cgroups {
            Cgroups::Without => (dir.path().join("no-cgroup2"), None),
            Cgroups::Real => {
                let path = private_cgroup().expect("a writable cgroup2");
                (path.clone(), Some(path))
            }
        };
        std::fs::create_dir_all(&cgroup_root).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-supervisor"))
            .arg("--services")
            .arg(&services_dir)
            .arg("--root")
            .arg("/")
            .arg("--cgroup-root")
            .arg(&cgroup_root)
            .arg("--notify-socket")
            .arg(dir.path().join("run/notify"))
            .arg("--api-socket")
            .arg(dir.path().join("run/supervisor.sock"))
            .arg("--log-dir")
            .arg(dir.path().join("log"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("E {line}"));
            }
        });
        Daemon {
            child: Some(child),
            lines,
            seen: Vec::new(),
            dir,
            cgroup,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits for a stdout line matching `want`; panics with everything seen on timeout.
    fn wait_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| !l.starts_with("E ") && want(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if !line.starts_with("E ") && want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn wait_event(&mut self, what: &str, want: impl Fn(&Event) -> bool) -> Record {
        let line = self.wait_line(what, |l| parse_line(l).is_some_and(|r| want(&r.event)));
        parse_line(&line).unwrap()
    }

    /// Waits for service `name` to enter state `to`.
    fn wait_state(&mut self, name: &str, to: &str) -> Record {
        self.wait_event(&format!("{name} -> {to}"), |e| is_change(e, name, to))
    }

    /// Takes in whatever output arrives within `period`.
    fn drain(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// Every `service` event so far: (name, to, reason).
    fn changes(&self) -> Vec<(String, String, String)> {
        self.seen
            .iter()
            .filter_map(|l| parse_line(l))
            .filter_map(|r| match r.event {
                Event::Service {
                    name, to, reason, ..
                } => Some((name, to, reason)),
                _ => None,
            })
            .collect()
    }

    /// Sends SIGTERM and waits for the exit (and the rest of the output).
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the daemon did not exit; output:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes close with the daemon; take the rest.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An ordered stop takes the services with it; kill if it does not come.
            signal(child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("daemon output:\n{}", self.seen.join("\n"));
        }
        if let Some(cgroup) = &self.cgroup {
            remove_cgroup_tree(cgroup);
        }
    }
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, signal) };
}

fn is_change(event: &Event, service: &str, state: &str) -> bool {
    matches!(event, Event::Service { name, to, .. } if name == service && to == state)
}

fn position(changes: &[(String, String, String)], name: &str, to: &str) -> usize {
    changes
        .iter()
        .position(|(n, t, _)| n == name && t == to)
        .unwrap_or_else(|| panic!("no {name} -> {to} in {changes:#?}"))
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only its entry is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    })
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// A private cgroup for the tests that want real ones

static CGROUP_SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh cgroup below the host's cgroup2 mount, or why there is none.
fn private_cgroup() -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
        })
        .collect();
    mounts.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
    let mount = mounts.into_iter().next().ok_or("no cgroup2 mount")?;
    let path = mount.join(format!(
        "shoal-daemon-test-{}-{}",
        std::process::id(),
        CGROUP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(path);
}

/// The modes a cleanup test runs in: always without cgroups, with real ones where possible.
fn modes(test: &str) -> Vec<Cgroups> {
    match private_cgroup() {
        Ok(probe) => {
            remove_cgroup_tree(&probe);
            vec![Cgroups::Without, Cgroups::Real]
        }
        Err(why) => {
            println!("{test}: only without cgroups ({why})");
            vec![Cgroups::Without]
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn dependents_start_only_after_a_notify_service_is_ready() {
    let app = format!("{}requires = [\"db\"]\n", sh("echo app up; exec sleep 60"));
    // db notifies from a child of its shell, not from its main process.
    let db = format!("type = \"notify\"\n{}", helper_in_shell("notify", 300));
    let mut d = Daemon::start(&[("db", &db), ("app", &app)], Cgroups::Without);
    let started = d.wait_event("supervisor.started", |e| {
        matches!(e, Event::SupervisorStarted { .. })
    });
    assert_eq!(
        started.event,
        Event::SupervisorStarted {
            services: 2,
            config_errors: vec![]
        }
    );
    d.wait_line("app's output", |l| l == "[app] app up");
    // libtest prints "test helper_role ... " before the helper's own line.
    d.wait_line("db's output", |l| {
        l.starts_with("[db] ") && l.ends_with("helper: notified")
    });
    let changes = d.changes();
    assert!(position(&changes, "db", "ready") < position(&changes, "app", "starting"));
    assert!(
        changes.contains(&("db".into(), "ready".into(), "reported ready".into())),
        "{changes:#?}"
    );
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_crashing_service_restarts_with_growing_delays_then_fails() {
    let crasher = format!(
        "{}[restart]\npolicy = \"on-failure\"\ndelay = \"100ms\"\nmax_delay = \"2s\"\n\
         max_restarts = 3\nwindow = \"60s\"\n",
        sh("echo crashing; exit 3")
    );
    let mut d = Daemon::start(&[("crasher", &crasher)], Cgroups::Without);
    let failed = d.wait_state("crasher", "failed");
    let Event::Service { reason, .. } = failed.event else {
        unreachable!()
    };
    assert!(
        reason.starts_with("crash loop: 3 restarts within 60s"),
        "{reason}"
    );
    let backoffs: Vec<String> = d
        .changes()
        .into_iter()
        .filter(|(n, to, _)| n == "crasher" && to == "backing-off")
        .map(|(_, _, reason)| reason)
        .collect();
    assert_eq!(
        backoffs,
        [
            "exit code 3; restarting in 100ms",
            "exit code 3; restarting in 200ms",
            "exit code 3; restarting in 400ms"
        ]
    );
    // The delays are real: each start comes later after the previous one.
    let starts: Vec<f64> = d
        .seen
        .iter()
        .filter_map(|l| parse_line(l))
        .filter(|r| is_change(&r.event, "crasher", "starting"))
        .map(|r| r.t)
        .collect();
    assert_eq!(starts.len(), 4, "{starts:?}");
    for (i, min) in [0.1, 0.2, 0.4].iter().enumerate() {
        let gap = starts[i + 1] - starts[i];
        assert!(
            gap >= *min,
            "restart {i} came after {gap}s, before its {min}s delay"
        );
    }
    assert!(d.seen.iter().any(|l| l == "[crasher] crashing"));
    // The log file has the service's output and the supervisor's notes.
    let log = std::fs::read_to_string(d.path("log/crasher.log")).unwrap();
    assert!(log.contains(" stdout crashing\n"), "{log}");
    assert!(log.contains(" -> failed: crash loop"), "{log}");
    assert!(d.terminate().success());
}

#[test]
fn a_oneshot_finishes_and_unblocks_what_comes_after_it() {
    let setup = format!("type = \"oneshot\"\n{}", sh("sleep 0.2; echo configured"));
    let app = format!("{}after = [\"setup\"]\n", sh("exec sleep 60"));
    let mut d = Daemon::start(&[("setup", &setup), ("app", &app)], Cgroups::Without);
    d.wait_state("app", "ready");
    let changes = d.changes();
    assert!(
        changes.contains(&("setup".into(), "done".into(), "finished".into())),
        "{changes:#?}"
    );
    assert!(position(&changes, "setup", "done") < position(&changes, "app", "starting"));
    // The output comes through its own pipe reader, which may run after the exit's handling.
    d.wait_line("setup's output", |l| l == "[setup] configured");
    assert!(d.terminate().success());
}

#[test]
fn sigterm_stops_dependents_first_kills_the_stubborn_and_exits_0() {
    for mode in modes("sigterm_stops_dependents_first") {
        const NAMES: [&str; 4] = ["a", "b", "c", "stubborn"];
        let mut d = Daemon::start_with(mode, |dir| {
            let pid_file = |name: &str| dir.join(format!("{name}.pid")).display().to_string();
            let simple = |name: &str| sh(&format!("echo $$ > {}; exec sleep 60", pid_file(name)));
            vec![
                ("a".into(), simple("a")),
                ("b".into(), format!("{}requires = [\"a\"]\n", simple("b"))),
                ("c".into(), format!("{}requires = [\"b\"]\n", simple("c"))),
                (
                    "stubborn".into(),
                    format!(
                        "{}stop_timeout = \"500ms\"\n",
                        sh(&format!(
                            "trap '' TERM; echo $$ > {}; sleep 60",
                            pid_file("stubborn")
                        ))
                    ),
                ),
            ]
        });
        for name in NAMES {
            d.wait_state(name, "ready");
        }
        let pids: Vec<i32> = NAMES
            .iter()
            .map(|n| read_pid(&d.path(&format!("{n}.pid"))))
            .collect();
        let status = d.terminate();
        assert!(status.success(), "{mode:?}: {status:?}");
        let changes = d.changes();
        assert!(position(&changes, "c", "stopping") < position(&changes, "b", "stopping"));
        assert!(position(&changes, "c", "inactive") < position(&changes, "b", "stopping"));
        assert!(position(&changes, "b", "inactive") < position(&changes, "a", "stopping"));
        assert!(
            changes.iter().any(|(n, to, r)| n == "stubborn"
                && to == "stopping"
                && r.starts_with("did not stop within 500ms; killing")),
            "{mode:?}: {changes:#?}"
        );
        assert!(d.seen.iter().any(|l| {
            parse_line(l).is_some_and(|r| matches!(r.event, Event::SupervisorStopped { .. }))
        }));
        for pid in pids {
            assert!(
                wait_gone(pid),
                "{mode:?}: process {pid} survived the shutdown"
            );
        }
    }
}

#[test]
fn leftover_processes_die_with_the_main_process() {
    for mode in modes("leftover_processes_die_with_the_main_process") {
        let mut d = Daemon::start_with(mode, |dir| {
            let script = format!(
                "sleep 300 & echo $! > {}; sleep 2; exit 1",
                dir.join("background.pid").display()
            );
            vec![(
                "leaky".into(),
                format!("{}[restart]\npolicy = \"never\"\n", sh(&script)),
            )]
        });
        let background = read_pid(&d.path("background.pid"));
        assert!(alive(background));
        d.wait_state("leaky", "failed");
        assert!(
            wait_gone(background),
            "{mode:?}: the background process survived"
        );
        if let Some(cgroup) = d.cgroup.clone() {
            // The emptied leaf is removed.
            let leaf = cgroup.join("shoal/services/leaky");
            let deadline = Instant::now() + Duration::from_secs(5);
            while leaf.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(!leaf.exists(), "{} is still there", leaf.display());
        }
        assert!(d.terminate().success());
    }
}

#[test]
fn notifications_in_a_real_cgroup_are_mapped_by_cgroup() {
    if !modes("notifications_in_a_real_cgroup").contains(&Cgroups::Real) {
        return;
    }
    let db = format!("type = \"notify\"\n{}", helper_in_shell("notify", 100));
    let mut d = Daemon::start(&[("db", &db)], Cgroups::Real);
    d.wait_state("db", "ready");
    let cgroup = d.cgroup.clone().unwrap();
    let procs = std::fs::read_to_string(cgroup.join("shoal/services/db/cgroup.procs")).unwrap();
    assert_eq!(
        procs.lines().count(),
        2,
        "the shell and the helper: {procs}"
    );
    let own = std::fs::read_to_string(cgroup.join("shoal/supervisor/cgroup.procs")).unwrap();
    assert_eq!(own.trim(), d.child.as_ref().unwrap().id().to_string());
    assert!(d.terminate().success());
}

#[test]
fn bad_definitions_are_reported_while_the_others_run() {
    let good = sh("exec sleep 60");
    let waits = format!("{}requires = [\"bad\"]\n", sh("exec sleep 60"));
    let bad = "command = [\"/bin/true\"]\nbogus = 1\n";
    let mut d = Daemon::start(
        &[("good", &good), ("waits", &waits), ("bad", bad)],
        Cgroups::Without,
    );
    let started = d.wait_event("supervisor.started", |e| {
        matches!(e, Event::SupervisorStarted { .. })
    });
    let Event::SupervisorStarted {
        services,
        config_errors,
    } = started.event
    else {
        unreachable!()
    };
    assert_eq!(services, 2);
    assert_eq!(config_errors.len(), 1, "{config_errors:#?}");
    let bad_file = d.path("services/bad.toml");
    assert!(
        config_errors[0].starts_with(&format!("{}:2:1: field bogus: ", bad_file.display())),
        "{config_errors:#?}"
    );
    d.wait_state("good", "ready");
    d.drain(Duration::from_millis(500));
    assert!(
        !d.changes().iter().any(|(n, _, _)| n == "waits"),
        "waits must wait: {:#?}",
        d.changes()
    );
    let log = std::fs::read_to_string(d.path("log/waits.log")).unwrap();
    assert!(
        log.contains("waiting for bad: its definition is invalid"),
        "{log}"
    );
    assert!(d.terminate().success());
}

#[test]
fn limits_without_cgroups_are_refused_not_dropped() {
    let limited = format!(
        "{}[restart]\npolicy = \"never\"\n[resources]\nmemory_max = \"64M\"\n",
        sh("exec sleep 60")
    );
    let free = sh("exec sleep 60");
    let mut d = Daemon::start(&[("limited", &limited), ("free", &free)], Cgroups::Without);
    let failed = d.wait_state("limited", "failed");
    let Event::Service { reason, .. } = failed.event else {
        unreachable!()
    };
    assert!(
        reason.starts_with(
            "could not start: it sets [resources] limits, but services run without cgroups here"
        ),
        "{reason}"
    );
    d.wait_state("free", "ready");
    assert!(d.terminate().success());
}

#[test]
fn readiness_by_tcp_port_and_failing_health_checks() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let web = format!(
        "{}[ready]\ntcp_port = {port}\n",
        helper("listen", 300, &format!(", PORT = \"{port}\""))
    );
    let sick = format!(
        "{}[health]\ncheck = {{ exec = [\"/bin/sh\", \"-c\", \"exit 1\"] }}\ninterval = \"100ms\"\n\
         timeout = \"2s\"\nfailure_threshold = 2\nstart_period = \"0s\"\n[restart]\n\
         delay = \"5s\"\nmax_delay = \"5s\"\n",
        sh("exec sleep 60")
    );
    let mut d = Daemon::start(&[("web", &web), ("sick", &sick)], Cgroups::Without);
    let ready = d.wait_state("web", "ready");
    let starting = d
        .seen
        .iter()
        .filter_map(|l| parse_line(l))
        .find(|r| is_change(&r.event, "web", "starting"))
        .unwrap();
    assert!(
        ready.t - starting.t >= 0.3,
        "ready before the port accepted"
    );
    let stopping = d.wait_state("sick", "stopping");
    let Event::Service { reason, .. } = stopping.event else {
        unreachable!()
    };
    assert_eq!(reason, "unhealthy: 2 failed checks in a row");
    let backing_off = d.wait_state("sick", "backing-off");
    let Event::Service { reason, .. } = backing_off.event else {
        unreachable!()
    };
    assert!(reason.starts_with("stopped after failure"), "{reason}");
    assert!(d.terminate().success());
}

/// The D-Bus control API end to end: the real daemon, the real client `shoalctl` uses.
#[test]
fn the_control_api_lists_stops_starts_and_reads_logs() {
    let web = sh("echo hello from web; exec sleep 60");
    let mut d = Daemon::start(&[("web", &web)], Cgroups::Without);
    d.wait_state("web", "ready");
    let socket = d.path("run/supervisor.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use shoal_api::supervisor::Client;
        let client = Client::connect(&socket).await.unwrap();
        let list = client.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].name.as_str(), list[0].state.as_str()),
            ("web", "ready")
        );
        assert!(list[0].pid > 0);

        // The first line may still be on its way from the pipe.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let logs = client.logs("web", 0, 100).await.unwrap();
            if logs
                .lines
                .iter()
                .any(|l| l.text == "hello from web" && l.stream == "stdout")
            {
                break;
            }
            assert!(Instant::now() < deadline, "no output in {logs:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The kernel log is one more log, read from /dev/kmsg.
        let kernel = client.logs("kernel", 0, 5).await.unwrap();
        assert!(
            !kernel.lines.is_empty() && kernel.lines.iter().all(|l| l.stream == "kernel"),
            "{kernel:?}"
        );
        assert!(kernel.lines[0].text.starts_with('<'), "{kernel:?}");

        client.stop("web").await.unwrap();
        let err = client.start("nope").await.unwrap_err();
        assert_eq!(err.to_string(), "no service named nope");
    });
    d.wait_state("web", "inactive");
    rt.block_on(async {
        let client = shoal_api::supervisor::Client::connect(&socket)
            .await
            .unwrap();
        client.start("web").await.unwrap();
    });
    d.wait_state("web", "ready");
    assert!(d.terminate().success());
}
