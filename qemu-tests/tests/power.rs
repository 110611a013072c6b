//! Ordered shutdown: the ACPI power button powers off, Ctrl-Alt-Del reboots (QEMU runs with
//! `-no-reboot`, so a reboot ends the QEMU process too).

use shoal_qemu_tests::events::{Event, PowerAction};
use shoal_qemu_tests::testing::{boot_timeout, start, step_timeout, test_image};

fn shutdown_action(event: &Event) -> Option<PowerAction> {
    match event {
        Event::ShutdownBegin { action, .. } => Some(*action),
        _ => None,
    }
}

#[test]
fn power_button_powers_off_cleanly() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "powerdown", |b| b)?;
    vm.wait_for_event("boot.complete", boot_timeout())?;
    vm.powerdown()?;
    let begin = vm.wait_for_event("shutdown.begin", step_timeout())?;
    assert_eq!(
        shutdown_action(&begin.event),
        Some(PowerAction::Poweroff),
        "{begin:?}"
    );
    let last = vm.wait_for_event("shutdown.final", step_timeout())?;
    assert!(
        matches!(
            last.event,
            Event::ShutdownFinal {
                action: PowerAction::Poweroff,
                ..
            }
        ),
        "{last:?}"
    );
    let status = vm.wait_exit(step_timeout())?;
    assert!(status.success(), "QEMU exited with {status}");
    Ok(())
}

#[test]
fn ctrl_alt_delete_reboots() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "cad", |b| b)?;
    vm.wait_for_event("boot.complete", boot_timeout())?;
    vm.ctrl_alt_delete()?;
    let begin = vm.wait_for_event("shutdown.begin", step_timeout())?;
    assert_eq!(
        shutdown_action(&begin.event),
        Some(PowerAction::Reboot),
        "{begin:?}"
    );
    vm.wait_for_event("shutdown.final", step_timeout())?;
    let status = vm.wait_exit(step_timeout())?;
    assert!(status.success(), "QEMU exited with {status}");
    Ok(())
}
