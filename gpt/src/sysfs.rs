//! Partitions as the running kernel shows them in sysfs, found by their GPT names (the kernel
//! exports them as `PARTNAME`): Shoal's root slots (`shoal-root-a`, `shoal-root-b`), STATE
//! (`shoal-state`) and the ESP. PID 1 and the updater use this to find the boot disk's
//! partitions.
//!
//! Everything here reads a sysfs tree given as a parameter, so it runs on fixture trees.

use std::fs;
use std::path::Path;

/// The GPT name of the partition mounted on /var.
pub const STATE_NAME: &str = "shoal-state";
/// The GPT name of the EFI system partition in Shoal's disk image.
pub const ESP_NAME: &str = "ESP";

/// A partition as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDev {
    /// Kernel name: `vda2`, `nvme0n1p2`.
    pub name: String,
    /// `major:minor`.
    pub dev: String,
    /// The whole disk it is on: `vda`, `nvme0n1`.
    pub disk: String,
    /// Partition number (1-based, the GPT entry index + 1).
    pub number: u32,
    /// Start and size in 512-byte sectors.
    pub start: u64,
    pub sectors: u64,
}

fn uevent_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Every partition whose GPT name is `partname`, sorted by kernel name.
pub fn find_partitions(sys: &Path, partname: &str) -> Vec<PartitionDev> {
    let class = sys.join("class/block");
    let Ok(entries) = fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut found: Vec<PartitionDev> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let dir = e.path();
            let uevent = fs::read_to_string(dir.join("uevent")).ok()?;
            if uevent_field(&uevent, "DEVTYPE").as_deref() != Some("partition")
                || uevent_field(&uevent, "PARTNAME").as_deref() != Some(partname)
            {
                return None;
            }
            // The class entry links to .../block/<disk>/<partition>.
            let target = fs::read_link(&dir).ok()?;
            let mut parts = target.iter().rev();
            let name = parts.next()?.to_str()?.to_string();
            let disk = parts.next()?.to_str()?.to_string();
            Some(PartitionDev {
                dev: read_trimmed(&dir.join("dev"))?,
                number: read_trimmed(&dir.join("partition"))?.parse().ok()?,
                start: read_trimmed(&dir.join("start"))?.parse().ok()?,
                sectors: read_trimmed(&dir.join("size"))?.parse().ok()?,
                name,
                disk,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The one partition named `partname`, on `disk` when given. Several on one disk, or several
/// on different disks with no disk given, is an error naming them: which one is meant cannot be
/// guessed safely.
pub fn find_one(sys: &Path, partname: &str, disk: Option<&str>) -> Result<PartitionDev, String> {
    let mut all = find_partitions(sys, partname);
    if let Some(disk) = disk {
        all.retain(|p| p.disk == disk);
    }
    match all.len() {
        0 => Err(match disk {
            Some(d) => format!("no partition named {partname} on {d}"),
            None => format!("no partition named {partname}"),
        }),
        1 => Ok(all.remove(0)),
        _ => Err(format!(
            "{} partitions are named {partname} ({}): detach or wipe the disks that are not meant to boot",
            all.len(),
            all.iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The size of a whole disk in 512-byte sectors.
pub fn disk_sectors(sys: &Path, disk: &str) -> Option<u64> {
    read_trimmed(&sys.join("class/block").join(disk).join("size"))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Adds a disk and its partitions (name, GPT name, start, sectors) to a fixture sysfs.
    fn add_disk(
        sys: &Path,
        disk: &str,
        sectors: u64,
        major: u32,
        parts: &[(&str, &str, u64, u64)],
    ) {
        let dev = sys
            .join("devices/pci0000:00/0000:00:04.0/virtio2/block")
            .join(disk);
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("size"), format!("{sectors}\n")).unwrap();
        fs::write(
            dev.join("uevent"),
            format!("DEVTYPE=disk\nDEVNAME={disk}\n"),
        )
        .unwrap();
        let class = sys.join("class/block");
        fs::create_dir_all(&class).unwrap();
        symlink(
            format!("../../devices/pci0000:00/0000:00:04.0/virtio2/block/{disk}"),
            class.join(disk),
        )
        .unwrap();
        for (i, (name, partname, start, size)) in parts.iter().enumerate() {
            let p = dev.join(name);
            fs::create_dir_all(&p).unwrap();
            fs::write(
                p.join("uevent"),
                format!(
                    "MAJOR={major}\nMINOR={}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={}\nPARTNAME={partname}\n",
                    i + 1,
                    i + 1
                ),
            )
            .unwrap();
            fs::write(p.join("dev"), format!("{major}:{}\n", i + 1)).unwrap();
            fs::write(p.join("partition"), format!("{}\n", i + 1)).unwrap();
            fs::write(p.join("start"), format!("{start}\n")).unwrap();
            fs::write(p.join("size"), format!("{size}\n")).unwrap();
            symlink(
                format!("../../devices/pci0000:00/0000:00:04.0/virtio2/block/{disk}/{name}"),
                class.join(name),
            )
            .unwrap();
        }
    }

    fn layout(sys: &Path, disk: &str, major: u32) {
        add_disk(
            sys,
            disk,
            2_097_152,
            major,
            &[
                (&format!("{disk}1"), "ESP", 2048, 131_072),
                (&format!("{disk}2"), "shoal-root-a", 133_120, 262_144),
                (&format!("{disk}3"), "shoal-root-b", 395_264, 262_144),
                (&format!("{disk}4"), STATE_NAME, 657_408, 65_536),
            ],
        );
    }

    #[test]
    fn finds_partitions_by_gpt_name() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        layout(sys, "vda", 253);
        let root = find_one(sys, "shoal-root-b", None).unwrap();
        assert_eq!(
            root,
            PartitionDev {
                name: "vda3".into(),
                dev: "253:3".into(),
                disk: "vda".into(),
                number: 3,
                start: 395_264,
                sectors: 262_144,
            }
        );
        assert_eq!(disk_sectors(sys, "vda"), Some(2_097_152));
        assert_eq!(find_one(sys, STATE_NAME, Some("vda")).unwrap().name, "vda4");
        assert!(
            find_one(sys, "shoal-root-c", None)
                .unwrap_err()
                .contains("no partition named shoal-root-c")
        );
    }

    #[test]
    fn two_disks_with_the_same_names_are_told_apart_by_disk_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        layout(sys, "vda", 253);
        layout(sys, "vdb", 254);
        let err = find_one(sys, "shoal-root-a", None).unwrap_err();
        assert!(
            err.contains("2 partitions are named shoal-root-a (vda2, vdb2)"),
            "{err}"
        );
        assert_eq!(find_one(sys, STATE_NAME, Some("vdb")).unwrap().dev, "254:4");
        assert!(find_one(sys, STATE_NAME, Some("sda")).is_err());
    }

    #[test]
    fn no_sysfs_means_no_partitions() {
        assert!(find_partitions(Path::new("/nonexistent"), "x").is_empty());
    }
}
