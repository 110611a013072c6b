//! Captures and fixtures: a capture of the machine running the tests replays to the same
//! inventory, and committed captures of real machines keep giving what they gave when captured.

use std::path::Path;

use serde_json::Value;
use shoal_inventory::{Inventory, Live, Recorded, Roots, capture, collect};

/// The inventory as JSON with what legitimately differs between two runs removed: the time it
/// took, and the root prefix in gap sources. Gap reasons for devices are dropped too: a device
/// the capture could not open is missing from it, which reads as "no such file".
fn comparable(inventory: &Inventory, root: &str) -> Value {
    let mut v = serde_json::to_value(inventory).expect("an inventory serialises");
    v["collect_ms"] = Value::Null;
    for gap in v["gaps"].as_array_mut().expect("gaps is a list") {
        let source = gap["source"].as_str().expect("a source").to_string();
        let source = source.strip_prefix(root).unwrap_or(&source).to_string();
        if source.starts_with("/dev/") {
            gap["reason"] = Value::Null;
        }
        gap["source"] = Value::String(source);
    }
    v
}

#[test]
fn a_capture_of_this_machine_replays_to_the_same_inventory() {
    let live = collect(&Roots::host(), &Live);
    let dir = tempfile::tempdir().unwrap();
    capture::capture(&Roots::host(), &Live, dir.path()).unwrap();
    let recorded = Recorded::load(dir.path()).unwrap();
    let replayed = collect(&Roots::under(dir.path()), &recorded);
    let root = dir.path().to_str().unwrap();
    assert_eq!(comparable(&replayed, root), comparable(&live, ""));
    // Sanity: the machine running this has CPUs, memory and a NIC or disk.
    assert!(live.cpu.threads > 0 && live.memory.total_bytes > 0);
}

/// Collects a committed fixture and compares it with its `expected.json`. Set
/// `SHOAL_UPDATE_FIXTURES=1` to rewrite the expectation after an intended change (and review
/// the diff).
fn check_fixture(name: &str) -> Inventory {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let root = dir.join("root");
    let recorded = Recorded::load(&root).expect("the fixture's platform.json");
    let inventory = collect(&Roots::under(&root), &recorded);
    let got = comparable(&inventory, &root.display().to_string());
    let expected_path = dir.join("expected.json");
    if std::env::var_os("SHOAL_UPDATE_FIXTURES").is_some() {
        std::fs::write(
            &expected_path,
            serde_json::to_string_pretty(&got).expect("JSON") + "\n",
        )
        .expect("write expected.json");
    }
    let expected: Value = serde_json::from_slice(
        &std::fs::read(&expected_path).expect("the fixture's expected.json"),
    )
    .expect("expected.json is JSON");
    assert_eq!(
        got, expected,
        "{name}: the inventory differs from expected.json"
    );
    inventory
}

#[test]
fn kvm_guest_on_epyc() {
    let inv = check_fixture("kvm-epyc");
    // What the fixture is, said plainly (expected.json has the rest).
    assert_eq!(inv.system.hypervisor.as_deref(), Some("kvm"));
    assert_eq!(inv.cpu.vendor.as_deref(), Some("AuthenticAMD"));
    assert_eq!((inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads), (1, 2, 2));
    assert_eq!(inv.storage.disks[0].transport.as_str(), "virtio");
    assert_eq!(inv.network[0].driver.as_deref(), Some("virtio_net"));
    assert_eq!(inv.labels["machine.hypervisor"], "kvm");
    assert!(inv.gaps.iter().any(|g| g.source.ends_with("dmi/tables")));
}

/// Captured in the VM of qemu-tests/tests/inventory.rs (`SHOAL_SAVE_FIXTURE=1`): QEMU's own
/// SMBIOS table, NUMA, NVMe, AHCI and virtio disks, e1000e and virtio NICs.
#[test]
fn qemu_vm_with_chosen_hardware() {
    let inv = check_fixture("qemu-vm");
    let s = &inv.system;
    let id = &s.identity;
    assert_eq!(s.smbios_version.as_deref(), Some("2.8"));
    assert_eq!(
        (
            id.vendor.as_deref(),
            id.product.as_deref(),
            id.serial.as_deref()
        ),
        (Some("Shoal Labs"), Some("Reef 9000"), Some("SYS-SN-1"))
    );
    assert_eq!(
        id.uuid.as_deref(),
        Some("9a1c2f50-6b7e-4d2a-8c11-0123456789ab")
    );
    assert_eq!(
        s.chassis.as_ref().and_then(|c| c.sku.as_deref()),
        Some("CASE-1")
    );
    assert_eq!(s.hypervisor.as_deref(), Some("qemu-tcg"));
    let dimm = &inv.memory.dimms[0];
    assert_eq!(
        (dimm.size_bytes, dimm.speed_mts),
        (Some(512 << 20), Some(3200))
    );
    assert_eq!(dimm.kind.as_deref(), Some("RAM"));
    assert_eq!((inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads), (2, 2, 4));
    assert_eq!(inv.cpu.numa.len(), 2);
    let transports: Vec<&str> = inv
        .storage
        .disks
        .iter()
        .map(|d| d.transport.as_str())
        .collect();
    assert_eq!(transports, ["virtual", "nvme", "sata", "virtio"]);
    assert!(inv.gaps.is_empty(), "{:?}", inv.gaps);
}
