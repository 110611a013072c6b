//! The A/B disk image: a GPT disk with the partition types of the Discoverable Partitions
//! Specification, written without root or loop devices.
//!
//! | # | GPT name | type | content |
//! |---|---|---|---|
//! | 1 | `ESP` | EFI system | FAT32: systemd-boot, `loader/`, the slot's kernel and initramfs under `shoal/a/` |
//! | 2 | `shoal-root-a` | root (x86-64), read-only | the erofs root image, then its dm-verity superblock and hash tree |
//! | 3 | `shoal-root-b` | root (x86-64), read-only | empty until the first update |
//! | 4 | `shoal-state` | /var | ext4, grown by PID 1 to fill the disk at first boot |
//!
//! The Boot Loader Specification entry of slot A carries the kernel command line with
//! `shoal.slot=a shoal.roothash=... shoal.hashoffset=...`. It has no boot counter: the image as
//! flashed is known good. Every GUID, salt and timestamp derives from the build's inputs, so the
//! same inputs give the same bytes.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoal_gpt::{Guid, PartitionSpec, Table, types};

use crate::cmd;
use crate::error::{Error, Result};
use crate::profile::DiskLayout;
use crate::verity;

const MIB: u64 = 1 << 20;
/// GPT attribute bit 60: read-only (Discoverable Partitions Specification).
const READ_ONLY: u64 = 1 << 60;
/// Partition names, which PID 1 looks for.
pub const ESP_NAME: &str = "ESP";
pub const STATE_NAME: &str = "shoal-state";

pub fn root_name(slot: char) -> String {
    format!("shoal-root-{slot}")
}

/// What went into the disk image, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Virtual size of `disk.raw` / `disk.qcow2` in bytes.
    pub bytes: u64,
    pub disk_guid: String,
    pub partitions: Vec<PartitionInfo>,
    /// Slot A's dm-verity root hash and where its hash area starts.
    pub root_hash: String,
    pub hash_offset: u64,
    /// The Boot Loader Specification entry of slot A, as written on the ESP.
    pub entry: String,
    /// The bootloader: systemd-boot from this Debian package and version.
    pub bootloader: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub name: String,
    pub type_guid: String,
    pub uuid: String,
    pub offset: u64,
    pub size: u64,
}

/// Everything the disk is made of.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub layout: &'a DiskLayout,
    pub vmlinuz: &'a Path,
    /// The initramfs without a root image inside (init and the early modules).
    pub initramfs: &'a Path,
    pub rootfs: &'a Path,
    /// systemd-boot's `systemd-bootx64.efi`, and where it came from.
    pub bootloader: &'a Path,
    pub bootloader_source: String,
    /// The profile's kernel command line.
    pub cmdline: &'a str,
    pub version: &'a str,
    pub epoch: u64,
    /// Distinguishes this image's GUIDs and salt from another's (profile, kernel, epoch).
    pub seed: &'a str,
    pub work: &'a Path,
}

/// 16 bytes derived from the seed and a purpose.
fn derive(seed: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(purpose.as_bytes());
    h.finalize().into()
}

fn guid(seed: &str, purpose: &str) -> Guid {
    let d = derive(seed, purpose);
    Guid::from_seed(d[..16].try_into().expect("16 bytes"))
}

/// Slot A's Boot Loader Specification entry as flashed: generation 0, no boot counter (the
/// image as written is known good).
pub fn entry(version: &str, cmdline: &str, v: &verity::Verity) -> String {
    use shoal_update::entries::{self, Slot};
    entries::entry_text(
        Slot::A,
        version,
        0,
        &entries::slot_options(cmdline, Slot::A, &v.root_hash, v.hash_offset),
    )
}

/// systemd-boot's settings: no menu, no command line editing (the command line carries the root
/// hash), the newest Shoal entry by default.
pub const LOADER_CONF: &str = "timeout 0\neditor no\ndefault shoal-*\n";

fn with_epoch(cmd: &mut Command, epoch: u64) -> &mut Command {
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("MTOOLS_SKIP_CHECK", "1")
}

/// The ESP as a FAT32 image file.
fn esp_image(inputs: &Inputs<'_>, entry_text: &str, seed: &str) -> Result<PathBuf> {
    let esp = inputs.work.join("esp.img");
    let _ = fs::remove_file(&esp);
    let volume_id = hex8(&derive(seed, "esp-volume-id"));
    let kib = inputs.layout.esp_mib * 1024;
    cmd::run(
        with_epoch(&mut Command::new("mkfs.vfat"), inputs.epoch)
            .args([
                "-C",
                "--invariant",
                "-F",
                "32",
                "-n",
                "SHOAL-ESP",
                "-i",
                &volume_id,
            ])
            .arg(&esp)
            .arg(kib.to_string()),
    )?;
    let files = inputs.work.join("esp-files");
    let _ = fs::remove_dir_all(&files);
    fs::create_dir_all(&files).map_err(Error::io("create", &files))?;
    let loader_conf = files.join("loader.conf");
    fs::write(&loader_conf, LOADER_CONF).map_err(Error::io("write", &loader_conf))?;
    let entry = files.join("shoal-a.conf");
    fs::write(&entry, entry_text).map_err(Error::io("write", &entry))?;
    let image = format!("{}", esp.display());
    cmd::run(
        with_epoch(&mut Command::new("mmd"), inputs.epoch)
            .args(["-i", &image])
            .args([
                "::EFI",
                "::EFI/BOOT",
                "::loader",
                "::loader/entries",
                "::shoal",
                "::shoal/a",
            ]),
    )?;
    for (source, dest) in [
        (inputs.bootloader, "::EFI/BOOT/BOOTX64.EFI"),
        (loader_conf.as_path(), "::loader/loader.conf"),
        (entry.as_path(), "::loader/entries/shoal-a.conf"),
        (inputs.vmlinuz, "::shoal/a/vmlinuz"),
        (inputs.initramfs, "::shoal/a/initramfs"),
    ] {
        // Every timestamp comes from SOURCE_DATE_EPOCH (not from the sources' mtimes).
        cmd::run(
            with_epoch(&mut Command::new("mcopy"), inputs.epoch)
                .args(["-i", &image])
                .arg(source)
                .arg(dest),
        )?;
    }
    Ok(esp)
}

fn hex8(bytes: &[u8]) -> String {
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// An empty ext4 filesystem for STATE.
fn state_image(inputs: &Inputs<'_>, seed: &str) -> Result<PathBuf> {
    let state = inputs.work.join("state.img");
    let _ = fs::remove_file(&state);
    let uuid = guid(seed, "state-fs-uuid").to_string();
    let hash_seed = guid(seed, "state-hash-seed").to_string();
    cmd::run(
        with_epoch(&mut Command::new("mkfs.ext4"), inputs.epoch)
            .args(["-q", "-F", "-L", STATE_NAME, "-U", &uuid, "-b", "4096"])
            .arg("-E")
            .arg(format!("root_owner=0:0,hash_seed={hash_seed},nodiscard"))
            .arg(&state)
            .arg(format!("{}M", inputs.layout.state_mib)),
    )?;
    Ok(state)
}

fn copy_into(disk: &File, disk_path: &Path, source: &Path, offset: u64) -> Result<()> {
    let bytes = fs::read(source).map_err(Error::io("read", source))?;
    write_sparse(disk, disk_path, &bytes, offset)
}

/// Writes `bytes` at `offset`, skipping whole zero MiB so the file stays sparse.
fn write_sparse(disk: &File, disk_path: &Path, bytes: &[u8], offset: u64) -> Result<()> {
    for (i, chunk) in bytes.chunks(MIB as usize).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        disk.write_all_at(chunk, offset + i as u64 * MIB)
            .map_err(Error::io("write", disk_path))?;
    }
    Ok(())
}

/// What [`write`] made: the manifest's description, and slot A's bytes (the root image with its
/// hash tree) for an update bundle.
#[derive(Debug)]
pub struct Written {
    pub info: DiskInfo,
    pub slot: Vec<u8>,
}

/// Writes `disk.raw` at `out`.
pub fn write(out: &Path, inputs: &Inputs<'_>) -> Result<Written> {
    let layout = inputs.layout;
    let seed = inputs.seed;
    let invalid = |field: &str, reason: String| Error::ProfileInvalid {
        file: layout.origin.file.clone(),
        field: format!("{}.{field}", layout.origin.field),
        reason,
    };

    // Slot A: the root image and its hash tree.
    let mut slot = fs::read(inputs.rootfs).map_err(Error::io("read", inputs.rootfs))?;
    let uuid: [u8; 16] = derive(seed, "verity-uuid")[..16].try_into().expect("16");
    let v = verity::format(&mut slot, uuid, derive(seed, "verity-salt"));
    if slot.len() as u64 > layout.root_mib * MIB {
        return Err(invalid(
            "root_mib",
            format!(
                "{} MiB: the root image and its hash tree need {:.1} MiB",
                layout.root_mib,
                slot.len() as f64 / MIB as f64
            ),
        ));
    }
    let entry_text = entry(inputs.version, inputs.cmdline, &v);
    let esp = esp_image(inputs, &entry_text, seed)?;
    let state = state_image(inputs, seed)?;

    let specs = [
        (ESP_NAME.to_string(), types::ESP, layout.esp_mib, 0),
        (
            root_name('a'),
            types::ROOT_X86_64,
            layout.root_mib,
            READ_ONLY,
        ),
        (
            root_name('b'),
            types::ROOT_X86_64,
            layout.root_mib,
            READ_ONLY,
        ),
        (STATE_NAME.to_string(), types::VAR, layout.state_mib, 0),
    ];
    let specs: Vec<PartitionSpec> = specs
        .into_iter()
        .map(|(name, type_guid, mib, attributes)| PartitionSpec {
            unique_guid: guid(seed, &format!("partition-{name}")),
            name,
            type_guid,
            size_bytes: Some(mib * MIB),
            attributes,
        })
        .collect();
    // 1 MiB before the first partition, 1 MiB after the last for the backup table.
    let bytes = MIB + specs.iter().filter_map(|s| s.size_bytes).sum::<u64>() + MIB;
    let disk_guid = guid(seed, "disk");
    let table = Table::layout(disk_guid, bytes, &specs)
        .map_err(|e| Error::Invalid(format!("disk layout: {e}")))?;

    let _ = fs::remove_file(out);
    let disk = File::create(out).map_err(Error::io("create", out))?;
    disk.set_len(bytes).map_err(Error::io("size", out))?;
    for (offset, data) in table.to_writes() {
        disk.write_all_at(&data, offset)
            .map_err(Error::io("write", out))?;
    }
    let part = |name: &str| {
        table
            .find_by_name(name)
            .map(|(_, p)| p.offset_bytes())
            .expect("laid out above")
    };
    copy_into(&disk, out, &esp, part(ESP_NAME))?;
    write_sparse(&disk, out, &slot, part(&root_name('a')))?;
    copy_into(&disk, out, &state, part(STATE_NAME))?;
    disk.sync_all().map_err(Error::io("sync", out))?;

    let info = DiskInfo {
        bytes,
        disk_guid: disk_guid.to_string(),
        partitions: table
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                name: p.name.clone(),
                type_guid: p.type_guid.to_string(),
                uuid: p.unique_guid.to_string(),
                offset: p.offset_bytes(),
                size: p.size_bytes(),
            })
            .collect(),
        root_hash: v.root_hash.clone(),
        hash_offset: v.hash_offset,
        entry: entry_text,
        bootloader: inputs.bootloader_source.clone(),
    };
    Ok(Written { info, slot })
}

/// `disk.qcow2` from `disk.raw` (holes stay unallocated).
pub fn qcow2(raw: &Path, out: &Path) -> Result<()> {
    cmd::run(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(out),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_boots_the_slot_through_verity() {
        let v = verity::Verity {
            root_hash: "ab".repeat(32),
            hash_offset: 8192,
            hash_size: 4096,
            salt: [0; 32],
        };
        let e = entry("0.1.0", "console=ttyS0 quiet", &v);
        assert!(
            e.contains("linux /shoal/a/vmlinuz\ninitrd /shoal/a/initramfs\n"),
            "{e}"
        );
        assert!(e.contains("sort-key shoal-99999999\n"), "{e}");
        assert!(
            e.ends_with(&format!(
                "options console=ttyS0 quiet shoal.slot=a shoal.roothash={} shoal.hashoffset=8192\n",
                "ab".repeat(32)
            )),
            "{e}"
        );
        assert!(LOADER_CONF.contains("editor no"));
    }

    #[test]
    fn guids_depend_on_the_seed_and_purpose_only() {
        assert_eq!(guid("s", "disk"), guid("s", "disk"));
        assert_ne!(guid("s", "disk"), guid("t", "disk"));
        assert_ne!(guid("s", "disk"), guid("s", "other"));
    }
}
