//! Which QEMU accelerator to use. TCG by default: on these hosts `/dev/kvm` exists but a KVM
//! guest hangs, so KVM is used only when asked for (`SHOAL_ACCEL=kvm`) or when an opt-in probe
//! (`SHOAL_KVM_PROBE=1`) has seen a KVM guest reach PID 1 within 10 s.

use std::sync::OnceLock;
use std::time::Duration;

use crate::image::Image;
use crate::vm::Vm;

/// `tcg` or `kvm`: forces the accelerator.
pub const ACCEL_ENV: &str = "SHOAL_ACCEL";
/// `1`: probe KVM once (result cached in `target/shoal-kvm-probe`) and use it if it works.
pub const PROBE_ENV: &str = "SHOAL_KVM_PROBE";
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    /// QEMU arguments selecting this accelerator (and a CPU model that suits it).
    pub fn args(self) -> Vec<String> {
        match self {
            Accel::Tcg => vec!["-accel".into(), "tcg".into()],
            Accel::Kvm => vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()],
        }
    }

    /// The accelerator for this process: the environment's choice, else the cached probe's
    /// result when probing is enabled, else TCG. Decided once per process.
    pub fn detect() -> Accel {
        static CHOSEN: OnceLock<Accel> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            match std::env::var(ACCEL_ENV).ok().as_deref() {
                Some("kvm") => return Accel::Kvm,
                Some("tcg") => return Accel::Tcg,
                Some(other) => tracing::warn!("ignoring {ACCEL_ENV}={other:?} (use tcg or kvm)"),
                None => {}
            }
            if std::env::var(PROBE_ENV).ok().as_deref() == Some("1") && kvm_works() {
                Accel::Kvm
            } else {
                Accel::Tcg
            }
        })
    }
}

/// Whether a KVM guest reaches `init.start` in time (here QEMU either hangs or aborts on an MSR
/// it cannot set); cached on disk so only one test process pays.
fn kvm_works() -> bool {
    let cache = crate::target_dir().join("shoal-kvm-probe");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        return text.trim() == "kvm works";
    }
    let works = probe().unwrap_or_else(|e| {
        tracing::info!("KVM probe failed, using TCG: {e}");
        false
    });
    let _ = std::fs::write(&cache, if works { "kvm works\n" } else { "kvm fails\n" });
    works
}

fn probe() -> crate::Result<bool> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Ok(false);
    }
    let image = Image::locate()?;
    let vm = Vm::builder("kvm-probe")
        .image(&image)
        .accel(Accel::Kvm)
        .start()?;
    vm.expect_failures();
    let reached = vm.wait_for_event("init.start", PROBE_TIMEOUT).is_ok();
    vm.kill();
    Ok(reached)
}
