//! The watchdog PID 1 arms: fed while PID 1 runs, it resets a machine whose PID 1 stops (here
//! on purpose, through the test images' `shoaltest.watchdog_stall=`). QEMU runs with
//! `-no-reboot`, so the reset ends the QEMU process.

use std::time::{Duration, Instant};

use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::testing::{boot_timeout, start, test_image};

fn armed(event: &Event) -> (String, u32) {
    match event {
        Event::WatchdogArmed {
            identity,
            timeout_s,
            ..
        } => (identity.clone(), *timeout_s),
        other => panic!("not watchdog.armed: {other:?}"),
    }
}

#[test]
fn a_stalled_pid1_is_reset_by_the_hardware_watchdog() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "watchdog-stall", |b| {
        b.args(["-device", "i6300esb"])
            .cmdline("shoal.watchdog=5 shoaltest.watchdog_stall=2")
    })?;
    vm.expect_failures();
    let event = vm.wait_for_event("watchdog.armed", boot_timeout())?;
    let (identity, timeout) = armed(&event.event);
    anyhow::ensure!(
        identity.contains("i6300ESB") && timeout == 5,
        "armed {identity:?} with {timeout} s"
    );
    let armed_at = Instant::now();
    vm.wait_exit(Duration::from_secs(60))?;
    let after = armed_at.elapsed();
    println!(
        "a PID 1 that stopped feeding the watchdog 2 s after arming it was reset {:.1} s after arming (timeout 5 s)",
        after.as_secs_f64()
    );
    anyhow::ensure!(
        !vm.events()
            .iter()
            .any(|e| e.record.event.name() == "shutdown.begin"),
        "the machine shut down in order instead of being reset"
    );
    Ok(())
}

#[test]
fn a_fed_software_watchdog_keeps_the_machine_running() -> anyhow::Result<()> {
    let image = test_image()?;
    // No watchdog device: PID 1 falls back to the kernel's softdog.
    let vm = start(&image, "watchdog-fed", |b| b.cmdline("shoal.watchdog=5"))?;
    let event = vm.wait_for_event("watchdog.armed", boot_timeout())?;
    let (identity, timeout) = armed(&event.event);
    anyhow::ensure!(
        identity == "Software Watchdog" && timeout == 5,
        "armed {identity:?} with {timeout} s"
    );
    // Three timeouts later the machine still runs: PID 1 feeds it.
    std::thread::sleep(Duration::from_secs(15));
    anyhow::ensure!(vm.is_running(), "the machine was reset although PID 1 runs");
    Ok(())
}
