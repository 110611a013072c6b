//! Fatal errors, panics and the ordered shutdown. Whatever happens, PID 1 ends in `reboot(2)`:
//! it never returns from `main` (which would panic the kernel).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use shoal_boot_events::{Event, PowerAction};

use crate::console::emit;
use crate::mounts::{parse_mountinfo, unmount_order};

/// How long services get between SIGTERM and SIGKILL at shutdown.
const TERM_GRACE: Duration = Duration::from_secs(5);
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long the supervisor gets to stop every service in order.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(20);

static REBOOT_DELAY_MS: AtomicU64 = AtomicU64::new(10_000);

pub fn set_reboot_delay(delay: Duration) {
    REBOOT_DELAY_MS.store(delay.as_millis() as u64, Ordering::Relaxed);
}

fn reboot_delay() -> Duration {
    Duration::from_millis(REBOOT_DELAY_MS.load(Ordering::Relaxed))
}

/// Boot cannot continue: say why, wait so a person can read it, reboot.
pub fn fatal(reason: String) -> ! {
    tracing::error!("boot failed: {reason}");
    emit(Event::BootFailed {
        reason,
        reboot_in_s: reboot_delay().as_secs_f64(),
    });
    std::thread::sleep(reboot_delay());
    final_reboot(RebootMode::RB_AUTOBOOT)
}

/// Makes every panic end in a logged, delayed, clean reboot instead of a kernel panic.
pub fn install_panic_hook() {
    install_panic_hook_with(|| final_reboot(RebootMode::RB_AUTOBOOT));
}

/// The panic hook with its last step replaceable, so a test can observe it without rebooting.
fn install_panic_hook_with(then: fn() -> !) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info.to_string();
        tracing::error!("PID 1 panicked: {message}");
        emit(Event::Panic {
            message,
            reboot_in_s: reboot_delay().as_secs_f64(),
        });
        std::thread::sleep(reboot_delay());
        then()
    }));
}

fn final_reboot(mode: RebootMode) -> ! {
    nix::unistd::sync();
    let _ = reboot(mode);
    // reboot(2) only returns on error (no CAP_SYS_BOOT, i.e. not really PID 1): wait for ever
    // rather than exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reaps every child that has exited and returns them. `Err(ECHILD)` means no children left.
pub fn reap() -> Result<Vec<WaitStatus>, Errno> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(reaped),
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    tracing::debug!(pid = pid.as_raw(), ?status, "reaped");
                }
                reaped.push(status);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return if reaped.is_empty() {
                    Err(e)
                } else {
                    Ok(reaped)
                };
            }
        }
    }
}

/// Waits until no process but PID 1 is left, or the deadline passes. True if none is left.
fn wait_until_alone(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if reap() == Err(Errno::ECHILD) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reaps until `pid` has exited (true) or the deadline passes (false).
fn wait_for_exit(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match reap() {
            Ok(statuses) if statuses.iter().any(|s| s.pid() == Some(pid)) => return true,
            Err(Errno::ECHILD) => return true,
            _ => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ordered shutdown: the supervisor stops the services, then every process left gets SIGTERM, then SIGKILL after a grace period; data
/// is synced; filesystems are unmounted (children first) and the root is made read-only; then
/// the kernel powers off or reboots.
pub fn shutdown(action: PowerAction, reason: &str, supervisor: Option<Pid>) -> ! {
    let start = Instant::now();
    tracing::info!(?action, reason, "shutting down");
    emit(Event::ShutdownBegin {
        action,
        reason: reason.to_string(),
    });

    // The supervisor stops services in reverse dependency order, each within its own stop
    // timeout; give it that chance before everything left gets the blunt treatment.
    if let Some(pid) = supervisor {
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_for_exit(pid, SUPERVISOR_GRACE) {
            tracing::warn!(pid = pid.as_raw(), "supervisor did not stop in time");
        }
    }

    // kill(-1) reaches every process except PID 1 itself. Stopped ones need SIGCONT to act.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let _ = kill(Pid::from_raw(-1), Signal::SIGCONT);
    let mut killed = 0;
    if !wait_until_alone(TERM_GRACE) {
        killed = count_processes();
        tracing::warn!(
            processes = killed,
            "processes ignored SIGTERM; killing them"
        );
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        wait_until_alone(KILL_GRACE);
    }

    nix::unistd::sync();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for target in unmount_order(&parse_mountinfo(&mountinfo)) {
        if let Err(e) = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::empty()) {
            tracing::warn!(target, error = %e, "unmount failed; detaching");
            let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    );
    nix::unistd::sync();
    emit(Event::ShutdownFinal {
        action,
        killed,
        ms: crate::console::ms_since(start),
    });
    final_reboot(match action {
        PowerAction::Poweroff => RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
    })
}

/// Userspace processes other than PID 1 (kernel threads have an empty cmdline).
fn count_processes() -> u32 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != 1)
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()))
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD_ENV: &str = "SHOAL_INIT_PANIC_CHILD";

    /// Runs in a re-executed copy of the test binary: a panic there must go through the hook
    /// (event on the console, then the "reboot" step), never unwind to a plain exit.
    #[test]
    fn panic_hook_reports_and_reboots() {
        if std::env::var_os(CHILD_ENV).is_some() {
            set_reboot_delay(Duration::from_millis(10));
            install_panic_hook_with(|| std::process::exit(42));
            panic!("boom in PID 1");
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "power::tests::panic_hook_reports_and_reboots",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(42), "the hook's reboot step ran");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let event = stderr
            .lines()
            .find_map(shoal_boot_events::parse_line)
            .unwrap_or_else(|| panic!("no panic event in {stderr}"));
        match event.event {
            Event::Panic {
                message,
                reboot_in_s,
            } => {
                assert!(message.contains("boom in PID 1"), "{message}");
                assert!((reboot_in_s - 0.01).abs() < 1e-9);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}
