//! The node's identity: a machine id that stays the same for the node's lifetime, and the
//! hostname that follows from it unless one is configured.
//!
//! Until the node has persistent storage, "stable" means derived from what the hardware says
//! about itself: the SMBIOS product UUID when the firmware sets a real one, else the lowest
//! permanent MAC address. Only a machine with neither gets a random id (and says so).

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Where a machine id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    SmbiosUuid,
    Mac,
    Random,
}

impl IdSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SmbiosUuid => "smbios-uuid",
            Self::Mac => "mac",
            Self::Random => "random",
        }
    }
}

/// What the hardware says about itself, read from sysfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardwareIds {
    pub product_uuid: Option<String>,
    /// Permanent MAC addresses of Ethernet-type links.
    pub macs: Vec<String>,
}

/// Reads the DMI product UUID and the permanent MACs from `<sys>`.
pub fn read_hardware_ids(sys: &Path) -> HardwareIds {
    let product_uuid = fs::read_to_string(sys.join("class/dmi/id/product_uuid"))
        .ok()
        .map(|s| s.trim().to_ascii_lowercase());
    let mut macs = Vec::new();
    if let Ok(links) = fs::read_dir(sys.join("class/net")) {
        for link in links.flatten() {
            let dir = link.path();
            let read = |name: &str| {
                fs::read_to_string(dir.join(name))
                    .map(|s| s.trim().to_string())
                    .ok()
            };
            // type 1 = ARPHRD_ETHER; addr_assign_type 0 = permanent (not random or set by hand).
            if read("type").as_deref() == Some("1")
                && read("addr_assign_type").as_deref() == Some("0")
                && let Some(mac) = read("address")
            {
                macs.push(mac.to_ascii_lowercase());
            }
        }
    }
    HardwareIds { product_uuid, macs }
}

/// Firmware fills the UUID field with placeholders often enough that those must not become
/// identities shared by a whole rack.
fn usable_uuid(uuid: &str) -> bool {
    let hex: String = uuid.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    hex.len() == 32
        && !hex.chars().all(|c| c == '0')
        && !hex.chars().all(|c| c == 'f')
        && hex != "03000200040005000006000700080009"
}

fn usable_mac(mac: &str) -> bool {
    mac.len() == 17 && mac != "00:00:00:00:00:00" && mac != "ff:ff:ff:ff:ff:ff"
}

/// Derives the machine id (32 lowercase hex digits, the systemd format).
pub fn machine_id(hw: &HardwareIds, random: impl FnOnce() -> [u8; 16]) -> (String, IdSource) {
    let hash = |source: &str, value: &str| {
        let digest = Sha256::digest(format!("shoal-machine-id:{source}:{value}").as_bytes());
        hex(&digest[..16])
    };
    if let Some(uuid) = hw.product_uuid.as_deref().filter(|u| usable_uuid(u)) {
        return (hash("smbios-uuid", uuid), IdSource::SmbiosUuid);
    }
    if let Some(mac) = hw.macs.iter().filter(|m| usable_mac(m)).min() {
        return (hash("mac", mac), IdSource::Mac);
    }
    (hex(&random()), IdSource::Random)
}

/// The hostname a node gets when none is configured.
pub fn default_hostname(machine_id: &str) -> String {
    format!("shoal-{}", &machine_id[..8.min(machine_id.len())])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> [u8; 16] {
        panic!("randomness must not be needed")
    }

    #[test]
    fn prefers_a_real_smbios_uuid() {
        let hw = HardwareIds {
            product_uuid: Some("4c4c4544-0042-3510-8051-b4c04f564433".into()),
            macs: vec!["52:54:00:12:34:56".into()],
        };
        let (id, source) = machine_id(&hw, never);
        assert_eq!(source, IdSource::SmbiosUuid);
        assert_eq!(id.len(), 32);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Stable: the same hardware gives the same id.
        assert_eq!(machine_id(&hw, never).0, id);
    }

    #[test]
    fn placeholder_uuids_fall_back_to_the_lowest_mac() {
        for uuid in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "03000200-0400-0500-0006-000700080009",
            "junk",
        ] {
            let hw = HardwareIds {
                product_uuid: Some(uuid.to_ascii_lowercase()),
                macs: vec![
                    "52:54:00:00:00:02".into(),
                    "52:54:00:00:00:01".into(),
                    "00:00:00:00:00:00".into(),
                ],
            };
            let (id, source) = machine_id(&hw, never);
            assert_eq!(source, IdSource::Mac);
            let only_lowest = HardwareIds {
                product_uuid: None,
                macs: vec!["52:54:00:00:00:01".into()],
            };
            assert_eq!(machine_id(&only_lowest, never).0, id);
        }
    }

    #[test]
    fn different_macs_give_different_ids() {
        let a = HardwareIds {
            product_uuid: None,
            macs: vec!["52:54:00:00:00:01".into()],
        };
        let b = HardwareIds {
            product_uuid: None,
            macs: vec!["52:54:00:00:00:02".into()],
        };
        assert_ne!(machine_id(&a, never).0, machine_id(&b, never).0);
    }

    #[test]
    fn random_only_without_hardware_ids() {
        let (id, source) = machine_id(&HardwareIds::default(), || [0xab; 16]);
        assert_eq!(
            (id.as_str(), source),
            ("abababababababababababababababab", IdSource::Random)
        );
    }

    #[test]
    fn hostname_from_machine_id() {
        assert_eq!(
            default_hostname("0123456789abcdef0123456789abcdef"),
            "shoal-01234567"
        );
    }

    #[test]
    fn reads_ids_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path();
        fs::create_dir_all(sys.join("class/dmi/id")).unwrap();
        fs::write(
            sys.join("class/dmi/id/product_uuid"),
            "ABCDEF01-0000-0000-0000-000000000001\n",
        )
        .unwrap();
        for (name, ty, assign, mac) in [
            ("lo", "772", "0", "00:00:00:00:00:00"),
            ("eth0", "1", "0", "52:54:00:AA:BB:CC"),
            ("veth0", "1", "1", "2a:00:00:00:00:01"),
        ] {
            let dir = sys.join("class/net").join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("type"), format!("{ty}\n")).unwrap();
            fs::write(dir.join("addr_assign_type"), format!("{assign}\n")).unwrap();
            fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        }
        let hw = read_hardware_ids(sys);
        assert_eq!(
            hw.product_uuid.as_deref(),
            Some("abcdef01-0000-0000-0000-000000000001")
        );
        assert_eq!(hw.macs, vec!["52:54:00:aa:bb:cc"]);
    }
}
