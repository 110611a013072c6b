//! A node's hardware inventory: what the machine is (system, firmware, hypervisor, TPM), what
//! it computes with (CPUs, NUMA nodes, memory, DIMMs), stores on (every block device, NVMe
//! controllers, partitions, filesystems), talks through (NICs) and what else sits on its PCI
//! bus (accelerators included), plus capability labels derived from all of it.
//!
//! Every reader takes its filesystem roots as parameters ([`Roots`]): the logic runs the same on
//! `/` and on a fixture tree captured from another machine ([`capture`]). What cannot be read
//! from sysfs (the CPUID hypervisor leaf, ethtool's permanent MAC and firmware version) comes
//! through a [`Platform`], live or recorded. A source that is missing or unreadable leaves a
//! [`Gap`] saying so; collection never fails as a whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub mod capture;
pub mod cli;
pub mod cpu;
pub mod fs_probe;
pub mod labels;
pub mod memory;
pub mod network;
pub mod pci;
pub mod platform;
mod read;
pub mod smbios;
pub mod storage;
pub mod system;

pub use platform::{LinkDetails, Live, Platform, Recorded};
pub use read::{format_cpu_list, parse_cpu_list};

/// The version of the [`Inventory`] layout; bumped when a field changes meaning.
pub const SCHEMA: u32 = 1;

/// Where the running node keeps its inventory: written at boot and after hotplug (by
/// `shoal-inventory`, which PID 1 starts), read by clusterd to publish it.
pub const RUN_PATH: &str = "/run/shoal/inventory.json";

/// The filesystem roots the readers look under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// `/sys`.
    pub sys: PathBuf,
    /// `/proc`.
    pub proc: PathBuf,
    /// `/dev`: block devices are opened here to find partition tables and filesystems.
    pub dev: PathBuf,
    /// The PCI ID database (`pci.ids`), for vendor, device and class names.
    pub pci_ids: PathBuf,
}

impl Roots {
    /// The running system's.
    pub fn host() -> Roots {
        Roots::under(Path::new("/"))
    }

    /// The roots of a tree mounted or captured at `root` (`root/sys`, `root/proc`, ...).
    pub fn under(root: &Path) -> Roots {
        Roots {
            sys: root.join("sys"),
            proc: root.join("proc"),
            dev: root.join("dev"),
            pci_ids: root.join("usr/share/misc/pci.ids"),
        }
    }
}

/// A source that could not be read, and why: the inventory is partial there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// What was being read (`smbios`, `/sys/class/net/eth0/device`, ...).
    pub source: String,
    pub reason: String,
}

/// Collects gaps while readers run.
#[derive(Debug, Default)]
pub struct Gaps(Vec<Gap>);

impl Gaps {
    pub fn add(&mut self, source: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Gap {
            source: source.into(),
            reason: reason.into(),
        });
    }

    pub fn into_vec(self) -> Vec<Gap> {
        self.0
    }
}

/// The whole inventory of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inventory {
    pub schema: u32,
    pub system: system::System,
    pub cpu: cpu::Cpu,
    pub memory: memory::Memory,
    pub storage: storage::Storage,
    pub network: Vec<network::Nic>,
    pub pci: Vec<pci::PciDevice>,
    /// GPUs and other accelerators (also listed in `pci`).
    pub accelerators: Vec<pci::Accelerator>,
    /// Capability labels derived from the rest (`cpu.cores=16`, `disk.nvme=true`, ...); see
    /// [`labels`] for the list.
    pub labels: BTreeMap<String, String>,
    /// Sources that could not be read.
    pub gaps: Vec<Gap>,
    /// How long collection took, in milliseconds.
    pub collect_ms: f64,
}

/// Collects the inventory under `roots`, with `platform` for what sysfs does not say.
pub fn collect(roots: &Roots, platform: &dyn Platform) -> Inventory {
    let started = Instant::now();
    let mut gaps = Gaps::default();
    let smbios = system::read_smbios(&roots.sys, &mut gaps);
    let system = system::read(&roots.sys, &roots.proc, &smbios, platform, &mut gaps);
    let cpu = cpu::read(&roots.sys, &roots.proc, &smbios, &mut gaps);
    let memory = memory::read(&roots.sys, &roots.proc, &smbios, &mut gaps);
    let storage = storage::read(&roots.sys, &roots.dev, &mut gaps);
    let network = network::read(&roots.sys, platform, &mut gaps);
    let pci = pci::read(&roots.sys, &roots.pci_ids, &mut gaps);
    let accelerators = pci::accelerators(&pci);
    let mut inventory = Inventory {
        schema: SCHEMA,
        system,
        cpu,
        memory,
        storage,
        network,
        pci,
        accelerators,
        labels: BTreeMap::new(),
        gaps: gaps.into_vec(),
        collect_ms: 0.0,
    };
    inventory.labels = labels::derive(&inventory);
    inventory.collect_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    inventory
}

/// A one-line summary for logs, the boot event and node listings:
/// `4 threads (2 sockets, 2 cores), 512 MiB, 3 disks, 2 NICs, 0 accelerators` (disks the
/// kernel makes, such as the loop device of the root image, are not counted).
pub fn summary(inventory: &Inventory) -> String {
    let cpu = &inventory.cpu;
    let disks = inventory
        .storage
        .disks
        .iter()
        .filter(|d| d.transport != storage::Transport::Virtual)
        .count();
    format!(
        "{} threads ({} sockets, {} cores), {}, {} disks, {} NICs, {} accelerators",
        cpu.threads,
        cpu.sockets,
        cpu.cores,
        human_bytes(inventory.memory.installed_bytes),
        disks,
        inventory.network.len(),
        inventory.accelerators.len()
    )
}

/// `1.5 GiB`, `512 MiB`, `800 B`: binary units, one decimal above MiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 || unit < 1 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(2048), "2 KiB");
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(20 << 30), "20 GiB");
    }
}
