//! Shared pieces of the VM tests: timeouts, booting the test image, and checking event order.

use std::time::Duration;

use shoal_boot_events::Record;

use crate::stats::event_label;
use crate::{Image, Network, Result, Vm, VmBuilder, init_logging, require_root, scaled};

/// From QEMU's start to `boot.complete` (or `boot.failed`) under TCG, two VMs at a time on two
/// cores, with room to spare. Scaled by `SHOAL_TIMEOUT_SCALE`.
pub fn boot_timeout() -> Duration {
    scaled(Duration::from_secs(60))
}

/// For one step after boot (an event after a power button press, QEMU exiting, ...).
pub fn step_timeout() -> Duration {
    scaled(Duration::from_secs(30))
}

/// Logging on, root checked, the test image located (built if missing).
pub fn test_image() -> Result<Image> {
    init_logging();
    require_root()?;
    Image::locate()
}

/// Starts `name` from the test image with `shoal.reboot_delay=1`, after `configure`.
pub fn start(
    image: &Image,
    name: &str,
    configure: impl FnOnce(VmBuilder) -> VmBuilder,
) -> Result<Vm> {
    configure(
        Vm::builder(name)
            .image(image)
            .cmdline("shoal.reboot_delay=1"),
    )
    .start()
}

/// Checks that `expected` labels (see [`event_label`]) occur in `events` in this order, other
/// events in between allowed. The error lists what was seen.
pub fn check_order(events: &[Record], expected: &[&str]) -> Result<(), String> {
    let labels: Vec<String> = events.iter().map(|r| event_label(&r.event)).collect();
    let mut position = 0;
    for want in expected {
        match labels[position..].iter().position(|l| l == want) {
            Some(offset) => position += offset + 1,
            None => {
                return Err(format!(
                    "expected {want:?} after position {position} in the boot events, but saw:\n  {}",
                    labels.join("\n  ")
                ));
            }
        }
    }
    Ok(())
}

/// Runs the release `shoalctl` inside the test network (where the VMs' addresses are
/// reachable) and returns its standard output; a failure carries its output. `cargo xtask test`
/// builds it; alone: `cargo build --release -p shoalctl`.
pub fn shoalctl(network: &Network, args: &[&str]) -> anyhow::Result<String> {
    let bin = crate::target_dir().join("release/shoalctl");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with cargo build --release -p shoalctl",
        bin.display()
    );
    let output = network
        .command(&bin.display().to_string())
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "shoalctl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Runs a tool on the host (mkfs.vfat, mcopy, qemu-img, sfdisk, ...) and returns its standard
/// output; a failure carries the command line and everything it printed.
pub fn host_tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(program).args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Calls `attempt` every `every` until it gives a value or `within` has passed; the error
/// names `what` and the last failure.
pub fn eventually<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(last) if std::time::Instant::now() >= deadline => {
                return Err(format!("{what}: not within {within:?}; last: {last}"));
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_boot_events::{Event, Stage};

    fn record(event: Event) -> Record {
        Record { t: 0.0, event }
    }

    #[test]
    fn order_is_a_subsequence_check() {
        let events = vec![
            record(Event::InitStart {
                stage: Stage::Initramfs,
                version: "1".into(),
            }),
            record(Event::MountsReady {
                stage: Stage::Initramfs,
            }),
            record(Event::LoopbackUp),
            record(Event::BootComplete),
        ];
        assert!(
            check_order(
                &events,
                &["init.start (initramfs)", "loopback.up", "boot.complete"]
            )
            .is_ok()
        );
        let err = check_order(&events, &["boot.complete", "loopback.up"]).unwrap_err();
        assert!(err.contains("\"loopback.up\""), "{err}");
        assert!(check_order(&events, &["init.start (root)"]).is_err());
    }
}
