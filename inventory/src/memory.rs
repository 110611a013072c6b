//! Memory: what the kernel can use (`/proc/meminfo`), what is installed (SMBIOS DIMMs, else the
//! online memory blocks), and the DIMMs themselves where the firmware lists them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::smbios::{Dimm, Smbios};
use crate::{Gaps, read};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// What the kernel manages (`MemTotal`): installed memory less firmware and kernel reserves.
    pub total_bytes: u64,
    /// Installed memory: the DIMMs' sizes, else the online memory blocks.
    pub installed_bytes: u64,
    /// `smbios` or `memory-blocks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_source: Option<String>,
    pub dimms: Vec<Dimm>,
    pub empty_slots: u32,
}

pub fn read(sys: &Path, proc: &Path, smbios: &Smbios, gaps: &mut Gaps) -> Memory {
    let meminfo = proc.join("meminfo");
    let total_bytes = match std::fs::read_to_string(&meminfo) {
        Ok(text) => mem_total(&text).unwrap_or_else(|| {
            gaps.add(meminfo.display().to_string(), "no MemTotal line");
            0
        }),
        Err(e) => {
            gaps.add(meminfo.display().to_string(), e.to_string());
            0
        }
    };
    let dimm_bytes: u64 = smbios.dimms.iter().filter_map(|d| d.size_bytes).sum();
    let (installed_bytes, installed_source) = if dimm_bytes > 0 {
        (dimm_bytes, Some("smbios"))
    } else {
        match memory_blocks(sys) {
            Some(bytes) => (bytes, Some("memory-blocks")),
            None => (total_bytes, None),
        }
    };
    Memory {
        total_bytes,
        installed_bytes,
        installed_source: installed_source.map(str::to_string),
        dimms: smbios.dimms.clone(),
        empty_slots: smbios.empty_slots,
    }
}

/// `MemTotal:  1024 kB` in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// Online memory blocks × block size (`/sys/devices/system/memory`).
fn memory_blocks(sys: &Path) -> Option<u64> {
    let dir = sys.join("devices/system/memory");
    let size = read::text(&dir.join("block_size_bytes"))
        .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok())?;
    let online = read::names(&dir)
        .iter()
        .filter(|n| n.starts_with("memory"))
        .filter(|n| read::text(&dir.join(n).join("online")).as_deref() == Some("1"))
        .count() as u64;
    (online > 0).then_some(online * size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn installed_from_dimms_else_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
        write(
            &proc.join("meminfo"),
            "MemTotal:        1000 kB\nMemFree: 5 kB\n",
        );
        let mem = sys.join("devices/system/memory");
        write(&mem.join("block_size_bytes"), "8000000\n");
        for (n, online) in [(0, "1"), (1, "1"), (2, "0")] {
            write(&mem.join(format!("memory{n}/online")), online);
        }
        let mut gaps = Gaps::default();
        let m = read(&sys, &proc, &Smbios::default(), &mut gaps);
        assert!(gaps.into_vec().is_empty());
        assert_eq!(m.total_bytes, 1_024_000);
        assert_eq!(m.installed_bytes, 256 << 20);
        assert_eq!(m.installed_source.as_deref(), Some("memory-blocks"));

        let smbios = Smbios {
            dimms: vec![
                Dimm {
                    size_bytes: Some(1 << 30),
                    ..Dimm::default()
                },
                Dimm {
                    size_bytes: None,
                    ..Dimm::default()
                },
                Dimm {
                    size_bytes: Some(1 << 30),
                    ..Dimm::default()
                },
            ],
            empty_slots: 2,
            ..Smbios::default()
        };
        let m = read(&sys, &proc, &smbios, &mut Gaps::default());
        assert_eq!(m.installed_bytes, 2 << 30);
        assert_eq!(m.installed_source.as_deref(), Some("smbios"));
        assert_eq!((m.dimms.len(), m.empty_slots), (3, 2));
    }

    #[test]
    fn missing_meminfo_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut gaps = Gaps::default();
        let m = read(
            &dir.path().join("sys"),
            &dir.path().join("proc"),
            &Smbios::default(),
            &mut gaps,
        );
        assert_eq!(m.total_bytes, 0);
        assert_eq!(gaps.into_vec().len(), 1);
        assert_eq!(mem_total("MemTotal: lots kB"), None);
    }
}
