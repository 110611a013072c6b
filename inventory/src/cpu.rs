//! Compute: CPU identity (`/proc/cpuinfo`), topology and NUMA nodes (`/sys/devices/system`),
//! frequencies (cpufreq, else SMBIOS type 4).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::smbios::Smbios;
use crate::{Gaps, read};

/// The CPU flags worth selecting on; the full list is in `/proc/cpuinfo` for whoever needs it.
pub const KEY_FLAGS: [&str; 20] = [
    "lm",
    "nx",
    "vmx",
    "svm",
    "hypervisor",
    "aes",
    "sha_ni",
    "pclmulqdq",
    "rdrand",
    "rdseed",
    "sse4_2",
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "pdpe1gb",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NumaNode {
    pub id: u32,
    /// The node's CPUs, as the kernel lists them (`0-3,8-11`).
    pub cpus: String,
    /// Memory the node has: its online memory blocks (what the firmware gave it, in
    /// memory-block granularity).
    pub memory_bytes: u64,
    /// What the kernel can use of it (`MemTotal` of the node).
    pub usable_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// `GenuineIntel`, `AuthenticAMD`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stepping: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub microcode: Option<String>,
    pub sockets: u32,
    /// Physical cores, all sockets together.
    pub cores: u32,
    /// Logical CPUs (hardware threads) online.
    pub threads: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_mhz: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_mhz: Option<u32>,
    /// Where the frequencies came from: `cpufreq` or `smbios`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_source: Option<String>,
    /// The [`KEY_FLAGS`] this CPU has.
    pub flags: Vec<String>,
    pub numa: Vec<NumaNode>,
}

/// One `processor` block of `/proc/cpuinfo`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CpuinfoEntry {
    pub processor: u32,
    pub fields: BTreeMap<String, String>,
}

impl CpuinfoEntry {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// Parses `/proc/cpuinfo` (x86 layout: blank-line separated blocks of `key\t: value`).
pub fn parse_cpuinfo(text: &str) -> Vec<CpuinfoEntry> {
    let mut out = Vec::new();
    let mut current: Option<CpuinfoEntry> = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            out.extend(current.take());
            current = value.parse().ok().map(|processor| CpuinfoEntry {
                processor,
                fields: BTreeMap::new(),
            });
        } else if let Some(entry) = current.as_mut() {
            entry.fields.insert(key.to_string(), value.to_string());
        }
    }
    out.extend(current);
    out
}

pub fn read(sys: &Path, proc: &Path, smbios: &Smbios, gaps: &mut Gaps) -> Cpu {
    let cpuinfo = match std::fs::read_to_string(proc.join("cpuinfo")) {
        Ok(text) => parse_cpuinfo(&text),
        Err(e) => {
            gaps.add(proc.join("cpuinfo").display().to_string(), e.to_string());
            Vec::new()
        }
    };
    let first = cpuinfo.first().cloned().unwrap_or_default();
    let cpu_dir = sys.join("devices/system/cpu");
    let online = read::text(&cpu_dir.join("online")).and_then(|t| read::parse_cpu_list(&t));

    // Topology: (package, die, core) per online CPU; sysfs first, cpuinfo otherwise.
    let mut packages = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut threads = 0u32;
    match &online {
        Some(list) => {
            for cpu in list {
                let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
                let package = read::signed(&topo.join("physical_package_id"));
                let die = read::signed(&topo.join("die_id")).unwrap_or(0);
                let core = read::signed(&topo.join("core_id"));
                threads += 1;
                if let (Some(p), Some(c)) = (package, core) {
                    packages.insert(p);
                    cores.insert((p, die, c));
                }
            }
            if cores.is_empty() && threads > 0 {
                gaps.add(
                    cpu_dir.display().to_string(),
                    "no topology files; cores and sockets from /proc/cpuinfo",
                );
            }
        }
        None => gaps.add(
            cpu_dir.join("online").display().to_string(),
            "unreadable; CPUs counted from /proc/cpuinfo",
        ),
    }
    if cores.is_empty() {
        threads = cpuinfo.len() as u32;
        for entry in &cpuinfo {
            let package = entry.get("physical id").and_then(|v| v.parse().ok());
            let core = entry.get("core id").and_then(|v| v.parse().ok());
            if let (Some(p), Some(c)) = (package, core) {
                packages.insert(p);
                cores.insert((p, 0, c));
            }
        }
    }
    let (sockets, cores) = if cores.is_empty() {
        // Nothing says how threads pair up: count each as a core of one socket.
        (u32::from(threads > 0), threads)
    } else {
        (packages.len() as u32, cores.len() as u32)
    };

    // Frequencies.
    let freq = cpu_dir.join("cpu0/cpufreq");
    let khz_to_mhz = |name: &str| read::number(&freq.join(name)).map(|khz| (khz / 1000) as u32);
    let (mut base_mhz, mut max_mhz, mut source) = (
        khz_to_mhz("base_frequency"),
        khz_to_mhz("cpuinfo_max_freq"),
        None,
    );
    if base_mhz.is_some() || max_mhz.is_some() {
        source = Some("cpufreq".to_string());
    } else if let Some(p) = smbios
        .processors
        .iter()
        .find(|p| p.populated || p.max_mhz.is_some())
    {
        base_mhz = p.current_mhz;
        max_mhz = p.max_mhz;
        source = (base_mhz.is_some() || max_mhz.is_some()).then(|| "smbios".to_string());
    }

    let all_flags: BTreeSet<&str> = first
        .get("flags")
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let flags = KEY_FLAGS
        .iter()
        .filter(|f| all_flags.contains(*f))
        .map(|f| f.to_string())
        .collect();

    Cpu {
        vendor: first.get("vendor_id").map(str::to_string),
        model: first.get("model name").map(str::to_string),
        family_id: first.get("cpu family").and_then(|v| v.parse().ok()),
        model_id: first.get("model").and_then(|v| v.parse().ok()),
        stepping: first.get("stepping").and_then(|v| v.parse().ok()),
        microcode: first.get("microcode").map(str::to_string),
        sockets,
        cores,
        threads,
        base_mhz,
        max_mhz,
        frequency_source: source,
        flags,
        numa: read_numa(sys, gaps),
    }
}

/// The NUMA nodes under `sys/devices/system/node`, with their CPUs and memory.
pub fn read_numa(sys: &Path, gaps: &mut Gaps) -> Vec<NumaNode> {
    let dir = sys.join("devices/system/node");
    let block_size = read::text(&sys.join("devices/system/memory/block_size_bytes"))
        .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
    let mut nodes = Vec::new();
    for name in read::names(&dir) {
        let Some(id) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let node = dir.join(&name);
        let cpus = read::text(&node.join("cpulist"))
            .and_then(|t| read::parse_cpu_list(&t))
            .map(|c| read::format_cpu_list(&c))
            .unwrap_or_default();
        let usable_bytes = std::fs::read_to_string(node.join("meminfo"))
            .ok()
            .and_then(|m| node_mem_total(&m))
            .unwrap_or(0);
        let blocks = read::names(&node)
            .iter()
            .filter(|n| {
                n.strip_prefix("memory").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                })
            })
            .filter(|n| read::text(&node.join(n).join("online")).as_deref() != Some("0"))
            .count() as u64;
        let memory_bytes = match block_size {
            Some(size) if blocks > 0 => blocks * size,
            _ => usable_bytes,
        };
        nodes.push(NumaNode {
            id,
            cpus,
            memory_bytes,
            usable_bytes,
        });
    }
    if nodes.is_empty() {
        gaps.add(
            dir.display().to_string(),
            "no NUMA nodes listed (a kernel without NUMA)",
        );
    } else if block_size.is_none() {
        gaps.add(
            "memory blocks",
            "no block_size_bytes: node memory is what the kernel can use",
        );
    }
    nodes
}

/// `Node 0 MemTotal:  1024 kB` in a node's meminfo, in bytes.
fn node_mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.split_once("MemTotal:")?.1;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\nstepping\t: 7\nmicrocode\t: 0x5003604\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu lm nx vmx aes avx avx2 avx512f sse4_2 rdrand\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 2\nphysical id\t: 1\ncore id\t\t: 4\n\n";

    fn write(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn parses_cpuinfo_blocks() {
        let entries = parse_cpuinfo(CPUINFO);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].processor, 2);
        assert_eq!(entries[0].get("microcode"), Some("0x5003604"));
        assert!(parse_cpuinfo("garbage\nmore: x\nprocessor : nan\n").is_empty());
    }

    #[test]
    fn topology_from_sysfs_and_frequencies_from_smbios() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
        write(&proc.join("cpuinfo"), CPUINFO);
        let cpu = sys.join("devices/system/cpu");
        write(&cpu.join("online"), "0-3\n");
        // 2 sockets x 1 core x 2 threads.
        for (n, package, core) in [(0, 0, 0), (1, 0, 0), (2, 1, 0), (3, 1, 0)] {
            write(
                &cpu.join(format!("cpu{n}/topology/physical_package_id")),
                &format!("{package}\n"),
            );
            write(
                &cpu.join(format!("cpu{n}/topology/core_id")),
                &format!("{core}\n"),
            );
        }
        let smbios = Smbios {
            processors: vec![crate::smbios::Processor {
                max_mhz: Some(2000),
                current_mhz: Some(2000),
                populated: true,
                ..Default::default()
            }],
            ..Smbios::default()
        };
        let mut gaps = Gaps::default();
        let c = read(&sys, &proc, &smbios, &mut gaps);
        assert_eq!((c.sockets, c.cores, c.threads), (2, 2, 4));
        assert_eq!(c.vendor.as_deref(), Some("GenuineIntel"));
        assert_eq!(
            (c.family_id, c.model_id, c.stepping),
            (Some(6), Some(85), Some(7))
        );
        assert_eq!(
            c.flags,
            [
                "lm", "nx", "vmx", "aes", "rdrand", "sse4_2", "avx", "avx2", "avx512f"
            ]
        );
        assert_eq!(c.frequency_source.as_deref(), Some("smbios"));
        assert_eq!((c.base_mhz, c.max_mhz), (Some(2000), Some(2000)));
        // No NUMA directory: a gap, not a failure.
        assert!(gaps.into_vec().iter().any(|g| g.reason.contains("NUMA")));

        // cpufreq wins over SMBIOS.
        write(&cpu.join("cpu0/cpufreq/cpuinfo_max_freq"), "3900000\n");
        write(&cpu.join("cpu0/cpufreq/base_frequency"), "2100000\n");
        let c = read(&sys, &proc, &smbios, &mut Gaps::default());
        assert_eq!((c.base_mhz, c.max_mhz), (Some(2100), Some(3900)));
        assert_eq!(c.frequency_source.as_deref(), Some("cpufreq"));
    }

    #[test]
    fn topology_falls_back_to_cpuinfo() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, proc) = (dir.path().join("sys"), dir.path().join("proc"));
        write(&proc.join("cpuinfo"), CPUINFO);
        let mut gaps = Gaps::default();
        let c = read(&sys, &proc, &Smbios::default(), &mut gaps);
        assert_eq!((c.sockets, c.cores, c.threads), (2, 2, 3));
        assert_eq!(c.frequency_source, None);
        assert!(gaps.into_vec().iter().any(|g| g.source.ends_with("online")));
        // Nothing at all: zeros and gaps.
        let empty = tempfile::tempdir().unwrap();
        let mut gaps = Gaps::default();
        let c = read(
            &empty.path().join("sys"),
            &empty.path().join("proc"),
            &Smbios::default(),
            &mut gaps,
        );
        assert_eq!((c.sockets, c.cores, c.threads), (0, 0, 0));
        assert!(gaps.into_vec().len() >= 2);
    }

    #[test]
    fn numa_nodes_with_memory_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        write(
            &sys.join("devices/system/memory/block_size_bytes"),
            "8000000\n",
        );
        let node = sys.join("devices/system/node");
        write(&node.join("node0/cpulist"), "0-1\n");
        write(
            &node.join("node0/meminfo"),
            "Node 0 MemTotal:        200000 kB\nNode 0 MemFree: 1 kB\n",
        );
        write(&node.join("node0/memory0/online"), "1\n");
        write(&node.join("node0/memory1/online"), "1\n");
        write(&node.join("node1/cpulist"), "2-3\n");
        write(
            &node.join("node1/meminfo"),
            "Node 1 MemTotal:        262144 kB\n",
        );
        write(&node.join("node1/memory2/online"), "1\n");
        write(&node.join("node1/memory3/online"), "0\n");
        write(&node.join("node1/memory_failure/x"), "\n");
        write(&node.join("possible"), "0-1\n");
        let mut gaps = Gaps::default();
        let nodes = read_numa(&sys, &mut gaps);
        assert!(gaps.into_vec().is_empty());
        assert_eq!(
            nodes,
            [
                NumaNode {
                    id: 0,
                    cpus: "0-1".into(),
                    memory_bytes: 256 << 20,
                    usable_bytes: 200000 * 1024
                },
                NumaNode {
                    id: 1,
                    cpus: "2-3".into(),
                    memory_bytes: 128 << 20,
                    usable_bytes: 256 << 20
                },
            ]
        );
    }
}
