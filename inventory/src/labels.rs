//! Capability labels derived from the inventory, for schedulers and operators to select on.
//! Values are strings; a capability the node has is `true`, one it lacks is absent.
//!
//! | label | value |
//! | --- | --- |
//! | `cpu.vendor` | `intel`, `amd`, or the CPUID vendor string in lowercase |
//! | `cpu.sockets`, `cpu.cores`, `cpu.threads` | counts |
//! | `cpu.virtualization` | `true`: VT-x or AMD-V usable (nested guests possible) |
//! | `cpu.aes`, `cpu.avx2`, `cpu.avx512`, `cpu.amx`, `cpu.sha` | `true` when present |
//! | `memory.gib` | installed memory in whole GiB (rounded down) |
//! | `numa.nodes` | count (only with more than one) |
//! | `disk.nvme`, `disk.ssd`, `disk.hdd` | `true`: at least one such disk (virtual devices do not count) |
//! | `disk.count` | physical disks |
//! | `net.1g`, `net.10g`, `net.25g`, `net.40g`, `net.50g`, `net.100g`, `net.200g`, `net.400g` | `true`: a NIC with at least that link speed up now |
//! | `net.sriov` | `true`: a NIC with SR-IOV virtual functions |
//! | `gpu.count` | GPUs |
//! | `gpu.nvidia`, `gpu.amd`, `gpu.intel`, ... | `true`, per GPU vendor |
//! | `accelerator.count` | non-GPU accelerators |
//! | `machine.virtual` | `true` under a hypervisor |
//! | `machine.hypervisor` | `kvm`, `qemu-tcg`, `hyper-v`, ... |
//! | `firmware.uefi`, `firmware.secureboot`, `tpm` | `true` when so |

use std::collections::BTreeMap;

use crate::Inventory;
use crate::pci::AcceleratorKind;
use crate::storage::Transport;

const SPEEDS: [(u32, &str); 8] = [
    (1_000, "net.1g"),
    (10_000, "net.10g"),
    (25_000, "net.25g"),
    (40_000, "net.40g"),
    (50_000, "net.50g"),
    (100_000, "net.100g"),
    (200_000, "net.200g"),
    (400_000, "net.400g"),
];

pub fn derive(inv: &Inventory) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        labels.insert(key.to_string(), value);
    };
    let yes = || "true".to_string();

    let cpu = &inv.cpu;
    if let Some(vendor) = &cpu.vendor {
        let short = match vendor.as_str() {
            "GenuineIntel" => "intel".to_string(),
            "AuthenticAMD" | "HygonGenuine" => "amd".to_string(),
            other => other.to_ascii_lowercase(),
        };
        set("cpu.vendor", short);
    }
    if cpu.threads > 0 {
        set("cpu.sockets", cpu.sockets.to_string());
        set("cpu.cores", cpu.cores.to_string());
        set("cpu.threads", cpu.threads.to_string());
    }
    let has = |flag: &str| cpu.flags.iter().any(|f| f == flag);
    if has("vmx") || has("svm") {
        set("cpu.virtualization", yes());
    }
    for (flag, label) in [
        ("aes", "cpu.aes"),
        ("avx2", "cpu.avx2"),
        ("avx512f", "cpu.avx512"),
        ("amx_tile", "cpu.amx"),
        ("sha_ni", "cpu.sha"),
    ] {
        if has(flag) {
            set(label, yes());
        }
    }
    if inv.memory.installed_bytes > 0 {
        set("memory.gib", (inv.memory.installed_bytes >> 30).to_string());
    }
    if cpu.numa.len() > 1 {
        set("numa.nodes", cpu.numa.len().to_string());
    }

    let physical: Vec<_> = inv
        .storage
        .disks
        .iter()
        .filter(|d| d.transport != Transport::Virtual)
        .collect();
    if !physical.is_empty() {
        set("disk.count", physical.len().to_string());
    }
    if physical.iter().any(|d| d.transport == Transport::Nvme) {
        set("disk.nvme", yes());
    }
    if physical.iter().any(|d| !d.rotational) {
        set("disk.ssd", yes());
    }
    if physical.iter().any(|d| d.rotational) {
        set("disk.hdd", yes());
    }

    let fastest = inv
        .network
        .iter()
        .filter(|n| n.carrier == Some(true))
        .filter_map(|n| n.speed_mbps)
        .max()
        .unwrap_or(0);
    for (speed, label) in SPEEDS {
        if fastest >= speed {
            set(label, yes());
        }
    }
    if inv.network.iter().any(|n| n.sriov_total_vfs.is_some()) {
        set("net.sriov", yes());
    }

    let gpus: Vec<_> = inv
        .accelerators
        .iter()
        .filter(|a| a.kind == AcceleratorKind::Gpu)
        .collect();
    if !gpus.is_empty() {
        set("gpu.count", gpus.len().to_string());
        for gpu in &gpus {
            set(&format!("gpu.{}", gpu.vendor), yes());
        }
    }
    let others = inv.accelerators.len() - gpus.len();
    if others > 0 {
        set("accelerator.count", others.to_string());
    }

    let system = &inv.system;
    if system.is_virtual {
        set("machine.virtual", yes());
    }
    if let Some(h) = &system.hypervisor {
        set("machine.hypervisor", h.clone());
    }
    if system.firmware.boot_mode == crate::system::BootMode::Uefi {
        set("firmware.uefi", yes());
    }
    if system.firmware.secure_boot == Some(true) {
        set("firmware.secureboot", yes());
    }
    if system.tpm.is_some() {
        set("tpm", yes());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Nic;
    use crate::pci::Accelerator;
    use crate::storage::Disk;

    #[test]
    fn derives_labels() {
        let mut inv = Inventory::default();
        inv.cpu.vendor = Some("AuthenticAMD".into());
        inv.cpu.sockets = 2;
        inv.cpu.cores = 64;
        inv.cpu.threads = 128;
        inv.cpu.flags = vec!["svm".into(), "aes".into(), "avx2".into()];
        inv.cpu.numa = vec![Default::default(), Default::default()];
        inv.memory.installed_bytes = (512 << 30) + 5;
        inv.storage.disks = vec![
            Disk {
                transport: Transport::Nvme,
                ..Disk::default()
            },
            Disk {
                transport: Transport::Sata,
                rotational: true,
                ..Disk::default()
            },
            Disk {
                transport: Transport::Virtual,
                ..Disk::default()
            },
        ];
        inv.network = vec![
            Nic {
                carrier: Some(true),
                speed_mbps: Some(25_000),
                ..Nic::default()
            },
            Nic {
                carrier: Some(false),
                speed_mbps: Some(100_000),
                sriov_total_vfs: Some(64),
                ..Nic::default()
            },
        ];
        let gpu = |vendor: &str| Accelerator {
            kind: AcceleratorKind::Gpu,
            address: String::new(),
            vendor: vendor.into(),
            name: None,
            driver: None,
        };
        inv.accelerators = vec![
            gpu("nvidia"),
            gpu("nvidia"),
            Accelerator {
                kind: AcceleratorKind::Accelerator,
                ..gpu("habana")
            },
        ];
        inv.system.tpm = Some(Default::default());
        let labels = derive(&inv);
        let expected = [
            ("accelerator.count", "1"),
            ("cpu.aes", "true"),
            ("cpu.avx2", "true"),
            ("cpu.cores", "64"),
            ("cpu.sockets", "2"),
            ("cpu.threads", "128"),
            ("cpu.vendor", "amd"),
            ("cpu.virtualization", "true"),
            ("disk.count", "2"),
            ("disk.hdd", "true"),
            ("disk.nvme", "true"),
            ("disk.ssd", "true"),
            ("gpu.count", "2"),
            ("gpu.nvidia", "true"),
            ("memory.gib", "512"),
            ("net.10g", "true"),
            ("net.1g", "true"),
            ("net.25g", "true"),
            ("net.sriov", "true"),
            ("numa.nodes", "2"),
            ("tpm", "true"),
        ];
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(labels, expected);
        assert!(derive(&Inventory::default()).is_empty());
    }
}
