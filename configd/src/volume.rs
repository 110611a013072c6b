//! Small read-only volumes configd reads documents from (NoCloud's CIDATA, the ESP): found by
//! filesystem label with the hardware inventory's probe (pure over a sysfs and a `/dev` root),
//! mounted read-only only for the moment it takes to read them.

use std::path::Path;

/// A labelled filesystem: the block device and its filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub device: String,
    pub fstype: String,
}

/// The first device (whole disk or partition, in name order) whose filesystem is one of
/// `kinds` and is labelled `label` (in any case).
pub fn find_labelled(sys: &Path, dev: &Path, label: &str, kinds: &[&str]) -> Option<Volume> {
    let mut gaps = shoal_inventory::Gaps::default();
    let storage = shoal_inventory::storage::read(sys, dev, &mut gaps);
    let labelled = |name: &str, fs: Option<&shoal_inventory::fs_probe::Filesystem>| {
        let fs = fs?;
        let ok = fs
            .label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(label))
            && kinds.contains(&fs.kind.as_str());
        ok.then(|| Volume {
            device: name.to_string(),
            fstype: fs.kind.clone(),
        })
    };
    storage.disks.iter().find_map(|d| {
        labelled(&d.name, d.filesystem.as_ref()).or_else(|| {
            d.partitions
                .iter()
                .find_map(|p| labelled(&p.name, p.filesystem.as_ref()))
        })
    })
}

/// Mounts `volume` read-only (no devices, no programs) on `mount_dir`, runs `read` on it with
/// the device's path for messages, and unmounts it.
pub fn with_mounted<T>(
    dev: &Path,
    volume: &Volume,
    mount_dir: &Path,
    read: impl FnOnce(&Path, &str) -> Result<T, String>,
) -> Result<T, String> {
    use nix::mount::{MsFlags, mount, umount};
    let device = dev.join(&volume.device);
    let origin = device.display().to_string();
    std::fs::create_dir_all(mount_dir).map_err(|e| format!("{}: {e}", mount_dir.display()))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some(&device),
        mount_dir,
        Some(volume.fstype.as_str()),
        flags,
        None::<&str>,
    )
    .map_err(|e| format!("mounting {origin} ({}): {e}", volume.fstype))?;
    let result = read(mount_dir, &origin);
    if let Err(e) = umount(mount_dir) {
        tracing::warn!("unmounting {}: {e}", mount_dir.display());
    }
    result
}
