//! Debian packages in a local cache, and the profile's `[[package_file]]` entries taken from them.
//!
//! A package's version is resolved with apt's package lists (`apt-cache show`); each version is
//! downloaded once with `apt-get download`, unpacked with `dpkg-deb -x`, and kept as
//! `<dir>/<package>_<version>/`: `tree/` (the unpacked package) and `deb.sha256` (the hash of
//! the `.deb`, which is not kept). An entry appears by one rename, and fetches into the same
//! `<dir>` take turns on `<dir>/.lock`, so an interrupted or concurrent fetch never leaves a half
//! entry behind. The kernel lives under `<cache>/kernel`, package files' packages under
//! `<cache>/deb` (see [`PACKAGE_CACHE`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::error::{Error, Result};
use crate::kernel::sha256_file;
use crate::profile::PackageFile;

/// The directory under the cache that holds the packages of `[[package_file]]` entries.
pub const PACKAGE_CACHE: &str = "deb";

/// A package version unpacked in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The Debian package.
    pub package: String,
    /// Its Debian version, such as `0.0~2023.04.11-1`.
    pub version: String,
    /// sha256 of the downloaded `.deb`.
    pub deb_sha256: String,
    /// The unpacked package: `usr/...` and so on, as `dpkg-deb -x` left them.
    pub tree: PathBuf,
}

/// A `[[package_file]]` entry, fetched: the file in the cache and what it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    /// The Debian package.
    pub package: String,
    /// The package's version.
    pub version: String,
    /// sha256 of the package's `.deb`.
    pub deb_sha256: String,
    /// Absolute path in the package, and the file's path in the root image.
    pub path: String,
    /// The file in the unpacked package in the cache.
    pub source: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Hex sha256 of the file.
    pub sha256: String,
}

pub(crate) fn package_error(package: &str, reason: impl Into<String>) -> Error {
    Error::Package {
        package: package.to_owned(),
        reason: reason.into(),
    }
}

/// What to do when apt does not know a package.
const NO_LISTS: &str = "apt knows no such package; run `apt-get update` (as root) so its package \
                        lists are present, and check the name";

/// The candidate `apt-cache show` record of `package` (the version `apt-get download` takes).
pub(crate) fn show(package: &str) -> Result<String> {
    let record =
        cmd::stdout(Command::new("apt-cache").args(["show", "--no-all-versions", package]))
            .map_err(|e| package_error(package, format!("{e}\n({NO_LISTS})")))?;
    // A purely virtual package exits 0 with no record.
    if record.trim().is_empty() {
        return Err(package_error(
            package,
            "apt has no installable version of it (a purely virtual package?); name a real \
             package, as `apt-cache show --no-all-versions` finds it",
        ));
    }
    Ok(record)
}

/// Reads `Version:` out of an `apt-cache show` record.
pub(crate) fn version_from_show(record: &str) -> Option<String> {
    record
        .lines()
        .find_map(|line| line.strip_prefix("Version:").map(|v| v.trim().to_owned()))
        .filter(|v| !v.is_empty())
}

/// The version of `package` that apt would download now.
pub fn candidate_version(package: &str) -> Result<String> {
    let record = show(package)?;
    version_from_show(&record).ok_or_else(|| {
        package_error(
            package,
            format!("`apt-cache show --no-all-versions {package}` gave no Version"),
        )
    })
}

/// The cache directory name for a package version (`:` of an epoch is not path-friendly).
pub(crate) fn entry_name(package: &str, version: &str) -> String {
    format!("{package}_{}", version.replace(':', "%3a"))
}

/// Makes sure `package` at `version` is unpacked under `dir` (see the module documentation),
/// downloading and unpacking it if needed. `step` is told about each slow step before it starts.
pub fn fetch(
    package: &str,
    version: &str,
    dir: &Path,
    step: &mut dyn FnMut(&str),
) -> Result<Unpacked> {
    let entry = dir.join(entry_name(package, version));
    // One fetch at a time per directory (parallel tests share it): the lock is held until return.
    let _lock = if entry.join("tree").is_dir() {
        None
    } else {
        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let lock_path = dir.join(".lock");
        let lock = fs::File::create(&lock_path).map_err(Error::io("create", &lock_path))?;
        lock.lock().map_err(Error::io("lock", &lock_path))?;
        Some(lock)
    };
    // Whoever held the lock before may have fetched it.
    if !entry.join("tree").is_dir() {
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(dir)
            .map_err(Error::io("create a temporary directory in", dir))?;
        step(&format!("downloading {package} {version}"));
        // apt-get writes into the current directory.
        cmd::run(
            Command::new("apt-get")
                .args(["download", "-q", &format!("{package}={version}")])
                .current_dir(tmp.path()),
        )?;
        let deb = find_deb(tmp.path(), package)?;
        let sha = sha256_file(&deb)?;
        step(&format!("unpacking {package} {version}"));
        let tree = tmp.path().join("tree");
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        fs::write(tmp.path().join("deb.sha256"), format!("{sha}\n"))
            .map_err(Error::io("write", tmp.path()))?;
        // Keep the unpacked tree; the .deb is not needed again.
        fs::remove_file(&deb).map_err(Error::io("remove", &deb))?;
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &entry) {
            // Someone else finished the same entry first: use theirs.
            let _ = fs::remove_dir_all(&tmp);
            if !entry.join("tree").is_dir() {
                return Err(Error::io(format!("move {} to", tmp.display()), &entry)(e));
            }
        }
    }
    let sha_file = entry.join("deb.sha256");
    let deb_sha256 = fs::read_to_string(&sha_file)
        .map_err(Error::io("read", &sha_file))?
        .trim()
        .to_owned();
    Ok(Unpacked {
        package: package.to_owned(),
        version: version.to_owned(),
        deb_sha256,
        tree: entry.join("tree"),
    })
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(Error::io("list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    match debs.len() {
        1 => Ok(debs.remove(0)),
        n => Err(package_error(
            package,
            format!(
                "apt-get download left {n} .deb files in {}, expected 1",
                dir.display()
            ),
        )),
    }
}

/// How many names of a directory a "no such file" message lists.
const LISTED_NAMES: usize = 8;

/// The regular file at `path` (absolute, as the package installs it) in an unpacked package.
/// Symlinks are refused, also as directories on the way: they may point out of the tree.
pub fn file_in(unpacked: &Unpacked, path: &str) -> Result<PathBuf> {
    let error = |reason: String| {
        package_error(
            &unpacked.package,
            format!("version {}: {reason}", unpacked.version),
        )
    };
    let relative = path
        .strip_prefix('/')
        .filter(|rest| rest.split('/').all(|c| !matches!(c, "" | "." | "..")))
        .ok_or_else(|| error(format!("{path:?} is not a plain absolute path")))?;
    let components: Vec<&str> = relative.split('/').collect();
    let mut current = unpacked.tree.clone();
    // `current` as the image path, for messages.
    let mut shown = String::new();
    for (i, component) in components.iter().enumerate() {
        let (parent, parent_shown) = (current.clone(), format!("{shown}/"));
        current.push(component);
        shown = format!("{shown}/{component}");
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Err(error(format!(
                    "{shown} is a symlink (to {target}) in the package; name the file it points to"
                )));
            }
            Ok(meta) if i + 1 < components.len() && !meta.is_dir() => {
                return Err(error(format!(
                    "the package has no {path} ({shown} is not a directory)"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(error(format!(
                    "the package has no {path}{}",
                    listing(&parent, &parent_shown)
                )));
            }
            Err(e) => return Err(Error::io("stat", &current)(e)),
        }
    }
    if !current.is_file() {
        return Err(error(format!(
            "{path} is not a regular file in the package"
        )));
    }
    Ok(current)
}

/// ` (in DIR/: a, b, ...)`: what a directory of an unpacked package holds, as a hint.
fn listing(dir: &Path, shown: &str) -> String {
    let Ok(entries) = fs::read_dir(dir) else {
        return String::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let more = names.len().saturating_sub(LISTED_NAMES);
    names.truncate(LISTED_NAMES);
    if names.is_empty() {
        return format!(" ({shown} is empty)");
    }
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(" (in {shown}: {}{more})", names.join(", "))
}

/// Adds the profile field that asked for the package to a package error.
fn with_origin(error: Error, file: &PackageFile, subfield: &str) -> Error {
    match error {
        Error::Package { package, reason } => Error::Package {
            package,
            reason: format!(
                "{reason} (profile {}, field `{}.{subfield}`)",
                file.origin.file.display(),
                file.origin.field
            ),
        },
        other => other,
    }
}

/// Fetches the packages of the profile's `[[package_file]]` entries into `<cache>/deb` (each
/// package once) and finds each file in its package. The result is in profile order.
pub fn fetch_package_files(
    files: &[PackageFile],
    cache: &Path,
    step: impl FnMut(&str),
) -> Result<Vec<FetchedFile>> {
    fetch_files_with(files, &cache.join(PACKAGE_CACHE), candidate_version, step)
}

/// [`fetch_package_files`] with the version lookup as a parameter (tests answer without apt).
fn fetch_files_with(
    files: &[PackageFile],
    dir: &Path,
    mut resolve: impl FnMut(&str) -> Result<String>,
    mut step: impl FnMut(&str),
) -> Result<Vec<FetchedFile>> {
    let mut packages: BTreeMap<&str, Unpacked> = BTreeMap::new();
    let mut fetched = Vec::with_capacity(files.len());
    for file in files {
        if !packages.contains_key(file.package.as_str()) {
            step(&format!("resolving {}", file.package));
            let version = resolve(&file.package).map_err(|e| with_origin(e, file, "package"))?;
            let unpacked = fetch(&file.package, &version, dir, &mut step)?;
            packages.insert(&file.package, unpacked);
        }
        let unpacked = &packages[file.package.as_str()];
        fetched.push(found_file(unpacked, file)?);
    }
    Ok(fetched)
}

/// One `[[package_file]]` in its unpacked package.
fn found_file(unpacked: &Unpacked, file: &PackageFile) -> Result<FetchedFile> {
    let source = file_in(unpacked, &file.path).map_err(|e| with_origin(e, file, "path"))?;
    let size = fs::metadata(&source)
        .map_err(Error::io("stat", &source))?
        .len();
    Ok(FetchedFile {
        package: unpacked.package.clone(),
        version: unpacked.version.clone(),
        deb_sha256: unpacked.deb_sha256.clone(),
        path: file.path.clone(),
        sha256: sha256_file(&source)?,
        source,
        size,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::profile::Origin;

    /// A cache entry as `fetch` leaves it, without apt: `dir/<package>_<version>/`.
    fn fake_entry(dir: &Path, package: &str, version: &str, files: &[(&str, &str)]) -> PathBuf {
        let entry = dir.join(entry_name(package, version));
        for (path, text) in files {
            let file = entry.join("tree").join(path.trim_start_matches('/'));
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        fs::create_dir_all(entry.join("tree")).unwrap();
        fs::write(entry.join("deb.sha256"), "d0d0\n").unwrap();
        entry.join("tree")
    }

    fn package_file(package: &str, path: &str) -> PackageFile {
        PackageFile {
            package: package.into(),
            path: path.into(),
            origin: Origin {
                file: "/p/default.toml".into(),
                field: "package_file[1]".into(),
            },
        }
    }

    #[test]
    fn reads_the_version() {
        let show = "Package: pci.ids\nVersion: 0.0~2023.04.11-1\nInstalled-Size: 1343\n";
        assert_eq!(version_from_show(show).as_deref(), Some("0.0~2023.04.11-1"));
        assert_eq!(version_from_show("Package: x\nVersion: \n"), None);
        assert_eq!(version_from_show("Package: x\n"), None);
        assert_eq!(entry_name("p", "1:2.3-4"), "p_1%3a2.3-4");
    }

    #[test]
    fn a_cached_entry_needs_no_apt() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join(PACKAGE_CACHE);
        let tree = fake_entry(
            &dir,
            "pci.ids",
            "1:2.0-1",
            &[("/usr/share/misc/pci.ids", "x")],
        );
        let mut steps = Vec::new();
        let unpacked = fetch("pci.ids", "1:2.0-1", &dir, &mut |s| {
            steps.push(s.to_owned())
        })
        .unwrap();
        assert_eq!(
            unpacked,
            Unpacked {
                package: "pci.ids".into(),
                version: "1:2.0-1".into(),
                deb_sha256: "d0d0".into(),
                tree,
            }
        );
        assert!(steps.is_empty(), "{steps:?}");
        assert!(!dir.join(".lock").exists());
    }

    #[test]
    fn finds_a_file_and_hashes_it() {
        let cache = tempfile::tempdir().unwrap();
        let tree = fake_entry(
            cache.path(),
            "pci.ids",
            "1",
            &[("/usr/share/misc/pci.ids", "abc")],
        );
        let unpacked = Unpacked {
            package: "pci.ids".into(),
            version: "1".into(),
            deb_sha256: "d0d0".into(),
            tree: tree.clone(),
        };
        let found = found_file(
            &unpacked,
            &package_file("pci.ids", "/usr/share/misc/pci.ids"),
        )
        .unwrap();
        assert_eq!(
            found,
            FetchedFile {
                package: "pci.ids".into(),
                version: "1".into(),
                deb_sha256: "d0d0".into(),
                path: "/usr/share/misc/pci.ids".into(),
                source: tree.join("usr/share/misc/pci.ids"),
                size: 3,
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
            }
        );
    }

    #[test]
    fn missing_files_name_package_version_path_and_field() {
        let cache = tempfile::tempdir().unwrap();
        let tree = fake_entry(
            cache.path(),
            "pci.ids",
            "0.0~2023.04.11-1",
            &[
                ("/usr/share/misc/pci.ids", "abc"),
                ("/usr/share/doc/pci.ids/copyright", "c"),
            ],
        );
        let unpacked = Unpacked {
            package: "pci.ids".into(),
            version: "0.0~2023.04.11-1".into(),
            deb_sha256: "d0d0".into(),
            tree: tree.clone(),
        };
        let err = |path: &str| {
            found_file(&unpacked, &package_file("pci.ids", path))
                .unwrap_err()
                .to_string()
        };
        let e = err("/usr/share/misc/pci.idz");
        assert_eq!(
            e,
            "Debian package pci.ids: version 0.0~2023.04.11-1: the package has no \
             /usr/share/misc/pci.idz (in /usr/share/misc/: pci.ids) \
             (profile /p/default.toml, field `package_file[1].path`)"
        );
        let e = err("/etc/pci.ids");
        assert!(
            e.contains("the package has no /etc/pci.ids (in /: usr)"),
            "{e}"
        );
        let e = err("/usr/share/misc/pci.ids/x");
        assert!(
            e.contains(
                "the package has no /usr/share/misc/pci.ids/x \
                 (/usr/share/misc/pci.ids is not a directory)"
            ),
            "{e}"
        );
        let e = err("/usr/share/misc");
        assert!(
            e.contains("/usr/share/misc is not a regular file in the package"),
            "{e}"
        );
        let e = err("/usr/../etc/passwd");
        assert!(e.contains("is not a plain absolute path"), "{e}");
        symlink("/etc/passwd", tree.join("usr/share/misc/passwd")).unwrap();
        let e = err("/usr/share/misc/passwd");
        assert!(
            e.contains("/usr/share/misc/passwd is a symlink (to /etc/passwd) in the package"),
            "{e}"
        );
        symlink("/etc", tree.join("usr/etc")).unwrap();
        let e = err("/usr/etc/passwd");
        assert!(e.contains("/usr/etc is a symlink (to /etc)"), "{e}");
    }

    #[test]
    fn fetches_each_package_once_in_profile_order() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join(PACKAGE_CACHE);
        let tree = fake_entry(
            &dir,
            "pci.ids",
            "1",
            &[
                ("/usr/share/misc/pci.ids", "ids"),
                ("/usr/share/doc/pci.ids/copyright", "c"),
            ],
        );
        fake_entry(&dir, "hwdata", "2", &[("/usr/share/hwdata/usb.ids", "usb")]);
        let files = [
            package_file("pci.ids", "/usr/share/misc/pci.ids"),
            package_file("hwdata", "/usr/share/hwdata/usb.ids"),
            package_file("pci.ids", "/usr/share/doc/pci.ids/copyright"),
        ];
        let mut asked = Vec::new();
        let resolve = |package: &str| {
            asked.push(package.to_owned());
            Ok(if package == "pci.ids" { "1" } else { "2" }.to_owned())
        };
        let fetched = fetch_files_with(&files, &dir, resolve, |_| {}).unwrap();
        assert_eq!(asked, ["pci.ids", "hwdata"]);
        let got: Vec<(&str, &str, &str)> = fetched
            .iter()
            .map(|f| (f.package.as_str(), f.version.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("pci.ids", "1", "/usr/share/misc/pci.ids"),
                ("hwdata", "2", "/usr/share/hwdata/usb.ids"),
                ("pci.ids", "1", "/usr/share/doc/pci.ids/copyright"),
            ]
        );
        assert_eq!(
            fetched[2].source,
            tree.join("usr/share/doc/pci.ids/copyright")
        );
        assert_eq!(fetched[2].deb_sha256, "d0d0");
        assert!(
            fetch_files_with(&[], &dir, |_| unreachable!(), |_| {})
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unknown_packages_name_the_field() {
        // The real apt-cache: it knows no such package (or is missing; the error is the same kind).
        let cache = tempfile::tempdir().unwrap();
        let err = fetch_package_files(
            &[package_file("shoal-no-such-package", "/x")],
            cache.path(),
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("Debian package shoal-no-such-package: "),
            "{err}"
        );
        assert!(err.contains("apt knows no such package"), "{err}");
        assert!(
            err.ends_with("(profile /p/default.toml, field `package_file[1].package`)"),
            "{err}"
        );
    }
}
