//! The harness's one error type. Messages say what was being waited for or run, and errors from
//! a VM carry the last console lines, so a failed test explains itself without opening a log.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while preparing or driving a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network namespaces, taps and bridges need root.
    #[error(
        "the VM harness must run as root (it creates network namespaces, bridges and taps); \
         run the tests as root, e.g. `sudo -E cargo nextest run -p shoal-qemu-tests`"
    )]
    NotRoot,

    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// A helper program (`ip`, `cargo`, ...) could not be started or exited with an error.
    #[error("`{command}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(":\n{stderr}") })]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// The image directory is unusable.
    #[error("image {}: {message}", dir.display())]
    Image { dir: PathBuf, message: String },

    /// Building the image (on demand, when `manifest.json` is missing) failed.
    #[error(
        "building the test image failed: {message}\n\
         build it by hand with `cargo run --release -p shoal-image-build -- build --profile test`, \
         or point SHOAL_IMAGE_DIR at a built image directory"
    )]
    ImageBuild { message: String },

    /// The VM configuration is contradictory.
    #[error("VM {vm}: invalid configuration: {message}")]
    Config { vm: String, message: String },

    /// Something the test waited for did not happen in time.
    #[error(
        "VM {vm}: timed out after {:.1} s waiting for {what}\nlast console lines ({log}):\n{tail}",
        timeout.as_secs_f64(), log = log.display()
    )]
    Timeout {
        vm: String,
        what: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },

    /// QEMU exited before the thing waited for happened.
    #[error(
        "VM {vm}: QEMU exited ({status}) while waiting for {what}\nlast console lines ({log}):\n{tail}"
    )]
    Exited {
        vm: String,
        what: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },

    /// The QMP conversation failed or QEMU answered a command with an error.
    #[error("VM {vm}: QMP {command}: {message}")]
    Qmp {
        vm: String,
        command: String,
        message: String,
    },
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
