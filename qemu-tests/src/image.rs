//! The built image directory (`out/<profile>/`) and its `manifest.json`.
//!
//! Tests run as separate processes under cargo-nextest. The first one to find the test image
//! missing builds it while holding an exclusive `flock` on `out/.build.lock`; the others wait on
//! the lock and then find the manifest there, so the image is built at most once per run.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_image_build::{MANIFEST_FILE, Manifest};

use crate::{Error, Result, process, workspace_root};

/// Environment variable naming an image directory to use instead of `<workspace>/out/test`.
pub const IMAGE_DIR_ENV: &str = "SHOAL_IMAGE_DIR";

/// A built image: `vmlinuz`, `initramfs`, `rootfs.erofs`, `boot.ipxe` and `manifest.json`.
#[derive(Debug, Clone)]
pub struct Image {
    dir: PathBuf,
    manifest: Manifest,
}

impl Image {
    /// The image from `SHOAL_IMAGE_DIR`, else `<workspace>/out/test`, building the latter (once,
    /// under a lock) when its manifest is missing.
    pub fn locate() -> Result<Image> {
        if let Some(dir) = std::env::var_os(IMAGE_DIR_ENV) {
            return Image::open(PathBuf::from(dir));
        }
        let dir = workspace_root().join("out").join("test");
        if !dir.join(MANIFEST_FILE).is_file() {
            build_test_image_once(&dir)?;
        }
        Image::open(dir)
    }

    /// The image in `dir`, which must hold a readable `manifest.json`, `vmlinuz` and `initramfs`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Image> {
        let dir = dir.into();
        let manifest = Manifest::load(&dir).map_err(|e| Error::Image {
            dir: dir.clone(),
            message: e.to_string(),
        })?;
        let image = Image { dir, manifest };
        for path in [image.kernel(), image.initramfs()] {
            if !path.is_file() {
                return Err(Error::Image {
                    dir: image.dir.clone(),
                    message: format!("{} is missing", path.display()),
                });
            }
        }
        Ok(image)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.erofs")
    }

    /// The A/B disk image as qcow2 (profiles with a `[disk]` table).
    pub fn disk_qcow2(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// The same disk, raw and sparse.
    pub fn disk_raw(&self) -> PathBuf {
        self.dir.join("disk.raw")
    }

    pub fn boot_ipxe(&self) -> PathBuf {
        self.dir.join("boot.ipxe")
    }

    /// The parsed `manifest.json`.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The kernel command line the image boots with.
    pub fn cmdline(&self) -> &str {
        &self.manifest.cmdline
    }

    /// The size of the artefact `name` (`vmlinuz`, `initramfs`, ...), from the manifest.
    pub fn artefact_size(&self, name: &str) -> Option<u64> {
        self.manifest.artefact(name).map(|a| a.size)
    }
}

/// Builds `out/test` under an exclusive lock unless another process already did.
fn build_test_image_once(dir: &Path) -> Result<()> {
    let out = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(out).map_err(Error::io(format!("create {}", out.display())))?;
    let lock_path = out.join(".build.lock");
    let lock: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io(format!("open {}", lock_path.display())))?;
    tracing::info!("waiting for the image build lock {}", lock_path.display());
    lock.lock()
        .map_err(Error::io(format!("lock {}", lock_path.display())))?;
    // Another test process may have built it while this one waited for the lock.
    if dir.join(MANIFEST_FILE).is_file() {
        return Ok(());
    }
    tracing::info!(
        "{} has no {MANIFEST_FILE}: building the test image",
        dir.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).args([
        "run",
        "--release",
        "-p",
        "shoal-image-build",
        "--",
        "build",
        "--profile",
        "test",
    ]);
    // The lock is released when `lock` is dropped, after the manifest is in place.
    match process::run(&mut command) {
        Ok(_) if dir.join(MANIFEST_FILE).is_file() => Ok(()),
        Ok(_) => Err(Error::ImageBuild {
            message: format!(
                "the build succeeded but {} has no {MANIFEST_FILE}",
                dir.display()
            ),
        }),
        Err(e) => Err(Error::ImageBuild {
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_directory_without_manifest_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let err = Image::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
