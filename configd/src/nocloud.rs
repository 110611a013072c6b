//! NoCloud: the machine configuration as `user-data` on a filesystem labelled `CIDATA` (vfat
//! or ISO 9660: what `cloud-localds` and IaaS consoles make). `meta-data`'s `local-hostname`
//! becomes `node.hostname` unless `user-data` sets one. `user-data` is Shoal's machine
//! configuration (TOML); a `#cloud-config` document is refused with a message saying so.
//!
//! Finding the disk is pure over a sysfs and a `/dev` root (the hardware inventory's probe reads
//! the labels); reading it mounts it read-only for the moment it takes.

use std::path::Path;

use shoal_config::sources::{Document, SourceKind};

/// The filesystem label NoCloud uses, in any case.
pub const LABEL: &str = "cidata";

pub use crate::volume::Volume;

/// The first device (whole disk or partition, in name order) with a vfat or ISO 9660
/// filesystem labelled `CIDATA`.
pub fn find(sys: &Path, dev: &Path) -> Option<Volume> {
    crate::volume::find_labelled(sys, dev, LABEL, &["vfat", "iso9660"])
}

/// The documents in a mounted NoCloud filesystem: `meta-data`'s hostname (when there is one),
/// then `user-data` (which wins over it).
pub fn documents(dir: &Path, origin: &str) -> Result<Vec<Document>, String> {
    let mut documents = Vec::new();
    if let Ok(meta) = std::fs::read_to_string(dir.join("meta-data"))
        && let Some(hostname) = local_hostname(&meta)
    {
        documents.push(Document {
            kind: SourceKind::NoCloud,
            origin: format!("{origin}:meta-data"),
            text: format!("[node]\nhostname = {}\n", toml::Value::String(hostname)),
        });
    }
    let path = dir.join("user-data");
    let text = match std::fs::read(&path) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| format!("{origin}:user-data is not UTF-8 text"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !documents.is_empty() => {
            return Ok(documents);
        }
        Err(e) => return Err(format!("{origin}:user-data: {e}")),
    };
    if text.trim_start().starts_with("#cloud-config") {
        return Err(format!(
            "{origin}:user-data is a cloud-config document; Shoal reads its machine \
             configuration (TOML, as `shoalctl gen config` writes it) from user-data"
        ));
    }
    documents.push(Document {
        kind: SourceKind::NoCloud,
        origin: format!("{origin}:user-data"),
        text,
    });
    Ok(documents)
}

/// `local-hostname: NAME` in NoCloud's meta-data (YAML; only this flat key is read, quoted or
/// not).
pub fn local_hostname(meta: &str) -> Option<String> {
    meta.lines().find_map(|line| {
        let value = line.strip_prefix("local-hostname:")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Finds, mounts (read-only, in `mount_dir`), reads and unmounts the NoCloud filesystem.
/// `Ok(None)`: this node has none.
pub fn read(sys: &Path, dev: &Path, mount_dir: &Path) -> Result<Option<Vec<Document>>, String> {
    let Some(volume) = find(sys, dev) else {
        return Ok(None);
    };
    crate::volume::with_mounted(dev, &volume, mount_dir, |dir, origin| {
        documents(dir, origin)
    })
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_from_meta_data() {
        assert_eq!(
            local_hostname("instance-id: i-1\nlocal-hostname: edge-7\n").as_deref(),
            Some("edge-7")
        );
        assert_eq!(
            local_hostname("local-hostname: \"q-1\"").as_deref(),
            Some("q-1")
        );
        assert_eq!(local_hostname("local-hostname:\n"), None);
        assert_eq!(local_hostname("instance-id: x"), None);
    }

    #[test]
    fn documents_from_a_mounted_volume() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing at all: an error naming the file.
        let err = documents(dir.path(), "/dev/vdb").unwrap_err();
        assert!(err.contains("/dev/vdb:user-data"), "{err}");
        // meta-data alone gives the hostname.
        std::fs::write(dir.path().join("meta-data"), "local-hostname: edge-7\n").unwrap();
        let docs = documents(dir.path(), "/dev/vdb").unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].text, "[node]\nhostname = \"edge-7\"\n");
        // user-data after it, so it wins where both say something.
        std::fs::write(
            dir.path().join("user-data"),
            "[cluster]\nname = \"nc\"\n[node]\nhostname = \"from-user-data\"\n",
        )
        .unwrap();
        let docs = documents(dir.path(), "/dev/vdb").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].origin, "/dev/vdb:user-data");
        let config = shoal_config::sources::resolve(&docs, None).unwrap();
        assert_eq!(config.node.hostname.as_deref(), Some("from-user-data"));
        assert_eq!(config.cluster.name, "nc");
        // A cloud-config is refused, saying why.
        std::fs::write(dir.path().join("user-data"), "#cloud-config\nusers: []\n").unwrap();
        let err = documents(dir.path(), "/dev/vdb").unwrap_err();
        assert!(err.contains("cloud-config"), "{err}");
        std::fs::write(dir.path().join("user-data"), [0xff, 0xfe]).unwrap();
        assert!(
            documents(dir.path(), "/dev/vdb")
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    #[test]
    fn finds_the_labelled_volume() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
        let disk = |name: &str, head: &[(usize, &[u8])]| {
            let d = sys.join("devices/virtual/block").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("size"), "2048").unwrap();
            std::fs::create_dir_all(sys.join("block")).unwrap();
            std::os::unix::fs::symlink(
                format!("../devices/virtual/block/{name}"),
                sys.join("block").join(name),
            )
            .unwrap();
            let mut bytes = vec![0u8; 40000];
            for (offset, magic) in head {
                bytes[*offset..offset + magic.len()].copy_from_slice(magic);
            }
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join(name), bytes).unwrap();
        };
        assert_eq!(find(&sys, &dev), None);
        // An ext4 volume labelled cidata does not count; a vfat one labelled CIDATA does.
        disk(
            "vda",
            &[(1024 + 56, &[0x53, 0xEF]), (1024 + 120, b"cidata")],
        );
        assert_eq!(find(&sys, &dev), None);
        disk(
            "vdb",
            &[
                (510, &[0x55, 0xAA]),
                (82, b"FAT32   "),
                (71, b"CIDATA     "),
            ],
        );
        assert_eq!(
            find(&sys, &dev),
            Some(Volume {
                device: "vdb".into(),
                fstype: "vfat".into()
            })
        );
    }
}
