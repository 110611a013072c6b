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
