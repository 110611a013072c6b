//! A root filesystem that cannot be mounted ends in `boot.failed` and a reboot (QEMU exits,
//! because of `-no-reboot`), not in a hang or a kernel panic.

use shoal_qemu_tests::events::{Event, Stage};
use shoal_qemu_tests::testing::{boot_timeout, start, step_timeout, test_image};

fn failure_reason(event: &Event) -> Option<&str> {
    match event {
        Event::BootFailed { reason, .. } => Some(reason),
        _ => None,
    }
}

#[test]
fn corrupt_root_device_fails_boot_and_reboots() -> anyhow::Result<()> {
    let image = test_image()?;
    let scratch = tempfile::tempdir()?;
    let disk = scratch.path().join("garbage.img");
    // Deterministic garbage: no filesystem signature anywhere.
    let garbage: Vec<u8> = (0u32..8 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&disk, garbage)?;
    let vm = start(&image, "corrupt-root", |b| {
        b.virtio_disk(&disk).cmdline("shoal.root=/dev/vda")
    })?;
    let failed = vm.wait_for_event("boot.failed", boot_timeout())?;
    let reason = failure_reason(&failed.event).unwrap_or_default();
    assert!(
        reason.contains("/dev/vda"),
        "boot.failed does not name /dev/vda: {reason:?}"
    );
    // The disk was there: the initramfs coldplug loaded its driver before the mount failed.
    let coldplug =
        vm.wait_for_event_matching("coldplug.done (initramfs)", step_timeout(), |r| {
            matches!(
                r.event,
                Event::Coldplug {
                    stage: Stage::Initramfs,
                    ..
                }
            )
        })?;
    assert!(
        matches!(&coldplug.event, Event::Coldplug { loaded, .. } if loaded.iter().any(|m| m.module == "virtio_blk")),
        "virtio_blk was not loaded in the initramfs: {coldplug:?}"
    );
    vm.wait_exit(step_timeout())?;
    assert!(
        vm.events().iter().all(|e| e.name() != "boot.complete"),
        "boot completed on garbage"
    );
    Ok(())
}

#[test]
fn missing_root_image_fails_boot_and_reboots() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "missing-root", |b| {
        b.cmdline("shoal.root=/shoal/missing.erofs")
    })?;
    let failed = vm.wait_for_event("boot.failed", boot_timeout())?;
    let reason = failure_reason(&failed.event).unwrap_or_default();
    assert!(
        reason.contains("/shoal/missing.erofs"),
        "boot.failed does not name the missing image: {reason:?}"
    );
    vm.wait_exit(step_timeout())?;
    Ok(())
}
