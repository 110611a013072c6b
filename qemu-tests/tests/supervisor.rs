//! The service supervisor in a booted VM (issue 3). The test image carries the services in
//! `image-build/profiles/test-services/`, all running `shoal-test-service`:
//!
//! | service | definition | expected |
//! | --- | --- | --- |
//! | `crashy` | `crash 3`, on-failure, delay 200ms, max_delay 2s, max_restarts 3 | restarted after 200, 400, 800 ms, then `failed` (crash loop) |
//! | `memhog` | `memhog 200`, memory_max 32M, never restarted | OOM-killed in its cgroup; PID 1, the supervisor and `sleeper` live on |
//! | `forkbomb` | `forkbomb`, pids_max 16 | fewer than 16 forks succeed |
//! | `capsvc` | `caps`, user 65534, capabilities CAP_NET_ADMIN | every capability set exactly 0x1000, NoNewPrivs 1, uid/gid 65534 |
//! | `stubborn` | `ignore-term`, stop_timeout 2s | at poweroff, its cgroup is killed after 2 s |
//! | `sleeper` | `sleep` | stays ready throughout |
//! | `base` <- `mid` <- `top` | notify after 1.5 s; `requires` | each starts once what it requires is ready; poweroff stops top, then mid, then base |
//!
//! Each test boots one VM and checks several things, collecting every failed check before it
//! reports, so one run shows everything that is wrong. Both VMs run every service.

use std::time::Duration;

use shoal_qemu_tests::events::{Event, PowerAction, Record};
use shoal_qemu_tests::testing::{boot_timeout, start, step_timeout, test_image};
use shoal_qemu_tests::{TimedEvent, Vm};

/// Every service in the test image's `/etc/shoal/services`.
const TEST_SERVICES: [&str; 9] = [
    "base", "capsvc", "crashy", "forkbomb", "memhog", "mid", "sleeper", "stubborn", "top",
];

/// One `service` event: a state change of one service.
#[derive(Debug, Clone)]
struct Change {
    /// Position among all boot events: the supervisor prints them in the order they happen.
    index: usize,
    /// Guest seconds since the kernel started.
    t: f64,
    name: String,
    from: String,
    to: String,
    reason: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} t={:.3} {}: {} -> {} ({})",
            self.index, self.t, self.name, self.from, self.to, self.reason
        )
    }
}

fn changes(events: &[TimedEvent]) -> Vec<Change> {
    events
        .iter()
        .enumerate()
        .filter_map(|(index, e)| match &e.record.event {
            Event::Service {
                name,
                from,
                to,
                reason,
            } => Some(Change {
                index,
                t: e.record.t,
                name: name.clone(),
                from: from.clone(),
                to: to.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn of<'a>(changes: &'a [Change], name: &str) -> Vec<&'a Change> {
    changes.iter().filter(|c| c.name == name).collect()
}

/// The first change of `name` into state `to`.
fn first<'a>(changes: &'a [Change], name: &str, to: &str) -> Option<&'a Change> {
    changes.iter().find(|c| c.name == name && c.to == to)
}

/// Index of the event called `name` (the first one), if any.
fn event_index(events: &[TimedEvent], name: &str) -> Option<usize> {
    events.iter().position(|e| e.name() == name)
}

/// Waits for `service` to change into state `to`.
fn wait_for_state(vm: &Vm, service: &str, to: &str, timeout: Duration) -> anyhow::Result<Record> {
    Ok(vm.wait_for_event_matching(
        &format!("service {service} -> {to}"),
        timeout,
        |r| matches!(&r.event, Event::Service { name, to: state, .. } if name == service && state == to),
    )?)
}

/// The delay in a backing-off reason, `"exit code 3; restarting in 400ms"` (Rust's `Debug` of
/// a `Duration`: `200ms`, `1.6s`, `2s`).
fn restart_delay(reason: &str) -> Option<Duration> {
    let text = reason.split("restarting in ").nth(1)?.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..number_end].parse().ok()?;
    let seconds = match &text[number_end..] {
        "s" => value,
        "ms" => value / 1e3,
        "µs" | "us" => value / 1e6,
        "ns" => value / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Collects failed checks so one run reports all of them.
#[derive(Debug, Default)]
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }

    /// Fails the test (with the service timeline) if any check failed.
    fn finish(self, vm: &Vm) -> anyhow::Result<()> {
        if self.failures.is_empty() {
            return Ok(());
        }
        vm.mark_failed();
        let timeline: Vec<String> = changes(&vm.events())
            .iter()
            .map(ToString::to_string)
            .collect();
        anyhow::bail!(
            "{} check(s) failed:\n- {}\nservice events:\n  {}",
            self.failures.len(),
            self.failures.join("\n- "),
            timeline.join("\n  ")
        )
    }
}

/// Boots and waits for the supervisor's report; checks it loaded every test service.
fn boot(name: &str, checks: &mut Checks) -> anyhow::Result<Vm> {
    let image = test_image()?;
    let vm = start(&image, name, |b| b)?;
    let started = vm.wait_for_event("supervisor.started", boot_timeout())?;
    if let Event::SupervisorStarted {
        services,
        config_errors,
    } = &started.event
    {
        checks.check(config_errors.is_empty(), || {
            format!("the supervisor reported config errors: {config_errors:?}")
        });
        checks.check(*services as usize >= TEST_SERVICES.len(), || {
            format!(
                "the supervisor loaded {services} services, the image has {}",
                TEST_SERVICES.len()
            )
        });
    }
    Ok(vm)
}

/// base <- mid <- top: each starts only after what it requires is ready; base is ready only
/// when it says so (1.5 s after it starts).
fn check_dependency_order(changes: &[Change], checks: &mut Checks) {
    let base_starting = first(changes, "base", "starting");
    let base_ready = first(changes, "base", "ready");
    let mid_starting = first(changes, "mid", "starting");
    let mid_ready = first(changes, "mid", "ready");
    let top_starting = first(changes, "top", "starting");
    let (
        Some(base_starting),
        Some(base_ready),
        Some(mid_starting),
        Some(mid_ready),
        Some(top_starting),
    ) = (
        base_starting,
        base_ready,
        mid_starting,
        mid_ready,
        top_starting,
    )
    else {
        checks.check(false, || {
            "the chain base <- mid <- top did not start (a starting or ready event is missing)"
                .into()
        });
        return;
    };
    checks.check(base_ready.t - base_starting.t >= 1.4, || {
        format!(
            "base was ready {:.3} s after starting, before it sent READY=1 (1.5 s): {base_starting} / {base_ready}",
            base_ready.t - base_starting.t
        )
    });
    checks.check(mid_starting.index > base_ready.index, || {
        format!("mid started before base was ready: {mid_starting} / {base_ready}")
    });
    checks.check(top_starting.index > mid_ready.index, || {
        format!("top started before mid was ready: {top_starting} / {mid_ready}")
    });
}

/// crashy: 3 restarts after 200, 400, 800 ms (each waited out), then failed as a crash loop.
fn check_crash_loop(changes: &[Change], checks: &mut Checks) {
    let crashy = of(changes, "crashy");
    let backoffs: Vec<&Change> = crashy
        .iter()
        .copied()
        .filter(|c| c.to == "backing-off")
        .collect();
    let delays: Vec<Option<Duration>> = backoffs.iter().map(|c| restart_delay(&c.reason)).collect();
    let expected: Vec<Option<Duration>> = [200, 400, 800]
        .into_iter()
        .map(|ms| Some(Duration::from_millis(ms)))
        .collect();
    checks.check(delays == expected, || {
        format!("crashy's restart delays were {delays:?}, expected 200ms, 400ms, 800ms (doubling)")
    });
    checks.check(
        backoffs.iter().all(|c| c.reason.contains("exit code 3")),
        || "a crashy backing-off reason does not name exit code 3".into(),
    );
    // Each delay was waited out. The supervisor stamps an event when it prints it, which under
    // TCG can be some milliseconds after the exit it reports (seen: 14 ms while memhog was
    // being OOM-killed), so allow a quarter of the delay; an immediate restart is still caught.
    for (backoff, delay) in backoffs.iter().zip(&delays) {
        let next_start = crashy
            .iter()
            .find(|c| c.index > backoff.index && c.to == "starting");
        if let (Some(next), Some(delay)) = (next_start, delay) {
            let waited = next.t - backoff.t;
            checks.check(waited >= delay.as_secs_f64() * 0.75, || {
                format!("crashy restarted {waited:.3} s after {backoff}, before its delay")
            });
        } else {
            checks.check(false, || {
                format!("crashy did not start again after {backoff}")
            });
        }
    }
    match crashy.last() {
        Some(last) => checks.check(
            last.to == "failed" && last.reason.starts_with("crash loop"),
            || format!("crashy's last state change is {last}, expected failed with a crash loop"),
        ),
        None => checks.check(false, || "crashy never changed state".into()),
    }
}

#[test]
fn services_are_restarted_confined_and_ordered() -> anyhow::Result<()> {
    let mut checks = Checks::default();
    let vm = boot("supervisor", &mut checks)?;

    // A crash loop ends in failed.
    wait_for_state(&vm, "crashy", "failed", step_timeout())?;

    // The memory hog is killed by the OOM killer of its own cgroup.
    let memhog = wait_for_state(&vm, "memhog", "failed", step_timeout())?;
    if let Event::Service { reason, .. } = &memhog.event {
        checks.check(reason.contains("SIGKILL"), || {
            format!("memhog failed for another reason than SIGKILL (the OOM killer): {reason}")
        });
    }
    let oom = vm.wait_for_text(
        "Memory cgroup out of memory: Killed process",
        step_timeout(),
    );
    checks.check(oom.is_ok(), || {
        "the kernel did not report a memory cgroup OOM kill on the console".into()
    });

    // The fork bomb hits pids.max.
    let forkbomb = vm.wait_for_test_report("forkbomb", step_timeout())?;
    let forks = forkbomb["forks"].as_u64().unwrap_or(u64::MAX);
    checks.check((1..16).contains(&forks), || {
        format!("forkbomb made {forks} forks; pids.max 16 allows at most 15: {forkbomb}")
    });
    checks.check(
        forkbomb["limited"] == true
            && forkbomb["error"]
                .as_str()
                .is_some_and(|e| e.contains("EAGAIN")),
        || format!("forkbomb's fork did not fail with EAGAIN: {forkbomb}"),
    );

    // The footprint (issue 3 asks for it): a oneshot reports VmRSS once the others are up.
    let rss = vm.wait_for_test_report("rss", step_timeout())?;
    eprintln!(
        "footprint: PID 1 {} KiB, supervisor {} KiB, netd {} KiB, all {} processes {} KiB",
        rss["pid1_kib"], rss["supervisor_kib"], rss["netd_kib"], rss["processes"], rss["total_kib"]
    );
    checks.check(
        rss["pid1_kib"].as_u64().is_some_and(|k| k > 0)
            && rss["supervisor_kib"].as_u64().is_some_and(|k| k > 0),
        || format!("the rss report found no PID 1 or no supervisor: {rss}"),
    );

    // Only the kept capability, in every set, as the unprivileged user.
    let caps = vm.wait_for_test_report("caps", step_timeout())?;
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        checks.check(caps[set] == "0000000000001000", || {
            format!(
                "capsvc's {set} is {}, expected 0000000000001000 (CAP_NET_ADMIN only)",
                caps[set]
            )
        });
    }
    checks.check(caps["NoNewPrivs"] == "1", || {
        format!("capsvc's NoNewPrivs is {}, expected 1", caps["NoNewPrivs"])
    });
    for ids in ["Uid", "Gid"] {
        checks.check(caps[ids] == "65534 65534 65534 65534", || {
            format!(
                "capsvc's {ids} (real, effective, saved, fs) is {}, expected 65534 everywhere",
                caps[ids]
            )
        });
    }
    checks.check(caps["Groups"] == "", || {
        format!(
            "capsvc kept supplementary groups {} (expected none)",
            caps["Groups"]
        )
    });

    // Dependents wait for readiness.
    wait_for_state(&vm, "top", "ready", step_timeout())?;

    // Everything so far is in; look at the whole story.
    let events = vm.events();
    let all = changes(&events);
    check_crash_loop(&all, &mut checks);
    check_dependency_order(&all, &mut checks);

    // The memory hog's own output (echoed lines may be dropped when the console is behind, so
    // none is required): it never got past its 32 MiB.
    let lines = vm.lines();
    let reached = lines
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.text.split_once("memhog: ")?;
            rest.strip_suffix(" MiB")?.trim().parse::<u64>().ok()
        })
        .max();
    checks.check(reached.is_none_or(|mib| mib <= 32), || {
        format!("memhog reported {reached:?} MiB allocated; its memory.max is 32 MiB")
    });
    checks.check(
        !lines.iter().any(|l| l.text.contains("memhog: holding all")),
        || "memhog allocated all it wanted".into(),
    );
    // Only the hog's cgroup ran out of memory: no machine-wide OOM kill.
    let kills: Vec<&str> = lines
        .iter()
        .map(|l| l.text.as_str())
        .filter(|t| t.contains("Killed process"))
        .collect();
    checks.check(
        kills
            .iter()
            .all(|t| t.contains("Memory cgroup out of memory") && t.contains("(shoal-test-serv)")),
        || format!("an OOM kill outside memhog's cgroup: {kills:?}"),
    );

    // PID 1, the supervisor and the bystanders are unharmed.
    for name in ["panic", "boot.failed", "shutdown.begin"] {
        checks.check(event_index(&events, name).is_none(), || {
            format!("PID 1 reported {name}")
        });
    }
    let supervisors = events
        .iter()
        .filter(|e| e.name() == "supervisor.started")
        .count();
    checks.check(supervisors == 1, || {
        format!("the supervisor started {supervisors} times (it died and PID 1 restarted it)")
    });
    for name in ["sleeper", "forkbomb", "capsvc", "base", "mid", "top"] {
        let story = of(&all, name);
        checks.check(
            story.last().is_some_and(|c| c.to == "ready")
                && story.iter().filter(|c| c.to == "ready").count() == 1,
            || {
                format!(
                    "{name} should be ready once and stay ready: {}",
                    story
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            },
        );
    }
    checks.check(vm.is_running(), || "QEMU exited".into());

    checks.finish(&vm)
}

#[test]
fn poweroff_stops_services_in_reverse_dependency_order() -> anyhow::Result<()> {
    let mut checks = Checks::default();
    let vm = boot("supervisor-poweroff", &mut checks)?;
    for service in ["top", "stubborn", "sleeper", "capsvc"] {
        wait_for_state(&vm, service, "ready", step_timeout())?;
    }
    // The orphan-making boot task is done too, so anything PID 1 must kill at the end was left
    // behind by the supervisor.
    vm.wait_for_test_report("orphans", step_timeout())?;

    vm.powerdown()?;
    let last = vm.wait_for_event("shutdown.final", step_timeout())?;
    let status = vm.wait_exit(step_timeout())?;
    checks.check(status.success(), || format!("QEMU exited with {status}"));
    if let Event::ShutdownFinal { action, killed, .. } = &last.event {
        checks.check(*action == PowerAction::Poweroff, || {
            format!("shutdown.final says {action:?}")
        });
        checks.check(*killed == 0, || {
            format!("PID 1 had to kill {killed} processes the supervisor left behind")
        });
    }

    let events = vm.events();
    let begin = event_index(&events, "shutdown.begin");
    let stopped = event_index(&events, "supervisor.stopped");
    let last_index = events.iter().rposition(|e| e.name() == "shutdown.final");
    let (Some(begin), Some(stopped), Some(last_index)) = (begin, stopped, last_index) else {
        checks.check(false, || {
            "shutdown.begin, supervisor.stopped or shutdown.final is missing".into()
        });
        return checks.finish(&vm);
    };
    checks.check(begin < stopped && stopped < last_index, || {
        "expected shutdown.begin, then supervisor.stopped, then shutdown.final".into()
    });

    let all = changes(&events);
    let during: Vec<Change> = all.into_iter().filter(|c| c.index > begin).collect();
    // When each service began stopping and when it was down.
    let stop_of = |name: &str| -> (Option<&Change>, Option<&Change>) {
        let began = during
            .iter()
            .find(|c| c.name == name && c.to == "stopping" && c.from != "stopping");
        let down = during.iter().find(|c| {
            c.name == name && c.from == "stopping" && matches!(c.to.as_str(), "inactive" | "failed")
        });
        (began, down)
    };

    for name in TEST_SERVICES {
        let story: Vec<&Change> = during.iter().filter(|c| c.name == name).collect();
        checks.check(story.iter().all(|c| c.to != "starting"), || {
            format!("{name} was started during shutdown")
        });
        if let Some(last) = story.last() {
            checks.check(last.index < stopped, || {
                format!("{name} changed state after supervisor.stopped: {last}")
            });
            checks.check(
                matches!(last.to.as_str(), "inactive" | "failed" | "done"),
                || format!("{name} was not down at the end: {last}"),
            );
        }
    }
    for name in [
        "top", "mid", "base", "sleeper", "capsvc", "forkbomb", "stubborn",
    ] {
        let (began, down) = stop_of(name);
        checks.check(began.is_some() && down.is_some(), || {
            format!("{name} was not stopped at shutdown (began {began:?}, down {down:?})")
        });
    }

    // Dependents first: top is down before mid is stopped, mid before base.
    for (dependent, dependency) in [("top", "mid"), ("mid", "base")] {
        if let ((_, Some(down)), (Some(began), _)) = (stop_of(dependent), stop_of(dependency)) {
            checks.check(down.index < began.index, || {
                format!("{dependency} began stopping before {dependent} was down: {began} / {down}")
            });
        }
    }
    // The well-behaved ones end with their stop signal; none needs its cgroup killed. (They exit
    // 0 on SIGTERM once they run; one stopped in the instant between its start and blocking
    // SIGTERM dies of the signal instead.)
    for name in ["top", "mid", "base", "sleeper", "capsvc", "forkbomb"] {
        if let (_, Some(down)) = stop_of(name) {
            checks.check(
                down.reason.contains("exit code 0") || down.reason.contains("killed by SIGTERM"),
                || format!("{name} did not stop by its stop signal: {down}"),
            );
        }
    }

    // stubborn ignores SIGTERM: its cgroup is killed once its 2 s stop timeout is over.
    let (began, down) = stop_of("stubborn");
    let kill = during
        .iter()
        .find(|c| c.name == "stubborn" && c.reason.contains("killing its cgroup"));
    match (began, kill, down) {
        (Some(began), Some(kill), Some(down)) => {
            checks.check(kill.t - began.t >= 1.9, || {
                format!("stubborn's cgroup was killed {:.3} s after its stop signal, before its 2 s timeout: {began} / {kill}", kill.t - began.t)
            });
            checks.check(kill.t - began.t < 5.0, || {
                format!("stubborn's cgroup was killed only {:.3} s after its stop signal: {began} / {kill}", kill.t - began.t)
            });
            checks.check(
                down.index > kill.index && down.reason.contains("SIGKILL"),
                || format!("stubborn was not down by SIGKILL after the kill: {kill} / {down}"),
            );
        }
        _ => checks.check(false, || {
            format!(
                "stubborn: expected stopping, a cgroup kill after the stop timeout, then down \
                 (began {began:?}, kill {kill:?}, down {down:?})"
            )
        }),
    }

    checks.finish(&vm)
}

#[test]
fn restart_delays_are_parsed() {
    assert_eq!(
        restart_delay("exit code 3; restarting in 200ms"),
        Some(Duration::from_millis(200))
    );
    assert_eq!(
        restart_delay("exit code 3; restarting in 1.6s"),
        Some(Duration::from_millis(1600))
    );
    assert_eq!(
        restart_delay("killed by SIGKILL; restarting in 2s"),
        Some(Duration::from_secs(2))
    );
    assert_eq!(restart_delay("exit code 3"), None);
}

#[test]
fn story_checks_accept_the_contract_and_catch_breaches() {
    fn story(steps: &[(f64, &str, &str, &str, &str)]) -> Vec<TimedEvent> {
        steps
            .iter()
            .map(|(t, name, from, to, reason)| TimedEvent {
                at: Duration::ZERO,
                record: Record {
                    t: *t,
                    event: Event::Service {
                        name: (*name).into(),
                        from: (*from).into(),
                        to: (*to).into(),
                        reason: (*reason).into(),
                    },
                },
            })
            .collect()
    }
    let good = story(&[
        (1.0, "base", "waiting", "starting", ""),
        (1.0, "mid", "inactive", "waiting", ""),
        (1.0, "crashy", "waiting", "starting", ""),
        (
            1.1,
            "crashy",
            "starting",
            "backing-off",
            "exit code 3; restarting in 200ms",
        ),
        (1.3, "crashy", "backing-off", "starting", ""),
        (
            1.4,
            "crashy",
            "starting",
            "backing-off",
            "exit code 3; restarting in 400ms",
        ),
        (1.8, "crashy", "backing-off", "starting", ""),
        (
            1.9,
            "crashy",
            "starting",
            "backing-off",
            "exit code 3; restarting in 800ms",
        ),
        (2.7, "crashy", "backing-off", "starting", ""),
        (
            2.8,
            "crashy",
            "starting",
            "failed",
            "crash loop: 3 restarts within 60s",
        ),
        (2.6, "base", "starting", "ready", "READY=1"),
        (2.6, "mid", "waiting", "starting", ""),
        (2.6, "mid", "starting", "ready", ""),
        (2.7, "top", "waiting", "starting", ""),
    ]);
    let mut checks = Checks::default();
    check_crash_loop(&changes(&good), &mut checks);
    check_dependency_order(&changes(&good), &mut checks);
    assert!(checks.failures.is_empty(), "{:?}", checks.failures);

    // mid before base is ready; crashy restarted early and with a flat delay.
    let bad = story(&[
        (1.0, "base", "waiting", "starting", ""),
        (1.1, "mid", "waiting", "starting", ""),
        (1.2, "mid", "starting", "ready", ""),
        (1.3, "top", "waiting", "starting", ""),
        (2.6, "base", "starting", "ready", "READY=1"),
        (
            1.1,
            "crashy",
            "starting",
            "backing-off",
            "exit code 3; restarting in 200ms",
        ),
        (1.2, "crashy", "backing-off", "starting", ""),
        (
            1.4,
            "crashy",
            "starting",
            "backing-off",
            "exit code 3; restarting in 200ms",
        ),
    ]);
    let mut checks = Checks::default();
    check_crash_loop(&changes(&bad), &mut checks);
    check_dependency_order(&changes(&bad), &mut checks);
    let text = checks.failures.join("\n");
    assert!(text.contains("mid started before base was ready"), "{text}");
    assert!(text.contains("restart delays were"), "{text}");
    assert!(text.contains("before its delay"), "{text}");
    assert!(text.contains("did not start again"), "{text}");
    assert!(text.contains("expected failed with a crash loop"), "{text}");
}
