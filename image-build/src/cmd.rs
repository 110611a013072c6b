//! Running external programs with errors that say what to do about them.

use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

/// How much of a failed command's standard error goes into the error message.
const STDERR_TAIL: usize = 4000;

/// The Debian package (or other remedy) that provides a program this crate runs.
fn install_hint(program: &str) -> Option<String> {
    let name = program.rsplit('/').next().unwrap_or(program);
    let package = match name {
        "apt-get" | "apt-cache" => "apt",
        "dpkg-deb" => "dpkg",
        "mkfs.erofs" => "erofs-utils",
        "mkfs.vfat" => "dosfstools",
        "mmd" | "mcopy" => "mtools",
        "mkfs.ext4" => "e2fsprogs",
        "qemu-img" => "qemu-utils",
        "zstd" => "zstd",
        "lz4" => "lz4",
        "gzip" => "gzip",
        "cargo" => return Some("install the Rust toolchain (rustup) or set $CARGO".into()),
        _ => return None,
    };
    Some(format!(
        "install the Debian package {package}: apt-get install {package}"
    ))
}

/// Renders a command line for messages (arguments with spaces are quoted).
pub(crate) fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            parts.push(format!("'{arg}'"));
        } else {
            parts.push(arg.into_owned());
        }
    }
    parts.join(" ")
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if text.len() <= STDERR_TAIL {
        return text.to_owned();
    }
    let mut start = text.len() - STDERR_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Runs `cmd` to completion with stdout and stderr captured; a non-zero exit is an error
/// carrying the command line, the status and the end of stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let command = display(cmd);
    tracing::debug!(%command, "running");
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::CommandStart {
            hint: (source.kind() == std::io::ErrorKind::NotFound)
                .then(|| install_hint(&cmd.get_program().to_string_lossy()))
                .flatten(),
            command: command.clone(),
            cause: source,
        })?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command,
            status: output.status.to_string(),
            stderr: tail(&output.stderr),
        });
    }
    Ok(output)
}

/// Runs `cmd` and returns its standard output as text.
pub(crate) fn stdout(cmd: &mut Command) -> Result<String> {
    let output = run(cmd)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_status_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c 'echo boom >&2; exit 3'` failed"),
            "{msg}"
        );
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.ends_with("boom"), "{msg}");
    }

    #[test]
    fn missing_program_suggests_a_package() {
        let err = run(&mut Command::new("/nonexistent/mkfs.erofs")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cannot run `/nonexistent/mkfs.erofs`"),
            "{msg}"
        );
        assert!(msg.contains("apt-get install erofs-utils"), "{msg}");
    }
}
