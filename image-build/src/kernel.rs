//! Fetching Debian's kernel package into a local cache.
//!
//! `linux-image-amd64` is a metapackage; the kernel lives in the versioned package it depends
//! on (`linux-image-6.1.0-N-amd64`). Each package version is downloaded and unpacked once by
//! [`debian::fetch`] and kept under `<cache>/kernel/<package>_<version>/`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::debian;
use crate::error::{Error, Result};

/// An unpacked kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The package the profile asked for (maybe a metapackage).
    pub requested_package: String,
    /// The versioned package that holds the kernel.
    pub package: String,
    /// Its Debian version, such as `6.1.192-2`.
    pub version: String,
    /// The kernel release (`uname -r`), such as `6.1.0-56-amd64`.
    pub release: String,
    /// sha256 of the downloaded `.deb`.
    pub deb_sha256: String,
    /// The kernel image inside the unpacked package.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` inside the unpacked package.
    pub modules_dir: PathBuf,
}

/// Whether `package` already names a versioned kernel (`linux-image-6.1.0-56-amd64`).
fn is_versioned(package: &str) -> bool {
    package
        .strip_prefix("linux-image-")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Picks the versioned kernel package, and the version it pins if any, out of the
/// `Depends:` field of an `apt-cache show` record
/// (`Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)`).
pub(crate) fn versioned_dependency(record: &str) -> Option<(String, Option<String>)> {
    let depends = record
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))?;
    depends.split([',', '|']).find_map(|item| {
        let item = item.trim();
        let (name, constraint) = match item.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.trim_end_matches(')').trim()),
            None => (item, ""),
        };
        let pinned = constraint.strip_prefix('=').map(|v| v.trim().to_owned());
        is_versioned(name).then(|| (name.to_owned(), pinned))
    })
}

fn kernel_error(package: &str, reason: impl Into<String>) -> Error {
    Error::Kernel {
        package: package.to_owned(),
        reason: reason.into(),
    }
}

/// Kernel errors say "kernel package": a package error from [`debian`] becomes one.
fn as_kernel_error(error: Error) -> Error {
    match error {
        Error::Package { package, reason } => Error::Kernel { package, reason },
        other => other,
    }
}

/// The candidate `apt-cache show` record of `package`.
fn show(package: &str) -> Result<String> {
    debian::show(package).map_err(as_kernel_error)
}

/// Resolves `package` to (versioned package, Debian version) with apt's package lists.
pub fn resolve(package: &str) -> Result<(String, String)> {
    let record = show(package)?;
    let (versioned, record) = if is_versioned(package) {
        (package.to_owned(), record)
    } else {
        match versioned_dependency(&record) {
            // The metapackage pins the exact version: no second apt-cache run (~1 s).
            Some((name, Some(version))) => return Ok((name, version)),
            Some((name, None)) => {
                let record = show(&name)?;
                (name, record)
            }
            None => {
                return Err(kernel_error(
                    package,
                    "its Depends names no linux-image-<version> package; name a kernel package \
                     such as linux-image-amd64 or linux-image-6.1.0-56-amd64",
                ));
            }
        }
    };
    let version = debian::version_from_show(&record).ok_or_else(|| {
        kernel_error(
            &versioned,
            format!("`apt-cache show {versioned}` gave no Version"),
        )
    })?;
    Ok((versioned, version))
}

/// Makes sure the package is in the cache, downloading and unpacking it if needed.
/// `step` is told about each slow step ("download", "extract") before it starts.
pub fn fetch(requested: &str, cache: &Path, mut step: impl FnMut(&str)) -> Result<Kernel> {
    let (package, version) = resolve(requested)?;
    let unpacked = debian::fetch(&package, &version, &cache.join("kernel"), &mut step)
        .map_err(as_kernel_error)?;
    let (release, vmlinuz, modules_dir) = locate(&unpacked.tree, &package)?;
    Ok(Kernel {
        requested_package: requested.to_owned(),
        package,
        version,
        release,
        deb_sha256: unpacked.deb_sha256,
        vmlinuz,
        modules_dir,
    })
}

/// Finds `boot/vmlinuz-<release>` and `lib/modules/<release>` in an unpacked package.
pub(crate) fn locate(tree: &Path, package: &str) -> Result<(String, PathBuf, PathBuf)> {
    let boot = tree.join("boot");
    let mut kernels: Vec<String> = fs::read_dir(&boot)
        .map_err(|e| {
            kernel_error(
                package,
                format!(
                    "no boot/ directory in the package ({}: {e})",
                    boot.display()
                ),
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .collect();
    kernels.sort();
    let release = match kernels.as_slice() {
        [one] => one.clone(),
        [] => return Err(kernel_error(package, "no boot/vmlinuz-* in the package")),
        many => {
            return Err(kernel_error(
                package,
                format!("several kernels in the package: {}", many.join(", ")),
            ));
        }
    };
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|dir| tree.join(dir).join(&release))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| kernel_error(package, format!("no lib/modules/{release} in the package")))?;
    Ok((
        release.clone(),
        boot.join(format!("vmlinuz-{release}")),
        modules_dir,
    ))
}

/// Hex sha256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(Error::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_versioned_package() {
        let record = "Package: linux-image-amd64\nVersion: 6.1.192-2\n\
                      Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n";
        assert_eq!(
            versioned_dependency(record),
            Some((
                "linux-image-6.1.0-56-amd64".into(),
                Some("6.1.192-2".into())
            ))
        );
        let record = "Depends: kmod, linux-base | x, linux-image-6.1.0-9-amd64\n";
        assert_eq!(
            versioned_dependency(record),
            Some(("linux-image-6.1.0-9-amd64".into(), None))
        );
        let record = "Depends: linux-image-6.1.0-9-amd64 (>= 6.1)\n";
        assert_eq!(
            versioned_dependency(record),
            Some(("linux-image-6.1.0-9-amd64".into(), None))
        );
        assert_eq!(versioned_dependency("Depends: kmod\n"), None);
        assert!(is_versioned("linux-image-6.1.0-56-amd64"));
        assert!(!is_versioned("linux-image-amd64"));
        assert!(!is_versioned("linux-image-cloud-amd64"));
    }

    #[test]
    fn package_errors_become_kernel_errors() {
        let err = as_kernel_error(debian::package_error("linux-image-x", "gone"));
        assert_eq!(err.to_string(), "kernel package linux-image-x: gone");
    }

    #[test]
    fn locates_kernel_and_modules() {
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("boot")).unwrap();
        fs::write(tree.path().join("boot/vmlinuz-6.1.0-9-amd64"), b"k").unwrap();
        fs::write(tree.path().join("boot/config-6.1.0-9-amd64"), b"c").unwrap();
        let err = locate(tree.path(), "p").unwrap_err().to_string();
        assert!(err.contains("no lib/modules/6.1.0-9-amd64"), "{err}");
        fs::create_dir_all(tree.path().join("lib/modules/6.1.0-9-amd64/kernel")).unwrap();
        let (release, vmlinuz, modules) = locate(tree.path(), "p").unwrap();
        assert_eq!(release, "6.1.0-9-amd64");
        assert!(vmlinuz.ends_with("boot/vmlinuz-6.1.0-9-amd64"));
        assert!(modules.ends_with("lib/modules/6.1.0-9-amd64"));
    }

    #[test]
    fn hashes_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
