//! Devices added after boot get their drivers: PID 1 listens for kernel uevents.

use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::testing::{boot_timeout, start, step_timeout, test_image};
use shoal_qemu_tests::{Network, NicModel};

#[test]
fn hotplugged_nic_gets_its_driver() -> anyhow::Result<()> {
    let image = test_image()?;
    let network = Network::new()?;
    let vm = start(&image, "hotplug", |b| b.nic(&network, NicModel::VirtioNet))?;
    vm.wait_for_event("boot.complete", boot_timeout())?;
    vm.hotplug_nic(&network, NicModel::E1000e)?;
    let hotplug = vm.wait_for_event_matching("a hotplug event loading e1000e", step_timeout(), |r| {
        matches!(&r.event, Event::Hotplug { loaded, .. } if loaded.iter().any(|m| m == "e1000e"))
    })?;
    if let Event::Hotplug { device, .. } = &hotplug.event {
        assert!(!device.is_empty(), "{hotplug:?}");
    }
    Ok(())
}
