//! The ESP source: a machine configuration dropped onto a flashed disk's EFI system partition
//! at `shoal/machine.toml` (for edge appliances written once and shipped). The image's ESP is
//! the FAT filesystem labelled `SHOAL-ESP`; it is mounted read-only for the moment it takes.
//!
//! ```sh
//! mcopy -i disk.raw@@1M machine.toml ::shoal/machine.toml    # before flashing
//! ```

use std::path::Path;

use shoal_config::sources::{Document, SourceKind};

/// The label image-build gives the ESP.
pub const LABEL: &str = "SHOAL-ESP";
/// Where the configuration sits on the ESP.
pub const PATH: &str = "shoal/machine.toml";

/// The document in a mounted ESP; `Ok(None)`: the ESP holds no configuration.
pub fn document(dir: &Path, origin: &str) -> Result<Option<Document>, String> {
    let path = dir.join(PATH);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{origin}:{PATH} is not UTF-8 text"))?;
            Ok(Some(Document {
                kind: SourceKind::Esp,
                origin: format!("{origin}:{PATH}"),
                text,
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{origin}:{PATH}: {e}")),
    }
}

/// Where PID 1 mounts the boot disk's ESP (for the updater).
pub const BOOT_MOUNT: &str = "/run/shoal/boot";

/// Finds the ESP and reads the configuration from it: where PID 1 has it mounted
/// (`mounted`, when that holds the ESP's `loader/`), else mounted read-only in `mount_dir` for
/// the moment it takes. `Ok(None)`: no ESP (a PXE or cloud-image boot) or no configuration on
/// it.
pub fn read(
    sys: &Path,
    dev: &Path,
    mounted: &Path,
    mount_dir: &Path,
) -> Result<Option<Document>, String> {
    let Some(volume) = crate::volume::find_labelled(sys, dev, LABEL, &["vfat"]) else {
        return Ok(None);
    };
    if mounted.join("loader").is_dir() {
        return document(mounted, &dev.join(&volume.device).display().to_string());
    }
    crate::volume::with_mounted(dev, &volume, mount_dir, document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_file_on_a_mounted_esp() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(document(dir.path(), "/dev/vda1"), Ok(None));
        std::fs::create_dir_all(dir.path().join("shoal")).unwrap();
        std::fs::write(
            dir.path().join(PATH),
            "[cluster]\nname = \"edge\"\nexpected_size = 1\n",
        )
        .unwrap();
        let doc = document(dir.path(), "/dev/vda1").unwrap().unwrap();
        assert_eq!(doc.kind, SourceKind::Esp);
        assert_eq!(doc.origin, "/dev/vda1:shoal/machine.toml");
        let config = shoal_config::sources::resolve(&[doc], None).unwrap();
        assert_eq!(config.cluster.name, "edge");
        std::fs::write(dir.path().join(PATH), [0xff, 0xfe]).unwrap();
        let err = document(dir.path(), "/dev/vda1").unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
    }
}
