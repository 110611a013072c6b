//! `shoalctl inventory`: a node's hardware inventory, from the cluster (`inventory NODE`) or
//! collected on this machine (`inventory` alone, or `--root DIR` for a captured tree), as
//! tables (default), JSON or YAML.

use std::fmt::Write;

use shoal_inventory::{Inventory, human_bytes};

use crate::table::{or_dash, render};

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |v| v.to_string())
}

/// A titled block, indented; a list with nothing under its header row is left out.
fn section(out: &mut String, title: &str, rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "{title}");
    for line in render(&rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.push('\n');
}

fn pairs(items: &[(&str, String)]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|(k, v)| vec![format!("{k}:"), v.clone()])
        .collect()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// [`section`] for a list whose first row is its header.
fn list(out: &mut String, title: &str, rows: Vec<Vec<String>>) {
    if rows.len() > 1 {
        section(out, title, rows);
    }
}

/// The human view: system, CPU, NUMA, memory, disks, NVMe controllers, NICs, accelerators,
/// PCI devices, labels, and what could not be read.
pub fn table(inv: &Inventory) -> String {
    let mut out = String::new();
    let s = &inv.system;
    let mut system = vec![
        ("vendor", opt(&s.identity.vendor)),
        ("product", opt(&s.identity.product)),
        ("serial", opt(&s.identity.serial)),
        ("uuid", opt(&s.identity.uuid)),
    ];
    if let Some(b) = &s.board {
        system.push((
            "board",
            format!(
                "{} {} (serial {})",
                opt(&b.vendor),
                opt(&b.product),
                opt(&b.serial)
            ),
        ));
    }
    if let Some(c) = &s.chassis {
        system.push((
            "chassis",
            format!(
                "{} {} (serial {})",
                opt(&c.vendor),
                opt(&c.kind),
                opt(&c.serial)
            ),
        ));
    }
    let fw = &s.firmware;
    system.push((
        "firmware",
        format!(
            "{} {} {} ({})",
            opt(&fw.vendor),
            opt(&fw.version),
            opt(&fw.date),
            match fw.boot_mode {
                shoal_inventory::system::BootMode::Uefi => "UEFI",
                shoal_inventory::system::BootMode::Bios => "BIOS",
            }
        ),
    ));
    system.push((
        "secure boot",
        fw.secure_boot
            .map_or("-".into(), |b| if b { "on" } else { "off" }.to_string()),
    ));
    system.push((
        "hypervisor",
        match (&s.hypervisor, s.is_virtual) {
            (Some(h), _) => h.clone(),
            (None, true) => "yes (unnamed)".into(),
            (None, false) => "none (bare metal)".into(),
        },
    ));
    system.push((
        "tpm",
        s.tpm.as_ref().map_or("none".into(), |t| {
            format!("{} (TPM {})", t.device, opt(&t.version))
        }),
    ));
    section(&mut out, "SYSTEM", pairs(&system));

    let c = &inv.cpu;
    let freq = match (c.base_mhz, c.max_mhz) {
        (None, None) => "-".into(),
        (b, m) => format!(
            "{} / {} MHz ({})",
            opt(&b),
            opt(&m),
            opt(&c.frequency_source)
        ),
    };
    section(
        &mut out,
        "CPU",
        pairs(&[
            ("model", format!("{} ({})", opt(&c.model), opt(&c.vendor))),
            (
                "topology",
                format!(
                    "{} sockets, {} cores, {} threads",
                    c.sockets, c.cores, c.threads
                ),
            ),
            ("base / max", freq),
            ("microcode", opt(&c.microcode)),
            ("flags", or_dash(&c.flags.join(" "))),
        ]),
    );
    let mut numa = vec![row(&["NODE", "CPUS", "MEMORY", "USABLE"])];
    for n in &c.numa {
        numa.push(vec![
            n.id.to_string(),
            or_dash(&n.cpus),
            human_bytes(n.memory_bytes),
            human_bytes(n.usable_bytes),
        ]);
    }
    list(&mut out, "NUMA", numa);

    let m = &inv.memory;
    section(
        &mut out,
        "MEMORY",
        pairs(&[
            (
                "installed",
                format!(
                    "{} ({})",
                    human_bytes(m.installed_bytes),
                    opt(&m.installed_source)
                ),
            ),
            ("usable", human_bytes(m.total_bytes)),
            (
                "slots",
                format!("{} used, {} empty", m.dimms.len(), m.empty_slots),
            ),
        ]),
    );
    let mut dimms = vec![row(&[
        "SLOT",
        "SIZE",
        "TYPE",
        "SPEED",
        "MANUFACTURER",
        "PART",
        "SERIAL",
    ])];
    for d in &m.dimms {
        dimms.push(vec![
            opt(&d.slot),
            d.size_bytes.map_or("-".into(), human_bytes),
            opt(&d.kind),
            d.speed_mts.map_or("-".into(), |s| format!("{s} MT/s")),
            opt(&d.manufacturer),
            opt(&d.part_number),
            opt(&d.serial),
        ]);
    }
    list(&mut out, "DIMMS", dimms);

    let mut disks = vec![row(&[
        "NAME",
        "SIZE",
        "TRANSPORT",
        "MODEL",
        "SERIAL",
        "SECTOR",
        "TYPE",
        "CONTENT",
    ])];
    for d in &inv.storage.disks {
        let content = match (&d.partition_table, &d.filesystem) {
            (Some(t), _) => format!(
                "{t}: {}",
                d.partitions
                    .iter()
                    .map(|p| format!(
                        "{}{}",
                        p.name,
                        p.filesystem
                            .as_ref()
                            .map_or(String::new(), |f| format!(" {}", f.kind))
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, Some(f)) => format!(
                "{}{}",
                f.kind,
                f.label
                    .as_ref()
                    .map_or(String::new(), |l| format!(" ({l})"))
            ),
            (None, None) => "-".into(),
        };
        disks.push(vec![
            d.name.clone(),
            human_bytes(d.size_bytes),
            d.transport.as_str().into(),
            opt(&d.model),
            opt(&d.serial),
            format!("{}/{}", d.logical_sector_bytes, d.physical_sector_bytes),
            if d.rotational { "hdd" } else { "ssd" }.into(),
            content,
        ]);
    }
    list(&mut out, "DISKS", disks);
    let mut nvme = vec![row(&[
        "CONTROLLER",
        "MODEL",
        "SERIAL",
        "FIRMWARE",
        "ADDRESS",
        "NAMESPACES",
    ])];
    for n in &inv.storage.nvme_controllers {
        nvme.push(vec![
            n.name.clone(),
            opt(&n.model),
            opt(&n.serial),
            opt(&n.firmware),
            opt(&n.address),
            or_dash(&n.namespaces.join(",")),
        ]);
    }
    list(&mut out, "NVME", nvme);

    let mut nics = vec![row(&[
        "NAME", "MAC", "DRIVER", "PCI", "LINK", "SPEED", "MTU", "SR-IOV",
    ])];
    for n in &inv.network {
        nics.push(vec![
            n.name.clone(),
            opt(&n.permanent_mac.clone().or(n.mac.clone())),
            opt(&n.driver),
            opt(&n.pci),
            match n.carrier {
                Some(true) => "up".into(),
                Some(false) => "no carrier".into(),
                None => opt(&n.operstate),
            },
            n.speed_mbps
                .map_or("-".into(), |s| {
                    format!("{s} Mb/s {}", n.duplex.as_deref().unwrap_or(""))
                })
                .trim()
                .to_string(),
            opt(&n.mtu),
            n.sriov_total_vfs.map_or("-".into(), |v| format!("{v} VFs")),
        ]);
    }
    list(&mut out, "NETWORK", nics);

    let mut acc = vec![row(&["KIND", "ADDRESS", "VENDOR", "NAME", "DRIVER"])];
    for a in &inv.accelerators {
        acc.push(vec![
            format!("{:?}", a.kind).to_lowercase(),
            a.address.clone(),
            a.vendor.clone(),
            opt(&a.name),
            opt(&a.driver),
        ]);
    }
    list(&mut out, "ACCELERATORS", acc);

    let mut pci = vec![row(&[
        "ADDRESS", "ID", "CLASS", "VENDOR", "DEVICE", "DRIVER",
    ])];
    for d in &inv.pci {
        pci.push(vec![
            d.address.clone(),
            format!("{}:{}", d.vendor_id, d.device_id),
            d.class.clone().unwrap_or_else(|| d.class_id.clone()),
            opt(&d.vendor),
            opt(&d.device),
            opt(&d.driver),
        ]);
    }
    list(&mut out, "PCI", pci);

    let labels: Vec<String> = inv
        .labels
        .iter()
        .map(|(k, v)| {
            if v == "true" {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    let _ = writeln!(out, "LABELS\n  {}\n", or_dash(&labels.join(" ")));
    if !inv.gaps.is_empty() {
        let _ = writeln!(out, "NOT READ");
        for g in &inv.gaps {
            let _ = writeln!(out, "  {}: {}", g.source, g.reason);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "collected in {:.1} ms", inv.collect_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section_it_has_and_skips_empty_ones() {
        let mut inv = Inventory::default();
        inv.cpu.threads = 4;
        inv.cpu.model = Some("Xeon".into());
        inv.labels.insert("disk.nvme".into(), "true".into());
        inv.labels.insert("cpu.cores".into(), "4".into());
        inv.gaps.push(shoal_inventory::Gap {
            source: "smbios".into(),
            reason: "none".into(),
        });
        inv.storage.disks.push(shoal_inventory::storage::Disk {
            name: "nvme0n1".into(),
            size_bytes: 1 << 30,
            serial: Some("NVME-SERIAL-1".into()),
            transport: shoal_inventory::storage::Transport::Nvme,
            ..Default::default()
        });
        let text = table(&inv);
        assert!(text.contains("SYSTEM\n"), "{text}");
        assert!(text.contains("Xeon"));
        assert!(text.contains("nvme0n1  1 GiB  nvme"), "{text}");
        assert!(text.contains("NVME-SERIAL-1"));
        assert!(text.contains("cpu.cores=4 disk.nvme"), "{text}");
        assert!(text.contains("NOT READ\n  smbios: none"));
        assert!(!text.contains("DIMMS"), "no DIMMs, no section: {text}");
        assert!(!text.contains("ACCELERATORS"));
    }
}
