//! Assembling the artefacts: the root filesystem tree and its erofs image, the initramfs, the
//! iPXE script, and the small generated files inside the image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::cmd;
use crate::cpio::CpioWriter;
use crate::debian::FetchedFile;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::modules::ModuleTree;
use crate::profile::{BinarySpec, Compression, ErofsCompression, Profile};

/// Path of the root image inside the initramfs (init's default `shoal.root`).
pub const INITRAMFS_ROOT_IMAGE: &str = "/shoal/rootfs.erofs";
/// Directory of boot task symlinks in the root image.
pub const BOOT_TASK_DIR: &str = "/etc/shoal/boot.d";
/// Service definitions the supervisor runs; present (maybe empty) in every image.
pub const SERVICE_DIR: &str = "/etc/shoal/services";
/// Empty directories of the root image: mount points and writable places.
const ROOT_DIRS: [(&str, u32); 11] = [
    ("/proc", 0o755),
    ("/sys", 0o755),
    ("/dev", 0o755),
    ("/run", 0o755),
    ("/tmp", 0o1777),
    ("/var", 0o755),
    ("/mnt", 0o755),
    ("/sysroot", 0o755),
    ("/usr/lib/shoal", 0o755),
    (BOOT_TASK_DIR, 0o755),
    (SERVICE_DIR, 0o755),
];
/// Empty directories of the initramfs.
const INITRAMFS_DIRS: [(&str, u32); 6] = [
    ("/proc", 0o755),
    ("/sys", 0o755),
    ("/dev", 0o755),
    ("/run", 0o755),
    ("/sysroot", 0o755),
    ("/tmp", 0o1777),
];
/// Files in the root image that point into `/run`, where init writes them at boot.
const RUN_SYMLINKS: [(&str, &str); 3] = [
    ("/etc/machine-id", "/run/shoal/machine-id"),
    ("/etc/hostname", "/run/shoal/hostname"),
    // netd writes the resolver configuration at run time.
    ("/etc/resolv.conf", "/run/shoal/resolv.conf"),
];
/// Mode of every `[[package_file]]` in the root image, whatever the package gave it.
const PACKAGE_FILE_MODE: u32 = 0o644;
const PASSWD: &str = "root:x:0:0:root:/:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\n";

/// The contents of `/etc/os-release`.
pub(crate) fn os_release(profile: &str, kernel: &Kernel) -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "NAME=Shoal\n\
         ID=shoal\n\
         VERSION_ID={version}\n\
         VERSION=\"{version} ({profile})\"\n\
         PRETTY_NAME=\"Shoal {version} ({profile})\"\n\
         VARIANT_ID={profile}\n\
         SHOAL_KERNEL_RELEASE={}\n\
         SHOAL_KERNEL_PACKAGE={}\n\
         SHOAL_KERNEL_VERSION={}\n",
        kernel.release, kernel.package, kernel.version
    )
}

/// The iPXE script: relative names resolve against the URL the script was fetched from, so
/// the same script works over HTTP and TFTP. With `config_url` (already in iPXE's form, see
/// [`ipxe_config_url`]), the node fetches its machine configuration from there.
pub(crate) fn boot_ipxe(
    profile: &str,
    release: &str,
    cmdline: &str,
    config_url: Option<&str>,
) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let config = config_url
        .map(|url| format!(" shoal.config={url}"))
        .unwrap_or_default();
    format!(
        "#!ipxe\n\
         # Shoal {version}, profile {profile}, kernel {release}\n\
         kernel vmlinuz {cmdline}{config} initrd=initramfs\n\
         initrd initramfs\n\
         boot\n"
    )
}

/// A configuration URL for `boot.ipxe`. iPXE expands `${...}` in its scripts itself, so the
/// node's placeholders become the iPXE settings that print the same text: `${mac}` the booting
/// NIC's MAC as `52-54-00-12-34-56` (`${mac:hexhyp}`), `${uuid}` and `${serial}` from SMBIOS,
/// `${hostname}` from DHCP. Anything else with a `$`, spaces or quotes is refused.
pub fn ipxe_config_url(url: &str) -> std::result::Result<String, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{url:?}: the configuration URL must be http:// or https://"
        ));
    }
    if let Some(c) = url
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\''))
    {
        return Err(format!(
            "{url:?}: {c:?} cannot be in a kernel command line word"
        ));
    }
    let mut out = String::with_capacity(url.len() + 8);
    let mut rest = url;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.strip_prefix("${").and_then(|a| a.find('}')) else {
            return Err(format!("{url:?}: a $ that is not a ${{placeholder}}"));
        };
        let name = &after[2..2 + end];
        out.push_str(match name {
            "mac" => "${mac:hexhyp}",
            "uuid" => "${uuid}",
            "serial" => "${serial}",
            "hostname" => "${hostname}",
            _ => {
                return Err(format!(
                    "{url:?}: ${{{name}}} is not a placeholder (use ${{mac}}, ${{uuid}}, \
                     ${{serial}}, ${{hostname}})"
                ));
            }
        });
        rest = &after[3 + end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A fixed filesystem UUID derived from what the image is, so rebuilds get the same one.
pub(crate) fn erofs_uuid(profile: &str, release: &str, epoch: u64) -> String {
    let digest = Sha256::digest(format!("shoal-rootfs\0{profile}\0{release}\0{epoch}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    // An RFC 4122 name-based UUID shape: version 5, variant 1.
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::kernel::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Joins an absolute image path onto a staging directory.
fn staged(root: &Path, image_path: &str) -> PathBuf {
    root.join(image_path.trim_start_matches('/'))
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(Error::io("create", path))
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    fs::write(path, contents).map_err(Error::io("write", path))
}

fn copy_file(src: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        create_dir(parent)?;
    }
    fs::copy(src, dest).map_err(Error::io(format!("copy {} to", src.display()), dest))?;
    Ok(())
}

fn make_symlink(target: &str, link: &Path) -> Result<()> {
    if let Some(parent) = link.parent() {
        create_dir(parent)?;
    }
    symlink(target, link).map_err(Error::io(format!("create symlink to {target} at"), link))
}

/// Everything that goes into the images.
#[derive(Debug)]
pub(crate) struct Content<'a> {
    pub profile: &'a Profile,
    pub kernel: &'a Kernel,
    pub binaries: &'a BTreeMap<BinarySpec, PathBuf>,
    pub package_files: &'a [FetchedFile],
    pub modules: &'a ModuleTree,
    pub early: &'a BTreeSet<String>,
    pub full: &'a BTreeSet<String>,
    pub epoch: u64,
}

impl Content<'_> {
    fn binary(&self, spec: &BinarySpec) -> Result<&Path> {
        self.binaries
            .get(spec)
            .map(PathBuf::as_path)
            .ok_or_else(|| Error::Binary {
                package: spec.package.clone(),
                bin: spec.bin.clone(),
                reason: "was not built".into(),
            })
    }
}

/// Fills `root` with the root filesystem tree. Returns the number of entries staged.
pub(crate) fn stage_rootfs(root: &Path, content: &Content<'_>) -> Result<usize> {
    create_dir(root)?;
    for (dir, _) in ROOT_DIRS {
        create_dir(&staged(root, dir))?;
    }
    copy_file(
        content.binary(&content.profile.init)?,
        &staged(root, "/sbin/init"),
    )?;
    // The kernel runs /sbin/modprobe to load modules on demand (bonds, VLANs, filesystems);
    // shoal-init answers when called by that name.
    make_symlink("init", &staged(root, "/sbin/modprobe"))?;
    for binary in &content.profile.binaries {
        copy_file(content.binary(&binary.spec)?, &staged(root, &binary.dest))?;
        stage_links(root, binary)?;
    }
    for task in &content.profile.boot_tasks {
        make_symlink(
            &task.target,
            &staged(root, &format!("{BOOT_TASK_DIR}/{}", task.name)),
        )?;
    }
    let mut file_modes = BTreeMap::new();
    for file in &content.profile.files {
        let dest = staged(root, &file.dest);
        copy_file(&file.source, &dest)?;
        file_modes.insert(dest, file.mode);
    }
    stage_package_files(root, content.package_files, &mut file_modes)?;
    let moddir = staged(root, &format!("/lib/modules/{}", content.kernel.release));
    content
        .modules
        .install(content.full, &content.kernel.modules_dir, &moddir)?;
    write_file(
        &staged(root, "/etc/os-release"),
        &os_release(&content.profile.name, content.kernel),
    )?;
    if !content.profile.update_trusted_keys.is_empty() {
        let mut keys = content.profile.update_trusted_keys.join("\n");
        keys.push('\n');
        write_file(&staged(root, "/etc/shoal/update-keys"), &keys)?;
    }
    write_file(&staged(root, "/etc/passwd"), PASSWD)?;
    write_file(&staged(root, "/etc/group"), GROUP)?;
    for (link, target) in RUN_SYMLINKS {
        make_symlink(target, &staged(root, link))?;
    }
    normalize_tree(root, content.epoch, &file_modes)
}

/// Creates a binary's links under `root`: relative when the link sits beside the binary (as
/// `init` for /sbin/modprobe), so the tree reads the same wherever it is mounted.
fn stage_links(root: &Path, binary: &crate::profile::Binary) -> Result<()> {
    let dest = Path::new(&binary.dest);
    for link in &binary.links {
        let target = match dest.file_name() {
            Some(name) if dest.parent() == Path::new(link).parent() => {
                name.to_string_lossy().into_owned()
            }
            _ => binary.dest.clone(),
        };
        make_symlink(&target, &staged(root, link))?;
    }
    Ok(())
}

/// Copies the files taken from Debian packages (already in the cache) to their paths under
/// `root`, and records their mode for [`normalize_tree`].
fn stage_package_files(
    root: &Path,
    files: &[FetchedFile],
    file_modes: &mut BTreeMap<PathBuf, u32>,
) -> Result<()> {
    for file in files {
        let dest = staged(root, &file.path);
        copy_file(&file.source, &dest)?;
        file_modes.insert(dest, PACKAGE_FILE_MODE);
    }
    Ok(())
}

/// Gives every entry fixed permissions (directories 0755, executables 0755, other files 0644,
/// the listed special directories and the `file_modes` files their own mode) and the fixed
/// mtime. Returns the entry count.
fn normalize_tree(root: &Path, epoch: u64, file_modes: &BTreeMap<PathBuf, u32>) -> Result<usize> {
    let special: BTreeMap<PathBuf, u32> = ROOT_DIRS
        .iter()
        .map(|(d, mode)| (staged(root, d), *mode))
        .collect();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    let mut count = 0;
    let mut stack = vec![root.to_path_buf()];
    let mut dirs = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let entry = entry.map_err(Error::io("list", &dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(Error::io("stat", &path))?;
            count += 1;
            if kind.is_symlink() {
                // Symlink times cannot be set through std; mkfs.erofs -T fixes every inode's time.
                continue;
            }
            if kind.is_dir() {
                stack.push(path.clone());
                dirs.push(path);
                continue;
            }
            let meta = entry.metadata().map_err(Error::io("stat", &path))?;
            let mode = match file_modes.get(&path) {
                Some(mode) => *mode,
                None if meta.permissions().mode() & 0o111 != 0 => 0o755,
                None => 0o644,
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(Error::io("chmod", &path))?;
            let file = File::options()
                .write(true)
                .open(&path)
                .map_err(Error::io("open", &path))?;
            file.set_modified(mtime)
                .map_err(Error::io("set the mtime of", &path))?;
        }
    }
    // Directories last (creating entries changes their mtime), deepest first.
    dirs.push(root.to_path_buf());
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let mode = special.get(&dir).copied().unwrap_or(0o755);
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(Error::io("chmod", &dir))?;
        let handle = File::open(&dir).map_err(Error::io("open", &dir))?;
        handle
            .set_modified(mtime)
            .map_err(Error::io("set the mtime of", &dir))?;
    }
    Ok(count)
}

/// Builds the erofs image of `root` reproducibly: fixed timestamp and UUID, every file owned
/// by root, no extended attributes from the build host.
pub(crate) fn mkfs_erofs(
    root: &Path,
    image: &Path,
    compression: ErofsCompression,
    pcluster_size: Option<u32>,
    epoch: u64,
    uuid: &str,
) -> Result<()> {
    let mut command = Command::new("mkfs.erofs");
    if let Some(size) = pcluster_size {
        command.arg(format!("-C{size}"));
    }
    match compression {
        ErofsCompression::None => {}
        ErofsCompression::Lz4 => {
            command.arg("-zlz4");
        }
        ErofsCompression::Lz4hc(level) => {
            command.arg(format!("-zlz4hc,{level}"));
        }
    }
    command
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .args(["--all-root", "-x-1", "--quiet"])
        // erofs-utils also reads these; pin them so the host cannot change the image.
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TZ", "UTC")
        .arg(image)
        .arg(root);
    cmd::run(&mut command)?;
    Ok(())
}

/// Sizes of a written initramfs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitramfsSize {
    /// Both cpio archives, before compression.
    pub uncompressed: u64,
    /// The file written.
    pub written: u64,
}

/// Writes the initramfs to `output`: two cpio archives back to back, which the kernel unpacks
/// in turn. The first holds the root image, which erofs has already compressed, and is stored
/// as is; the second holds init, the early modules and the rest, compressed with
/// `compression`. `work` holds the intermediate archives.
pub(crate) fn write_initramfs(
    output: &Path,
    work: &Path,
    content: &Content<'_>,
    root_image: Option<&Path>,
    compression: Compression,
) -> Result<InitramfsSize> {
    let epoch = u32::try_from(content.epoch).map_err(|_| {
        Error::Invalid(format!(
            "SOURCE_DATE_EPOCH {} does not fit in 32 bits",
            content.epoch
        ))
    })?;
    let mut stored = CpioWriter::new(epoch);
    if let Some(root_image) = root_image {
        stored.add_file_from(INITRAMFS_ROOT_IMAGE, 0o644, root_image)?;
    }

    let mut cpio = CpioWriter::new(epoch);
    cpio.add_file_from("/init", 0o755, content.binary(&content.profile.init)?)?;
    for (dir, mode) in INITRAMFS_DIRS {
        cpio.add_dir(dir, mode)?;
    }
    cpio.add_char_device("/dev/console", 0o600, 5, 1)?;
    let moddir = format!("/lib/modules/{}", content.kernel.release);
    for path in content.modules.paths(content.early) {
        cpio.add_file_from(
            &format!("{moddir}/{path}"),
            0o644,
            &content.kernel.modules_dir.join(path),
        )?;
    }
    for (name, text) in content.modules.index_files(content.early) {
        cpio.add_file(&format!("{moddir}/{name}"), 0o644, text)?;
    }
    for name in crate::modules::copied_index_files() {
        let src = content.kernel.modules_dir.join(name);
        if src.exists() {
            cpio.add_file_from(&format!("{moddir}/{name}"), 0o644, &src)?;
        }
    }

    // Without a root image inside (the disk's initramfs), the compressed part is all of it.
    let stored_size = match root_image {
        Some(_) => write_cpio(&stored, output)?,
        None => {
            File::create(output).map_err(Error::io("create", output))?;
            0
        }
    };
    let early = work.join("initramfs-early.cpio");
    let early_size = write_cpio(&cpio, &early)?;
    let compressed = work.join("initramfs-early.cpio.z");
    compress(&early, &compressed, compression)?;
    let mut out = fs::OpenOptions::new()
        .append(true)
        .open(output)
        .map_err(Error::io("open", output))?;
    let mut tail = File::open(&compressed).map_err(Error::io("open", &compressed))?;
    std::io::copy(&mut tail, &mut out).map_err(Error::io("write", output))?;
    out.sync_all().map_err(Error::io("write", output))?;
    let written = out.metadata().map_err(Error::io("stat", output))?.len();
    let _ = fs::remove_file(&compressed);
    Ok(InitramfsSize {
        uncompressed: stored_size + early_size,
        written,
    })
}

fn write_cpio(cpio: &CpioWriter, path: &Path) -> Result<u64> {
    let file = File::create(path).map_err(Error::io("create", path))?;
    let size = cpio.write_to(&file)?;
    file.sync_all().map_err(Error::io("write", path))?;
    Ok(size)
}

/// Compresses `input` into `output` in a format the kernel unpacks.
pub(crate) fn compress(input: &Path, output: &Path, compression: Compression) -> Result<()> {
    let mut command = match compression {
        Compression::None => {
            fs::rename(input, output)
                .map_err(Error::io(format!("move {} to", input.display()), output))?;
            return Ok(());
        }
        Compression::Zstd(level) => {
            let mut c = Command::new("zstd");
            // Multi-threaded zstd output does not depend on the thread count.
            c.args(["-q", "-f", "-T0", &format!("-{level}"), "-o"])
                .arg(output)
                .arg(input);
            c
        }
        Compression::Lz4(level) => {
            let mut c = Command::new("lz4");
            // -l: the legacy frame format, the only one the kernel's initramfs unpacker reads.
            c.args(["-q", "-f", "-l", &format!("-{level}")])
                .arg(input)
                .arg(output);
            c
        }
        Compression::Gzip(level) => {
            let mut c = Command::new("gzip");
            // -n: no name or timestamp in the header.
            c.args(["-q", "-f", "-k", "-n", &format!("-{level}")])
                .arg(input);
            c
        }
    };
    cmd::run(&mut command)?;
    if let Compression::Gzip(_) = compression {
        let gz = PathBuf::from(format!("{}.gz", input.display()));
        fs::rename(&gz, output).map_err(Error::io(format!("move {} to", gz.display()), output))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> Kernel {
        Kernel {
            requested_package: "linux-image-amd64".into(),
            package: "linux-image-6.1.0-56-amd64".into(),
            version: "6.1.192-2".into(),
            release: "6.1.0-56-amd64".into(),
            deb_sha256: String::new(),
            vmlinuz: PathBuf::new(),
            modules_dir: PathBuf::new(),
        }
    }

    #[test]
    fn os_release_names_version_profile_and_kernel() {
        let text = os_release("test", &kernel());
        assert!(
            text.contains(&format!("\nVERSION_ID={}\n", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(text.contains("\nVARIANT_ID=test\n"));
        assert!(text.contains("\nSHOAL_KERNEL_RELEASE=6.1.0-56-amd64\n"));
        assert!(text.contains("\nSHOAL_KERNEL_VERSION=6.1.192-2\n"));
    }

    #[test]
    fn config_urls_get_ipxe_placeholders_and_bad_ones_are_refused() {
        assert_eq!(
            ipxe_config_url("http://10.0.0.1/n/${mac}/${uuid}.toml?s=${serial}&h=${hostname}")
                .unwrap(),
            "http://10.0.0.1/n/${mac:hexhyp}/${uuid}.toml?s=${serial}&h=${hostname}"
        );
        assert_eq!(
            ipxe_config_url("https://cfg.example/a.toml").unwrap(),
            "https://cfg.example/a.toml"
        );
        for (bad, why) in [
            ("tftp://x/a", "must be http:// or https://"),
            ("http://x/${ip}", "${ip} is not a placeholder"),
            ("http://x/$HOME", "a $ that is not a ${placeholder}"),
            ("http://x/${mac", "a $ that is not a ${placeholder}"),
            ("http://x/a b", "' ' cannot be"),
            ("http://x/\"a", "'\"' cannot be"),
        ] {
            let e = ipxe_config_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let script = boot_ipxe(
            "default",
            "6.1.0-56-amd64",
            "console=ttyS0",
            Some("http://10.0.0.1/${mac:hexhyp}"),
        );
        assert!(
            script.contains(
                "kernel vmlinuz console=ttyS0 shoal.config=http://10.0.0.1/${mac:hexhyp} initrd=initramfs\n"
            ),
            "{script}"
        );
    }

    #[test]
    fn ipxe_script_loads_relative_kernel_and_initrd() {
        let script = boot_ipxe("default", "6.1.0-56-amd64", "console=ttyS0 quiet", None);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        assert_eq!(
            lines[2],
            "kernel vmlinuz console=ttyS0 quiet initrd=initramfs"
        );
        assert_eq!(lines[3], "initrd initramfs");
        assert_eq!(lines[4], "boot");
    }

    #[test]
    fn uuid_is_stable_and_well_formed() {
        let a = erofs_uuid("default", "6.1.0-56-amd64", 1);
        assert_eq!(a, erofs_uuid("default", "6.1.0-56-amd64", 1));
        assert_ne!(a, erofs_uuid("test", "6.1.0-56-amd64", 1));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
    }

    #[test]
    fn package_files_are_staged_with_fixed_mode_and_time() {
        // A fake unpacked package: the file is executable there, and must not be in the image.
        let cache = tempfile::tempdir().unwrap();
        let source = cache.path().join("tree/usr/share/misc/pci.ids");
        write_file(&source, "8086  Intel Corporation\n").unwrap();
        fs::set_permissions(&source, fs::Permissions::from_mode(0o755)).unwrap();
        let fetched = FetchedFile {
            package: "pci.ids".into(),
            version: "1".into(),
            deb_sha256: "d0d0".into(),
            path: "/usr/share/misc/pci.ids".into(),
            source: source.clone(),
            size: 24,
            sha256: String::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut file_modes = BTreeMap::new();
        stage_package_files(root, &[fetched], &mut file_modes).unwrap();
        normalize_tree(root, 1_000_000, &file_modes).unwrap();
        let staged_file = staged(root, "/usr/share/misc/pci.ids");
        assert_eq!(
            fs::read_to_string(&staged_file).unwrap(),
            "8086  Intel Corporation\n"
        );
        let meta = fs::metadata(&staged_file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert_eq!(
            meta.modified().unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
        );
        let dir_mode = fs::metadata(staged(root, "/usr/share/misc"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o7777, 0o755);
        // The cache keeps its copy as it was.
        assert_eq!(
            fs::metadata(&source).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn links_point_at_their_binary_relative_when_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let binary = crate::profile::Binary {
            spec: crate::profile::BinarySpec {
                package: "shoal-node".into(),
                bin: "shoal-node".into(),
            },
            dest: "/usr/lib/shoal/shoal-node".into(),
            links: vec![
                "/usr/lib/shoal/shoal-netd".into(),
                "/usr/bin/shoal-netd".into(),
            ],
        };
        fs::create_dir_all(root.join("usr/lib/shoal")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        stage_links(root, &binary).unwrap();
        assert_eq!(
            fs::read_link(root.join("usr/lib/shoal/shoal-netd")).unwrap(),
            Path::new("shoal-node")
        );
        assert_eq!(
            fs::read_link(root.join("usr/bin/shoal-netd")).unwrap(),
            Path::new("/usr/lib/shoal/shoal-node")
        );
    }

    #[test]
    fn normalize_sets_modes_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        create_dir(&staged(root, "/tmp")).unwrap();
        create_dir(&staged(root, "/usr/lib/shoal")).unwrap();
        write_file(&staged(root, "/etc/passwd"), PASSWD).unwrap();
        fs::set_permissions(
            staged(root, "/etc/passwd"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        write_file(&staged(root, "/usr/lib/shoal/x"), "").unwrap();
        fs::set_permissions(
            staged(root, "/usr/lib/shoal/x"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        make_symlink("/run/shoal/hostname", &staged(root, "/etc/hostname")).unwrap();
        write_file(&staged(root, "/etc/shoal/services/a.toml"), "").unwrap();
        let file_modes = BTreeMap::from([(staged(root, "/etc/shoal/services/a.toml"), 0o600)]);
        assert_eq!(normalize_tree(root, 1_000_000, &file_modes).unwrap(), 11);
        let mode = |p: &str| fs::metadata(staged(root, p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("/etc/passwd"), 0o644);
        assert_eq!(mode("/usr/lib/shoal/x"), 0o755);
        assert_eq!(mode("/tmp"), 0o1777);
        assert_eq!(mode("/etc"), 0o755);
        assert_eq!(mode("/etc/shoal/services"), 0o755);
        assert_eq!(mode("/etc/shoal/services/a.toml"), 0o600);
        let mtime = fs::metadata(staged(root, "/etc"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
        );
    }
}
