//! `cargo xtask <command>`: the project's entry points for people and CI.
//!
//! - `deps`: installs the Debian packages the build and the tests need (only the missing ones).
//! - `image [--profile P]`: builds `out/<P>/` (default profile `default`).
//! - `demo [--nodes N]`: deps, image, then boots an N-node QEMU cluster and shows it.
//! - `test`: deps, lint, the test image, the fuzz targets (built, not run), then every test in
//!   the workspace (VM tests included).
//! - `bench`: deps, image, then the boot-time benchmark (to cluster membership), then the
//!   cluster benchmark (key-value latency and throughput, failover).
//! - `lint`: rustfmt and clippy, as CI wants them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the build and the tests use, one per line with `#` comments; `.ci/run`
/// reads the same file.
const DEBIAN_PACKAGES: &str = include_str!("../debian-packages.txt");

fn debian_packages() -> impl Iterator<Item = &'static str> {
    DEBIAN_PACKAGES
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        bail!("usage: cargo xtask <deps|image|demo|test|bench|lint> [options]");
    };
    let rest = &args[1..];
    match command.as_str() {
        "deps" => deps(),
        "image" => {
            deps()?;
            image(option(rest, "--profile").unwrap_or("default"))
        }
        "demo" => {
            deps()?;
            image("default")?;
            let nodes = option(rest, "--nodes").unwrap_or("3");
            let mut args = vec!["--nodes", nodes, "--image-dir", "out/default"];
            if rest.iter().any(|a| a == "--keep-running") {
                args.push("--keep-running");
            }
            cargo(
                &[
                    &[
                        "run",
                        "--release",
                        "--quiet",
                        "-p",
                        "shoal-qemu-tests",
                        "--bin",
                        "shoal-cluster",
                        "--",
                    ],
                    &args[..],
                ]
                .concat(),
            )
        }
        "test" => test(),
        "bench" => {
            deps()?;
            image("default")?;
            let mut args = vec![
                "run",
                "--release",
                "--quiet",
                "-p",
                "shoal-qemu-tests",
                "--bin",
                "shoal-bench",
                "--",
                "--image-dir",
                "out/default",
            ];
            args.extend(rest.iter().map(String::as_str));
            cargo(&args)?;
            // The cluster's own figures: key-value latency and throughput, failover.
            cargo(&[
                "run",
                "--release",
                "--quiet",
                "-p",
                "shoal-clusterd",
                "--bin",
                "shoal-cluster-bench",
            ])
        }
        "lint" => lint(),
        other => bail!("unknown command {other}; try deps, image, demo, test, bench or lint"),
    }
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

/// Installs the Debian packages that are missing, with apt-get (needs root).
fn deps() -> Result<()> {
    let missing: Vec<&str> = debian_packages()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn image(profile: &str) -> Result<()> {
    cargo(&[
        "run",
        "--release",
        "--quiet",
        "-p",
        "shoal-image-build",
        "--",
        "build",
        "--profile",
        profile,
    ])
}

fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    // In the release profile, like the tests: the build scripts and proc macros it compiles are
    // the ones the test build reuses.
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])
}

/// Everything CI checks: lints, the test image, then all tests (unit, host integration, VMs).
fn test() -> Result<()> {
    deps()?;
    lint()?;
    image("test")?;
    // The fuzz targets must keep building (they run under cargo-fuzz on nightly, elsewhere).
    cargo(&[
        "build",
        "--quiet",
        "--manifest-path",
        "netd/fuzz/Cargo.toml",
        "--bins",
        "--target-dir",
        "target/fuzz",
    ])?;
    let nextest = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let image_dir = workspace_root().join("out/test");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if nextest {
        command.args([
            "nextest",
            "run",
            "--workspace",
            "--release",
            "--no-fail-fast",
        ]);
    } else {
        command.args(["test", "--workspace", "--release", "--no-fail-fast"]);
    }
    run(command.env("SHOAL_IMAGE_DIR", image_dir))
}
