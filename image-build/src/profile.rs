//! Image profiles: TOML files that say what goes into an image.
//!
//! A profile may `extends = "other"` (a profile in the same directory, or a relative path).
//! Merging: scalars and the `kernel` fields override the base; the `init`, `rootfs` and
//! `initramfs` tables replace the base's table as a whole; the lists `modules.early`,
//! `modules.full`, `binary`, `boot_task`, `file` and `package_file` are appended to the base's. Validation runs
//! on the merged result, and every error names the file and field that set the bad value.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::modules::Selector;

/// Debian's kernel command line limit on x86 is 2048 bytes including the terminating NUL.
const MAX_CMDLINE: usize = 2047;
const MAX_EXTENDS_DEPTH: usize = 8;
/// erofs-utils' largest physical cluster.
const MAX_PCLUSTER: u32 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    extends: Option<String>,
    name: Option<String>,
    description: Option<String>,
    source_date_epoch: Option<u64>,
    kernel: Option<RawKernel>,
    init: Option<RawInit>,
    modules: Option<RawModules>,
    #[serde(default, rename = "binary")]
    binaries: Vec<RawBinary>,
    #[serde(default, rename = "boot_task")]
    boot_tasks: Vec<RawBootTask>,
    #[serde(default, rename = "file")]
    files: Vec<RawFile>,
    #[serde(default, rename = "package_file")]
    package_files: Vec<RawPackageFile>,
    rootfs: Option<RawRootfs>,
    initramfs: Option<RawInitramfs>,
    disk: Option<RawDisk>,
    update: Option<RawUpdate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    package: Option<String>,
    cmdline: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInit {
    package: String,
    bin: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModules {
    #[serde(default)]
    early: Vec<String>,
    #[serde(default)]
    full: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinary {
    package: String,
    bin: String,
    dest: String,
    #[serde(default)]
    links: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBootTask {
    name: String,
    target: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    source: String,
    dest: String,
    mode: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackageFile {
    package: String,
    path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRootfs {
    #[serde(rename = "type")]
    fs_type: String,
    compression: String,
    level: Option<u8>,
    pcluster_size: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    #[serde(default)]
    trusted_keys: Vec<String>,
    signing_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    esp_mib: u64,
    root_mib: u64,
    state_mib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInitramfs {
    compression: String,
    level: Option<u8>,
}

/// Where a value came from: the profile file and the field inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The profile file that set the value.
    pub file: PathBuf,
    /// The field, such as `modules.early[3]` or `binary[0]`.
    pub field: String,
}

impl Origin {
    fn error(&self, subfield: &str, reason: impl Into<String>) -> Error {
        let field = if subfield.is_empty() {
            self.field.clone()
        } else {
            format!("{}.{subfield}", self.field)
        };
        Error::ProfileInvalid {
            file: self.file.clone(),
            field,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Src<T> {
    value: T,
    origin: Origin,
}

/// All profiles of an `extends` chain folded together, each value with its origin.
#[derive(Debug, Default)]
struct Merged {
    name: Option<Src<String>>,
    description: Option<Src<String>>,
    source_date_epoch: Option<Src<u64>>,
    kernel_package: Option<Src<String>>,
    cmdline: Option<Src<String>>,
    init: Option<Src<RawInit>>,
    early: Vec<Src<String>>,
    full: Vec<Src<String>>,
    binaries: Vec<Src<RawBinary>>,
    boot_tasks: Vec<Src<RawBootTask>>,
    files: Vec<Src<RawFile>>,
    package_files: Vec<Src<RawPackageFile>>,
    rootfs: Option<Src<RawRootfs>>,
    initramfs: Option<Src<RawInitramfs>>,
    disk: Option<Src<RawDisk>>,
    update: Option<Src<RawUpdate>>,
}

impl Merged {
    /// Applies `raw` (from `file`) on top of what is merged so far.
    fn apply(&mut self, raw: RawProfile, file: &Path) {
        fn src<T>(value: T, file: &Path, field: &str) -> Src<T> {
            Src {
                value,
                origin: Origin {
                    file: file.to_path_buf(),
                    field: field.into(),
                },
            }
        }
        fn set<T>(slot: &mut Option<Src<T>>, value: Option<T>, file: &Path, field: &str) {
            if let Some(value) = value {
                *slot = Some(src(value, file, field));
            }
        }
        set(&mut self.name, raw.name, file, "name");
        set(&mut self.description, raw.description, file, "description");
        set(
            &mut self.source_date_epoch,
            raw.source_date_epoch,
            file,
            "source_date_epoch",
        );
        if let Some(kernel) = raw.kernel {
            set(
                &mut self.kernel_package,
                kernel.package,
                file,
                "kernel.package",
            );
            set(&mut self.cmdline, kernel.cmdline, file, "kernel.cmdline");
        }
        set(&mut self.init, raw.init, file, "init");
        if let Some(modules) = raw.modules {
            let early = modules.early.into_iter().enumerate();
            self.early
                .extend(early.map(|(i, v)| src(v, file, &format!("modules.early[{i}]"))));
            let full = modules.full.into_iter().enumerate();
            self.full
                .extend(full.map(|(i, v)| src(v, file, &format!("modules.full[{i}]"))));
        }
        let binaries = raw.binaries.into_iter().enumerate();
        self.binaries
            .extend(binaries.map(|(i, v)| src(v, file, &format!("binary[{i}]"))));
        let tasks = raw.boot_tasks.into_iter().enumerate();
        self.boot_tasks
            .extend(tasks.map(|(i, v)| src(v, file, &format!("boot_task[{i}]"))));
        let files = raw.files.into_iter().enumerate();
        self.files
            .extend(files.map(|(i, v)| src(v, file, &format!("file[{i}]"))));
        let package_files = raw.package_files.into_iter().enumerate();
        self.package_files
            .extend(package_files.map(|(i, v)| src(v, file, &format!("package_file[{i}]"))));
        set(&mut self.rootfs, raw.rootfs, file, "rootfs");
        set(&mut self.initramfs, raw.initramfs, file, "initramfs");
        set(&mut self.disk, raw.disk, file, "disk");
        set(&mut self.update, raw.update, file, "update");
    }
}

/// A cargo binary target: package and binary name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinarySpec {
    /// Cargo package (`-p`).
    pub package: String,
    /// Binary target (`--bin`); also the file name under `target/.../release/`.
    pub bin: String,
}

/// A binary installed into the root image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// What to build.
    pub spec: BinarySpec,
    /// Absolute path in the root image, such as `/usr/lib/shoal/shoal-test-orphans`.
    pub dest: String,
    /// Symbolic links to it: the other names a multi-call binary is run by.
    pub links: Vec<String>,
}

impl Binary {
    /// Its path and its links' paths in the image.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.dest.as_str()).chain(self.links.iter().map(String::as_str))
    }
}

/// A boot task: `/etc/shoal/boot.d/<name>`, a symlink to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTask {
    /// File name in `/etc/shoal/boot.d`, `NN-name`; init starts them sorted by name.
    pub name: String,
    /// Absolute path of the binary it runs (one of the profile's binaries).
    pub target: String,
}

/// A file copied from the build host into the root image: `[[file]]` in a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// The file on the build host: the profile's `source`, relative to the directory of the
    /// profile file that lists it.
    pub source: PathBuf,
    /// Absolute path in the root image, such as `/etc/shoal/services/netd.toml`.
    pub dest: String,
    /// Permission bits in the image (owner root); no setuid, setgid or sticky bit.
    pub mode: u32,
}

/// A file taken from a Debian package into the root image: `[[package_file]]` in a profile.
/// The package is fetched like the kernel's (`apt-get download`, unpacked into the cache); the
/// file goes to the same path in the image, mode 0644.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// The Debian package, such as `pci.ids`; apt's candidate version is used.
    pub package: String,
    /// Absolute path of the file in the package, and its path in the root image, such as
    /// `/usr/share/misc/pci.ids`.
    pub path: String,
    /// The profile file and field that listed it, for error messages.
    pub origin: Origin,
}

/// A module selector and where the profile wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    /// The selector.
    pub selector: Selector,
    /// The file and field it came from, for error messages.
    pub origin: Origin,
}

/// Compression of the erofs root image (erofs-utils 1.5 has lz4 and lz4hc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErofsCompression {
    /// Uncompressed.
    None,
    /// lz4, fast to build.
    Lz4,
    /// lz4hc at a level from 0 to 12: slower to build, same decompression speed, smaller.
    Lz4hc(u8),
}

impl fmt::Display for ErofsCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErofsCompression::None => f.write_str("none"),
            ErofsCompression::Lz4 => f.write_str("lz4"),
            ErofsCompression::Lz4hc(level) => write!(f, "lz4hc:{level}"),
        }
    }
}

/// Compression of the initramfs. The kernel decompresses all of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain cpio archive.
    None,
    /// zstd at a level from 1 to 19.
    Zstd(u8),
    /// lz4 legacy frame format (the one the kernel reads) at a level from 1 to 12.
    Lz4(u8),
    /// gzip at a level from 1 to 9.
    Gzip(u8),
}

impl Compression {
    /// Builds a compression from a name (`none`, `zstd`, `lz4`, `gzip`) and an optional level.
    pub fn new(name: &str, level: Option<u8>) -> Result<Compression, String> {
        let check = |default: u8, max: u8| -> Result<u8, String> {
            let level = level.unwrap_or(default);
            if (1..=max).contains(&level) {
                Ok(level)
            } else {
                Err(format!(
                    "level {level} is out of range for {name} (1 to {max})"
                ))
            }
        };
        match name {
            "none" if level.is_some() => Err("compression none takes no level".into()),
            "none" => Ok(Compression::None),
            "zstd" => check(19, 19).map(Compression::Zstd),
            "lz4" => check(9, 12).map(Compression::Lz4),
            "gzip" => check(9, 9).map(Compression::Gzip),
            other => Err(format!(
                "unknown compression {other:?}; expected none, zstd, lz4 or gzip"
            )),
        }
    }

    /// Parses `NAME` or `NAME:LEVEL`, as the command line takes it.
    pub fn parse(text: &str) -> Result<Compression, String> {
        match text.split_once(':') {
            Some((name, level)) => {
                let level = level
                    .parse()
                    .map_err(|_| format!("invalid compression level {level:?}"))?;
                Compression::new(name, Some(level))
            }
            None => Compression::new(text, None),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
            Compression::Lz4(level) => write!(f, "lz4:{level}"),
            Compression::Gzip(level) => write!(f, "gzip:{level}"),
        }
    }
}

/// A validated, merged profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile name; also the output directory name.
    pub name: String,
    /// One line saying what the profile is for.
    pub description: String,
    /// The file that was loaded (the end of the `extends` chain).
    pub file: PathBuf,
    /// Timestamp for every file in the image, unless `SOURCE_DATE_EPOCH` overrides it.
    pub source_date_epoch: u64,
    /// Debian kernel package, such as `linux-image-amd64` (a metapackage is resolved to the
    /// versioned package it depends on).
    pub kernel_package: String,
    /// Kernel command line (the iPXE script adds `initrd=initramfs`).
    pub cmdline: String,
    /// The PID 1 binary: `/init` in the initramfs and `/sbin/init` in the root image.
    pub init: BinarySpec,
    /// Modules for the initramfs (to reach the root filesystem).
    pub early_modules: Vec<ModuleEntry>,
    /// Modules for the root image, in addition to the early ones.
    pub full_modules: Vec<ModuleEntry>,
    /// Other binaries for the root image.
    pub binaries: Vec<Binary>,
    /// Boot tasks for `/etc/shoal/boot.d`.
    pub boot_tasks: Vec<BootTask>,
    /// Files copied into the root image.
    pub files: Vec<ImageFile>,
    /// Files taken from Debian packages into the root image, in profile order.
    pub package_files: Vec<PackageFile>,
    /// Root image compression (the root image is always erofs).
    pub rootfs_compression: ErofsCompression,
    /// Largest compressed cluster of the root image in bytes (`mkfs.erofs -C`); bigger
    /// clusters compress better and cost more work per random read. `None`: one block.
    pub rootfs_pcluster_size: Option<u32>,
    /// Initramfs compression.
    pub initramfs_compression: Compression,
    /// The A/B disk image (`disk.raw`, `disk.qcow2`), when the profile has a `[disk]` table.
    pub disk: Option<DiskLayout>,
    /// Update keys: the ones the image trusts (`/etc/shoal/update-keys`), `ed25519:<base64>`.
    pub update_trusted_keys: Vec<String>,
    /// The key that signs `update.bundle` (a path resolved against the profile's directory).
    pub update_signing_key: Option<PathBuf>,
}

/// Partition sizes of the A/B disk image, in MiB. STATE is grown to fill the disk at first boot;
/// each root slot must hold a root image and its dm-verity hash tree, now and after updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    pub esp_mib: u64,
    pub root_mib: u64,
    pub state_mib: u64,
    /// Where `[disk]` was set, for errors found while building it.
    pub origin: Origin,
}

/// Default mode of a `[[file]]`.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Files the builder writes into every root image; no `[[file]]` may replace them.
const GENERATED_FILES: [&str; 7] = [
    "/etc/os-release",
    "/etc/shoal/update-keys",
    "/etc/passwd",
    "/etc/group",
    "/etc/machine-id",
    "/etc/hostname",
    "/etc/resolv.conf",
];

/// Directories every root image has besides the reserved ones; files may go below them.
const BUILDER_DIRS: [&str; 4] = ["/var", "/mnt", "/usr/lib/shoal", "/etc/shoal/services"];

/// Paths no binary may be installed at or under: mount points and generated content.
const RESERVED_PREFIXES: [&str; 10] = [
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/sysroot",
    "/lib/modules",
    "/etc/shoal/boot.d",
    "/sbin/init",
    "/sbin/modprobe",
];

fn valid_abs_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!("{path:?} has an empty, . or .. component"));
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    {
        return Err(format!(
            "{path:?} has characters outside A-Z a-z 0-9 / . _ - +"
        ));
    }
    Ok(())
}

/// Debian policy 5.6.1: at least two of a-z 0-9 + - ., starting with a letter or digit.
fn valid_debian_package(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn valid_cargo_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Profile {
    /// Finds a profile: a name is looked up as `<profiles_dir>/<name>.toml`; anything with a
    /// `/` or ending in `.toml` is a path.
    pub fn resolve(name_or_path: &str, profiles_dir: &Path) -> PathBuf {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            PathBuf::from(name_or_path)
        } else {
            profiles_dir.join(format!("{name_or_path}.toml"))
        }
    }

    /// Loads, merges (`extends`) and validates the profile in `file`.
    pub fn load(file: &Path) -> Result<Profile> {
        let mut chain = Vec::new();
        let mut next = Some(file.to_path_buf());
        while let Some(path) = next.take() {
            if chain.len() == MAX_EXTENDS_DEPTH {
                return Err(Error::ProfileInvalid {
                    file: path,
                    field: "extends".into(),
                    reason: format!("more than {MAX_EXTENDS_DEPTH} levels of extends"),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|cause| Error::ProfileRead {
                file: path.clone(),
                cause,
            })?;
            let raw: RawProfile = toml::from_str(&text).map_err(|e| Error::ProfileParse {
                file: path.clone(),
                cause: Box::new(e),
            })?;
            if let Some(base) = &raw.extends {
                let dir = path.parent().unwrap_or(Path::new("."));
                let base_path = Profile::resolve(base, dir);
                let base_path = if base_path.is_relative() {
                    dir.join(base_path)
                } else {
                    base_path
                };
                let same = |a: &Path, b: &Path| {
                    std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
                };
                if chain
                    .iter()
                    .any(|(p, _): &(PathBuf, RawProfile)| same(p, &base_path))
                    || same(&path, &base_path)
                {
                    return Err(Error::ProfileInvalid {
                        file: path.clone(),
                        field: "extends".into(),
                        reason: format!(
                            "{} is already in the extends chain (a cycle)",
                            base_path.display()
                        ),
                    });
                }
                next = Some(base_path);
            }
            chain.push((path, raw));
        }
        let mut merged = Merged::default();
        for (path, raw) in chain.into_iter().rev() {
            merged.apply(raw, &path);
        }
        Profile::validate(merged, file)
    }

    fn validate(m: Merged, file: &Path) -> Result<Profile> {
        let missing = |field: &str| Error::ProfileInvalid {
            file: file.to_path_buf(),
            field: field.into(),
            reason: "required (here or in the profile it extends)".into(),
        };

        let name = m.name.ok_or_else(|| missing("name"))?;
        let name_ok = (1..=64).contains(&name.value.len())
            && name
                .value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.value.starts_with('-');
        if !name_ok {
            return Err(name.origin.error(
                "",
                format!(
                    "{:?}: use 1 to 64 of a-z, 0-9 and - (it names the output directory)",
                    name.value
                ),
            ));
        }

        let description = m.description.map(|d| d.value).unwrap_or_default();

        let epoch = m
            .source_date_epoch
            .ok_or_else(|| missing("source_date_epoch"))?;
        if epoch.value > u64::from(u32::MAX) {
            return Err(epoch.origin.error(
                "",
                "must fit in 32 bits (cpio newc stores mtime in 32 bits)",
            ));
        }

        let package = m.kernel_package.ok_or_else(|| missing("kernel.package"))?;
        let package_ok = package.value.starts_with("linux-image-")
            && package
                .value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !package_ok {
            return Err(package.origin.error(
                "",
                format!(
                    "{:?} is not a Debian linux-image-* package name",
                    package.value
                ),
            ));
        }

        let cmdline = m.cmdline.ok_or_else(|| missing("kernel.cmdline"))?;
        validate_cmdline(&cmdline.value).map_err(|reason| cmdline.origin.error("", reason))?;

        let init = m.init.ok_or_else(|| missing("init"))?;
        let init_spec = BinarySpec {
            package: init.value.package.clone(),
            bin: init.value.bin.clone(),
        };
        if !valid_cargo_name(&init_spec.package) {
            return Err(init.origin.error("package", "must be a cargo package name"));
        }
        if !valid_cargo_name(&init_spec.bin) {
            return Err(init.origin.error("bin", "must be a cargo binary name"));
        }

        let modules = |list: Vec<Src<String>>| -> Result<Vec<ModuleEntry>> {
            list.into_iter()
                .map(|entry| {
                    Selector::parse(&entry.value)
                        .map(|selector| ModuleEntry {
                            selector,
                            origin: entry.origin.clone(),
                        })
                        .map_err(|reason| entry.origin.error("", reason))
                })
                .collect()
        };
        let early_modules = modules(m.early)?;
        let full_modules = modules(m.full)?;

        let mut binaries: Vec<Binary> = Vec::new();
        for entry in &m.binaries {
            let raw = &entry.value;
            if !valid_cargo_name(&raw.package) {
                return Err(entry.origin.error(
                    "package",
                    format!("{:?} is not a cargo package name", raw.package),
                ));
            }
            if !valid_cargo_name(&raw.bin) {
                return Err(entry
                    .origin
                    .error("bin", format!("{:?} is not a cargo binary name", raw.bin)));
            }
            let fields = std::iter::once(("dest".to_string(), &raw.dest)).chain(
                raw.links
                    .iter()
                    .enumerate()
                    .map(|(i, link)| (format!("links[{i}]"), link)),
            );
            let mut seen: Vec<&str> = Vec::new();
            for (field, path) in fields {
                valid_abs_path(path).map_err(|reason| entry.origin.error(&field, reason))?;
                if let Some(reserved) = RESERVED_PREFIXES
                    .iter()
                    .find(|p| path == *p || path.starts_with(&format!("{p}/")))
                {
                    return Err(entry.origin.error(
                        &field,
                        format!("{path} is under {reserved}, which the builder or init owns"),
                    ));
                }
                if binaries.iter().flat_map(Binary::paths).any(|p| p == path)
                    || seen.contains(&path.as_str())
                {
                    return Err(entry.origin.error(
                        &field,
                        format!("{path} is already the path of a binary or a link"),
                    ));
                }
                seen.push(path);
            }
            binaries.push(Binary {
                spec: BinarySpec {
                    package: raw.package.clone(),
                    bin: raw.bin.clone(),
                },
                dest: raw.dest.clone(),
                links: raw.links.clone(),
            });
        }

        let mut boot_tasks: Vec<BootTask> = Vec::new();
        for entry in &m.boot_tasks {
            let raw = &entry.value;
            let bytes = raw.name.as_bytes();
            let name_ok = bytes.len() >= 4
                && bytes[0].is_ascii_digit()
                && bytes[1].is_ascii_digit()
                && bytes[2] == b'-'
                && bytes[3..]
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !name_ok {
                return Err(entry.origin.error("name", format!("{:?}: use NN-name (two digits, a dash, then a-z 0-9 - _ .); tasks start in name order", raw.name)));
            }
            if boot_tasks.iter().any(|t| t.name == raw.name) {
                return Err(entry
                    .origin
                    .error("name", format!("{} is defined twice", raw.name)));
            }
            if !binaries
                .iter()
                .flat_map(Binary::paths)
                .any(|p| p == raw.target)
                && raw.target != "/sbin/init"
            {
                let known: Vec<&str> = binaries.iter().flat_map(Binary::paths).collect();
                return Err(entry.origin.error(
                    "target",
                    format!(
                        "{} is not the dest of any binary in this profile (binaries: {})",
                        raw.target,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            boot_tasks.push(BootTask {
                name: raw.name.clone(),
                target: raw.target.clone(),
            });
        }

        let files = validate_files(&m.files, &binaries)?;
        let package_files = validate_package_files(&m.package_files, &binaries, &files)?;

        let rootfs = m.rootfs.ok_or_else(|| missing("rootfs"))?;
        if rootfs.value.fs_type != "erofs" {
            return Err(rootfs.origin.error(
                "type",
                format!(
                    "{:?}: only erofs root images are built",
                    rootfs.value.fs_type
                ),
            ));
        }
        let rootfs_compression = match (rootfs.value.compression.as_str(), rootfs.value.level) {
            ("none", None) => ErofsCompression::None,
            ("lz4", None) => ErofsCompression::Lz4,
            ("lz4hc", level) => {
                let level = level.unwrap_or(9);
                if level > 12 {
                    return Err(rootfs.origin.error(
                        "level",
                        format!("{level} is out of range for lz4hc (0 to 12)"),
                    ));
                }
                ErofsCompression::Lz4hc(level)
            }
            ("none" | "lz4", Some(_)) => {
                return Err(rootfs.origin.error("level", "only lz4hc takes a level"));
            }
            (other, _) => {
                return Err(rootfs.origin.error(
                    "compression",
                    format!("{other:?}: erofs-utils 1.5 offers lz4hc, lz4 or none"),
                ));
            }
        };

        let rootfs_pcluster_size = rootfs.value.pcluster_size;
        if let Some(size) = rootfs_pcluster_size {
            if size % 4096 != 0 || !(4096..=MAX_PCLUSTER).contains(&size) {
                return Err(rootfs.origin.error(
                    "pcluster_size",
                    format!("{size}: use a multiple of 4096 from 4096 to {MAX_PCLUSTER}"),
                ));
            }
            if rootfs_compression == ErofsCompression::None {
                return Err(rootfs
                    .origin
                    .error("pcluster_size", "only applies to a compressed image"));
            }
        }

        let initramfs = m.initramfs.ok_or_else(|| missing("initramfs"))?;
        let initramfs_compression =
            Compression::new(&initramfs.value.compression, initramfs.value.level)
                .map_err(|reason| initramfs.origin.error("compression", reason))?;

        let disk = match m.disk {
            None => None,
            Some(d) => {
                for (field, value, range) in [
                    ("esp_mib", d.value.esp_mib, 40..=1024),
                    ("root_mib", d.value.root_mib, 16..=16384),
                    ("state_mib", d.value.state_mib, 16..=65536),
                ] {
                    if !range.contains(&value) {
                        return Err(d.origin.error(
                            field,
                            format!("{value} MiB: use {} to {} MiB", range.start(), range.end()),
                        ));
                    }
                }
                Some(DiskLayout {
                    esp_mib: d.value.esp_mib,
                    root_mib: d.value.root_mib,
                    state_mib: d.value.state_mib,
                    origin: d.origin,
                })
            }
        };

        let (update_trusted_keys, update_signing_key) = match m.update {
            None => (Vec::new(), None),
            Some(u) => {
                for (i, key) in u.value.trusted_keys.iter().enumerate() {
                    if let Err(e) = shoal_update::bundle::PublicKey::parse(key) {
                        return Err(u.origin.error(&format!("trusted_keys[{i}]"), e.to_string()));
                    }
                }
                let signing = u
                    .value
                    .signing_key
                    .as_ref()
                    .map(|path| u.origin.file.parent().unwrap_or(Path::new(".")).join(path));
                (u.value.trusted_keys, signing)
            }
        };

        Ok(Profile {
            name: name.value,
            description,
            file: file.to_path_buf(),
            source_date_epoch: epoch.value,
            kernel_package: package.value,
            cmdline: cmdline.value,
            init: init_spec,
            early_modules,
            full_modules,
            binaries,
            boot_tasks,
            files,
            package_files,
            rootfs_compression,
            rootfs_pcluster_size,
            initramfs_compression,
            disk,
            update_trusted_keys,
            update_signing_key,
        })
    }

    /// Every binary to build: init first, then the others in profile order, without repeats.
    pub fn binary_specs(&self) -> Vec<BinarySpec> {
        let mut specs = vec![self.init.clone()];
        for binary in &self.binaries {
            if !specs.contains(&binary.spec) {
                specs.push(binary.spec.clone());
            }
        }
        specs
    }
}

/// `a` is `b` or a directory above it.
fn covers(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}/"))
}

/// Checks that a profile may put a file at `path` in the root image: a valid absolute path,
/// not under a tree the builder or init owns, not replacing a directory the builder makes, and
/// not colliding with a generated file or with one of `taken` (path, what it is), nor being a
/// directory above any of them.
fn check_image_path<'a>(
    path: &str,
    taken: impl IntoIterator<Item = (&'a str, &'static str)>,
) -> Result<(), String> {
    valid_abs_path(path)?;
    if let Some(reserved) = RESERVED_PREFIXES.iter().find(|p| covers(p, path)) {
        return Err(format!(
            "{path} is under {reserved}, which the builder or init owns"
        ));
    }
    // A directory the builder makes may have files below it, but a file cannot replace it.
    let above_dir = RESERVED_PREFIXES
        .iter()
        .chain(&BUILDER_DIRS)
        .find(|dir| covers(path, dir));
    if let Some(dir) = above_dir {
        return Err(format!(
            "{path} would replace {dir}, which the builder creates"
        ));
    }
    let collision = GENERATED_FILES
        .iter()
        .map(|g| (*g, "a file the builder writes"))
        .chain(taken)
        .find(|(other, _)| covers(path, other) || covers(other, path));
    if let Some((other, what)) = collision {
        return Err(format!("{path} collides with {other}, {what}"));
    }
    Ok(())
}

/// Checks the `[[package_file]]` entries: a Debian package name, and a path in the image that
/// nobody else owns (as for `[[file]]`, and no other package file).
fn validate_package_files(
    entries: &[Src<RawPackageFile>],
    binaries: &[Binary],
    files: &[ImageFile],
) -> Result<Vec<PackageFile>> {
    let mut package_files: Vec<PackageFile> = Vec::new();
    for entry in entries {
        let raw = &entry.value;
        if raw.package.is_empty() {
            return Err(entry.origin.error("package", "must name a Debian package"));
        }
        if !valid_debian_package(&raw.package) {
            return Err(entry.origin.error(
                "package",
                format!(
                    "{:?} is not a Debian package name (a-z 0-9 + - ., at least two, starting \
                     with a letter or digit)",
                    raw.package
                ),
            ));
        }
        let taken = binaries
            .iter()
            .flat_map(Binary::paths)
            .map(|p| (p, "a binary"))
            .chain(files.iter().map(|f| (f.dest.as_str(), "a file")))
            .chain(
                package_files
                    .iter()
                    .map(|p| (p.path.as_str(), "another package file")),
            );
        check_image_path(&raw.path, taken).map_err(|reason| entry.origin.error("path", reason))?;
        package_files.push(PackageFile {
            package: raw.package.clone(),
            path: raw.path.clone(),
            origin: entry.origin.clone(),
        });
    }
    Ok(package_files)
}

/// Checks the `[[file]]` entries: a readable regular source, a destination nobody else owns
/// (reserved trees, generated files, binaries, other files, or a directory of any of them),
/// and plain permission bits.
fn validate_files(entries: &[Src<RawFile>], binaries: &[Binary]) -> Result<Vec<ImageFile>> {
    let mut files: Vec<ImageFile> = Vec::new();
    for entry in entries {
        let raw = &entry.value;
        let error = |field: &str, reason: String| entry.origin.error(field, reason);

        if raw.source.is_empty() || Path::new(&raw.source).is_absolute() {
            return Err(error(
                "source",
                format!(
                    "{:?}: use a path relative to the profile's directory",
                    raw.source
                ),
            ));
        }
        let dir = entry.origin.file.parent().unwrap_or(Path::new("."));
        let source = dir.join(&raw.source);
        match std::fs::metadata(&source) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(error(
                    "source",
                    format!("{} is not a regular file", source.display()),
                ));
            }
            Err(e) => {
                return Err(error(
                    "source",
                    format!("cannot read {}: {e}", source.display()),
                ));
            }
        }

        let taken = binaries
            .iter()
            .flat_map(Binary::paths)
            .map(|p| (p, "a binary"))
            .chain(files.iter().map(|f| (f.dest.as_str(), "another file")));
        check_image_path(&raw.dest, taken).map_err(|reason| error("dest", reason))?;

        let mode = raw.mode.unwrap_or(DEFAULT_FILE_MODE);
        if mode & !0o777 != 0 {
            return Err(error(
                "mode",
                format!("{mode:#o}: use permission bits only (0o000 to 0o777)"),
            ));
        }
        files.push(ImageFile {
            source,
            dest: raw.dest.clone(),
            mode,
        });
    }
    Ok(files)
}

fn validate_cmdline(cmdline: &str) -> Result<(), String> {
    if cmdline.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if cmdline.len() > MAX_CMDLINE {
        return Err(format!(
            "{} bytes; the kernel takes at most {MAX_CMDLINE}",
            cmdline.len()
        ));
    }
    if let Some(c) = cmdline
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' '))
    {
        return Err(format!("contains {c:?}; use printable ASCII and spaces"));
    }
    if cmdline.contains('$') {
        return Err("contains $, which iPXE would expand in boot.ipxe".into());
    }
    if cmdline.split(' ').any(|arg| arg.starts_with("initrd=")) {
        return Err("must not set initrd= (boot.ipxe adds initrd=initramfs)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "base"
description = "a base"
source_date_epoch = 1700000000

[kernel]
package = "linux-image-amd64"
cmdline = "console=ttyS0 quiet"

[init]
package = "shoal-init"
bin = "shoal-init"

[modules]
early = ["loop", "erofs"]
full = ["kernel/drivers/net/**"]

[[binary]]
package = "tools"
bin = "tool"
dest = "/usr/lib/shoal/tool"

[rootfs]
type = "erofs"
compression = "lz4hc"
level = 12

[initramfs]
compression = "zstd"
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let path = write(dir.path(), "child.toml", text);
        Profile::load(&path).unwrap_err().to_string()
    }

    #[test]
    fn loads_a_complete_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "base.toml", BASE);
        let p = Profile::load(&path).unwrap();
        assert_eq!(p.name, "base");
        assert_eq!(p.source_date_epoch, 1_700_000_000);
        assert_eq!(
            p.init,
            BinarySpec {
                package: "shoal-init".into(),
                bin: "shoal-init".into()
            }
        );
        assert_eq!(p.early_modules.len(), 2);
        assert_eq!(
            p.full_modules[0].selector,
            Selector::PathGlob("kernel/drivers/net/**".into())
        );
        assert_eq!(p.rootfs_compression, ErofsCompression::Lz4hc(12));
        assert_eq!(p.initramfs_compression, Compression::Zstd(19));
        assert_eq!(p.binary_specs().len(), 2);
    }

    #[test]
    fn extends_merges_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let path = write(
            dir.path(),
            "child.toml",
            r#"
extends = "base"
name = "child"
[kernel]
cmdline = "console=ttyS0"
[modules]
full = ["xfs"]
[[binary]]
package = "helpers"
bin = "orphans"
dest = "/usr/lib/shoal/orphans"
[[boot_task]]
name = "50-orphans"
target = "/usr/lib/shoal/orphans"
[initramfs]
compression = "none"
"#,
        );
        let p = Profile::load(&path).unwrap();
        assert_eq!(p.name, "child");
        assert_eq!(p.description, "a base");
        assert_eq!(p.kernel_package, "linux-image-amd64");
        assert_eq!(p.cmdline, "console=ttyS0");
        assert_eq!(p.full_modules.len(), 2);
        assert_eq!(p.full_modules[1].origin.field, "modules.full[0]");
        assert!(p.full_modules[1].origin.file.ends_with("child.toml"));
        assert_eq!(p.binaries.len(), 2);
        assert_eq!(
            p.boot_tasks,
            [BootTask {
                name: "50-orphans".into(),
                target: "/usr/lib/shoal/orphans".into()
            }]
        );
        assert_eq!(p.initramfs_compression, Compression::None);
        assert_eq!(p.rootfs_compression, ErofsCompression::Lz4hc(12));
    }

    #[test]
    fn disk_and_update_tables_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let path = write(
            dir.path(),
            "child.toml",
            "extends = \"base\"\n[disk]\nesp_mib = 64\nroot_mib = 128\nstate_mib = 32\n\
             [update]\ntrusted_keys = [\"ed25519:TrPurddRvGWDXsRRBNa5ULTarVbMSA5W8LwwDrjFxL0=\"]\n\
             signing_key = \"keys/dev.key\"\n",
        );
        let p = Profile::load(&path).unwrap();
        assert_eq!(p.disk.as_ref().map(|d| d.root_mib), Some(128));
        assert_eq!(p.update_trusted_keys.len(), 1);
        assert_eq!(p.update_signing_key, Some(dir.path().join("keys/dev.key")));
        let err =
            load_err("extends = \"base\"\n[disk]\nesp_mib = 8\nroot_mib = 128\nstate_mib = 32\n");
        assert!(
            err.contains("disk.esp_mib") && err.contains("8 MiB"),
            "{err}"
        );
        let err = load_err("extends = \"base\"\n[update]\ntrusted_keys = [\"rsa:AAAA\"]\n");
        assert!(
            err.contains("update.trusted_keys[0]") && err.contains("ed25519:"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_with_the_file_name() {
        let err = load_err("extends = \"base\"\nname = \"x\"\ncolour = \"blue\"\n");
        assert!(
            err.contains("child.toml") && err.contains("colour"),
            "{err}"
        );
        let err = load_err("extends = \"base\"\n[initramfs]\ncompresion = \"zstd\"\n");
        assert!(err.contains("compresion"), "{err}");
    }

    #[test]
    fn invalid_values_name_file_field_and_reason() {
        let err = load_err("extends = \"base\"\n[initramfs]\ncompression = \"xz\"\n");
        assert!(
            err.contains("child.toml: field `initramfs.compression`: unknown compression \"xz\""),
            "{err}"
        );
        let err = load_err("extends = \"base\"\n[initramfs]\ncompression = \"zstd\"\nlevel = 22\n");
        assert!(err.contains("level 22 is out of range for zstd"), "{err}");
        let err = load_err(
            "extends = \"base\"\n[[binary]]\npackage = \"p\"\nbin = \"b\"\ndest = \"usr/b\"\n",
        );
        assert!(
            err.contains("field `binary[0].dest`: \"usr/b\" is not an absolute path"),
            "{err}"
        );
        let err = load_err(
            "extends = \"base\"\n[[binary]]\npackage = \"p\"\nbin = \"b\"\ndest = \"/proc/b\"\n",
        );
        assert!(err.contains("under /proc"), "{err}");
        let err = load_err(
            "extends = \"base\"\n[[binary]]\npackage = \"p\"\nbin = \"b\"\ndest = \"/usr/lib/shoal/tool\"\n",
        );
        assert!(err.contains("already the path of a binary"), "{err}");
        // Links: checked like dests, against every binary and link.
        let err = load_err(
            "extends = \"base\"\n[[binary]]\npackage = \"p\"\nbin = \"b\"\ndest = \"/usr/lib/shoal/b\"\nlinks = [\"/usr/lib/shoal/c\", \"/usr/lib/shoal/tool\"]\n",
        );
        assert!(
            err.contains("field `binary[0].links[1]`: /usr/lib/shoal/tool is already the path"),
            "{err}"
        );
        let err = load_err(
            "extends = \"base\"\n[[binary]]\npackage = \"p\"\nbin = \"b\"\ndest = \"/usr/lib/shoal/b\"\nlinks = [\"/usr/lib/shoal/b\"]\n",
        );
        assert!(err.contains("field `binary[0].links[0]`"), "{err}");
        let err = load_err(
            "extends = \"base\"\n[[binary]]\npackage = \"p\"\nbin = \"b\"\ndest = \"/usr/lib/shoal/b\"\nlinks = [\"/sys/b\"]\n",
        );
        assert!(
            err.contains("field `binary[0].links[0]`: /sys/b is under /sys"),
            "{err}"
        );
        let err = load_err(
            "extends = \"base\"\n[[boot_task]]\nname = \"orphans\"\ntarget = \"/usr/lib/shoal/tool\"\n",
        );
        assert!(err.contains("field `boot_task[0].name`"), "{err}");
        let err = load_err(
            "extends = \"base\"\n[[boot_task]]\nname = \"10-x\"\ntarget = \"/usr/bin/x\"\n",
        );
        assert!(
            err.contains("field `boot_task[0].target`: /usr/bin/x is not the dest"),
            "{err}"
        );
        let err =
            load_err("extends = \"base\"\n[kernel]\ncmdline = \"console=ttyS0 initrd=foo\"\n");
        assert!(err.contains("field `kernel.cmdline`"), "{err}");
        let err = load_err("extends = \"base\"\n[modules]\nearly = [\"drivers/net/*\"]\n");
        assert!(err.contains("field `modules.early[0]`"), "{err}");
        let err = load_err("extends = \"base\"\nname = \"Big Name\"\n");
        assert!(err.contains("field `name`"), "{err}");
        let err = load_err("extends = \"base\"\nsource_date_epoch = 99999999999\n");
        assert!(
            err.contains("field `source_date_epoch`: must fit in 32 bits"),
            "{err}"
        );
        let err =
            load_err("extends = \"base\"\n[rootfs]\ntype = \"squashfs\"\ncompression = \"xz\"\n");
        assert!(err.contains("field `rootfs.type`"), "{err}");
        let err = load_err(
            "extends = \"base\"\n[rootfs]\ntype = \"erofs\"\ncompression = \"lz4\"\npcluster_size = 5000\n",
        );
        assert!(err.contains("field `rootfs.pcluster_size`: 5000"), "{err}");
        // The base's own values are reported against the base file.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            &BASE.replace("level = 12", "level = 13"),
        );
        let path = write(dir.path(), "child.toml", "extends = \"base\"\n");
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(err.contains("base.toml: field `rootfs.level`"), "{err}");
    }

    #[test]
    fn missing_fields_and_cycles() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "lone.toml", "name = \"lone\"\n");
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("lone.toml: field `source_date_epoch`: required"),
            "{err}"
        );
        write(dir.path(), "a.toml", "extends = \"b\"\n");
        let path = write(dir.path(), "b.toml", "extends = \"a\"\n");
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        let err = Profile::load(&dir.path().join("nope.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.toml: cannot read it"), "{err}");
    }

    #[test]
    fn files_resolve_against_the_profile_that_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("base/etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("svc")).unwrap();
        write(
            dir.path(),
            "base/base.toml",
            &format!("{BASE}\n[[file]]\nsource = \"etc/motd\"\ndest = \"/etc/motd\"\n"),
        );
        write(dir.path(), "base/etc/motd", "hello\n");
        write(dir.path(), "svc/a.toml", "command = [\"/bin/a\"]\n");
        let path = write(
            dir.path(),
            "child.toml",
            r#"
extends = "base/base.toml"
name = "child"
[[file]]
source = "svc/a.toml"
dest = "/etc/shoal/services/a.toml"
mode = 0o600
"#,
        );
        let p = Profile::load(&path).unwrap();
        assert_eq!(
            p.files,
            [
                ImageFile {
                    source: dir.path().join("base/etc/motd"),
                    dest: "/etc/motd".into(),
                    mode: 0o644,
                },
                ImageFile {
                    source: dir.path().join("svc/a.toml"),
                    dest: "/etc/shoal/services/a.toml".into(),
                    mode: 0o600,
                },
            ]
        );
    }

    #[test]
    fn bad_files_name_the_field_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        write(dir.path(), "a.toml", "");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = |entries: &str| {
            let path = write(
                dir.path(),
                "child.toml",
                &format!("extends = \"base\"\n{entries}"),
            );
            Profile::load(&path).unwrap_err().to_string()
        };
        let file = |source: &str, dest: &str| {
            format!("[[file]]\nsource = \"{source}\"\ndest = \"{dest}\"\n")
        };
        let ok = file("a.toml", "/etc/shoal/services/a.toml");

        let e = err(&file("/etc/hosts", "/etc/hosts"));
        assert!(
            e.contains("child.toml: field `file[0].source`: \"/etc/hosts\": use a path relative"),
            "{e}"
        );
        let e = err(&file("missing.toml", "/etc/x"));
        assert!(e.contains("field `file[0].source`: cannot read"), "{e}");
        let e = err(&file("sub", "/etc/x"));
        assert!(e.contains("is not a regular file"), "{e}");
        let e = err(&file("a.toml", "etc/x"));
        assert!(
            e.contains("field `file[0].dest`: \"etc/x\" is not an absolute path"),
            "{e}"
        );
        let e = err(&file("a.toml", "/etc/shoal/boot.d/10-x"));
        assert!(e.contains("is under /etc/shoal/boot.d"), "{e}");
        let e = err(&file("a.toml", "/etc/passwd"));
        assert!(
            e.contains("/etc/passwd collides with /etc/passwd, a file the builder writes"),
            "{e}"
        );
        let e = err(&file("a.toml", "/usr/lib/shoal/tool"));
        assert!(e.contains("a binary"), "{e}");
        let e = err(&file("a.toml", "/usr/lib/shoal"));
        assert!(e.contains("would replace /usr/lib/shoal"), "{e}");
        let e = err(&file("a.toml", "/lib"));
        assert!(e.contains("would replace /lib/modules"), "{e}");
        let e = err(&format!("{ok}{ok}"));
        assert!(
            e.contains("field `file[1].dest`") && e.contains("another file"),
            "{e}"
        );
        let e = err(&format!(
            "{}{}",
            file("a.toml", "/opt/x/a"),
            file("a.toml", "/opt/x")
        ));
        assert!(e.contains("/opt/x collides with /opt/x/a"), "{e}");
        let e = err(&file("a.toml", "/etc/shoal/services"));
        assert!(e.contains("would replace /etc/shoal/services"), "{e}");
        let e = err(&format!("{ok}mode = 0o4755\n"));
        assert!(
            e.contains("field `file[0].mode`: 0o4755: use permission bits only"),
            "{e}"
        );
        let e = err(&format!("{ok}owner = \"root\"\n"));
        assert!(e.contains("owner"), "{e}");
        // Files may go below the directories the builder makes.
        let path = write(
            dir.path(),
            "child.toml",
            &format!("extends = \"base\"\n{}", file("a.toml", "/var/lib/a")),
        );
        assert_eq!(Profile::load(&path).unwrap().files[0].dest, "/var/lib/a");
    }

    fn package_file(package: &str, path: &str) -> String {
        format!("[[package_file]]\npackage = \"{package}\"\npath = \"{path}\"\n")
    }

    #[test]
    fn package_files_merge_through_extends() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            &format!(
                "{BASE}\n{}",
                package_file("pci.ids", "/usr/share/misc/pci.ids")
            ),
        );
        let path = write(
            dir.path(),
            "child.toml",
            &format!(
                "extends = \"base\"\nname = \"child\"\n{}{}",
                package_file("hwdata", "/usr/share/hwdata/usb.ids"),
                package_file("pci.ids", "/usr/share/doc/pci.ids/copyright"),
            ),
        );
        let p = Profile::load(&path).unwrap();
        let origin = |file: &str, field: &str| Origin {
            file: dir.path().join(file),
            field: field.into(),
        };
        assert_eq!(
            p.package_files,
            [
                PackageFile {
                    package: "pci.ids".into(),
                    path: "/usr/share/misc/pci.ids".into(),
                    origin: origin("base.toml", "package_file[0]"),
                },
                PackageFile {
                    package: "hwdata".into(),
                    path: "/usr/share/hwdata/usb.ids".into(),
                    origin: origin("child.toml", "package_file[0]"),
                },
                PackageFile {
                    package: "pci.ids".into(),
                    path: "/usr/share/doc/pci.ids/copyright".into(),
                    origin: origin("child.toml", "package_file[1]"),
                },
            ]
        );
        // A clash with the base's entry is reported against the child's.
        let path = write(
            dir.path(),
            "child.toml",
            &format!(
                "extends = \"base\"\n{}",
                package_file("pci.ids", "/usr/share/misc/pci.ids")
            ),
        );
        let e = Profile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(
                "child.toml: field `package_file[0].path`: /usr/share/misc/pci.ids collides \
                 with /usr/share/misc/pci.ids, another package file"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_package_files_name_the_field_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        write(dir.path(), "motd", "hello\n");
        let err = |entries: &str| {
            let path = write(
                dir.path(),
                "child.toml",
                &format!("extends = \"base\"\n{entries}"),
            );
            Profile::load(&path).unwrap_err().to_string()
        };
        let ok = package_file("pci.ids", "/usr/share/misc/pci.ids");

        let e = err(&package_file("", "/usr/share/misc/pci.ids"));
        assert!(
            e.contains("child.toml: field `package_file[0].package`: must name a Debian package"),
            "{e}"
        );
        for bad in [
            "PCI.ids",
            ".ids",
            "-ids",
            "p",
            "pci ids",
            "pci_ids",
            "pci.ids/x",
        ] {
            let e = err(&package_file(bad, "/usr/share/misc/pci.ids"));
            assert!(
                e.contains(&format!(
                    "field `package_file[0].package`: {bad:?} is not a Debian package name"
                )),
                "{bad}: {e}"
            );
        }
        let e = err(&package_file("pci.ids", "usr/share/misc/pci.ids"));
        assert!(
            e.contains(
                "field `package_file[0].path`: \"usr/share/misc/pci.ids\" is not an absolute path"
            ),
            "{e}"
        );
        let e = err(&package_file("pci.ids", "/usr/share/../misc/pci.ids"));
        assert!(e.contains("has an empty, . or .. component"), "{e}");
        let e = err(&package_file("pci.ids", "/usr/share/misc/pci ids"));
        assert!(e.contains("has characters outside"), "{e}");
        let e = err(&package_file("pci.ids", "/proc/pci.ids"));
        assert!(
            e.contains(
                "field `package_file[0].path`: /proc/pci.ids is under /proc, which the builder \
                 or init owns"
            ),
            "{e}"
        );
        let e = err(&package_file("pci.ids", "/lib/modules/pci.ids"));
        assert!(e.contains("is under /lib/modules"), "{e}");
        let e = err(&package_file("pci.ids", "/usr/lib/shoal"));
        assert!(e.contains("would replace /usr/lib/shoal"), "{e}");
        let e = err(&package_file("pci.ids", "/etc/os-release"));
        assert!(
            e.contains("/etc/os-release collides with /etc/os-release, a file the builder writes"),
            "{e}"
        );
        let e = err(&package_file("pci.ids", "/usr/lib/shoal/tool"));
        assert!(
            e.contains(
                "field `package_file[0].path`: /usr/lib/shoal/tool collides with \
                 /usr/lib/shoal/tool, a binary"
            ),
            "{e}"
        );
        let e = err(&format!(
            "[[file]]\nsource = \"motd\"\ndest = \"/etc/motd\"\n{}",
            package_file("base-files", "/etc/motd")
        ));
        assert!(
            e.contains("field `package_file[0].path`: /etc/motd collides with /etc/motd, a file"),
            "{e}"
        );
        let e = err(&format!("{ok}{ok}"));
        assert!(
            e.contains("field `package_file[1].path`") && e.contains("another package file"),
            "{e}"
        );
        let e = err(&format!(
            "{ok}{}",
            package_file("pci.ids", "/usr/share/misc")
        ));
        assert!(
            e.contains(
                "/usr/share/misc collides with /usr/share/misc/pci.ids, another package file"
            ),
            "{e}"
        );
        let e = err(&format!("{ok}mode = 0o644\n"));
        assert!(
            e.contains("child.toml") && e.contains("unknown field `mode`"),
            "{e}"
        );
        let e = err("[[package_file]]\npackage = \"pci.ids\"\n");
        assert!(e.contains("missing field `path`"), "{e}");
    }

    #[test]
    fn debian_package_names() {
        for good in [
            "pci.ids",
            "g++",
            "0ad",
            "libc6",
            "linux-image-6.1.0-56-amd64",
        ] {
            assert!(valid_debian_package(good), "{good}");
        }
        for bad in ["", "a", "Pci", "+x", "a_b", "a b", "a/b", "é1"] {
            assert!(!valid_debian_package(bad), "{bad}");
        }
    }

    #[test]
    fn compression_parsing() {
        assert_eq!(Compression::parse("none"), Ok(Compression::None));
        assert_eq!(Compression::parse("zstd:3"), Ok(Compression::Zstd(3)));
        assert_eq!(Compression::parse("lz4"), Ok(Compression::Lz4(9)));
        assert_eq!(Compression::parse("gzip:9").unwrap().to_string(), "gzip:9");
        assert!(Compression::parse("none:1").is_err());
        assert!(Compression::parse("zstd:x").is_err());
    }

    #[test]
    fn shipped_profiles_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let default = Profile::load(&dir.join("default.toml")).unwrap();
        assert_eq!(default.name, "default");
        assert_eq!(default.init.bin, "shoal-init");
        let test = Profile::load(&dir.join("test.toml")).unwrap();
        assert_eq!(test.name, "test");
        assert!(
            test.binaries
                .iter()
                .any(|b| b.spec.package == "shoal-test-helpers"
                    && b.spec.bin == "shoal-test-orphans"
                    && b.dest == "/usr/lib/shoal/shoal-test-orphans")
        );
        assert!(
            test.boot_tasks
                .iter()
                .any(|t| t.name == "50-orphans" && t.target == "/usr/lib/shoal/shoal-test-orphans")
        );
        assert_eq!(test.early_modules, default.early_modules);
        // The hardware inventory's PCI names and their licence.
        let package_files: Vec<(&str, &str)> = default
            .package_files
            .iter()
            .map(|f| (f.package.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            package_files,
            [
                ("pci.ids", "/usr/share/misc/pci.ids"),
                ("pci.ids", "/usr/share/doc/pci.ids/copyright"),
            ]
        );
        assert_eq!(test.package_files, default.package_files);
        // The node's daemons are one executable under five names.
        let node = default
            .binaries
            .iter()
            .find(|b| b.dest == "/usr/lib/shoal/shoal-node")
            .expect("shoal-node");
        for daemon in ["supervisor", "netd", "configd", "clusterd", "inventory"] {
            let path = format!("/usr/lib/shoal/shoal-{daemon}");
            assert!(node.links.contains(&path), "{path}: {node:?}");
        }
        // The supervisor's test services (qemu-tests/tests/supervisor.rs).
        assert!(
            test.files
                .iter()
                .any(|f| f.dest == "/etc/shoal/services/crashy.toml"
                    && f.source.ends_with("test-services/crashy.toml")),
            "{:?}",
            test.files
        );
    }
}
