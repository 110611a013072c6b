//! Storage: every block device (`/sys/block`) with its geometry, transport, identity and
//! partitions, the filesystems found on them (`/dev`, first bytes only), and NVMe controllers
//! with their namespaces (`/sys/class/nvme`).

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fs_probe::{self, Filesystem};
use crate::{Gaps, read};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Nvme,
    Sata,
    Sas,
    Scsi,
    Virtio,
    Usb,
    Mmc,
    /// Loop, device-mapper, zram, md: made by the kernel, not a device.
    Virtual,
    #[default]
    Unknown,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Nvme => "nvme",
            Transport::Sata => "sata",
            Transport::Sas => "sas",
            Transport::Scsi => "scsi",
            Transport::Virtio => "virtio",
            Transport::Usb => "usb",
            Transport::Mmc => "mmc",
            Transport::Virtual => "virtual",
            Transport::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Partition {
    pub name: String,
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
}

/// The NVMe controller and namespace id behind a namespace block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NvmeNamespace {
    pub controller: String,
    pub nsid: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub logical_sector_bytes: u32,
    pub physical_sector_bytes: u32,
    pub rotational: bool,
    pub removable: bool,
    pub read_only: bool,
    pub transport: Transport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// World Wide Name (`naa.…` or `eui.…`), when the device has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// The PCI function the device hangs off (its controller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme: Option<NvmeNamespace>,
    /// `gpt` or `dos`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_table: Option<String>,
    /// A filesystem on the whole device (no partition table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NvmeController {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// `pcie`, `tcp`, `rdma`, `fc`, `loop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The PCI address for `pcie`, the target for fabrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its namespaces' block devices.
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Storage {
    pub disks: Vec<Disk>,
    pub nvme_controllers: Vec<NvmeController>,
}

/// Block devices that never hold data worth listing: RAM disks, and loop devices with nothing
/// attached (size 0).
fn skipped(name: &str, size: u64) -> bool {
    name.starts_with("ram") || (size == 0 && (name.starts_with("loop") || name.starts_with("zram")))
}

pub fn read(sys: &Path, dev: &Path, gaps: &mut Gaps) -> Storage {
    let block = sys.join("block");
    if !block.is_dir() {
        gaps.add(
            block.display().to_string(),
            "missing; no block devices listed",
        );
    }
    // Paths relative to the sysfs root, so a fixture tree's own location never matches.
    let sys_root = std::fs::canonicalize(sys).unwrap_or_else(|_| sys.to_path_buf());
    let mut disks = Vec::new();
    for name in read::names(&block) {
        let dir = block.join(&name);
        let size_bytes = read::number(&dir.join("size")).unwrap_or(0) * 512;
        if skipped(&name, size_bytes) {
            continue;
        }
        let device_path = read::resolve(&dir)
            .and_then(|p| {
                Some(format!(
                    "/sys/{}",
                    p.strip_prefix(&sys_root).ok()?.display()
                ))
            })
            .unwrap_or_default();
        let transport = transport(&name, &device_path);
        let device = dir.join("device");
        let nvme = name
            .starts_with("nvme")
            .then(|| nvme_namespace(&name, &dir))
            .flatten();
        let (model, serial, firmware, vendor) = match transport {
            // An NVMe namespace's `device` is its controller.
            Transport::Nvme => (
                read::text(&device.join("model")),
                read::text(&device.join("serial")),
                read::text(&device.join("firmware_rev")),
                None,
            ),
            Transport::Virtio => (None, read::text(&dir.join("serial")), None, None),
            _ => (
                read::text(&device.join("model")),
                vpd_serial(&device.join("vpd_pg80")).or_else(|| read::text(&device.join("serial"))),
                read::text(&device.join("rev")),
                read::text(&device.join("vendor")),
            ),
        };
        let wwid = read::text(&dir.join("wwid")).or_else(|| read::text(&device.join("wwid")));
        let wwn = wwid.filter(|w| w.starts_with("naa.") || w.starts_with("eui."));
        let pci = pci_function(&device_path);
        let head = probe(dev, &name, gaps);
        let partition_table = head.as_deref().and_then(fs_probe::partition_table);
        let filesystem = match partition_table {
            Some(_) => None,
            None => head.as_deref().and_then(fs_probe::filesystem),
        };
        let mut partitions = Vec::new();
        for part in read::names(&dir) {
            let pdir = dir.join(&part);
            let Some(number) = read::number(&pdir.join("partition")) else {
                continue;
            };
            partitions.push(Partition {
                filesystem: probe(dev, &part, gaps)
                    .as_deref()
                    .and_then(fs_probe::filesystem),
                name: part,
                number: number as u32,
                start_bytes: read::number(&pdir.join("start")).unwrap_or(0) * 512,
                size_bytes: read::number(&pdir.join("size")).unwrap_or(0) * 512,
            });
        }
        partitions.sort_by_key(|p| p.number);
        disks.push(Disk {
            size_bytes,
            logical_sector_bytes: read::number(&dir.join("queue/logical_block_size")).unwrap_or(512)
                as u32,
            physical_sector_bytes: read::number(&dir.join("queue/physical_block_size"))
                .unwrap_or(512) as u32,
            rotational: read::flag(&dir.join("queue/rotational")).unwrap_or(false),
            removable: read::flag(&dir.join("removable")).unwrap_or(false),
            read_only: read::flag(&dir.join("ro")).unwrap_or(false),
            transport,
            vendor: vendor.filter(|v| v != "ATA"),
            model,
            serial,
            wwn,
            firmware,
            pci,
            nvme,
            partition_table: partition_table.map(str::to_string),
            filesystem,
            partitions,
            name,
        });
    }
    Storage {
        nvme_controllers: nvme_controllers(sys, &disks),
        disks,
    }
}

/// Where the device sits, from its resolved sysfs path.
pub fn transport(name: &str, device_path: &str) -> Transport {
    let has = |s: &str| device_path.contains(s);
    if has("/devices/virtual/") {
        Transport::Virtual
    } else if has("/usb") {
        Transport::Usb
    } else if name.starts_with("nvme") || has("/nvme/") {
        Transport::Nvme
    } else if name.starts_with("mmcblk") || has("/mmc_host/") {
        Transport::Mmc
    } else if has("/ata") {
        Transport::Sata
    } else if has("/end_device-") || has("/sas_") {
        Transport::Sas
    } else if has("/virtio") && name.starts_with("vd") {
        Transport::Virtio
    } else if has("/host") && has("/target") {
        Transport::Scsi
    } else {
        Transport::Unknown
    }
}

/// The last PCI function address (`0000:00:04.0`) in a sysfs device path.
pub fn pci_function(device_path: &str) -> Option<String> {
    device_path
        .split('/')
        .rfind(|c| is_pci_address(c))
        .map(str::to_string)
}

/// `dddd:bb:dd.f`.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn nvme_namespace(name: &str, dir: &Path) -> Option<NvmeNamespace> {
    // nvme0n1 -> controller nvme0, namespace 1 (the nsid attribute, when present, is exact).
    let rest = name.strip_prefix("nvme")?;
    let (controller, ns) = rest.split_once('n')?;
    let nsid = read::number(&dir.join("nsid"))
        .map(|n| n as u32)
        .or_else(|| ns.parse().ok())?;
    Some(NvmeNamespace {
        controller: format!("nvme{controller}"),
        nsid,
    })
}

fn nvme_controllers(sys: &Path, disks: &[Disk]) -> Vec<NvmeController> {
    let class = sys.join("class/nvme");
    read::names(&class)
        .into_iter()
        .map(|name| {
            let dir = class.join(&name);
            NvmeController {
                model: read::text(&dir.join("model")),
                serial: read::text(&dir.join("serial")),
                firmware: read::text(&dir.join("firmware_rev")),
                transport: read::text(&dir.join("transport")),
                address: read::text(&dir.join("address")),
                namespaces: disks
                    .iter()
                    .filter(|d| d.nvme.as_ref().is_some_and(|n| n.controller == name))
                    .map(|d| d.name.clone())
                    .collect(),
                name,
            }
        })
        .collect()
}

/// The unit serial number page (SCSI VPD 0x80): a 4-byte header, then the serial.
pub fn vpd_serial(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let len = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize;
    let serial = bytes.get(4..4 + len.min(bytes.len().saturating_sub(4)))?;
    let s = String::from_utf8_lossy(serial)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// The device's first [`fs_probe::PROBE_BYTES`]. An empty drive (no medium) is not a gap.
fn probe(dev: &Path, name: &str, gaps: &mut Gaps) -> Option<Vec<u8>> {
    let path = dev.join(name);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOMEDIUM) => return None,
        Err(e) => {
            gaps.add(path.display().to_string(), format!("cannot probe: {e}"));
            return None;
        }
    };
    let mut head = Vec::with_capacity(fs_probe::PROBE_BYTES);
    match file
        .by_ref()
        .take(fs_probe::PROBE_BYTES as u64)
        .read_to_end(&mut head)
    {
        Ok(_) => Some(head),
        Err(e) => {
            gaps.add(path.display().to_string(), format!("cannot probe: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn link(target: &str, at: &Path) {
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, at).unwrap();
    }

    /// The first bytes of a device with `magic` written at `offset`.
    fn head(fields: &[(usize, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        for (offset, magic) in fields {
            bytes[*offset..offset + magic.len()].copy_from_slice(magic);
        }
        bytes
    }

    #[test]
    fn disks_partitions_filesystems_and_nvme_controllers() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
        // An NVMe namespace with a GPT: an EFI system partition and an ext4 STATE.
        let ctrl = sys.join("devices/pci0000:00/0000:00:04.0/nvme/nvme0");
        for (attr, value) in [
            ("model", "Shoal NVMe 1T\n"),
            ("serial", "  S5GXNX0R123  \n"),
            ("firmware_rev", "2B2QEXM7\n"),
            ("transport", "pcie\n"),
            ("address", "0000:00:04.0\n"),
        ] {
            write(&ctrl.join(attr), value.as_bytes());
        }
        let ns = ctrl.join("nvme0n1");
        for (attr, value) in [
            ("size", "131072"),
            ("queue/logical_block_size", "4096"),
            ("queue/physical_block_size", "4096"),
            ("queue/rotational", "0"),
            ("removable", "0"),
            ("ro", "0"),
            ("wwid", "eui.0025388b91b2c3d4"),
            ("nsid", "1"),
            ("nvme0n1p1/partition", "1"),
            ("nvme0n1p1/start", "2048"),
            ("nvme0n1p1/size", "1024"),
            ("nvme0n1p2/partition", "2"),
            ("nvme0n1p2/start", "4096"),
            ("nvme0n1p2/size", "8192"),
        ] {
            write(&ns.join(attr), value.as_bytes());
        }
        link("../../nvme0", &ns.join("device"));
        link(
            "../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1",
            &sys.join("block/nvme0n1"),
        );
        link(
            "../../devices/pci0000:00/0000:00:04.0/nvme/nvme0",
            &sys.join("class/nvme/nvme0"),
        );
        write(
            &dev.join("nvme0n1"),
            &head(&[(510, &[0x55, 0xAA]), (512, b"EFI PART")]),
        );
        write(
            &dev.join("nvme0n1p1"),
            &head(&[
                (510, &[0x55, 0xAA]),
                (82, b"FAT32   "),
                (71, b"EFI        "),
            ]),
        );
        write(
            &dev.join("nvme0n1p2"),
            &head(&[
                (1024 + 56, &[0x53, 0xEF]),
                (1024 + 96, &[0x40, 0, 0, 0]),
                (1024 + 120, b"STATE"),
            ]),
        );
        // A SATA disk behind libata, XFS on the whole disk, serial in VPD page 0x80.
        let scsi = sys.join("devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0");
        write(&scsi.join("model"), b"Samsung SSD 870\n");
        write(&scsi.join("vendor"), b"ATA     \n");
        write(&scsi.join("rev"), b"SVT01B6Q\n");
        write(&scsi.join("wwid"), b"naa.5002538f4123abcd\n");
        write(&scsi.join("vpd_pg80"), b"\0\x80\0\x0fS6PTNM0T123456 ");
        let sda = scsi.join("block/sda");
        write(&sda.join("size"), b"2048\n");
        write(&sda.join("queue/rotational"), b"1\n");
        link("../../../0:0:0:0", &sda.join("device"));
        link(
            "../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
            &sys.join("block/sda"),
        );
        write(&dev.join("sda"), &head(&[(0, b"XFSB"), (108, b"scratch")]));
        // Loop devices: an unused one is skipped; one in use is listed as virtual. Its /dev
        // node is missing: a gap, the rest of the inventory stands.
        for (name, size) in [("loop0", "0"), ("loop1", "100")] {
            let d = sys.join("devices/virtual/block").join(name);
            write(&d.join("size"), size.as_bytes());
            link(
                &format!("../devices/virtual/block/{name}"),
                &sys.join("block").join(name),
            );
        }

        let mut gaps = Gaps::default();
        let storage = read(&sys, &dev, &mut gaps);
        let names: Vec<&str> = storage.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["loop1", "nvme0n1", "sda"]);
        let gaps = gaps.into_vec();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].source.ends_with("dev/loop1"), "{gaps:?}");
        assert_eq!(storage.disks[0].transport, Transport::Virtual);

        let nvme = &storage.disks[1];
        assert_eq!(nvme.transport, Transport::Nvme);
        assert_eq!(nvme.size_bytes, 131072 * 512);
        assert_eq!(
            (nvme.logical_sector_bytes, nvme.physical_sector_bytes),
            (4096, 4096)
        );
        assert_eq!(nvme.model.as_deref(), Some("Shoal NVMe 1T"));
        assert_eq!(nvme.serial.as_deref(), Some("S5GXNX0R123"));
        assert_eq!(nvme.firmware.as_deref(), Some("2B2QEXM7"));
        assert_eq!(nvme.wwn.as_deref(), Some("eui.0025388b91b2c3d4"));
        assert_eq!(nvme.pci.as_deref(), Some("0000:00:04.0"));
        assert_eq!(
            nvme.nvme,
            Some(NvmeNamespace {
                controller: "nvme0".into(),
                nsid: 1
            })
        );
        assert_eq!(nvme.partition_table.as_deref(), Some("gpt"));
        assert_eq!(nvme.filesystem, None);
        let parts: Vec<_> = nvme
            .partitions
            .iter()
            .map(|p| {
                let fs = p.filesystem.clone().unwrap_or_default();
                (p.number, p.start_bytes, p.size_bytes, fs.kind, fs.label)
            })
            .collect();
        assert_eq!(
            parts,
            [
                (
                    1,
                    2048 * 512,
                    1024 * 512,
                    "vfat".to_string(),
                    Some("EFI".to_string())
                ),
                (
                    2,
                    4096 * 512,
                    8192 * 512,
                    "ext4".to_string(),
                    Some("STATE".to_string())
                ),
            ]
        );
        assert_eq!(
            storage.nvme_controllers,
            [NvmeController {
                name: "nvme0".into(),
                model: Some("Shoal NVMe 1T".into()),
                serial: Some("S5GXNX0R123".into()),
                firmware: Some("2B2QEXM7".into()),
                transport: Some("pcie".into()),
                address: Some("0000:00:04.0".into()),
                namespaces: vec!["nvme0n1".into()],
            }]
        );

        let sata = &storage.disks[2];
        assert_eq!(sata.transport, Transport::Sata);
        assert_eq!(sata.vendor, None, "libata's `ATA` vendor says nothing");
        assert_eq!(sata.model.as_deref(), Some("Samsung SSD 870"));
        assert_eq!(sata.serial.as_deref(), Some("S6PTNM0T123456"));
        assert_eq!(sata.firmware.as_deref(), Some("SVT01B6Q"));
        assert_eq!(sata.wwn.as_deref(), Some("naa.5002538f4123abcd"));
        assert!(sata.rotational);
        assert_eq!(sata.partition_table, None);
        assert_eq!(
            sata.filesystem.as_ref().map(|f| f.kind.as_str()),
            Some("xfs")
        );
        assert_eq!(
            sata.filesystem.as_ref().and_then(|f| f.label.as_deref()),
            Some("scratch")
        );
    }

    #[test]
    fn no_block_directory_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut gaps = Gaps::default();
        let storage = read(&dir.path().join("sys"), &dir.path().join("dev"), &mut gaps);
        assert!(storage.disks.is_empty() && storage.nvme_controllers.is_empty());
        assert_eq!(gaps.into_vec().len(), 1);
    }

    #[test]
    fn transports_from_paths() {
        let cases = [
            (
                "nvme0n1",
                "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1",
                Transport::Nvme,
            ),
            (
                "sda",
                "/sys/devices/pci0000:00/0000:00:05.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                Transport::Sata,
            ),
            (
                "vda",
                "/sys/devices/pci0000:00/0000:00:03.0/virtio1/block/vda",
                Transport::Virtio,
            ),
            (
                "sdb",
                "/sys/devices/pci0000:00/0000:00:06.0/virtio2/host2/target2:0:0/2:0:0:0/block/sdb",
                Transport::Scsi,
            ),
            (
                "sdc",
                "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host3/target3:0:0/3:0:0:0/block/sdc",
                Transport::Usb,
            ),
            (
                "sdd",
                "/sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0/host4/port-4:0/end_device-4:0/target4:0:0/4:0:0:0/block/sdd",
                Transport::Sas,
            ),
            (
                "loop0",
                "/sys/devices/virtual/block/loop0",
                Transport::Virtual,
            ),
            (
                "mmcblk0",
                "/sys/devices/platform/mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0",
                Transport::Mmc,
            ),
            ("xyz", "/sys/devices/platform/xyz", Transport::Unknown),
        ];
        for (name, path, expected) in cases {
            assert_eq!(transport(name, path), expected, "{path}");
        }
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(
            pci_function("/sys/devices/pci0000:80/0000:80:01.0/0000:81:00.0/host4").as_deref(),
            Some("0000:81:00.0")
        );
        assert_eq!(pci_function("/sys/devices/virtual/block/loop0"), None);
        assert!(!is_pci_address("pci0000:80"));
        assert!(!is_pci_address("0000:8g:01.0"));
    }

    #[test]
    fn vpd_serials() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("vpd_pg80");
        std::fs::write(&page, b"\0\x80\0\x0c  QM00005   ").unwrap();
        assert_eq!(vpd_serial(&page).as_deref(), Some("QM00005"));
        std::fs::write(&page, b"\0\x80\0\xff AB").unwrap(); // length past the end
        assert_eq!(vpd_serial(&page).as_deref(), Some("AB"));
        std::fs::write(&page, b"\0\x80").unwrap();
        assert_eq!(vpd_serial(&page), None);
    }
}
