//! The one reaper: the daemon is a child subreaper, so every process a service starts, however
//! deeply forked or daemonised, ends as our child; every one is collected here with
//! `waitpid(-1, WNOHANG)` when SIGCHLD arrives. Nothing else waits for children (no
//! `Child::wait`), so no exit status can be taken by a second waiter.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::machine::Exit;

/// Makes orphaned descendants our children instead of PID 1's.
pub(crate) fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Collects every child that has exited, without blocking.
pub(crate) fn reap_all() -> Vec<(i32, Exit)> {
    let mut exits = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return exits,
            Ok(status) => exits.extend(exit_of(status)),
            Err(Errno::EINTR) => {}
            Err(error) => {
                tracing::error!("waitpid: {error}");
                return exits;
            }
        }
    }
}

/// The pid and how it ended, for a terminated child (stops and continues are not exits).
fn exit_of(status: WaitStatus) -> Option<(i32, Exit)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), Exit::Code(code))),
        WaitStatus::Signaled(pid, signal, _) => Some((pid.as_raw(), Exit::Signal(signal))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn only_terminations_are_exits() {
        let pid = Pid::from_raw(42);
        assert_eq!(
            exit_of(WaitStatus::Exited(pid, 3)),
            Some((42, Exit::Code(3)))
        );
        assert_eq!(
            exit_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((42, Exit::Signal(Signal::SIGKILL)))
        );
        assert_eq!(exit_of(WaitStatus::Stopped(pid, Signal::SIGSTOP)), None);
        assert_eq!(exit_of(WaitStatus::Continued(pid)), None);
    }
}
