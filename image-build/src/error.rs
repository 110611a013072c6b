//! The crate's one error type. Every message names the file, field or command that failed.
//!
//! Messages are complete on their own (they include the underlying error's text), so the
//! variants do not also expose it as `source()`: printing the chain would repeat it.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A profile file could not be read.
    #[error("profile {}: cannot read it: {cause}", file.display())]
    ProfileRead {
        /// The profile file.
        file: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
    /// A profile is not valid TOML or has unknown or mistyped fields.
    #[error("profile {}: {cause}", file.display())]
    ProfileParse {
        /// The profile file.
        file: PathBuf,
        /// The TOML error, with line and column.
        cause: Box<toml::de::Error>,
    },
    /// A profile field has a value the builder cannot use.
    #[error("profile {}: field `{field}`: {reason}", file.display())]
    ProfileInvalid {
        /// The profile file (for a merged profile, the one that was asked for).
        file: PathBuf,
        /// The field, as a TOML path such as `initramfs.compression` or `binary[2].dest`.
        field: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// An external program could not be started.
    #[error("cannot run `{command}`: {cause}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    CommandStart {
        /// The command line.
        command: String,
        /// What to install, when the program is missing.
        hint: Option<String>,
        /// The underlying error.
        cause: io::Error,
    },
    /// An external program ran and failed.
    #[error("`{command}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(":\n{stderr}") })]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        /// What was being done ("read", "create", "copy ... to", ...).
        action: String,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },
    /// The kernel package is unusable (missing from apt, no kernel image inside, ...).
    #[error("kernel package {package}: {reason}")]
    Kernel {
        /// The Debian package.
        package: String,
        /// What is wrong.
        reason: String,
    },
    /// A Debian package is unusable: unknown to apt, or without a file the profile wants.
    #[error("Debian package {package}: {reason}")]
    Package {
        /// The Debian package.
        package: String,
        /// What is wrong.
        reason: String,
    },
    /// A file that should be ELF64 (a module, a binary) is malformed.
    #[error("{}: not a usable ELF64 file: {reason}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is malformed.
        reason: String,
    },
    /// A binary meant for the image is dynamically linked.
    #[error(
        "{}: not statically linked ({reason}); build it with RUSTFLAGS=\"-C target-feature=+crt-static\" --target x86_64-unknown-linux-gnu",
        path.display()
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// The interpreter and libraries it asks for.
        reason: String,
    },
    /// Module selection failed: an unknown module, a glob that matches nothing, a missing dependency.
    #[error("modules: {0}")]
    Modules(String),
    /// A binary named by the profile could not be built or found.
    #[error("binary `{bin}` (package {package}): {reason}")]
    Binary {
        /// Cargo package.
        package: String,
        /// Binary target name.
        bin: String,
        /// What went wrong.
        reason: String,
    },
    /// An archive entry cannot be represented (name, size or timestamp out of range).
    #[error("initramfs: {0}")]
    Cpio(String),
    /// A build option or environment variable is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Returns a closure that wraps an `io::Error` for `action` on `path`, for `map_err`.
    pub(crate) fn io(
        action: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> impl FnOnce(io::Error) -> Error {
        let action = action.into();
        let path = path.as_ref().to_path_buf();
        move |cause| Error::Io {
            action,
            path,
            cause,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
