//! Copies exactly what the readers look at from a live system into a fixture tree: sysfs
//! attributes with their symlinks (relative, as sysfs makes them), the procfs files, the first
//! bytes of every block device, the PCI names the devices need, and what the [`Platform`] says.
//! `collect` on the capture gives the same inventory as on the live system (a test checks it),
//! so a machine whose detection is wrong can be captured and turned into a test.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::platform::{Platform, Recorded};
use crate::{Roots, fs_probe, pci, read};

/// sysfs attributes read per kind of directory.
const DMI_ID: &[&str] = &[
    "bios_vendor",
    "bios_version",
    "bios_date",
    "bios_release",
    "sys_vendor",
    "product_name",
    "product_version",
    "product_serial",
    "product_uuid",
    "product_sku",
    "product_family",
    "board_vendor",
    "board_name",
    "board_version",
    "board_serial",
    "board_asset_tag",
    "chassis_vendor",
    "chassis_version",
    "chassis_serial",
    "chassis_asset_tag",
];
const BLOCK: &[&str] = &[
    "size",
    "queue/logical_block_size",
    "queue/physical_block_size",
    "queue/rotational",
    "removable",
    "ro",
    "serial",
    "wwid",
    "nsid",
];
const BLOCK_DEVICE: &[&str] = &[
    "model",
    "serial",
    "firmware_rev",
    "rev",
    "vendor",
    "wwid",
    "vpd_pg80",
];
const PARTITION: &[&str] = &["partition", "start", "size"];
const NVME: &[&str] = &["model", "serial", "firmware_rev", "transport", "address"];
const NET: &[&str] = &[
    "address",
    "addr_assign_type",
    "operstate",
    "carrier",
    "speed",
    "duplex",
    "mtu",
];
const NET_DEVICE: &[&str] = &["driver", "sriov_totalvfs", "numa_node"];
const PCI: &[&str] = &[
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "class",
    "revision",
    "numa_node",
    "driver",
];

/// What went wrong writing the capture (reading the live side is allowed to fail: the reader
/// would fail the same way).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct Error {
    path: PathBuf,
    source: std::io::Error,
}

struct Mirror<'a> {
    from: &'a Path,
    to: &'a Path,
}

impl Mirror<'_> {
    /// Copies `rel` (a file, directory or symlink under `from`), recreating every symlink on the
    /// way. Returns false when the source does not exist or cannot be read.
    fn copy(&self, rel: &Path) -> Result<bool, Error> {
        let mut real = PathBuf::new();
        let components: Vec<_> = rel.components().collect();
        for (i, component) in components.iter().enumerate() {
            real.push(component);
            real = normalize(&real);
            let src = self.from.join(&real);
            let dst = self.to.join(&real);
            let Ok(meta) = std::fs::symlink_metadata(&src) else {
                return Ok(false);
            };
            let last = i + 1 == components.len();
            if meta.file_type().is_symlink() {
                let Ok(target) = std::fs::read_link(&src) else {
                    return Ok(false);
                };
                if std::fs::symlink_metadata(&dst).is_err() {
                    self.mkdir(dst.parent().unwrap_or(self.to))?;
                    std::os::unix::fs::symlink(&target, &dst).map_err(|e| err(&dst, e))?;
                }
                if target.is_absolute() {
                    return Ok(true);
                }
                real = normalize(&real.parent().unwrap_or(Path::new("")).join(target));
                if last {
                    // Make the target exist, so the link resolves (a driver or device dir).
                    if self.from.join(&real).is_dir() {
                        self.mkdir(&self.to.join(&real))?;
                    }
                }
            } else if meta.is_dir() {
                self.mkdir(&dst)?;
            } else if last {
                let Ok(bytes) = std::fs::read(&src) else {
                    return Ok(false);
                };
                self.write(&dst, &bytes)?;
            }
        }
        Ok(true)
    }

    fn mkdir(&self, path: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(path).map_err(|e| err(path, e))
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        self.mkdir(path.parent().unwrap_or(self.to))?;
        std::fs::write(path, bytes).map_err(|e| err(path, e))
    }

    /// `copy` for each of `names` inside `dir`.
    fn attributes(&self, dir: &Path, names: &[&str]) -> Result<(), Error> {
        self.copy(dir)?;
        for name in names {
            self.copy(&dir.join(name))?;
        }
        Ok(())
    }
}

fn err(path: &Path, source: std::io::Error) -> Error {
    Error {
        path: path.to_path_buf(),
        source,
    }
}

/// Resolves `..` and `.` lexically (sysfs links never cross a mount or another symlink level
/// that would make this differ from the kernel's resolution for the paths captured here).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Captures `roots` (with `platform`) into `out`, laid out for [`Roots::under`].
pub fn capture(roots: &Roots, platform: &dyn Platform, out: &Path) -> Result<(), Error> {
    let out_roots = Roots::under(out);
    let sys = Mirror {
        from: &roots.sys,
        to: &out_roots.sys,
    };
    let rel = Path::new;

    sys.copy(rel("firmware/dmi/tables/smbios_entry_point"))?;
    sys.copy(rel("firmware/dmi/tables/DMI"))?;
    sys.attributes(rel("class/dmi/id"), DMI_ID)?;
    sys.copy(rel("firmware/efi"))?;
    for var in read::names(&roots.sys.join("firmware/efi/efivars")) {
        if var.starts_with("SecureBoot-") {
            sys.copy(&rel("firmware/efi/efivars").join(var))?;
        }
    }
    sys.copy(rel("hypervisor/type"))?;
    for tpm in read::names(&roots.sys.join("class/tpm")) {
        sys.attributes(&rel("class/tpm").join(tpm), &["tpm_version_major"])?;
    }

    // CPUs, NUMA nodes, memory blocks.
    let cpu = rel("devices/system/cpu");
    sys.copy(&cpu.join("online"))?;
    for name in read::names(&roots.sys.join(cpu)) {
        if name
            .strip_prefix("cpu")
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            sys.attributes(
                &cpu.join(&name).join("topology"),
                &["physical_package_id", "die_id", "core_id"],
            )?;
        }
    }
    sys.attributes(
        &cpu.join("cpu0/cpufreq"),
        &["base_frequency", "cpuinfo_max_freq"],
    )?;
    let memory = rel("devices/system/memory");
    sys.copy(&memory.join("block_size_bytes"))?;
    for block in read::names(&roots.sys.join(memory)) {
        if block.starts_with("memory") {
            sys.copy(&memory.join(block).join("online"))?;
        }
    }
    let node = rel("devices/system/node");
    for name in read::names(&roots.sys.join(node)) {
        if !name.starts_with("node") {
            continue;
        }
        let dir = node.join(&name);
        sys.attributes(&dir, &["cpulist", "meminfo"])?;
        for block in read::names(&roots.sys.join(&dir)) {
            if block
                .strip_prefix("memory")
                .is_some_and(|n| n.parse::<u32>().is_ok())
            {
                sys.copy(&dir.join(block).join("online"))?;
            }
        }
    }

    // Block devices, their partitions and first bytes.
    let dev = Mirror {
        from: &roots.dev,
        to: &out_roots.dev,
    };
    for name in read::names(&roots.sys.join("block")) {
        let dir = rel("block").join(&name);
        sys.attributes(&dir, BLOCK)?;
        sys.attributes(&dir.join("device"), BLOCK_DEVICE)?;
        capture_head(&dev, &name)?;
        for part in read::names(&roots.sys.join(&dir)) {
            if roots.sys.join(&dir).join(&part).join("partition").exists() {
                sys.attributes(&dir.join(&part), PARTITION)?;
                capture_head(&dev, &part)?;
            }
        }
    }
    for name in read::names(&roots.sys.join("class/nvme")) {
        sys.attributes(&rel("class/nvme").join(name), NVME)?;
    }

    // NICs and PCI devices.
    let mut nics = Vec::new();
    for name in read::names(&roots.sys.join("class/net")) {
        let dir = rel("class/net").join(&name);
        sys.attributes(&dir, NET)?;
        if roots.sys.join(&dir).join("device").exists() {
            sys.attributes(&dir.join("device"), NET_DEVICE)?;
            nics.push(name);
        }
    }
    sys.copy(rel("bus/pci/devices"))?;
    for address in read::names(&roots.sys.join("bus/pci/devices")) {
        sys.attributes(&rel("bus/pci/devices").join(address), PCI)?;
    }

    // procfs.
    let proc = Mirror {
        from: &roots.proc,
        to: &out_roots.proc,
    };
    proc.copy(rel("cpuinfo"))?;
    proc.copy(rel("meminfo"))?;

    // The PCI names this machine needs, as a small database of its own.
    let mut gaps = crate::Gaps::default();
    let devices = pci::read(&roots.sys, &roots.pci_ids, &mut gaps);
    if let Ok(file) = std::fs::File::open(&roots.pci_ids) {
        let names = pci::lookup(std::io::BufReader::new(file), &devices);
        let text = pci_ids_text(&names);
        sys.write(&out_roots.pci_ids, text.as_bytes())?;
    }

    let recorded = Recorded::record(platform, &nics);
    let json = serde_json::to_vec_pretty(&recorded).map_err(|e| err(out, e.into()))?;
    sys.write(&out.join(Recorded::FILE), &json)?;
    keep_empty_dirs(out)
}

/// git keeps no empty directories, and an empty `firmware/efi` still means UEFI: give each one
/// a `.keep` file (readers skip dot files).
fn keep_empty_dirs(dir: &Path) -> Result<(), Error> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let entry = entry.map_err(|e| err(dir, e))?;
        empty = false;
        if entry.file_type().map_err(|e| err(dir, e))?.is_dir() {
            keep_empty_dirs(&entry.path())?;
        }
    }
    if empty {
        std::fs::write(dir.join(".keep"), b"").map_err(|e| err(dir, e))?;
    }
    Ok(())
}

/// The first bytes of `/dev/<name>` as a regular file; an empty one when the drive has no
/// medium (which the reader treats the same as the live device).
fn capture_head(dev: &Mirror<'_>, name: &str) -> Result<(), Error> {
    let head = match std::fs::File::open(dev.from.join(name)) {
        Ok(file) => {
            let mut head = Vec::new();
            if file
                .take(fs_probe::PROBE_BYTES as u64)
                .read_to_end(&mut head)
                .is_err()
            {
                return Ok(());
            }
            head
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOMEDIUM) => Vec::new(),
        Err(_) => return Ok(()),
    };
    dev.write(&dev.to.join(name), &head)
}

/// Writes names back in `pci.ids` layout.
fn pci_ids_text(names: &pci::Names) -> String {
    let mut out = String::from("# PCI names captured by shoal-inventory (a subset of pci.ids)\n");
    let vendors: std::collections::BTreeSet<&String> = names
        .vendors
        .keys()
        .chain(names.devices.keys().map(|(v, _)| v))
        .collect();
    for vendor in vendors {
        out.push_str(&format!(
            "{vendor}  {}\n",
            names.vendors.get(vendor).map_or("Unknown", String::as_str)
        ));
        for ((v, device), name) in &names.devices {
            if v != vendor {
                continue;
            }
            out.push_str(&format!("\t{device}  {name}\n"));
            for ((v2, d2, sv, sd), name) in &names.subsystems {
                if v2 == vendor && d2 == device {
                    out.push_str(&format!("\t\t{sv} {sd}  {name}\n"));
                }
            }
        }
    }
    let classes: Vec<_> = names.classes.iter().filter(|(k, _)| k.len() == 2).collect();
    for (class, name) in classes {
        out.push_str(&format!("C {class}  {name}\n"));
        for (sub, name) in &names.classes {
            if sub.len() == 4 && sub.starts_with(class.as_str()) {
                out.push_str(&format!("\t{}  {name}\n", &sub[2..]));
                for (interface, name) in &names.classes {
                    if interface.len() == 6 && interface.starts_with(sub.as_str()) {
                        out.push_str(&format!("\t\t{}  {name}\n", &interface[4..]));
                    }
                }
            }
        }
    }
    out
}
