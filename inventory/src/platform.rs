//! What the inventory needs beyond sysfs and procfs: the CPUID hypervisor leaf, and ethtool's
//! answers about a NIC (permanent MAC, firmware and driver version). [`Live`] asks the CPU and
//! the kernel; [`Recorded`] replays what a capture wrote down, so fixture trees are complete.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What ethtool says about one NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkDetails {
    pub permanent_mac: Option<String>,
    pub firmware: Option<String>,
    pub driver_version: Option<String>,
}

pub trait Platform {
    /// The 12-byte vendor signature of CPUID leaf 0x40000000 when the CPU says it runs under a
    /// hypervisor (`KVMKVMKVM`, `TCGTCGTCGTCG`, `Microsoft Hv`, ...); `None` on bare metal.
    fn hypervisor_signature(&self) -> Option<String>;
    /// ethtool's details of the NIC `name`; `None` when it cannot be asked.
    fn link(&self, name: &str) -> Option<LinkDetails>;
}

/// The running machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct Live;

impl Platform for Live {
    fn hypervisor_signature(&self) -> Option<String> {
        cpuid_hypervisor()
    }

    fn link(&self, name: &str) -> Option<LinkDetails> {
        ethtool::details(name)
    }
}

#[cfg(target_arch = "x86_64")]
fn cpuid_hypervisor() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    // CPUID leaf 1, ECX bit 31: "running under a hypervisor". Every x86_64 CPU has CPUID.
    if __cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let leaf = __cpuid(0x4000_0000);
    let mut bytes = Vec::with_capacity(12);
    for reg in [leaf.ebx, leaf.ecx, leaf.edx] {
        bytes.extend(reg.to_le_bytes());
    }
    Some(signature_text(&bytes))
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_hypervisor() -> Option<String> {
    None
}

/// The signature as text: NULs dropped, printable ASCII kept.
pub fn signature_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|&b| b as char)
        .collect::<String>()
        .trim()
        .to_string()
}

/// What a capture recorded (`platform.json` in a capture's root).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recorded {
    pub hypervisor_signature: Option<String>,
    pub links: BTreeMap<String, LinkDetails>,
}

impl Recorded {
    pub const FILE: &str = "platform.json";

    /// Reads `root/platform.json`; a capture without one replays "bare metal, no ethtool". A
    /// directory without `sys/` is no capture at all, and is refused.
    pub fn load(root: &Path) -> Result<Recorded, String> {
        if !root.join("sys").is_dir() {
            return Err(format!(
                "{} is not a capture (no sys/ in it; make one with `shoal-inventory capture DIR`)",
                root.display()
            ));
        }
        let path = root.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Recorded::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Asks `platform` everything a later replay will need for the NICs `links`.
    pub fn record(platform: &dyn Platform, links: &[String]) -> Recorded {
        Recorded {
            hypervisor_signature: platform.hypervisor_signature(),
            links: links
                .iter()
                .filter_map(|l| Some((l.clone(), platform.link(l)?)))
                .collect(),
        }
    }
}

impl Platform for Recorded {
    fn hypervisor_signature(&self) -> Option<String> {
        self.hypervisor_signature.clone()
    }

    fn link(&self, name: &str) -> Option<LinkDetails> {
        self.links.get(name).cloned()
    }
}

/// `SIOCETHTOOL` requests; the only unsafe code in the crate.
mod ethtool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::LinkDetails;

    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x03;
    const ETHTOOL_GPERMADDR: u32 = 0x20;
    const MAX_ADDR_LEN: usize = 32;

    /// `struct ethtool_drvinfo`.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }

    /// `struct ethtool_perm_addr` with room for the longest hardware address.
    #[repr(C)]
    struct PermAddr {
        cmd: u32,
        size: u32,
        data: [u8; MAX_ADDR_LEN],
    }

    fn socket() -> Option<OwnedFd> {
        // SAFETY: plain socket(2) call; the descriptor is checked and then owned.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: fd is a new descriptor nobody else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Runs one ethtool command whose buffer is `data`.
    fn request<T>(fd: &OwnedFd, name: &str, data: &mut T) -> bool {
        if name.len() >= libc::IFNAMSIZ {
            return false;
        }
        // SAFETY: ifreq is plain old data; all zeros is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (data as *mut T).cast();
        // SAFETY: SIOCETHTOOL reads the command from `data` and writes at most size_of::<T>()
        // bytes back into it (the command and its size field say how much); `ifr` and `data`
        // outlive the call.
        unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) == 0 }
    }

    fn c_string(bytes: &[u8]) -> Option<String> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let s = String::from_utf8_lossy(&bytes[..end]).trim().to_string();
        (!s.is_empty() && s != "N/A").then_some(s)
    }

    pub(super) fn details(name: &str) -> Option<LinkDetails> {
        let fd = socket()?;
        let mut out = LinkDetails::default();
        let mut answered = false;
        // SAFETY: DrvInfo is plain old data; all zeros is a valid value.
        let mut info: DrvInfo = unsafe { std::mem::zeroed() };
        info.cmd = ETHTOOL_GDRVINFO;
        if request(&fd, name, &mut info) {
            answered = true;
            out.firmware = c_string(&info.fw_version);
            out.driver_version = c_string(&info.version);
        }
        let mut perm = PermAddr {
            cmd: ETHTOOL_GPERMADDR,
            size: MAX_ADDR_LEN as u32,
            data: [0; MAX_ADDR_LEN],
        };
        if request(&fd, name, &mut perm) {
            answered = true;
            let len = (perm.size as usize).min(MAX_ADDR_LEN);
            let addr = &perm.data[..len];
            if len > 0 && addr.iter().any(|&b| b != 0) {
                out.permanent_mac = Some(
                    addr.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
        }
        answered.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_read_as_text() {
        assert_eq!(signature_text(b"KVMKVMKVM\0\0\0"), "KVMKVMKVM");
        assert_eq!(signature_text(b"TCGTCGTCGTCG"), "TCGTCGTCGTCG");
        assert_eq!(signature_text(b"Microsoft Hv"), "Microsoft Hv");
        assert_eq!(signature_text(b"\xff\x01ab"), "ab");
    }

    #[test]
    fn recorded_platforms_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Recorded::load(dir.path())
                .unwrap_err()
                .contains("is not a capture")
        );
        std::fs::create_dir(dir.path().join("sys")).unwrap();
        assert_eq!(Recorded::load(dir.path()), Ok(Recorded::default()));
        let recorded = Recorded {
            hypervisor_signature: Some("KVMKVMKVM".into()),
            links: [(
                "eth0".to_string(),
                LinkDetails {
                    permanent_mac: Some("52:54:00:12:34:56".into()),
                    firmware: None,
                    driver_version: Some("1.0".into()),
                },
            )]
            .into(),
        };
        std::fs::write(
            dir.path().join(Recorded::FILE),
            serde_json::to_vec(&recorded).unwrap(),
        )
        .unwrap();
        let loaded = Recorded::load(dir.path()).unwrap();
        assert_eq!(loaded, recorded);
        assert_eq!(
            loaded.link("eth0").unwrap().permanent_mac.as_deref(),
            Some("52:54:00:12:34:56")
        );
        assert_eq!(loaded.link("eth1"), None);
        std::fs::write(dir.path().join(Recorded::FILE), b"{not json").unwrap();
        assert!(
            Recorded::load(dir.path())
                .unwrap_err()
                .contains("platform.json")
        );
    }

    #[test]
    fn live_ethtool_answers_for_loopback_or_says_nothing() {
        // Loopback has no driver info on every kernel; what matters is no crash and no garbage.
        if let Some(details) = Live.link("lo") {
            assert!(details.permanent_mac.is_none_or(|m| m.len() == 17));
        }
        assert_eq!(Live.link("no-such-link-x"), None);
        assert_eq!(Live.link("a-name-longer-than-ifnamsiz"), None);
    }
}
