//! `manifest.json`: what an output directory holds and what it was built from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the manifest in an output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest of one built image. Readers should ignore fields they do not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Profile name.
    pub profile: String,
    /// Version of Shoal (the workspace version) that built the image.
    pub shoal_version: String,
    /// The kernel.
    pub kernel: KernelInfo,
    /// The kernel command line (boot.ipxe appends `initrd=initramfs`).
    pub cmdline: String,
    /// The timestamp of every file in the images.
    pub source_date_epoch: u64,
    /// Root image format and compression, such as `erofs` and `lz4hc:12`.
    pub rootfs: RootfsInfo,
    /// Initramfs compression, such as `none` or `zstd:19`.
    pub initramfs_compression: String,
    /// How many modules each set holds.
    pub modules: ModuleCounts,
    /// The binaries in the images, sorted by package and name.
    pub binaries: Vec<BinaryInfo>,
    /// The files taken from Debian packages (`[[package_file]]`), in profile order. Absent in
    /// manifests written before there were any.
    #[serde(default)]
    pub package_files: Vec<PackageFileInfo>,
    /// The A/B disk image, when the profile has a `[disk]` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::disk::DiskInfo>,
    /// The signed `update.bundle`, when the build had a signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateInfo>,
    /// The artefacts in the output directory (everything but the manifest), sorted by name.
    pub artefacts: Vec<Artefact>,
}

/// The update bundle: the version it installs and the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateInfo {
    pub version: String,
    pub key: String,
}

/// The kernel package the image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// The package the profile named (maybe the `linux-image-amd64` metapackage).
    pub requested_package: String,
    /// The versioned package, such as `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// Its Debian version, such as `6.1.192-2`.
    pub version: String,
    /// The kernel release (`uname -r`, the `/lib/modules` directory name).
    pub release: String,
    /// sha256 of the downloaded `.deb`.
    pub deb_sha256: String,
}

/// The root image's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsInfo {
    /// Filesystem type, as `shoal.rootfstype=` takes it.
    #[serde(rename = "type")]
    pub fs_type: String,
    /// Compression.
    pub compression: String,
    /// Largest compressed cluster in bytes, if not one block.
    pub pcluster_size: Option<u32>,
    /// Filesystem UUID.
    pub uuid: String,
}

/// Module counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleCounts {
    /// Modules in the initramfs.
    pub early: usize,
    /// Modules in the root image (the early ones included).
    pub full: usize,
}

/// A binary and where it is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryInfo {
    /// Cargo package.
    pub package: String,
    /// Binary name.
    pub bin: String,
    /// Paths in the images (`/init` is in the initramfs, the others in the root image).
    pub paths: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256.
    pub sha256: String,
}

/// A file taken from a Debian package into the root image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFileInfo {
    /// The Debian package, such as `pci.ids`.
    pub package: String,
    /// Its Debian version.
    pub version: String,
    /// sha256 of the package's `.deb`.
    pub deb_sha256: String,
    /// The file's path in the package and in the root image.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 of the file.
    pub sha256: String,
}

/// One file of the output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artefact {
    /// File name in the output directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256.
    pub sha256: String,
}

impl Manifest {
    /// Reads `manifest.json` from an output directory (or the file itself).
    pub fn load(path: &Path) -> Result<Manifest> {
        let file = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(Error::io("read", &file))?;
        serde_json::from_str(&text).map_err(|e| Error::Io {
            action: "parse".into(),
            path: file,
            cause: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// The artefact called `name`, if any.
    pub fn artefact(&self, name: &str) -> Option<&Artefact> {
        self.artefacts.iter().find(|a| a.name == name)
    }

    /// The manifest as pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let manifest = Manifest {
            profile: "default".into(),
            shoal_version: "0.1.0".into(),
            kernel: KernelInfo {
                requested_package: "linux-image-amd64".into(),
                package: "linux-image-6.1.0-56-amd64".into(),
                version: "6.1.192-2".into(),
                release: "6.1.0-56-amd64".into(),
                deb_sha256: "00".into(),
            },
            cmdline: "console=ttyS0".into(),
            source_date_epoch: 1,
            rootfs: RootfsInfo {
                fs_type: "erofs".into(),
                compression: "lz4hc:12".into(),
                pcluster_size: None,
                uuid: "u".into(),
            },
            initramfs_compression: "none".into(),
            modules: ModuleCounts { early: 1, full: 2 },
            binaries: vec![],
            package_files: vec![PackageFileInfo {
                package: "pci.ids".into(),
                version: "0.0~2023.04.11-1".into(),
                deb_sha256: "d0".into(),
                path: "/usr/share/misc/pci.ids".into(),
                size: 5,
                sha256: "e0".into(),
            }],
            disk: Some(crate::disk::DiskInfo {
                bytes: 3 << 20,
                disk_guid: "g".into(),
                partitions: vec![crate::disk::PartitionInfo {
                    name: "shoal-state".into(),
                    type_guid: "t".into(),
                    uuid: "u".into(),
                    offset: 1 << 20,
                    size: 1 << 20,
                }],
                root_hash: "ab".into(),
                hash_offset: 4096,
                entry: "title x\n".into(),
                bootloader: "systemd-boot-efi 1".into(),
            }),
            update: Some(UpdateInfo {
                version: "0.1.0".into(),
                key: "ed25519:k".into(),
            }),
            artefacts: vec![Artefact {
                name: "vmlinuz".into(),
                size: 3,
                sha256: "ab".into(),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_json()).unwrap();
        let loaded = Manifest::load(dir.path()).unwrap();
        assert_eq!(loaded, manifest);
        assert_eq!(loaded.artefact("vmlinuz").unwrap().size, 3);
        assert!(manifest.to_json().contains("\"type\": \"erofs\""));
        assert!(
            manifest
                .to_json()
                .contains("\"path\": \"/usr/share/misc/pci.ids\""),
        );
    }

    #[test]
    fn reads_manifests_from_before_package_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut json: serde_json::Value = serde_json::from_str(
            &Manifest {
                profile: "default".into(),
                shoal_version: "0.1.0".into(),
                kernel: KernelInfo {
                    requested_package: "k".into(),
                    package: "k".into(),
                    version: "1".into(),
                    release: "r".into(),
                    deb_sha256: "00".into(),
                },
                cmdline: String::new(),
                source_date_epoch: 1,
                rootfs: RootfsInfo {
                    fs_type: "erofs".into(),
                    compression: "lz4".into(),
                    pcluster_size: None,
                    uuid: "u".into(),
                },
                initramfs_compression: "none".into(),
                modules: ModuleCounts { early: 0, full: 0 },
                binaries: vec![],
                package_files: vec![],
                disk: None,
                update: None,
                artefacts: vec![],
            }
            .to_json(),
        )
        .unwrap();
        json.as_object_mut().unwrap().remove("package_files");
        std::fs::write(dir.path().join(MANIFEST_FILE), json.to_string()).unwrap();
        assert!(Manifest::load(dir.path()).unwrap().package_files.is_empty());
    }
}
