//! The image this node runs, as its node record publishes it: the version the image build wrote
//! into `/etc/os-release` (`image-build/src/image.rs`, `os_release`: `ID=shoal`,
//! `VERSION_ID=<version>`).

use std::path::Path;

/// Where the image describes itself.
pub const OS_RELEASE: &str = "/etc/os-release";

/// The image's version from its os-release file (`os_release`: a parameter, so tests read a
/// fixture). clusterd's own version when the file is absent, or is not a Shoal image's (clusterd
/// started on a development host, whose own distribution's version would say nothing about
/// Shoal), or names no version.
pub fn version(os_release: &Path) -> String {
    let own = env!("CARGO_PKG_VERSION");
    match std::fs::read_to_string(os_release) {
        Ok(text) => match shoal_version(&text) {
            Some(version) => version,
            None => {
                tracing::debug!(
                    "{} is not a Shoal image's (no ID=shoal and VERSION_ID); publishing \
                     clusterd's version {own}",
                    os_release.display()
                );
                own.to_owned()
            }
        },
        Err(e) => {
            tracing::warn!(
                "cannot read {}: {e}; publishing clusterd's version {own} as the image version",
                os_release.display()
            );
            own.to_owned()
        }
    }
}

/// `VERSION_ID` of os-release text whose `ID` is `shoal`.
fn shoal_version(text: &str) -> Option<String> {
    let field = |key: &str| {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
            .map(unquote)
            .next_back()
    };
    if field("ID")? != "shoal" {
        return None;
    }
    field("VERSION_ID").filter(|v| !v.is_empty())
}

/// An os-release value without its shell quotes (`"0.1.0"`, `'0.1.0'` or `0.1.0`).
fn unquote(value: &str) -> String {
    let value = value.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_a_shoal_images_os_release() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let file = etc.join("os-release");
        // As image-build writes it.
        std::fs::write(
            &file,
            "NAME=Shoal\nID=shoal\nVERSION_ID=0.4.2\nVERSION=\"0.4.2 (test)\"\n\
             PRETTY_NAME=\"Shoal 0.4.2 (test)\"\nVARIANT_ID=test\n",
        )
        .unwrap();
        assert_eq!(version(&file), "0.4.2");
        // Quoted, with spaces around, ID after VERSION_ID.
        std::fs::write(&file, "VERSION_ID=\"0.5.0-rc1\"\n  ID='shoal'\n").unwrap();
        assert_eq!(version(&file), "0.5.0-rc1");
    }

    #[test]
    fn without_a_shoal_os_release_clusterd_publishes_its_own_version() {
        let dir = tempfile::tempdir().unwrap();
        let own = env!("CARGO_PKG_VERSION");
        assert_eq!(version(&dir.path().join("etc/os-release")), own, "absent");
        let file = dir.path().join("os-release");
        // A development host's.
        std::fs::write(&file, "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"24.04\"\n").unwrap();
        assert_eq!(version(&file), own);
        std::fs::write(&file, "ID=shoal\nVERSION_ID=\n").unwrap();
        assert_eq!(version(&file), own, "an empty version");
        // IDs and keys are matched whole: SHOAL_KERNEL_VERSION is not VERSION_ID.
        std::fs::write(&file, "ID=shoal\nSHOAL_KERNEL_VERSION=6.1\nID_LIKE=x\n").unwrap();
        assert_eq!(version(&file), own);
    }
}
