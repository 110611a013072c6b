//! Boot to `boot.complete`: event order, drivers for the devices present, the command line.

use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::stats::event_label;
use shoal_qemu_tests::testing::{boot_timeout, check_order, start, test_image};
use shoal_qemu_tests::{Network, NicModel};

/// The boot path of docs/architecture.md, stage by stage. The initramfs stage runs coldplug
/// only for a root on a block device (`shoal.root=/dev/...`); with the default root image inside
/// the initramfs it loads just loop and the filesystem, so `coldplug.done (initramfs)` is
/// optional here (checked separately).
const BOOT_ORDER: &[&str] = &[
    "init.start (initramfs)",
    "mounts.ready (initramfs)",
    "cmdline",
    "root.mounted",
    "switch_root",
    "init.start (root)",
    "mounts.ready (root)",
    "coldplug.done (root)",
    "machine_id",
    "hostname",
    "loopback.up",
    "boot.complete",
];

#[test]
fn boots_to_the_root_filesystem_in_order() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "boot", |b| b)?;
    vm.wait_for_event("boot.complete", boot_timeout())?;
    let records: Vec<_> = vm.events().into_iter().map(|e| e.record).collect();
    if let Err(message) = check_order(&records, BOOT_ORDER) {
        vm.mark_failed();
        panic!("{message}");
    }
    let initramfs_coldplug = records
        .iter()
        .any(|r| event_label(&r.event) == "coldplug.done (initramfs)");
    if initramfs_coldplug
        && let Err(message) = check_order(
            &records,
            &["cmdline", "coldplug.done (initramfs)", "root.mounted"],
        )
    {
        vm.mark_failed();
        panic!("{message}");
    }
    let root = vm.wait_for_event("root.mounted", boot_timeout())?;
    match root.event {
        Event::RootMounted { source, fstype, .. } => {
            assert_eq!(source, "/shoal/rootfs.erofs");
            assert_eq!(fstype, "erofs");
        }
        other => panic!("unexpected {other:?}"),
    }
    let switch = vm.wait_for_event("switch_root", boot_timeout())?;
    assert!(
        matches!(switch.event, Event::SwitchRoot { ref init } if init == "/sbin/init"),
        "{switch:?}"
    );
    Ok(())
}

#[test]
fn coldplug_loads_virtio_disk_and_nic_drivers() -> anyhow::Result<()> {
    let image = test_image()?;
    let network = Network::new()?;
    let scratch = tempfile::tempdir()?;
    let disk = scratch.path().join("disk.img");
    std::fs::File::create(&disk)?.set_len(16 << 20)?;
    let vm = start(&image, "coldplug", |b| {
        b.virtio_disk(&disk).nic(&network, NicModel::VirtioNet)
    })?;
    vm.wait_for_event("boot.complete", boot_timeout())?;
    let loaded: Vec<(String, String)> = vm
        .events()
        .into_iter()
        .filter_map(|e| match e.record.event {
            Event::Coldplug { loaded, .. } => Some(loaded),
            _ => None,
        })
        .flatten()
        .map(|m| (m.module, m.device))
        .collect();
    for module in ["virtio_blk", "virtio_net"] {
        let found = loaded.iter().find(|(m, _)| m == module);
        assert!(
            found.is_some(),
            "{module} not among the modules coldplug loaded: {loaded:?}"
        );
        let (_, device) = found.unwrap();
        assert!(
            !device.is_empty(),
            "{module} was loaded without a device path: {loaded:?}"
        );
    }
    Ok(())
}

#[test]
fn unknown_command_line_keys_are_reported_and_boot_goes_on() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "bogus", |b| b.cmdline("shoal.bogus=1"))?;
    let cmdline = vm.wait_for_event("cmdline", boot_timeout())?;
    match cmdline.event {
        Event::Cmdline { unknown_keys, .. } => {
            assert!(
                unknown_keys.iter().any(|k| k == "shoal.bogus"),
                "unknown_keys: {unknown_keys:?}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    vm.wait_for_event("boot.complete", boot_timeout())?;
    Ok(())
}

#[test]
fn hostname_comes_from_the_command_line() -> anyhow::Result<()> {
    let image = test_image()?;
    let vm = start(&image, "hostname", |b| b.cmdline("shoal.hostname=node-x"))?;
    let hostname = vm.wait_for_event("hostname", boot_timeout())?;
    match hostname.event {
        Event::Hostname { hostname, .. } => assert_eq!(hostname, "node-x"),
        other => panic!("unexpected {other:?}"),
    }
    vm.wait_for_event("boot.complete", boot_timeout())?;
    Ok(())
}
