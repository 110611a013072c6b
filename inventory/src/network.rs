//! Network interfaces backed by a device (`/sys/class/net/*/device`): addresses, driver,
//! firmware, PCI function, link state, SR-IOV, NUMA node. Virtual links (bonds, bridges, VLANs,
//! loopback) are netd's business, not hardware.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::platform::Platform;
use crate::storage::pci_function;
use crate::{Gaps, read};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    pub name: String,
    /// The current address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The address burnt into the NIC (ethtool), else the current one when the kernel says it
    /// is the permanent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanent_mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<bool>,
    /// `up`, `down`, `dormant`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    /// `full` or `half`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Virtual functions the NIC can offer (SR-IOV); `None` without SR-IOV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sriov_total_vfs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
}

pub fn read(sys: &Path, platform: &dyn Platform, gaps: &mut Gaps) -> Vec<Nic> {
    let class = sys.join("class/net");
    if !class.is_dir() {
        gaps.add(class.display().to_string(), "missing; no NICs listed");
        return Vec::new();
    }
    let sys_root = std::fs::canonicalize(sys).unwrap_or_else(|_| sys.to_path_buf());
    let mut nics = Vec::new();
    for name in read::names(&class) {
        let dir = class.join(&name);
        let device = dir.join("device");
        if !device.exists() {
            continue;
        }
        let device_path = read::resolve(&device)
            .and_then(|p| {
                Some(format!(
                    "/sys/{}",
                    p.strip_prefix(&sys_root).ok()?.display()
                ))
            })
            .unwrap_or_default();
        let mac = read::text(&dir.join("address")).map(|m| m.to_ascii_lowercase());
        let details = platform.link(&name).unwrap_or_default();
        // addr_assign_type 0: the address is the permanent one (not random, not set by hand).
        let permanent_mac = details.permanent_mac.or_else(|| {
            (read::number(&dir.join("addr_assign_type")) == Some(0))
                .then(|| mac.clone())
                .flatten()
        });
        if permanent_mac.is_none() {
            gaps.add(
                format!("{name} permanent MAC"),
                "ethtool did not answer and the current address may have been changed",
            );
        }
        let up = read::text(&dir.join("operstate"));
        // speed and duplex are meaningful only with a carrier; the kernel gives -1 or EINVAL.
        let carrier = read::flag(&dir.join("carrier"));
        let speed_mbps = read::signed(&dir.join("speed"))
            .filter(|&s| s > 0 && s < i64::from(u32::MAX))
            .map(|s| s as u32);
        let duplex = read::text(&dir.join("duplex")).filter(|d| d == "full" || d == "half");
        nics.push(Nic {
            mac,
            permanent_mac,
            driver: read::link_name(&device.join("driver")),
            driver_version: details.driver_version,
            firmware: details.firmware,
            pci: pci_function(&device_path),
            carrier,
            operstate: up,
            speed_mbps,
            duplex,
            mtu: read::number(&dir.join("mtu")).map(|m| m as u32),
            sriov_total_vfs: read::number(&device.join("sriov_totalvfs"))
                .filter(|&n| n > 0)
                .map(|n| n as u32),
            numa_node: read::signed(&device.join("numa_node"))
                .filter(|&n| n >= 0)
                .map(|n| n as u32),
            name,
        });
    }
    nics
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;
    use crate::platform::{LinkDetails, Recorded};

    fn write(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A NIC at PCI function `function` with sysfs attributes `attrs`, linked from class/net.
    fn nic(
        sys: &Path,
        function: &str,
        name: &str,
        driver: &str,
        attrs: &[(&str, &str)],
    ) -> PathBuf {
        let pci = sys.join("devices/pci0000:00").join(function);
        std::fs::create_dir_all(sys.join("bus/pci/drivers").join(driver)).unwrap();
        std::fs::create_dir_all(&pci).unwrap();
        symlink(
            format!("../../../bus/pci/drivers/{driver}"),
            pci.join("driver"),
        )
        .unwrap();
        let dir = pci.join("net").join(name);
        for (attr, value) in attrs {
            write(&dir.join(attr), value);
        }
        symlink(format!("../../../{function}"), dir.join("device")).unwrap();
        std::fs::create_dir_all(sys.join("class/net")).unwrap();
        symlink(
            format!("../../devices/pci0000:00/{function}/net/{name}"),
            sys.join("class/net").join(name),
        )
        .unwrap();
        pci
    }

    #[test]
    fn nics_from_sysfs_with_what_ethtool_adds() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let pci = nic(
            &sys,
            "0000:00:03.0",
            "eth0",
            "ixgbe",
            &[
                ("address", "3C:FD:FE:00:00:01\n"),
                ("addr_assign_type", "0\n"),
                ("operstate", "up\n"),
                ("carrier", "1\n"),
                ("speed", "10000\n"),
                ("duplex", "full\n"),
                ("mtu", "9000\n"),
            ],
        );
        write(&pci.join("sriov_totalvfs"), "63\n");
        write(&pci.join("numa_node"), "1\n");
        // Down: the kernel says -1 for the speed and has no carrier to tell; the address was
        // set by hand (addr_assign_type 3) and ethtool is not asked.
        nic(
            &sys,
            "0000:00:04.0",
            "eth1",
            "e1000e",
            &[
                ("address", "02:00:00:00:00:09\n"),
                ("addr_assign_type", "3\n"),
                ("operstate", "down\n"),
                ("speed", "-1\n"),
                ("duplex", "unknown\n"),
                ("numa_node", "-1\n"),
            ],
        );
        // A bond has no device: not hardware, not listed.
        write(
            &sys.join("devices/virtual/net/bond0/address"),
            "02:00:00:00:00:0a\n",
        );
        symlink(
            "../../devices/virtual/net/bond0",
            sys.join("class/net/bond0"),
        )
        .unwrap();
        let platform = Recorded {
            hypervisor_signature: None,
            links: [(
                "eth0".to_string(),
                LinkDetails {
                    permanent_mac: Some("3c:fd:fe:00:00:01".into()),
                    firmware: Some("0x800003e2".into()),
                    driver_version: Some("5.15.2".into()),
                },
            )]
            .into(),
        };
        let mut gaps = Gaps::default();
        let nics = read(&sys, &platform, &mut gaps);
        assert_eq!(nics.len(), 2, "{nics:?}");
        assert_eq!(
            nics[0],
            Nic {
                name: "eth0".into(),
                mac: Some("3c:fd:fe:00:00:01".into()),
                permanent_mac: Some("3c:fd:fe:00:00:01".into()),
                driver: Some("ixgbe".into()),
                driver_version: Some("5.15.2".into()),
                firmware: Some("0x800003e2".into()),
                pci: Some("0000:00:03.0".into()),
                carrier: Some(true),
                operstate: Some("up".into()),
                speed_mbps: Some(10000),
                duplex: Some("full".into()),
                mtu: Some(9000),
                sriov_total_vfs: Some(63),
                numa_node: Some(1),
            }
        );
        let eth1 = &nics[1];
        assert_eq!(eth1.driver.as_deref(), Some("e1000e"));
        assert_eq!(
            (eth1.speed_mbps, eth1.duplex.as_deref(), eth1.carrier),
            (None, None, None)
        );
        assert_eq!(
            (eth1.permanent_mac.as_deref(), eth1.numa_node),
            (None, None)
        );
        let gaps = gaps.into_vec();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].source.starts_with("eth1"));

        // No class/net at all: a gap, no NICs.
        let mut gaps = Gaps::default();
        assert!(read(&dir.path().join("nothing"), &platform, &mut gaps).is_empty());
        assert_eq!(gaps.into_vec().len(), 1);
    }
}
