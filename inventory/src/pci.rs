//! PCI devices (`/sys/bus/pci/devices`) with names from the PCI ID database, and the ones that
//! are GPUs or other accelerators.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Gaps, read};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PciDevice {
    /// `0000:00:04.0`.
    pub address: String,
    /// Four lowercase hex digits each.
    pub vendor_id: String,
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem_vendor_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem_device_id: Option<String>,
    /// Six hex digits: class, subclass, programming interface.
    pub class_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem: Option<String>,
    /// The most precise class name the database has (`Ethernet controller`, `NVM Express`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceleratorKind {
    Gpu,
    /// Processing accelerators (class 12), co-processors (0b40).
    Accelerator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accelerator {
    pub kind: AcceleratorKind,
    pub address: String,
    /// `nvidia`, `amd`, `intel`, or the vendor id.
    pub vendor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

pub fn read(sys: &Path, pci_ids: &Path, gaps: &mut Gaps) -> Vec<PciDevice> {
    let dir = sys.join("bus/pci/devices");
    if !dir.is_dir() {
        gaps.add(dir.display().to_string(), "missing; no PCI devices listed");
        return Vec::new();
    }
    let hex4 = |v: u32| format!("{:04x}", v & 0xFFFF);
    let mut devices: Vec<PciDevice> = read::names(&dir)
        .into_iter()
        .filter_map(|address| {
            let d = dir.join(&address);
            Some(PciDevice {
                vendor_id: hex4(read::hex(&d.join("vendor"))?),
                device_id: hex4(read::hex(&d.join("device"))?),
                subsystem_vendor_id: read::hex(&d.join("subsystem_vendor")).map(hex4),
                subsystem_device_id: read::hex(&d.join("subsystem_device")).map(hex4),
                class_id: format!("{:06x}", read::hex(&d.join("class"))? & 0xFF_FFFF),
                revision: read::hex(&d.join("revision")).map(|r| format!("{:02x}", r & 0xFF)),
                driver: read::link_name(&d.join("driver")),
                numa_node: read::signed(&d.join("numa_node"))
                    .filter(|&n| n >= 0)
                    .map(|n| n as u32),
                address,
                ..PciDevice::default()
            })
        })
        .collect();
    if devices.is_empty() {
        return devices;
    }
    match std::fs::File::open(pci_ids) {
        Ok(file) => {
            let names = lookup(std::io::BufReader::new(file), &devices);
            for d in &mut devices {
                d.vendor = names.vendors.get(&d.vendor_id).cloned();
                d.device = names
                    .devices
                    .get(&(d.vendor_id.clone(), d.device_id.clone()))
                    .cloned();
                if let (Some(sv), Some(sd)) = (&d.subsystem_vendor_id, &d.subsystem_device_id) {
                    d.subsystem = names
                        .subsystems
                        .get(&(
                            d.vendor_id.clone(),
                            d.device_id.clone(),
                            sv.clone(),
                            sd.clone(),
                        ))
                        .cloned();
                }
                d.class = (0..3)
                    .map(|cut| d.class_id[..6 - cut * 2].to_string())
                    .find_map(|c| names.classes.get(&c).cloned());
            }
        }
        Err(e) => gaps.add(
            pci_ids.display().to_string(),
            format!("{e}; PCI devices listed without names"),
        ),
    }
    devices
}

/// Names found for a set of devices.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub vendors: BTreeMap<String, String>,
    pub devices: BTreeMap<(String, String), String>,
    pub subsystems: BTreeMap<(String, String, String, String), String>,
    /// Keyed by 2, 4 or 6 hex digits (class, +subclass, +interface).
    pub classes: BTreeMap<String, String>,
}

/// Reads `pci.ids` once, keeping only the names `devices` need (the file is 1.3 MB; the names a
/// machine needs are a few dozen). Malformed lines are skipped.
pub fn lookup(reader: impl BufRead, devices: &[PciDevice]) -> Names {
    let vendors: BTreeSet<&str> = devices.iter().map(|d| d.vendor_id.as_str()).collect();
    let wanted: BTreeSet<(&str, &str)> = devices
        .iter()
        .map(|d| (d.vendor_id.as_str(), d.device_id.as_str()))
        .collect();
    let classes: BTreeSet<&str> = devices
        .iter()
        .flat_map(|d| [&d.class_id[..2], &d.class_id[..4], &d.class_id[..6]])
        .collect();
    let mut names = Names::default();
    // Where we are: the vendor and device of the lines above, or the class and subclass.
    let (mut vendor, mut device) = (String::new(), String::new());
    let (mut class, mut subclass) = (String::new(), String::new());
    let (mut in_classes, mut vendor_wanted, mut device_wanted) = (false, false, false);
    let mut reader = reader;
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let depth = buf.iter().take_while(|&&b| b == b'\t').count();
        // Most of the file lists devices of vendors this machine does not have: skip those
        // lines before looking at them (this keeps a scan at a few milliseconds).
        if !in_classes && ((depth == 1 && !vendor_wanted) || (depth >= 2 && !device_wanted)) {
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let body = &line[depth..];
        if depth == 0 {
            device.clear();
            subclass.clear();
            device_wanted = false;
            if let Some(rest) = body.strip_prefix("C ") {
                in_classes = true;
                let Some((id, name)) = split_id(rest) else {
                    class.clear();
                    continue;
                };
                class = id.to_ascii_lowercase();
                if classes.contains(class.as_str()) {
                    names.classes.insert(class.clone(), name.to_string());
                }
                continue;
            }
            in_classes = false;
            vendor = match split_id(body) {
                Some((id, name)) if id.len() == 4 => {
                    let id = id.to_ascii_lowercase();
                    if vendors.contains(id.as_str()) {
                        names.vendors.insert(id.clone(), name.to_string());
                    }
                    id
                }
                _ => String::new(),
            };
            vendor_wanted = vendors.contains(vendor.as_str());
            continue;
        }
        let Some((id, name)) = split_id(body) else {
            continue;
        };
        let id = id.to_ascii_lowercase();
        match (in_classes, depth) {
            (false, 1) => {
                device = id;
                device_wanted = wanted.contains(&(vendor.as_str(), device.as_str()));
                if device_wanted {
                    names
                        .devices
                        .insert((vendor.clone(), device.clone()), name.to_string());
                }
            }
            (false, 2) => {
                // `ssss dddd  name`: subsystem vendor and device.
                if let Some((sv, sd)) = id.split_once(' ') {
                    names.subsystems.insert(
                        (
                            vendor.clone(),
                            device.clone(),
                            sv.to_string(),
                            sd.to_string(),
                        ),
                        name.to_string(),
                    );
                }
            }
            (true, 1) if !class.is_empty() => {
                subclass = format!("{class}{id}");
                if classes.contains(subclass.as_str()) {
                    names.classes.insert(subclass.clone(), name.to_string());
                }
            }
            (true, 2) if !subclass.is_empty() => {
                let interface = format!("{subclass}{id}");
                if classes.contains(interface.as_str()) {
                    names.classes.insert(interface, name.to_string());
                }
            }
            _ => {}
        }
    }
    names
}

/// `8086  Intel Corporation` -> ("8086", "Intel Corporation"); ids are hex, separated from the
/// name by two spaces (a subsystem id is two hex words with one space between them).
fn split_id(body: &str) -> Option<(&str, &str)> {
    let (id, name) = body.split_once("  ")?;
    let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b' ');
    id_ok.then(|| (id.trim(), name.trim()))
}

/// GPUs (display controllers: class 03) and accelerators (class 12, and co-processors 0b40).
pub fn accelerators(devices: &[PciDevice]) -> Vec<Accelerator> {
    devices
        .iter()
        .filter_map(|d| {
            let kind = if d.class_id.starts_with("03") {
                AcceleratorKind::Gpu
            } else if d.class_id.starts_with("12") || d.class_id.starts_with("0b40") {
                AcceleratorKind::Accelerator
            } else {
                return None;
            };
            Some(Accelerator {
                kind,
                address: d.address.clone(),
                vendor: vendor_short(&d.vendor_id),
                name: d.device.clone(),
                driver: d.driver.clone(),
            })
        })
        .collect()
}

/// Short names of the vendors whose accelerators a scheduler selects on.
pub fn vendor_short(vendor_id: &str) -> String {
    match vendor_id {
        "10de" => "nvidia",
        "1002" | "1022" => "amd",
        "8086" => "intel",
        "1af4" | "1b36" => "qemu",
        "1234" => "bochs",
        "15ad" => "vmware",
        "1d0f" => "amazon",
        "1ae0" => "google",
        "1414" => "microsoft",
        "1013" => "cirrus",
        "102b" => "matrox",
        "1a03" => "aspeed",
        "1e52" => "tenstorrent",
        "1ed5" => "groq",
        "1fc9" => "habana",
        "1da3" => "habana",
        other => return other.to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: &str = "# comment\n\n8086  Intel Corporation\n\t10d3  82574L Gigabit Network Connection\n\t\t8086 0000  Gigabit CT Desktop Adapter\n\t\t1af4 1100  QEMU e1000e\n\t1237  440FX - 82441FX PMC [Natoma]\n10de  NVIDIA Corporation\n\t2330  GH100 [H100 SXM5 80GB]\nzzzz  not a vendor\n\tffff  orphan\nC 02  Network controller\n\t00  Ethernet controller\nC 03  Display controller\n\t02  3D controller\nC 01  Mass storage controller\n\t08  Non-Volatile memory controller\n\t\t02  NVM Express\n";

    fn device(address: &str, vendor: &str, device: &str, class: &str) -> PciDevice {
        PciDevice {
            address: address.into(),
            vendor_id: vendor.into(),
            device_id: device.into(),
            class_id: class.into(),
            ..PciDevice::default()
        }
    }

    #[test]
    fn looks_up_only_what_is_needed() {
        let mut nic = device("0000:00:04.0", "8086", "10d3", "020000");
        nic.subsystem_vendor_id = Some("1af4".into());
        nic.subsystem_device_id = Some("1100".into());
        let devices = [
            nic,
            device("0000:00:05.0", "10de", "2330", "030200"),
            device("0000:00:06.0", "1b36", "0010", "010802"),
        ];
        let names = lookup(IDS.as_bytes(), &devices);
        assert_eq!(names.vendors.len(), 2, "{names:?}");
        assert_eq!(names.vendors["10de"], "NVIDIA Corporation");
        assert_eq!(
            names.devices[&("8086".into(), "10d3".into())],
            "82574L Gigabit Network Connection"
        );
        assert_eq!(names.devices.len(), 2, "440FX is not present");
        assert_eq!(
            names.subsystems[&("8086".into(), "10d3".into(), "1af4".into(), "1100".into())],
            "QEMU e1000e"
        );
        assert_eq!(names.classes["0200"], "Ethernet controller");
        assert_eq!(names.classes["0302"], "3D controller");
        assert_eq!(names.classes["010802"], "NVM Express");
        assert!(
            !names.classes.contains_key("0108")
                || names.classes["0108"] == "Non-Volatile memory controller"
        );
    }

    #[test]
    fn reads_devices_with_names_and_finds_accelerators() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let add = |address: &str, vendor: &str, dev: &str, class: &str, driver: Option<&str>| {
            let d = sys.join("bus/pci/devices").join(address);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), format!("0x{vendor}\n")).unwrap();
            std::fs::write(d.join("device"), format!("0x{dev}\n")).unwrap();
            std::fs::write(d.join("class"), format!("0x{class}\n")).unwrap();
            std::fs::write(d.join("numa_node"), "-1\n").unwrap();
            if let Some(driver) = driver {
                std::os::unix::fs::symlink(
                    format!("../../../bus/pci/drivers/{driver}"),
                    d.join("driver"),
                )
                .unwrap();
            }
        };
        add("0000:00:04.0", "8086", "10d3", "020000", Some("e1000e"));
        add("0000:00:05.0", "10de", "2330", "030200", Some("nvidia"));
        add("0000:00:06.0", "1b36", "0010", "010802", None);
        // A device whose vendor file is garbage is skipped, not fatal.
        add("0000:00:07.0", "zz", "0001", "010000", None);
        let ids = dir.path().join("pci.ids");
        std::fs::write(&ids, IDS).unwrap();
        let mut gaps = Gaps::default();
        let devices = read(&sys, &ids, &mut gaps);
        assert!(gaps.into_vec().is_empty());
        assert_eq!(devices.len(), 3);
        assert_eq!(devices[0].driver.as_deref(), Some("e1000e"));
        assert_eq!(devices[0].class.as_deref(), Some("Ethernet controller"));
        assert_eq!(devices[0].numa_node, None);
        assert_eq!(devices[2].vendor, None, "1b36 is not in this database");
        assert_eq!(devices[2].class.as_deref(), Some("NVM Express"));
        let acc = accelerators(&devices);
        assert_eq!(acc.len(), 1);
        assert_eq!(
            (acc[0].kind, acc[0].vendor.as_str()),
            (AcceleratorKind::Gpu, "nvidia")
        );
        assert_eq!(acc[0].name.as_deref(), Some("GH100 [H100 SXM5 80GB]"));

        // Without the database: the same devices, no names, one gap.
        let mut gaps = Gaps::default();
        let unnamed = read(&sys, &dir.path().join("missing.ids"), &mut gaps);
        assert_eq!(unnamed.len(), 3);
        assert!(unnamed.iter().all(|d| d.vendor.is_none()));
        assert_eq!(gaps.into_vec().len(), 1);
    }

    #[test]
    fn garbage_database_lines_are_skipped() {
        let devices = [device("0000:00:04.0", "8086", "10d3", "020000")];
        let junk: &[u8] =
            b"\t\t\tdeep\n8086\n\tzz  x\nC zz  bad\n\t00  sub of bad\n\xff\xfe\n8086  Intel\n";
        let names = lookup(junk, &devices);
        assert_eq!(names.vendors["8086"], "Intel");
        assert!(names.devices.is_empty());
        assert!(names.classes.is_empty());
    }
}
