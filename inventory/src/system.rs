//! The machine as a whole: SMBIOS identity (system, baseboard, chassis, firmware), boot mode and
//! Secure Boot, hypervisor, TPM.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::platform::Platform;
use crate::smbios::{self, Board, Chassis, Smbios, SystemIdentity};
use crate::{Gaps, read};

/// The EFI global variable vendor GUID.
const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Uefi,
    #[default]
    Bios,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Firmware {
    pub boot_mode: BootMode,
    /// `None` when it cannot be told (BIOS boot, or efivarfs not mounted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tpm {
    /// `tpm0`, ...
    pub device: String,
    /// 1 or 2 (TPM 1.2 or 2.0), when the kernel says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct System {
    /// Vendor, product, version, serial, UUID, SKU, family (SMBIOS type 1), at this level in
    /// JSON.
    #[serde(flatten)]
    pub identity: SystemIdentity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<Board>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chassis: Option<Chassis>,
    pub firmware: Firmware,
    /// Runs under a hypervisor (CPUID says so).
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// Which one, when it tells: `kvm`, `qemu-tcg`, `hyper-v`, `vmware`, `xen`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Tpm>,
    /// The SMBIOS version, when the raw table could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smbios_version: Option<String>,
}

/// Reads the raw SMBIOS table; falls back to what `/sys/class/dmi/id` shows (no DIMMs, no
/// processors) when the table cannot be read, and says so.
pub fn read_smbios(sys: &Path, gaps: &mut Gaps) -> Smbios {
    let tables = sys.join("firmware/dmi/tables");
    let entry = std::fs::read(tables.join("smbios_entry_point"));
    let table = std::fs::read(tables.join("DMI"));
    match (entry, table) {
        (Ok(entry), Ok(table)) => {
            let version = match smbios::parse_entry_point(&entry) {
                Ok(v) => Some(v),
                Err(e) => {
                    gaps.add("smbios entry point", e.to_string());
                    None
                }
            };
            let (structures, error) = smbios::parse_table(&table);
            if let Some(e) = error {
                gaps.add("smbios table", e.to_string());
            }
            smbios::decode(version, &structures)
        }
        (Err(e), _) | (_, Err(e)) => {
            let reason = if e.kind() == std::io::ErrorKind::NotFound {
                "no SMBIOS table (firmware without one, or a kernel without DMI)".to_string()
            } else {
                e.to_string()
            };
            gaps.add(
                tables.display().to_string(),
                format!("{reason}; system fields from /sys/class/dmi/id, no DIMMs or sockets"),
            );
            from_dmi_id(&sys.join("class/dmi/id"))
        }
    }
}

/// The kernel's digest of SMBIOS: system, board, chassis and firmware strings (serials and the
/// UUID only when readable, i.e. as root).
fn from_dmi_id(dir: &Path) -> Smbios {
    let get = |name: &str| read::text(&dir.join(name)).filter(|s| !smbios::is_placeholder(s));
    if !dir.exists() {
        return Smbios::default();
    }
    Smbios {
        bios: Some(smbios::Bios {
            vendor: get("bios_vendor"),
            version: get("bios_version"),
            date: get("bios_date"),
            release: get("bios_release"),
            uefi: false,
        }),
        system: Some(smbios::SystemIdentity {
            vendor: get("sys_vendor"),
            product: get("product_name"),
            version: get("product_version"),
            serial: get("product_serial"),
            uuid: get("product_uuid").map(|u| u.to_ascii_lowercase()),
            sku: get("product_sku"),
            family: get("product_family"),
        }),
        board: Some(Board {
            vendor: get("board_vendor"),
            product: get("board_name"),
            version: get("board_version"),
            serial: get("board_serial"),
            asset_tag: get("board_asset_tag"),
            location: None,
        }),
        chassis: Some(Chassis {
            vendor: get("chassis_vendor"),
            kind: None,
            version: get("chassis_version"),
            serial: get("chassis_serial"),
            asset_tag: get("chassis_asset_tag"),
            sku: None,
        }),
        ..Smbios::default()
    }
}

/// Maps a CPUID hypervisor signature to a short name.
pub fn hypervisor_name(signature: &str) -> String {
    match signature {
        "KVMKVMKVM" | "Linux KVM Hv" => "kvm",
        "TCGTCGTCGTCG" => "qemu-tcg",
        "Microsoft Hv" => "hyper-v",
        "VMwareVMware" => "vmware",
        "XenVMMXenVMM" => "xen",
        "VBoxVBoxVBox" => "virtualbox",
        "bhyve bhyve" => "bhyve",
        "ACRNACRNACRN" => "acrn",
        "lrpepyh  vr" => "parallels",
        "QNXQVMBSQG" => "qnx",
        "" => "unknown",
        other => return other.to_ascii_lowercase(),
    }
    .to_string()
}

pub fn read(
    sys: &Path,
    proc: &Path,
    smbios: &Smbios,
    platform: &dyn Platform,
    gaps: &mut Gaps,
) -> System {
    let identity = smbios.system.clone().unwrap_or_default();
    let bios = smbios.bios.clone().unwrap_or_default();
    let efi = sys.join("firmware/efi");
    let boot_mode = if efi.is_dir() {
        BootMode::Uefi
    } else {
        BootMode::Bios
    };
    let secure_boot = match boot_mode {
        BootMode::Bios => None,
        BootMode::Uefi => {
            let vars = efi.join("efivars");
            let var = vars.join(format!("SecureBoot-{EFI_GLOBAL}"));
            if read::names(&vars).is_empty() {
                gaps.add("secure boot", "efivarfs is not mounted");
                None
            } else {
                match std::fs::read(&var) {
                    // 4 bytes of attributes, then the value.
                    Ok(bytes) if bytes.len() >= 5 => Some(bytes[4] == 1),
                    Ok(_) => {
                        gaps.add(var.display().to_string(), "shorter than 5 bytes");
                        None
                    }
                    // Firmware without the variable has no Secure Boot at all.
                    Err(_) => Some(false),
                }
            }
        }
    };
    let cpu_says_virtual = std::fs::read_to_string(proc.join("cpuinfo"))
        .map(|c| {
            c.lines()
                .find(|l| l.starts_with("flags"))
                .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"))
        })
        .unwrap_or(false);
    let signature = platform.hypervisor_signature();
    let xen = read::text(&sys.join("hypervisor/type"));
    let hypervisor = signature
        .as_deref()
        .map(hypervisor_name)
        .or_else(|| xen.clone());
    let tpm = read::names(&sys.join("class/tpm"))
        .into_iter()
        .find(|n| n.starts_with("tpm"))
        .map(|device| Tpm {
            version: read::number(
                &sys.join("class/tpm")
                    .join(&device)
                    .join("tpm_version_major"),
            )
            .map(|v| v as u32),
            device,
        });
    System {
        identity,
        board: smbios.board.clone(),
        chassis: smbios.chassis.clone(),
        firmware: Firmware {
            boot_mode,
            secure_boot,
            vendor: bios.vendor,
            version: bios.version,
            date: bios.date,
            release: bios.release,
        },
        is_virtual: cpu_says_virtual || signature.is_some() || xen.is_some(),
        hypervisor,
        tpm,
        smbios_version: smbios.version.map(|v| v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Recorded;

    fn write(path: &Path, content: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn falls_back_to_dmi_id_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        write(&sys.join("class/dmi/id/sys_vendor"), b"QEMU\n");
        write(
            &sys.join("class/dmi/id/product_name"),
            b"Standard PC (i440FX + PIIX, 1996)\n",
        );
        write(
            &sys.join("class/dmi/id/product_serial"),
            b"To be filled by O.E.M.\n",
        );
        write(&sys.join("class/dmi/id/bios_vendor"), b"SeaBIOS\n");
        let mut gaps = Gaps::default();
        let smbios = read_smbios(&sys, &mut gaps);
        let gaps = gaps.into_vec();
        assert_eq!(gaps.len(), 1);
        assert!(gaps[0].reason.contains("no SMBIOS table"), "{gaps:?}");
        let system = smbios.system.unwrap();
        assert_eq!(system.vendor.as_deref(), Some("QEMU"));
        assert_eq!(system.serial, None);
        assert_eq!(smbios.bios.unwrap().vendor.as_deref(), Some("SeaBIOS"));
        assert!(smbios.dimms.is_empty());
    }

    #[test]
    fn a_broken_entry_point_is_a_gap_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        write(&sys.join("firmware/dmi/tables/smbios_entry_point"), b"junk");
        let mut table = crate::smbios::build::structure(2, 2, &[1, 0, 0, 0, 0], &["Acme"]);
        table.extend([1, 40, 0]); // cut short
        write(&sys.join("firmware/dmi/tables/DMI"), &table);
        let mut gaps = Gaps::default();
        let smbios = read_smbios(&sys, &mut gaps);
        let gaps = gaps.into_vec();
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert_eq!(smbios.board.unwrap().vendor.as_deref(), Some("Acme"));
        assert_eq!(smbios.version, None);
    }

    #[test]
    fn boot_mode_secure_boot_hypervisor_tpm() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
        write(
            &proc.join("cpuinfo"),
            b"processor\t: 0\nflags\t\t: fpu hypervisor lm\n",
        );
        std::fs::create_dir_all(sys.join("firmware/efi")).unwrap();
        let platform = Recorded {
            hypervisor_signature: Some("KVMKVMKVM".into()),
            ..Recorded::default()
        };
        let mut gaps = Gaps::default();
        let s = read(&sys, &proc, &Smbios::default(), &platform, &mut gaps);
        assert_eq!(s.firmware.boot_mode, BootMode::Uefi);
        assert_eq!(s.firmware.secure_boot, None);
        assert!(gaps.into_vec()[0].reason.contains("efivarfs"));
        assert!(s.is_virtual);
        assert_eq!(s.hypervisor.as_deref(), Some("kvm"));
        assert_eq!(s.tpm, None);

        write(
            &sys.join(format!("firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}")),
            &[6, 0, 0, 0, 1],
        );
        write(&sys.join("class/tpm/tpm0/tpm_version_major"), b"2\n");
        let mut gaps = Gaps::default();
        let s = read(
            &sys,
            &proc,
            &Smbios::default(),
            &Recorded::default(),
            &mut gaps,
        );
        assert!(gaps.into_vec().is_empty());
        assert_eq!(s.firmware.secure_boot, Some(true));
        assert!(s.is_virtual, "the CPU flag alone says virtual");
        assert_eq!(s.hypervisor, None);
        assert_eq!(
            s.tpm,
            Some(Tpm {
                device: "tpm0".into(),
                version: Some(2)
            })
        );
    }

    #[test]
    fn names_hypervisors() {
        assert_eq!(hypervisor_name("TCGTCGTCGTCG"), "qemu-tcg");
        assert_eq!(hypervisor_name("Microsoft Hv"), "hyper-v");
        assert_eq!(hypervisor_name("NewHV"), "newhv");
    }
}
