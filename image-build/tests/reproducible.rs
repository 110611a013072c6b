//! Builds the default profile twice and checks that the artefacts are byte-identical and laid
//! out as docs/architecture.md ("Image layout") promises.
//!
//! Needs what a real build needs: apt package lists and network access to Debian's mirror for
//! the first kernel download (then the cache in `<workspace>/.cache/shoal`), erofs-utils,
//! dosfstools, mtools, e2fsprogs, qemu-utils and zstd, and to read the results back the cpio
//! and lz4 CLIs, sfdisk and veritysetup. Missing tools fail the test; they never
//! skip it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use shoal_image_build::{BuildOptions, Manifest, ProgressMode, build};

fn build_into(out: &Path) -> Manifest {
    let mut options = BuildOptions::new("default");
    options.out_dir = Some(out.to_path_buf());
    options.progress = ProgressMode::Plain;
    build(&options).unwrap_or_else(|e| {
        panic!("building the default profile failed (CI installs erofs-utils, kmod, cpio and runs apt-get update): {e}")
    })
}

/// Splits the initramfs into its two archives: the stored one (newc, read up to its trailer) and
/// the lz4-compressed one after it (unpacked with the lz4 CLI).
fn initramfs_archives(initramfs: &[u8], scratch: &Path) -> (Vec<u8>, Vec<u8>) {
    let field = |at: usize| {
        let hex = std::str::from_utf8(&initramfs[at..at + 8]).expect("newc header is ASCII");
        usize::from_str_radix(hex, 16).expect("newc header field is hex")
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    loop {
        assert_eq!(&initramfs[at..at + 6], b"070701", "newc magic at {at}");
        let (filesize, namesize) = (field(at + 54), field(at + 94));
        let name = &initramfs[at + 110..at + 110 + namesize - 1];
        at = align(at + 110 + namesize);
        at = align(at + filesize);
        if name == b"TRAILER!!!" {
            break;
        }
    }
    let stored = initramfs[..at].to_vec();
    let rest = initramfs[at..]
        .iter()
        .position(|&b| b != 0)
        .map(|skip| &initramfs[at + skip..])
        .expect("a second archive follows the stored one");
    assert_eq!(rest[..4], [0x02, 0x21, 0x4c, 0x18], "lz4 legacy magic");
    let compressed = scratch.join("initramfs-early.lz4");
    std::fs::write(&compressed, rest).expect("write the compressed archive");
    let output = Command::new("lz4")
        .args(["-d", "-c"])
        .arg(&compressed)
        .output()
        .expect("cannot run lz4 (install it; CI does)");
    assert!(output.status.success(), "lz4 -d failed: {}", output.status);
    (stored, output.stdout)
}

fn cpio(args: &[&str], archive: &[u8], dir: &Path) -> String {
    let input = dir.join("archive.cpio");
    std::fs::write(&input, archive).expect("write the archive");
    run(Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(std::fs::File::open(&input).expect("open the archive")))
}

fn run(command: &mut Command) -> String {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (install it; CI does)"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        output.status
    );
    String::from_utf8(output.stdout).expect("command output is UTF-8")
}

#[test]
fn default_profile_is_reproducible_and_follows_the_image_layout() {
    let scratch = tempfile::tempdir().unwrap();
    let first_dir = scratch.path().join("first");
    let second_dir = scratch.path().join("second");
    let first = build_into(&first_dir);
    let second = build_into(&second_dir);

    // Reproducible: same manifest, same bytes.
    assert_eq!(first, second, "the two manifests differ");
    for artefact in &first.artefacts {
        let a = std::fs::read(first_dir.join(&artefact.name)).unwrap();
        let b = std::fs::read(second_dir.join(&artefact.name)).unwrap();
        assert!(a == b, "{} differs between two builds", artefact.name);
        assert_eq!(
            a.len() as u64,
            artefact.size,
            "{} size in manifest",
            artefact.name
        );
    }
    assert_eq!(
        std::fs::read(first_dir.join("manifest.json")).unwrap(),
        std::fs::read(second_dir.join("manifest.json")).unwrap()
    );
    let names: Vec<&str> = first.artefacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "boot.ipxe",
            "disk.qcow2",
            "disk.raw",
            "disk.raw.zst",
            "initramfs",
            "rootfs.erofs",
            "vmlinuz"
        ]
    );
    assert_eq!(Manifest::load(&first_dir).unwrap(), first);

    let kver = &first.kernel.release;
    assert!(
        first.kernel.package.starts_with("linux-image-6."),
        "{}",
        first.kernel.package
    );
    assert!(first.modules.early > 0 && first.modules.full > first.modules.early);

    // The initramfs: the root image stored, then everything else compressed.
    let initramfs = std::fs::read(first_dir.join("initramfs")).unwrap();
    let (stored, early) = initramfs_archives(&initramfs, scratch.path());
    let stored_listing = cpio(&["-it", "--quiet"], &stored, scratch.path());
    assert_eq!(
        stored_listing.lines().collect::<Vec<_>>(),
        ["shoal", "shoal/rootfs.erofs"],
        "the stored archive holds only the root image"
    );
    let listing = cpio(&["-it", "--quiet"], &early, scratch.path());
    let entries: BTreeSet<&str> = listing.lines().chain(stored_listing.lines()).collect();
    let moddir = format!("lib/modules/{kver}");
    for expected in [
        "init",
        "dev",
        "dev/console",
        "proc",
        "sys",
        "run",
        "sysroot",
        "tmp",
        "shoal/rootfs.erofs",
    ] {
        assert!(entries.contains(expected), "initramfs lacks /{expected}");
    }
    for index in [
        "modules.alias",
        "modules.dep",
        "modules.softdep",
        "modules.builtin",
    ] {
        assert!(
            entries.contains(format!("{moddir}/{index}").as_str()),
            "initramfs lacks /{moddir}/{index}"
        );
    }
    for module in [
        "kernel/fs/erofs/erofs.ko",
        "kernel/drivers/block/loop.ko",
        "kernel/drivers/block/virtio_blk.ko",
    ] {
        assert!(
            entries.contains(format!("{moddir}/{module}").as_str()),
            "initramfs lacks {module}"
        );
    }
    assert!(
        !entries.iter().any(|e| e.ends_with("virtio_net.ko")),
        "a NIC driver is in the early set"
    );
    assert_eq!(
        entries.iter().filter(|e| e.ends_with(".ko")).count(),
        first.modules.early
    );
    let verbose = cpio(&["-itv", "--quiet"], &early, scratch.path());
    let console = verbose
        .lines()
        .find(|l| l.ends_with(" dev/console"))
        .unwrap();
    assert!(console.starts_with("crw-------"), "{console}");

    // The root image inside the initramfs is the one next to it.
    let extract = scratch.path().join("initramfs");
    std::fs::create_dir_all(&extract).unwrap();
    cpio(&["-id", "--quiet", "shoal/rootfs.erofs"], &stored, &extract);
    assert!(
        std::fs::read(extract.join("shoal/rootfs.erofs")).unwrap()
            == std::fs::read(first_dir.join("rootfs.erofs")).unwrap(),
        "/shoal/rootfs.erofs differs from rootfs.erofs"
    );

    // The root image.
    let root = scratch.path().join("root");
    run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", root.display()))
        .arg(first_dir.join("rootfs.erofs")));
    for dir in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "mnt",
        "sysroot",
        "etc/shoal/boot.d",
        "usr/lib/shoal",
    ] {
        assert!(root.join(dir).is_dir(), "root image lacks /{dir}");
    }
    assert!(root.join("sbin/init").is_file());
    let os_release = std::fs::read_to_string(root.join("etc/os-release")).unwrap();
    assert!(
        os_release.contains("VERSION_ID=")
            && os_release.contains(&format!("SHOAL_KERNEL_RELEASE={kver}"))
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/machine-id")).unwrap(),
        Path::new("/run/shoal/machine-id")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/hostname")).unwrap(),
        Path::new("/run/shoal/hostname")
    );
    let dep = std::fs::read_to_string(root.join(format!("{moddir}/modules.dep"))).unwrap();
    assert_eq!(dep.lines().count(), first.modules.full);
    assert!(
        dep.lines()
            .any(|l| l.starts_with("kernel/drivers/net/virtio_net.ko:"))
    );
    for forbidden in ["bin/sh", "usr/bin/sh", "bin/busybox"] {
        assert!(
            !root.join(forbidden).exists(),
            "root image has /{forbidden}"
        );
    }

    // The files from Debian packages, as the manifest records them.
    let package_files: Vec<(&str, &str)> = first
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
    for file in &first.package_files {
        let bytes = std::fs::read(root.join(file.path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("root image lacks {}: {e}", file.path));
        assert_eq!(bytes.len() as u64, file.size, "{}", file.path);
        let sha256: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha256, file.sha256, "{}", file.path);
        assert_eq!(file.deb_sha256.len(), 64, "{}", file.path);
    }
    let pci_ids = std::fs::read_to_string(root.join("usr/share/misc/pci.ids")).unwrap();
    assert!(
        pci_ids
            .lines()
            .any(|l| l.starts_with("8086  Intel Corporation")),
        "pci.ids has no Intel vendor line"
    );

    // The iPXE script.
    let ipxe = std::fs::read_to_string(first_dir.join("boot.ipxe")).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"));
    assert!(
        ipxe.contains(&format!(
            "kernel vmlinuz {} initrd=initramfs\n",
            first.cmdline
        )),
        "{ipxe}"
    );
    assert!(ipxe.contains("initrd initramfs\nboot\n"));

    check_disk(&first, &first_dir, scratch.path());
}

/// The A/B disk: its GPT as sfdisk reads it, the ESP's files, slot A's dm-verity tree as
/// veritysetup checks it, and the qcow2 and zstd forms holding the same disk.
fn check_disk(manifest: &Manifest, dir: &Path, scratch: &Path) {
    let disk = manifest
        .disk
        .as_ref()
        .expect("the default profile has a disk");
    let raw = dir.join("disk.raw");
    let raw_arg = raw.display().to_string();
    assert_eq!(
        std::fs::metadata(&raw).expect("disk check").len(),
        disk.bytes
    );
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").args(["--json", &raw_arg])))
            .expect("disk check");
    let parts: Vec<(String, String)> = table["partitiontable"]["partitions"]
        .as_array()
        .expect("disk check")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("disk check").to_string(),
                p["type"].as_str().expect("disk check").to_lowercase(),
            )
        })
        .collect();
    let esp = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    let root = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    let var = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
    let expected: Vec<(String, String)> = [
        ("ESP", esp),
        ("shoal-root-a", root),
        ("shoal-root-b", root),
        ("shoal-state", var),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(parts, expected);
    let verify = run(Command::new("sfdisk").args(["--verify", &raw_arg]));
    assert!(verify.contains("No errors detected"), "{verify}");

    // The ESP: systemd-boot, the loader settings and slot A's entry, kernel and initramfs.
    let offset = |name: &str| {
        disk.partitions
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} in the manifest"))
    };
    let esp_image = format!("{raw_arg}@@{}", offset("ESP").offset);
    let mtype = |path: &str| {
        run(Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &esp_image, path]))
    };
    assert_eq!(mtype("::loader/entries/shoal-a.conf"), disk.entry);
    assert!(mtype("::loader/loader.conf").contains("editor no"));
    assert!(disk.entry.contains(&format!(
        "shoal.slot=a shoal.roothash={} shoal.hashoffset={}",
        disk.root_hash, disk.hash_offset
    )));
    let listing = run(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &esp_image, "-/", "-b", "::"]));
    for file in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/shoal/a/vmlinuz",
        "::/shoal/a/initramfs",
    ] {
        assert!(listing.contains(file), "ESP lacks {file}: {listing}");
    }

    // Slot A through veritysetup, with the root hash the entry carries.
    let slot = offset("shoal-root-a");
    let bytes = std::fs::read(&raw).expect("disk check");
    let slot_file = scratch.join("slot-a");
    std::fs::write(
        &slot_file,
        &bytes[slot.offset as usize..(slot.offset + slot.size) as usize],
    )
    .expect("disk check");
    let slot_arg = slot_file.display().to_string();
    run(Command::new("veritysetup").args([
        "verify",
        &slot_arg,
        &slot_arg,
        &disk.root_hash,
        &format!("--hash-offset={}", disk.hash_offset),
    ]));

    // The other forms are the same disk.
    run(Command::new("qemu-img").args([
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        &raw_arg,
        &dir.join("disk.qcow2").display().to_string(),
    ]));
    let unpacked = Command::new("zstd")
        .args(["-d", "-c"])
        .arg(dir.join("disk.raw.zst"))
        .output()
        .expect("disk check");
    assert!(unpacked.status.success());
    assert!(
        unpacked.stdout == bytes,
        "disk.raw.zst does not unpack to disk.raw"
    );
}
