//! Running helper programs (`ip`, `cargo`) and turning failures into [`Error::Command`].

use std::process::{Command, Output, Stdio};

use crate::{Error, Result};

/// A command line as a user could paste it, for error messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command to completion and returns its stdout; a non-zero exit is an error that carries
/// stderr.
pub(crate) fn run(command: &mut Command) -> Result<String> {
    let output: Output =
        command
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Command {
                command: describe(command),
                status: format!("could not start: {source}"),
                stderr: String::new(),
            })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: describe(command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// `ip ARGS...`
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Makes the child get SIGKILL when the thread that spawned it dies, so QEMU and dnsmasq never
/// outlive a test process that was killed (a nextest timeout, a Ctrl-C): they run in their own
/// process groups, which a signal to the harness's group does not reach.
///
/// The signal follows the *spawning thread*: spawn a VM from the thread that owns it.
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, getppid
    // and _exit, which are async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
