//! The Shoal VM harness: boots the built image (or a PXE client) in QEMU under TCG, inside a
//! private network namespace, and lets tests wait for the structured boot events PID 1 prints.
//!
//! ```no_run
//! use std::time::Duration;
//! use shoal_qemu_tests::{Image, Vm};
//!
//! let image = Image::locate()?;
//! let vm = Vm::builder("node0").image(&image).cmdline("shoal.reboot_delay=1").start()?;
//! vm.wait_for_event("boot.complete", Duration::from_secs(60))?;
//! vm.powerdown()?;
//! assert!(vm.wait_exit(Duration::from_secs(30))?.success());
//! # Ok::<(), shoal_qemu_tests::Error>(())
//! ```
//!
//! Pieces: [`Image`] (finds or builds `out/test`), [`Network`] (namespace, bridge, taps,
//! [`Dnsmasq`], [`HttpServer`] for PXE, [`Vlan`]s relayed in user space), [`Vm`] /
//! [`VmBuilder`] (QEMU, console capture, waits, faults), [`Qmp`] (the QEMU monitor protocol).
//! Everything is torn down on drop, also when a test panics; a failed VM prints the end of its
//! console and keeps its log.

pub mod accel;
pub mod dhcpd;
pub mod dnsmasq;
pub mod error;
pub mod floor;
pub mod http;
pub mod image;
pub mod imds;
pub mod net;
pub mod qmp;
pub mod stats;
pub mod testing;
pub mod vlan;
pub mod vm;

mod console;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use accel::Accel;
pub use console::{ConsoleLine, TimedEvent};
pub use dnsmasq::{DhcpConfig, Dnsmasq};
pub use error::{Error, Result};
pub use http::{HttpServer, Served};
pub use image::Image;
pub use net::{Network, Segment, Tap};
pub use qmp::Qmp;
pub use vlan::{RelayCounters, Vlan};
pub use vm::{Disk, HotplugNic, NicModel, Vm, VmBuilder};

/// Re-exported so tests and tools need no direct dependency on the event crate.
pub use shoal_boot_events as events;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Fails with [`Error::NotRoot`] unless the process runs as root.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

/// Multiplies a timeout by `SHOAL_TIMEOUT_SCALE` (a float, default 1) for slow or busy hosts.
pub fn scaled(timeout: Duration) -> Duration {
    let scale = std::env::var("SHOAL_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    timeout.mul_f64(scale)
}

/// Sends `tracing` output to stderr once per process (`RUST_LOG`-style level from
/// `SHOAL_LOG`, default `info`). Safe to call from every test.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let level = std::env::var("SHOAL_LOG")
            .ok()
            .and_then(|l| l.parse::<tracing::Level>().ok())
            .unwrap_or(tracing::Level::INFO);
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    });
}
