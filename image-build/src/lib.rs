//! Builds Shoal's boot artefacts from Debian's kernel package, our static binaries and the
//! data files a profile takes from other Debian packages.
//!
//! [`build`] turns a profile (`image-build/profiles/*.toml`) into an output directory holding
//! `vmlinuz`, `initramfs`, `rootfs.erofs`, `boot.ipxe` and `manifest.json`, reproducibly: the
//! same inputs give byte-identical files. See `docs/architecture.md` ("Image layout") for the
//! contract with init, and this crate's README for the profile format.
//!
//! ```no_run
//! use shoal_image_build::{build, BuildOptions};
//!
//! let manifest = build(&BuildOptions::new("default"))?;
//! println!("kernel {}", manifest.kernel.release);
//! # Ok::<(), shoal_image_build::Error>(())
//! ```

pub mod binaries;
mod cmd;
pub mod cpio;
pub mod debian;
pub mod disk;
mod elf;
mod error;
mod glob;
mod image;
pub mod kernel;
mod manifest;
pub mod modules;
pub mod profile;
mod progress;
pub mod verity;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use image::{BOOT_TASK_DIR, INITRAMFS_ROOT_IMAGE};
pub use manifest::{
    Artefact, BinaryInfo, KernelInfo, MANIFEST_FILE, Manifest, ModuleCounts, PackageFileInfo,
    RootfsInfo, UpdateInfo,
};
pub use profile::{Compression, Profile};
pub use progress::ProgressMode;

use crate::binaries::Source;
use crate::kernel::sha256_file;
use crate::modules::{ModuleTree, SelectError};
use crate::profile::ModuleEntry;

/// Artefact file names in an output directory.
pub mod artefacts {
    /// The kernel image, unchanged from the Debian package.
    pub const VMLINUZ: &str = "vmlinuz";
    /// The initramfs (a cpio archive, compressed as the profile says).
    pub const INITRAMFS: &str = "initramfs";
    /// The root filesystem image (also inside the initramfs at `/shoal/rootfs.erofs`).
    pub const ROOTFS: &str = "rootfs.erofs";
    /// The iPXE script.
    pub const BOOT_IPXE: &str = "boot.ipxe";
    /// The A/B disk image (sparse), for flashing and for hypervisors that take raw disks.
    pub const DISK_RAW: &str = "disk.raw";
    /// The same disk, zstd-compressed, for downloading and flashing.
    pub const DISK_RAW_ZST: &str = "disk.raw.zst";
    /// The same disk as qcow2, for QEMU and IaaS clouds.
    pub const DISK_QCOW2: &str = "disk.qcow2";
    /// The signed update bundle (kernel, disk initramfs, root slot), with a signing key.
    pub const UPDATE_BUNDLE: &str = "update.bundle";
}

/// What to build and where. Only `profile` is required; see [`BuildOptions::new`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// A profile name (looked up in `image-build/profiles/`) or a path to a `.toml` file.
    pub profile: String,
    /// The output directory; default `<workspace>/out/<profile name>`. It is replaced as a
    /// whole when the build succeeds and left alone when it fails.
    pub out_dir: Option<PathBuf>,
    /// Take prebuilt binaries (named after their cargo binary) from here instead of building.
    pub binaries_dir: Option<PathBuf>,
    /// Cache for unpacked Debian packages (the kernel, package files); default
    /// `<workspace>/.cache/shoal`.
    pub cache_dir: Option<PathBuf>,
    /// Use this kernel package instead of the profile's.
    pub kernel_package: Option<String>,
    /// Use this initramfs compression instead of the profile's.
    pub initramfs_compression: Option<Compression>,
    /// Timestamp for all files; default `$SOURCE_DATE_EPOCH`, else the profile's.
    pub source_date_epoch: Option<u64>,
    /// How to report progress on stderr.
    pub progress: ProgressMode,
    /// Sign an `update.bundle` with this key file instead of the profile's `update.signing_key`.
    pub signing_key: Option<PathBuf>,
}

impl BuildOptions {
    /// Options that build `profile` with every default.
    pub fn new(profile: impl Into<String>) -> BuildOptions {
        BuildOptions {
            profile: profile.into(),
            ..BuildOptions::default()
        }
    }
}

/// The workspace root (the directory holding the workspace `Cargo.toml`), as seen when this
/// crate was compiled.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Where the shipped profiles live: `<workspace>/image-build/profiles`.
pub fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

/// The default output directory of a profile: `<workspace>/out/<profile>`.
pub fn default_out_dir(profile: &str) -> PathBuf {
    workspace_root().join("out").join(profile)
}

/// The default package cache: `<workspace>/.cache/shoal`.
pub fn default_cache_dir() -> PathBuf {
    workspace_root().join(".cache").join("shoal")
}

/// Loads a profile by name or path, as [`build`] does.
pub fn load_profile(name_or_path: &str) -> Result<Profile> {
    Profile::load(&Profile::resolve(name_or_path, &profiles_dir()))
}

fn source_date_epoch(opts: &BuildOptions, profile: &Profile) -> Result<u64> {
    let epoch = match (opts.source_date_epoch, std::env::var("SOURCE_DATE_EPOCH")) {
        (Some(epoch), _) => epoch,
        (None, Ok(text)) if !text.trim().is_empty() => text.trim().parse().map_err(|_| {
            Error::Invalid(format!(
                "SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970"
            ))
        })?,
        _ => profile.source_date_epoch,
    };
    if epoch > u64::from(u32::MAX) {
        return Err(Error::Invalid(format!(
            "SOURCE_DATE_EPOCH {epoch} does not fit in 32 bits (cpio stores 32-bit times)"
        )));
    }
    Ok(epoch)
}

fn select(tree: &ModuleTree, entries: &[ModuleEntry]) -> Result<BTreeSet<String>> {
    let selectors: Vec<_> = entries.iter().map(|e| e.selector.clone()).collect();
    tree.select(&selectors).map_err(|e| match e {
        SelectError::Selector { index, reason } => {
            let origin = &entries[index].origin;
            Error::ProfileInvalid {
                file: origin.file.clone(),
                field: origin.field.clone(),
                reason,
            }
        }
        SelectError::Dependency(reason) => Error::Modules(reason),
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path).map_err(Error::io("stat", path))?.len())
}

/// Builds the profile's artefacts into the output directory and returns the manifest.
///
/// Steps: build (or take) the binaries and check they are static; fetch the kernel package
/// and the packages of the profile's package files into the cache; read the modules and select the early and full sets; stage the root tree
/// and make `rootfs.erofs`; write the initramfs around it; write `boot.ipxe` and the manifest;
/// then swap the finished directory into place.
/// The `boot.ipxe` of the image built in `dir` (its manifest says which kernel and command
/// line), with `shoal.config=<config_url>` added: one image served to many clusters, each
/// with its own script. The URL's placeholders become iPXE's ([`image::ipxe_config_url`]).
pub fn ipxe_script(dir: &Path, config_url: &str) -> Result<String> {
    let manifest = Manifest::load(&dir.join("manifest.json"))?;
    let url = image::ipxe_config_url(config_url).map_err(Error::Invalid)?;
    Ok(image::boot_ipxe(
        &manifest.profile,
        &manifest.kernel.release,
        &manifest.cmdline,
        Some(&url),
    ))
}

pub fn build(opts: &BuildOptions) -> Result<Manifest> {
    let workspace = workspace_root();
    let mut profile = load_profile(&opts.profile)?;
    if let Some(package) = &opts.kernel_package {
        if !package.starts_with("linux-image-") {
            return Err(Error::Invalid(format!(
                "--kernel-package {package}: expected a linux-image-* package"
            )));
        }
        profile.kernel_package = package.clone();
    }
    if let Some(compression) = opts.initramfs_compression {
        profile.initramfs_compression = compression;
    }
    let epoch = source_date_epoch(opts, &profile)?;
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| default_out_dir(&profile.name));
    let cache_dir = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let progress = progress::Progress::new(opts.progress);
    tracing::info!(profile = %profile.name, file = %profile.file.display(), out = %out_dir.display(), epoch, "building");

    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".{}.build-", profile.name))
        .tempdir_in(parent)
        .map_err(Error::io("create a temporary directory in", parent))?;
    let staging = scratch.path().join("artefacts");
    let work = scratch.path().join("work");
    fs::create_dir_all(&staging).map_err(Error::io("create", &staging))?;
    fs::create_dir_all(&work).map_err(Error::io("create", &work))?;

    // Binaries.
    let specs = profile.binary_specs();
    let binaries = match &opts.binaries_dir {
        Some(dir) => {
            let step = progress.step(format!("checking prebuilt binaries in {}", dir.display()));
            let paths = binaries::provide(&specs, &Source::Dir(dir), |_| {})?;
            step.done(format!("{} checked, all static", paths.len()));
            paths
        }
        None => {
            let mut step = progress.step("building binaries");
            let paths = binaries::provide(
                &specs,
                &Source::Build {
                    workspace: &workspace,
                },
                |m| step.set_message(m),
            )?;
            step.done(format!("{} built, all static", paths.len()));
            paths
        }
    };

    // Kernel.
    let mut step = progress.step(format!("resolving {}", profile.kernel_package));
    let kernel = kernel::fetch(&profile.kernel_package, &cache_dir, |m| step.set_message(m))?;
    step.done(format!(
        "{} {} ({})",
        kernel.package, kernel.version, kernel.release
    ));

    // Files from Debian packages.
    let package_files = if profile.package_files.is_empty() {
        Vec::new()
    } else {
        let mut step = progress.step("fetching package files");
        let files = debian::fetch_package_files(&profile.package_files, &cache_dir, |m| {
            step.set_message(m)
        })?;
        let mut packages: Vec<String> = Vec::new();
        for file in &files {
            let package = format!("{} {}", file.package, file.version);
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
        step.done(format!("{} from {}", files.len(), packages.join(", ")));
        files
    };

    // Modules.
    let step = progress.step("reading module metadata");
    let tree = ModuleTree::scan(&kernel.modules_dir, |i, n| {
        if i % 64 == 0 || i == n {
            step.set_progress(i as u64, n as u64);
        }
    })?;
    step.done(format!("{} modules", tree.len()));
    let step = progress.step("selecting modules");
    let early = select(&tree, &profile.early_modules)?;
    let mut full_entries = profile.early_modules.clone();
    full_entries.extend(profile.full_modules.iter().cloned());
    let full = select(&tree, &full_entries)?;
    step.done(format!("early {}, full {}", early.len(), full.len()));

    let content = image::Content {
        profile: &profile,
        kernel: &kernel,
        binaries: &binaries,
        package_files: &package_files,
        modules: &tree,
        early: &early,
        full: &full,
        epoch,
    };

    // Root image.
    let step = progress.step("staging the root filesystem");
    let root = work.join("rootfs");
    let entries = image::stage_rootfs(&root, &content)?;
    step.done(format!("{entries} entries"));
    let step = progress.step(format!("mkfs.erofs ({})", profile.rootfs_compression));
    let rootfs_image = staging.join(artefacts::ROOTFS);
    let uuid = image::erofs_uuid(&profile.name, &kernel.release, epoch);
    image::mkfs_erofs(
        &root,
        &rootfs_image,
        profile.rootfs_compression,
        profile.rootfs_pcluster_size,
        epoch,
        &uuid,
    )?;
    step.done(mib(file_size(&rootfs_image)?));

    // Initramfs.
    let step = progress.step(format!(
        "writing the initramfs (root image stored, the rest {})",
        profile.initramfs_compression
    ));
    let initramfs = staging.join(artefacts::INITRAMFS);
    let size = image::write_initramfs(
        &initramfs,
        &work,
        &content,
        Some(&rootfs_image),
        profile.initramfs_compression,
    )?;
    step.done(format!(
        "{} ({} unpacked)",
        mib(size.written),
        mib(size.uncompressed)
    ));

    // The A/B disk image.
    let disk = match &profile.disk {
        None => None,
        Some(layout) => {
            let mut step = progress.step("fetching systemd-boot");
            let bootloader = debian::fetch_package_files(
                &[profile::PackageFile {
                    package: "systemd-boot-efi".into(),
                    path: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
                    origin: layout.origin.clone(),
                }],
                &cache_dir,
                |m| step.set_message(m),
            )?
            .remove(0);
            step.done(format!("{} {}", bootloader.package, bootloader.version));
            let step = progress.step("writing the disk image (ESP, root slots, STATE)");
            let disk_initramfs = work.join("initramfs-disk");
            image::write_initramfs(
                &disk_initramfs,
                &work,
                &content,
                None,
                profile.initramfs_compression,
            )?;
            let raw = staging.join(artefacts::DISK_RAW);
            let written = disk::write(
                &raw,
                &disk::Inputs {
                    layout,
                    vmlinuz: &kernel.vmlinuz,
                    initramfs: &disk_initramfs,
                    rootfs: &rootfs_image,
                    bootloader: &bootloader.source,
                    bootloader_source: format!("{} {}", bootloader.package, bootloader.version),
                    cmdline: &profile.cmdline,
                    version: env!("CARGO_PKG_VERSION"),
                    epoch,
                    seed: &format!("{}\0{}\0{}\0{}", profile.name, kernel.release, epoch, uuid),
                    work: &work,
                },
            )?;
            disk::qcow2(&raw, &staging.join(artefacts::DISK_QCOW2))?;
            cmd::run(
                std::process::Command::new("zstd")
                    .args(["-q", "-T1", "-9", "-f"])
                    .arg(&raw)
                    .arg("-o")
                    .arg(staging.join(artefacts::DISK_RAW_ZST)),
            )?;
            step.done(format!(
                "{} virtual, slot A root hash {}",
                mib(written.info.bytes),
                &written.info.root_hash[..16]
            ));
            Some((written, disk_initramfs))
        }
    };

    // The update bundle: what the disk's slot A holds, signed.
    let signing_key = opts
        .signing_key
        .clone()
        .or_else(|| profile.update_signing_key.clone());
    let update = match (&signing_key, &disk) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Error::Invalid(
                "an update bundle is made from the disk image: the profile needs a [disk] table"
                    .into(),
            ));
        }
        (Some(key_path), Some((written, disk_initramfs))) => {
            let step = progress.step("signing the update bundle");
            let text = fs::read_to_string(key_path).map_err(Error::io("read", key_path))?;
            let key = shoal_update::bundle::SigningKey::parse(&text)
                .map_err(|e| Error::Invalid(format!("{}: {e}", key_path.display())))?;
            let out = staging.join(artefacts::UPDATE_BUNDLE);
            let file = fs::File::create(&out).map_err(Error::io("create", &out))?;
            let mut writer = std::io::BufWriter::new(file);
            let open = |path: &Path| -> Result<(u64, Box<dyn std::io::Read>)> {
                let f = fs::File::open(path).map_err(Error::io("open", path))?;
                let size = f.metadata().map_err(Error::io("stat", path))?.len();
                Ok((size, Box::new(f)))
            };
            let (kernel_size, kernel_reader) = open(&kernel.vmlinuz)?;
            let (initramfs_size, initramfs_reader) = open(disk_initramfs)?;
            let bundle_manifest = shoal_update::bundle::write(
                &mut writer,
                shoal_update::bundle::Manifest {
                    format: 0,
                    version: env!("CARGO_PKG_VERSION").into(),
                    arch: std::env::consts::ARCH.into(),
                    profile: profile.name.clone(),
                    kernel_release: kernel.release.clone(),
                    cmdline: profile.cmdline.clone(),
                    root_hash: written.info.root_hash.clone(),
                    hash_offset: written.info.hash_offset,
                    key: String::new(),
                    parts: Vec::new(),
                },
                vec![
                    ("vmlinuz", kernel_size, kernel_reader),
                    ("initramfs", initramfs_size, initramfs_reader),
                    (
                        "root",
                        written.slot.len() as u64,
                        Box::new(&written.slot[..]),
                    ),
                ],
                &key,
            )
            .map_err(|e| Error::Invalid(format!("update bundle: {e}")))?;
            std::io::Write::flush(&mut writer).map_err(Error::io("write", &out))?;
            step.done(format!("signed by {}", bundle_manifest.key));
            Some(UpdateInfo {
                version: bundle_manifest.version,
                key: bundle_manifest.key,
            })
        }
    };

    // Kernel, iPXE script, manifest.
    let step = progress.step("writing vmlinuz, boot.ipxe and manifest.json");
    let vmlinuz = staging.join(artefacts::VMLINUZ);
    fs::copy(&kernel.vmlinuz, &vmlinuz).map_err(Error::io(
        format!("copy {} to", kernel.vmlinuz.display()),
        &vmlinuz,
    ))?;
    let ipxe = staging.join(artefacts::BOOT_IPXE);
    fs::write(
        &ipxe,
        image::boot_ipxe(&profile.name, &kernel.release, &profile.cmdline, None),
    )
    .map_err(Error::io("write", &ipxe))?;
    let manifest = Manifest {
        profile: profile.name.clone(),
        shoal_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: KernelInfo {
            requested_package: kernel.requested_package.clone(),
            package: kernel.package.clone(),
            version: kernel.version.clone(),
            release: kernel.release.clone(),
            deb_sha256: kernel.deb_sha256.clone(),
        },
        cmdline: profile.cmdline.clone(),
        source_date_epoch: epoch,
        rootfs: RootfsInfo {
            fs_type: "erofs".into(),
            compression: profile.rootfs_compression.to_string(),
            pcluster_size: profile.rootfs_pcluster_size,
            uuid,
        },
        initramfs_compression: profile.initramfs_compression.to_string(),
        modules: ModuleCounts {
            early: early.len(),
            full: full.len(),
        },
        binaries: binary_infos(&profile, &binaries)?,
        package_files: package_files
            .iter()
            .map(|f| PackageFileInfo {
                package: f.package.clone(),
                version: f.version.clone(),
                deb_sha256: f.deb_sha256.clone(),
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            })
            .collect(),
        disk: disk.map(|(written, _)| written.info),
        update,
        artefacts: artefact_infos(&staging)?,
    };
    let manifest_path = staging.join(MANIFEST_FILE);
    fs::write(&manifest_path, manifest.to_json()).map_err(Error::io("write", &manifest_path))?;
    normalize_outputs(&staging, epoch)?;
    step.done("");

    publish(&staging, &out_dir, scratch.path())?;
    tracing::info!(out = %out_dir.display(), "done");
    Ok(manifest)
}

fn binary_infos(
    profile: &Profile,
    paths: &BTreeMap<profile::BinarySpec, PathBuf>,
) -> Result<Vec<BinaryInfo>> {
    let mut infos = Vec::new();
    for (spec, path) in paths {
        let mut dests = Vec::new();
        if *spec == profile.init {
            dests.extend(["/init".to_owned(), "/sbin/init".to_owned()]);
        }
        dests.extend(
            profile
                .binaries
                .iter()
                .filter(|b| b.spec == *spec)
                .map(|b| b.dest.clone()),
        );
        infos.push(BinaryInfo {
            package: spec.package.clone(),
            bin: spec.bin.clone(),
            paths: dests,
            size: file_size(path)?,
            sha256: sha256_file(path)?,
        });
    }
    Ok(infos)
}

fn artefact_infos(dir: &Path) -> Result<Vec<Artefact>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(Error::io("list", dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != MANIFEST_FILE)
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            Ok(Artefact {
                size: file_size(&path)?,
                sha256: sha256_file(&path)?,
                name,
            })
        })
        .collect()
}

/// Output files get mode 0644 and the fixed mtime, so copies of the directory compare equal.
fn normalize_outputs(dir: &Path, epoch: u64) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mtime = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let path = entry.map_err(Error::io("list", dir))?.path();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(Error::io("chmod", &path))?;
        let file = fs::File::options()
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        file.set_modified(mtime)
            .map_err(Error::io("set the mtime of", &path))?;
        file.sync_all().map_err(Error::io("sync", &path))?;
    }
    Ok(())
}

/// Moves the finished `staging` directory to `out_dir`, replacing a previous build there.
/// A directory that does not look like a previous build (no manifest) is never replaced.
fn publish(staging: &Path, out_dir: &Path, scratch: &Path) -> Result<()> {
    match fs::symlink_metadata(out_dir) {
        Ok(meta) => {
            let is_empty_dir = meta.is_dir()
                && fs::read_dir(out_dir)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
            if !meta.is_dir() || !(is_empty_dir || out_dir.join(MANIFEST_FILE).is_file()) {
                return Err(Error::Invalid(format!(
                    "refusing to replace {}: it exists and is not an earlier output directory (no {MANIFEST_FILE})",
                    out_dir.display()
                )));
            }
            // The old build moves into the scratch directory, which is deleted on return.
            let old = scratch.join("previous");
            fs::rename(out_dir, &old).map_err(Error::io(
                format!("move the previous build to {}:", old.display()),
                out_dir,
            ))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("stat", out_dir)(e)),
    }
    fs::rename(staging, out_dir)
        .map_err(Error::io(format!("move {} to", staging.display()), out_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_only_earlier_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let make_staging = |content: &str| {
            let staging = dir.path().join(format!("staging-{content}"));
            fs::create_dir_all(&staging).unwrap();
            fs::write(staging.join(MANIFEST_FILE), content).unwrap();
            staging
        };
        let scratch = tempfile::tempdir_in(dir.path()).unwrap();
        publish(&make_staging("one"), &out, scratch.path()).unwrap();
        let scratch = tempfile::tempdir_in(dir.path()).unwrap();
        publish(&make_staging("two"), &out, scratch.path()).unwrap();
        assert_eq!(fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(), "two");

        let precious = dir.path().join("home");
        fs::create_dir_all(&precious).unwrap();
        fs::write(precious.join("notes.txt"), "keep").unwrap();
        let scratch = tempfile::tempdir_in(dir.path()).unwrap();
        let err = publish(&make_staging("three"), &precious, scratch.path()).unwrap_err();
        assert!(err.to_string().contains("refusing to replace"), "{err}");
        assert_eq!(
            fs::read_to_string(precious.join("notes.txt")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn epoch_option_beats_profile() {
        let profile = load_profile("default").unwrap();
        let mut opts = BuildOptions::new("default");
        opts.source_date_epoch = Some(42);
        assert_eq!(source_date_epoch(&opts, &profile).unwrap(), 42);
        opts.source_date_epoch = Some(1 << 40);
        assert!(source_date_epoch(&opts, &profile).is_err());
    }
}
