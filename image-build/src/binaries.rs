//! Building the image's binaries as static executables, and checking that they are static.
//!
//! The only Rust target on the build host is `x86_64-unknown-linux-gnu`; with
//! `-C target-feature=+crt-static -C relocation-model=static` it produces static executables
//! (not PIE: see [`STATIC_RUSTFLAGS`]) that run with nothing
//! else in the image. `--target` keeps build scripts and proc macros dynamic.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::elf::{self, Linkage};
use crate::error::{Error, Result};
use crate::profile::BinarySpec;

/// The target the binaries are built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The flags that make glibc binaries static, and not position-independent: a static-pie
/// executable relocates itself at every start, which dirties its GOT and `.data.rel.ro` pages in
/// each process and reads its relocation table (0.9 MB for shoal-node) into each one's resident
/// set. Without PIE those pages stay clean and shared through the page cache.
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";

/// Fails unless `path` is an x86_64 ELF executable with no interpreter and no shared libraries.
pub fn check_static(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    let linkage = elf::linkage(&file).map_err(|e| match e {
        elf::ReadError::Io(cause) => Error::Io {
            action: "read".into(),
            path: path.to_path_buf(),
            cause,
        },
        elf::ReadError::Malformed(m) => Error::Elf {
            path: path.to_path_buf(),
            reason: m.to_string(),
        },
    })?;
    let header = elf::read_header(&file).map_err(|e| Error::Elf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    const EM_X86_64: u16 = 62;
    if header.machine != EM_X86_64 {
        return Err(Error::Elf {
            path: path.to_path_buf(),
            reason: format!("machine {} is not x86_64", header.machine),
        });
    }
    match linkage {
        Linkage::Static => Ok(()),
        Linkage::Dynamic {
            interpreter,
            needed,
        } => {
            let mut parts = Vec::new();
            if let Some(interp) = interpreter {
                parts.push(format!("interpreter {interp}"));
            }
            if !needed.is_empty() {
                parts.push(format!("needs {}", needed.join(", ")));
            }
            Err(Error::NotStatic {
                path: path.to_path_buf(),
                reason: parts.join("; "),
            })
        }
    }
}

/// Where the binaries come from.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// Build them with cargo in this workspace.
    Build {
        /// The workspace root (cargo runs there).
        workspace: &'a Path,
    },
    /// Take prebuilt files named after each binary from this directory.
    Dir(&'a Path),
}

/// Produces every binary in `specs`, checks each is static, and returns their paths by spec.
/// `on_build` is told about each cargo invocation before it starts.
pub fn provide(
    specs: &[BinarySpec],
    source: &Source<'_>,
    mut on_build: impl FnMut(&str),
) -> Result<BTreeMap<BinarySpec, PathBuf>> {
    let mut paths = BTreeMap::new();
    match source {
        Source::Dir(dir) => {
            for spec in specs {
                let path = dir.join(&spec.bin);
                if !path.is_file() {
                    return Err(Error::Binary {
                        package: spec.package.clone(),
                        bin: spec.bin.clone(),
                        reason: format!("{} does not exist (from --binaries-dir)", path.display()),
                    });
                }
                paths.insert(spec.clone(), path);
            }
        }
        Source::Build { workspace } => {
            // One cargo invocation for every package: the dependencies they share are built
            // once, with one feature set, instead of once per package.
            let mut packages: Vec<&str> = specs.iter().map(|s| s.package.as_str()).collect();
            packages.sort_unstable();
            packages.dedup();
            let bins: Vec<&str> = specs.iter().map(|s| s.bin.as_str()).collect();
            on_build(&format!(
                "cargo build --release -p {} ({})",
                packages.join(" -p "),
                bins.join(", ")
            ));
            let built = cargo_build(workspace, &packages, &bins)?;
            for spec in specs {
                let path = built.get(&spec.bin).cloned().ok_or_else(|| Error::Binary {
                    package: spec.package.clone(),
                    bin: spec.bin.clone(),
                    reason: "cargo reported no executable for it".into(),
                })?;
                paths.insert(spec.clone(), path);
            }
        }
    }
    for path in paths.values() {
        check_static(path)?;
    }
    Ok(paths)
}

/// The cargo to run: the one that is running us (`$CARGO`), else `cargo` from `PATH`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs one static release build of `bins` from `packages` and returns the executables cargo
/// reports, by binary name.
fn cargo_build(
    workspace: &Path,
    packages: &[&str],
    bins: &[&str],
) -> Result<BTreeMap<String, PathBuf>> {
    let mut command = cargo();
    command
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        // Set by a cargo that runs us (build scripts, `cargo test`); it would override RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", rustflags());
    for package in packages {
        command.args(["-p", package]);
    }
    for bin in bins {
        command.args(["--bin", bin]);
    }
    let output = cmd::run(&mut command).map_err(|e| Error::Binary {
        package: packages.join(", "),
        bin: bins.join(", "),
        reason: e.to_string(),
    })?;
    let mut built = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        built.insert(name.to_owned(), PathBuf::from(executable));
    }
    Ok(built)
}

/// `RUSTFLAGS` for the build: the caller's, plus static linking.
fn rustflags() -> String {
    match std::env::var("RUSTFLAGS") {
        Ok(existing) if existing.contains("crt-static") => existing,
        Ok(existing) if !existing.trim().is_empty() => format!("{existing} {STATIC_RUSTFLAGS}"),
        _ => STATIC_RUSTFLAGS.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_host_binary_fails_the_check() {
        let err = check_static(Path::new("/bin/true")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NotStatic { .. }), "{msg}");
        assert!(msg.starts_with("/bin/true: not statically linked (interpreter /lib64/ld-linux-x86-64.so.2; needs libc.so.6"), "{msg}");
    }

    #[test]
    fn static_fixture_passes_and_non_elf_fails() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("static");
        std::fs::write(&exe, crate::elf::fixtures::executable(None, &[], true)).unwrap();
        check_static(&exe).unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let err = check_static(&script).unwrap_err().to_string();
        assert!(
            err.contains("script: not a usable ELF64 file: no ELF magic"),
            "{err}"
        );
    }

    #[test]
    fn binaries_dir_must_hold_every_binary() {
        let dir = tempfile::tempdir().unwrap();
        let spec = BinarySpec {
            package: "shoal-init".into(),
            bin: "shoal-init".into(),
        };
        let err = provide(&[spec], &Source::Dir(dir.path()), |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("binary `shoal-init` (package shoal-init):"),
            "{err}"
        );
    }
}
