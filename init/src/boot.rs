//! The two stages of PID 1 as a sequence of named phases.
//!
//! Stage "initramfs" gets from the kernel to the read-only root; stage "root" (the same binary,
//! exec'd from the root image as `/sbin/init`) sets the node up and then stays in the main loop.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use shoal_boot_events::{Event, PowerAction, Stage};

use crate::cmdline::{self, Cmdline, Slot};
use crate::coldplug::{
    Coldplug, Device, Modules, Outcome, devices_in_uevents, loaded_modules, scan_devices,
};
use crate::console::{self, emit};
use crate::disk;
use crate::identity;
use crate::input;
use crate::inventory::{self, Refresh};
use crate::keeper::Keeper;
use crate::mounts;
use crate::power::{self, fatal};
use crate::sys::{self, FinitLoader, UeventSocket};
use crate::trial::{Trial, Verdict};
use crate::uevent;
use crate::verity;
use crate::watchdog::Feeder;
use shoal_gpt::sysfs;

const SYSROOT: &str = "/sysroot";
const ROOT_INIT: &str = "/sbin/init";
const BOOT_TASKS: &str = "/etc/shoal/boot.d";
const SUPERVISOR: &str = "/usr/lib/shoal/shoal-supervisor";
/// Where the collector writes the inventory (`shoal_inventory::RUN_PATH`; init does not link
/// the inventory crate, it only runs the collector).
const INVENTORY: &str = "/run/shoal/inventory.json";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// PID 1's entry point. Never returns.
pub fn run() -> ! {
    power::install_panic_hook();
    if sys::root_is_initramfs() {
        initramfs_stage()
    } else {
        root_stage()
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_cmdline() -> Cmdline {
    cmdline::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

/// Mounts what `plan` needs that is not mounted yet. A failure here is fatal: nothing works
/// without the API filesystems.
fn mount_missing(plan: &[mounts::Mount]) {
    let mounted =
        mounts::parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    for m in mounts::missing(plan, &mounted) {
        if let Err(e) = sys::mount_one(m) {
            fatal(e.to_string());
        }
    }
}

/// The running kernel's module tree, ready to load from. Without it nothing can be loaded, so
/// a missing index is fatal.
fn open_modules(cmdline: &Cmdline) -> Coldplug<FinitLoader> {
    let dir = Path::new("/lib/modules").join(kernel_release());
    let modules = Modules::open(&dir).unwrap_or_else(|e| fatal(format!("module index: {e}")));
    Coldplug::new(
        modules,
        FinitLoader,
        loaded_modules(Path::new("/sys")),
        cmdline.module_params.clone(),
    )
}

/// How many modules coldplug loads at once: module init functions spend much of their time
/// waiting on hardware, so more than the CPUs (udev runs 8 + 2 per CPU).
fn coldplug_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (2 * cpus).clamp(4, 16)
}

/// Loads drivers for every device present, and again for devices that appeared because a
/// driver was loaded (a PCI function's virtio device, say), until nothing new turns up.
///
/// With `uevents` (a socket opened before the first scan), the passes after the first take the
/// new devices from the kernel's uevents rather than walking /sys again (tens of milliseconds
/// each under emulation); the messages read are returned, for the main loop to handle as it
/// would have. Without it, or when the socket overran, each pass scans /sys.
fn coldplug(
    stage: Stage,
    cmdline: &Cmdline,
    uevents: Option<&UeventSocket>,
) -> (Coldplug<FinitLoader>, Vec<Vec<u8>>) {
    let start = Instant::now();
    let mut plug = open_modules(cmdline);
    let mut outcome = Outcome::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut read = Vec::new();
    tracing::debug!(ms = crate::console::ms_since(start), "module index read");
    for pass in 0..8 {
        let scan = Instant::now();
        let found = match uevents {
            Some(socket) if pass > 0 => {
                let (messages, overran) = socket.drain_reporting_overrun();
                let found = if overran {
                    scan_devices(Path::new("/sys"))
                } else {
                    devices_in_uevents(&messages)
                };
                read.extend(messages);
                found
            }
            _ => scan_devices(Path::new("/sys")),
        };
        let new: Vec<Device> = found
            .into_iter()
            .filter(|d| seen.insert(format!("{}\0{}", d.devpath, d.modalias)))
            .collect();
        tracing::debug!(
            pass,
            new = new.len(),
            ms = crate::console::ms_since(scan),
            "new devices found"
        );
        if new.is_empty() {
            break;
        }
        let pass = plug.run(&new, coldplug_workers());
        let loaded_any = !pass.loaded.is_empty();
        outcome.loaded.extend(pass.loaded);
        outcome.failed.extend(pass.failed);
        if !loaded_any {
            break;
        }
    }
    emit(Event::Coldplug {
        stage,
        devices: seen.len() as u32,
        loaded: outcome.loaded,
        failed: outcome.failed,
        ms: crate::console::ms_since(start),
    });
    (plug, read)
}

fn initramfs_stage() -> ! {
    mount_missing(&mounts::api_filesystems());
    sys::ensure_console_fds();
    console::attach_kmsg();
    let cmdline = read_cmdline();
    console::init_logging(cmdline.log_level);
    power::set_reboot_delay(cmdline.reboot_delay);
    emit(Event::InitStart {
        stage: Stage::Initramfs,
        version: VERSION.into(),
    });
    emit(Event::MountsReady {
        stage: Stage::Initramfs,
    });
    for key in &cmdline.unknown_keys {
        tracing::warn!("unknown kernel command line key {key} (ignored)");
    }
    for error in &cmdline.errors {
        tracing::warn!("kernel command line: {error} (default used)");
    }
    emit(Event::Cmdline {
        unknown_keys: cmdline.unknown_keys.clone(),
        errors: cmdline.errors.clone(),
    });
    // A broken image, for the update tests: the panic hook reboots, which spends a try.
    assert!(
        !cmdline.test_panic,
        "shoaltest.panic: PID 1 fails as a broken image would"
    );

    // A root image inside the initramfs needs no device drivers, only loop and its filesystem:
    // leave coldplug to the root stage, which has every module. A root on a disk needs the
    // storage drivers first.
    let mut plug = if cmdline.root.starts_with("/dev") || cmdline.slot.is_some() {
        coldplug(Stage::Initramfs, &cmdline, None).0
    } else {
        open_modules(&cmdline)
    };
    match cmdline.slot {
        Some(slot) => mount_slot(&cmdline, slot, &mut plug),
        None => mount_root(&cmdline, &mut plug),
    }
    switch_root()
}

/// Finds the root image or device, attaches it, mounts it read-only on /sysroot and checks that
/// it holds an init. Every failure is fatal with a message that names what was wrong.
fn mount_root(cmdline: &Cmdline, plug: &mut Coldplug<FinitLoader>) {
    let start = Instant::now();
    let fstype = cmdline.root_fstype.as_str();
    let root = &cmdline.root;
    // An image file needs a loop device too: both load at once.
    let wanted: &[&str] = if root.starts_with("/dev") {
        &[fstype]
    } else {
        &[fstype, "loop"]
    };
    let mut outcome = plug.load_modules(wanted, "", coldplug_workers());

    // A block device may still be probing; an image file in the initramfs is there or not.
    let wait = if root.starts_with("/dev") {
        cmdline.root_wait
    } else {
        Duration::ZERO
    };
    let meta = sys::wait_for(wait, || fs::metadata(root).ok()).unwrap_or_else(|| {
        fatal(format!(
            "root {} not found after {:.1} s (shoal.root=, shoal.rootwait=)",
            root.display(),
            wait.as_secs_f64()
        ))
    });
    // The loop device detaches itself when its last user goes: hold it open until mounted.
    let mut _loop_holder = None;
    let device = if meta.file_type().is_block_device() {
        root.clone()
    } else if meta.is_file() {
        plug.load_module("loop", "", &mut outcome);
        let (device, holder) = sys::attach_loop(root)
            .unwrap_or_else(|e| fatal(format!("root {}: {e}", root.display())));
        _loop_holder = Some(holder);
        device
    } else {
        fatal(format!(
            "root {} is neither an image file nor a block device",
            root.display()
        ))
    };
    for failed in &outcome.failed {
        tracing::warn!(module = %failed.module, error = %failed.error, "module for the root failed to load");
    }
    mount_sysroot(&device, &root.display().to_string(), fstype, start);
}

/// Mounts `device` read-only on /sysroot and checks that it holds an init; `source` names the
/// root in messages.
fn mount_sysroot(device: &Path, source: &str, fstype: &str, start: Instant) {
    let _ = fs::create_dir_all(SYSROOT);
    let flags = nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NODEV;
    if let Err(e) = nix::mount::mount(Some(device), SYSROOT, Some(fstype), flags, None::<&str>) {
        let verity = device.to_string_lossy().starts_with("/dev/dm-");
        let why = if e == nix::errno::Errno::EIO && verity {
            "a block failed dm-verity verification: the slot is tampered with or corrupt".into()
        } else {
            format!("corrupt or not a {fstype} image?")
        };
        fatal(format!(
            "root {source} ({}) cannot be mounted as {fstype}: {} ({why})",
            device.display(),
            e.desc()
        ));
    }
    let init = Path::new(SYSROOT).join(ROOT_INIT.trim_start_matches('/'));
    let executable =
        fs::metadata(&init).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        fatal(format!(
            "root {source} has no executable {ROOT_INIT} (or it could not be read)"
        ));
    }
    emit(Event::RootMounted {
        source: source.into(),
        fstype: fstype.into(),
        ms: crate::console::ms_since(start),
    });
}

/// Mounts root slot `slot` from disk through dm-verity: the partition named after the slot, its
/// verity superblock at `shoal.hashoffset=`, checked against `shoal.roothash=`. Every failure is
/// fatal, with a message naming what was wrong; the boot counter then moves the bootloader on.
fn mount_slot(cmdline: &Cmdline, slot: Slot, plug: &mut Coldplug<FinitLoader>) {
    let start = Instant::now();
    let fstype = cmdline.root_fstype.as_str();
    let (Some(root_hash), Some(hash_offset)) = (&cmdline.root_hash, cmdline.hash_offset) else {
        fatal(format!(
            "shoal.slot={} needs shoal.roothash= and shoal.hashoffset=: a root slot is only mounted through dm-verity",
            slot.as_str()
        ))
    };
    let outcome = plug.load_modules(&["dm_mod", "dm_verity", fstype], "", coldplug_workers());
    for failed in &outcome.failed {
        tracing::warn!(module = %failed.module, error = %failed.error, "module for the root failed to load");
    }
    let name = slot.partition_name();
    let sys_root = Path::new("/sys");
    // The disk may still be probing: wait for the partition to show up, then insist on one.
    sys::wait_for(cmdline.root_wait, || {
        (!sysfs::find_partitions(sys_root, &name).is_empty()).then_some(())
    });
    let part = sysfs::find_one(sys_root, &name, None).unwrap_or_else(|e| {
        fatal(format!(
            "root slot {}: {e} after {:.1} s (shoal.rootwait=)",
            slot.as_str(),
            cmdline.root_wait.as_secs_f64()
        ))
    });
    let node = PathBuf::from("/dev").join(&part.name);
    let fail = |what: String| -> ! {
        fatal(format!(
            "root slot {} ({}): {what}",
            slot.as_str(),
            node.display()
        ))
    };
    let size = part.sectors * 512;
    if hash_offset >= size {
        fail(format!(
            "shoal.hashoffset={hash_offset} is past the partition's end ({size} bytes)"
        ));
    }
    let superblock = sys::wait_for(Duration::from_secs(2), || fs::File::open(&node).ok())
        .ok_or_else(|| format!("{} did not appear", node.display()))
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            let mut b = vec![0u8; verity::SUPERBLOCK_SIZE];
            f.read_exact_at(&mut b, hash_offset)
                .map_err(|e| format!("reading the verity superblock: {e}"))?;
            verity::Superblock::parse(&b).map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| fail(e));
    let data_bytes = superblock.data_sectors() * 512;
    if data_bytes > hash_offset {
        fail(format!(
            "the verity superblock covers {data_bytes} bytes of data, more than the {hash_offset} before the hash area"
        ));
    }
    let params = superblock.table_params(&part.dev, hash_offset, root_hash);
    let device = sys::dm_create("shoal-root", "verity", superblock.data_sectors(), &params)
        .unwrap_or_else(|e| fail(e.to_string()));
    emit(Event::RootVerity {
        slot: slot.as_str().into(),
        partition: part.name.clone(),
        device: device.display().to_string(),
        root_hash: root_hash.clone(),
        ms: crate::console::ms_since(start),
    });
    mount_sysroot(
        &device,
        &format!("slot {} ({})", slot.as_str(), part.name),
        fstype,
        start,
    );
}

/// Mounts the STATE partition of the boot disk on /var, first growing it (partition table,
/// then filesystem) to fill the disk. Without a usable STATE the node still boots, with /var in
/// memory, and says why: it then behaves like a diskless node.
fn mount_state(slot: Slot, plug: &mut Coldplug<FinitLoader>) {
    let start = Instant::now();
    let sys_root = Path::new("/sys");
    let mut outcome = Outcome::default();
    plug.load_module("ext4", "", &mut outcome);
    let part = match sysfs::find_one(sys_root, &slot.partition_name(), None)
        .and_then(|root| sysfs::find_one(sys_root, sysfs::STATE_NAME, Some(&root.disk)))
    {
        Ok(part) => part,
        Err(error) => {
            emit(Event::StateFailed {
                partition: sysfs::STATE_NAME.into(),
                error,
            });
            return;
        }
    };
    let failed = |error: String| {
        emit(Event::StateFailed {
            partition: part.name.clone(),
            error,
        })
    };
    // Growing is best effort: a table that cannot grow still mounts at its size.
    let grown_from = match grow_state_partition(sys_root, &part) {
        Ok(grown) => grown,
        Err(e) => {
            tracing::warn!(partition = %part.name, "STATE not grown: {e}");
            None
        }
    };
    let device = PathBuf::from("/dev").join(&part.name);
    let bytes = sysfs::find_one(sys_root, sysfs::STATE_NAME, Some(&part.disk))
        .map(|p| p.sectors * 512)
        .unwrap_or(part.sectors * 512);
    let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    if let Err(e) = nix::mount::mount(Some(&device), "/var", Some("ext4"), flags, None::<&str>) {
        failed(format!(
            "mounting {} on /var as ext4: {}",
            device.display(),
            e.desc()
        ));
        return;
    }
    if let Err(e) = grow_state_filesystem(&device, bytes) {
        tracing::warn!(partition = %part.name, "STATE filesystem not grown: {e}");
    }
    for (dir, mode) in [("/var/lib/shoal", 0o700), ("/var/log", 0o755)] {
        if let Err(e) = fs::create_dir_all(dir)
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(mode)))
        {
            tracing::warn!("{dir}: {e}");
        }
    }
    emit(Event::StateMounted {
        partition: part.name.clone(),
        bytes,
        grown_from,
        ms: crate::console::ms_since(start),
    });
}

/// How often PID 1 looks whether a slot on trial was blessed.
const TRIAL_POLL: Duration = Duration::from_secs(2);

/// Watches the booted slot if it is on trial (needs the ESP and STATE mounted).
fn start_trial(slot: Slot, timeout: Duration) -> Option<Trial> {
    let trial = Trial::start(
        Path::new(ESP_MOUNT),
        Path::new("/var/lib/shoal"),
        slot,
        timeout,
        Instant::now(),
    )?;
    emit(Event::UpdateTrial {
        slot: slot.as_str().into(),
        entry: trial.entry.clone(),
        timeout_s: timeout.as_secs(),
    });
    Some(trial)
}

/// Where the ESP of a disk boot is mounted.
const ESP_MOUNT: &str = "/run/shoal/boot";

/// Mounts the boot disk's ESP on /run/shoal/boot for the updater (root only: FAT has no owners,
/// so the mount's mask keeps everyone else out). Without it the node boots, but cannot update.
fn mount_esp(slot: Slot, plug: &mut Coldplug<FinitLoader>) {
    const TARGET: &str = ESP_MOUNT;
    let sys_root = Path::new("/sys");
    let esp = sysfs::find_one(sys_root, &slot.partition_name(), None)
        .and_then(|root| sysfs::find_one(sys_root, sysfs::ESP_NAME, Some(&root.disk)));
    let esp = match esp {
        Ok(esp) => esp,
        Err(e) => {
            tracing::warn!("no ESP to update: {e}");
            return;
        }
    };
    // A module that fails is logged; the mount below then says what is missing.
    plug.load_modules(&["vfat", "nls_cp437", "nls_ascii"], "", coldplug_workers());
    let device = PathBuf::from("/dev").join(&esp.name);
    // Directory changes synchronous: on FAT a renamed file's entry only gets its size and first
    // cluster when the file is written back, so a power cut after an asynchronous rename can
    // leave a boot entry or a kernel empty (the updater also syncs each renamed file).
    let flags = nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC
        | nix::mount::MsFlags::MS_DIRSYNC;
    let result = fs::create_dir_all(TARGET)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            nix::mount::mount(
                Some(&device),
                TARGET,
                Some("vfat"),
                flags,
                Some("umask=0077,flush"),
            )
            .map_err(|e| e.desc().to_string())
        });
    match result {
        Ok(()) => tracing::info!("ESP {} mounted on {TARGET}", device.display()),
        Err(e) => tracing::error!("mounting the ESP {} on {TARGET}: {e}", device.display()),
    }
}

/// Extends the STATE partition to the end of its disk when it is the last partition and the
/// disk is larger than the table says (an image written to a bigger disk). The backup table is
/// written at the disk's end first and the primary last, each synced, so a power cut leaves
/// either the old layout or the new one. Returns the size before, when it grew.
fn grow_state_partition(
    sys_root: &Path,
    part: &sysfs::PartitionDev,
) -> Result<Option<u64>, String> {
    use std::os::unix::fs::FileExt;
    let sectors = sysfs::disk_sectors(sys_root, &part.disk)
        .ok_or_else(|| format!("size of {} unknown", part.disk))?;
    let node = PathBuf::from("/dev").join(&part.disk);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .map_err(|e| format!("{}: {e}", node.display()))?;
    let mut head = vec![0u8; 34 * 512];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| format!("reading the partition table of {}: {e}", node.display()))?;
    let table = shoal_gpt::Table::parse(&head, sectors).map_err(|e| e.to_string())?;
    let last = table
        .partitions
        .iter()
        .enumerate()
        .max_by_key(|(_, p)| p.first_lba)
        .ok_or("no partitions")?;
    if last.0 as u32 + 1 != part.number || last.1.name != sysfs::STATE_NAME {
        return Ok(None); // STATE is not last: nothing to grow into
    }
    // A table whose last partition already fills the disk may still have its backup copy at
    // the image's old end (a power cut right after the partition grew): rewrite it then too.
    if !table.can_grow_last() && table.backup_at_end() {
        return Ok(None);
    }
    let before = last.1.size_bytes();
    let grown = table.grow_last(sectors).map_err(|e| e.to_string())?;
    let mut writes = grown.to_writes();
    // Primary (MBR, header, entries: the writes at the start) last.
    writes.sort_by_key(|(offset, _)| std::cmp::Reverse(*offset));
    let mut synced_backup = false;
    for (offset, bytes) in writes {
        if offset < 34 * 512 && !synced_backup {
            file.sync_all()
                .map_err(|e| format!("syncing {}: {e}", node.display()))?;
            synced_backup = true;
        }
        file.write_all_at(&bytes, offset)
            .map_err(|e| format!("writing the partition table at {offset}: {e}"))?;
    }
    file.sync_all()
        .map_err(|e| format!("syncing {}: {e}", node.display()))?;
    let p = &grown.partitions[last.0];
    if p.size_bytes() == before {
        return Ok(None);
    }
    sys::resize_partition(&file, part.number, p.offset_bytes(), p.size_bytes())
        .map_err(|e| e.to_string())?;
    Ok(Some(before))
}

/// Grows the ext4 filesystem mounted on /var from `device` to fill its `partition_bytes`,
/// whenever it is smaller (also after a power cut between growing the partition and this).
fn grow_state_filesystem(device: &Path, partition_bytes: u64) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let mut sb = vec![0u8; disk::EXT4_SUPERBLOCK_LEN];
    fs::File::open(device)
        .and_then(|f| f.read_exact_at(&mut sb, disk::EXT4_SUPERBLOCK_OFFSET))
        .map_err(|e| format!("reading the ext4 superblock of {}: {e}", device.display()))?;
    let (blocks, block_size) = disk::ext4_size(&sb).ok_or("not an ext4 superblock")?;
    if let Some(target) = disk::ext4_grow_target(blocks, block_size, partition_bytes) {
        sys::ext4_grow(Path::new("/var"), target).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// switch_root: move the API filesystems into the new root, free the initramfs, make the new
/// root `/` and exec its init.
fn switch_root() -> ! {
    let sysroot = Path::new(SYSROOT);
    for api in ["/dev", "/proc", "/sys", "/run"] {
        if let Err(e) = sys::move_mount(api, &sysroot.join(&api[1..])) {
            fatal(e.to_string());
        }
    }
    sys::delete_same_fs(Path::new("/"), sysroot);
    let result = std::env::set_current_dir(sysroot)
        .map_err(|e| e.to_string())
        .and_then(|()| sys::move_mount(".", Path::new("/")).map_err(|e| e.to_string()))
        .and_then(|()| nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}")))
        .and_then(|()| std::env::set_current_dir("/").map_err(|e| e.to_string()));
    if let Err(e) = result {
        fatal(format!("switching to the root filesystem: {e}"));
    }
    emit(Event::SwitchRoot {
        init: ROOT_INIT.into(),
    });
    let err = Command::new(ROOT_INIT).arg0(ROOT_INIT).exec();
    fatal(format!("exec {ROOT_INIT}: {err}"))
}

/// Signals PID 1 handles through its signalfd.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

fn root_stage() -> ! {
    // Signals first: a SIGTERM that arrives while we boot must not be lost.
    let signals = handled_signals();
    if let Err(e) = signals.thread_block() {
        fatal(format!("blocking signals: {e}"));
    }
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .unwrap_or_else(|e| fatal(format!("signalfd: {e}")));
    // Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an immediate reboot.
    let _ = nix::sys::reboot::set_cad_enabled(false);

    mount_missing(&mounts::root_stage_filesystems());
    sys::ensure_console_fds();
    console::attach_kmsg();
    let cmdline = read_cmdline();
    console::init_logging(cmdline.log_level);
    power::set_reboot_delay(cmdline.reboot_delay);
    emit(Event::InitStart {
        stage: Stage::Root,
        version: VERSION.into(),
    });
    emit(Event::MountsReady { stage: Stage::Root });

    // Listen before coldplug so no device that appears meanwhile is missed.
    let uevents = UeventSocket::open().unwrap_or_else(|e| fatal(e.to_string()));
    let (mut plug, coldplug_uevents) = coldplug(Stage::Root, &cmdline, Some(&uevents));
    mount_efivars(&mut plug);
    let trial = cmdline.slot.and_then(|slot| {
        mount_state(slot, &mut plug);
        mount_esp(slot, &mut plug);
        start_trial(slot, cmdline.trial_timeout)
    });

    let sys_root = Path::new("/sys");
    let hw = identity::read_hardware_ids(sys_root);
    let (machine_id, source) = identity::machine_id(&hw, sys::random16);
    let _ = fs::create_dir_all("/run/shoal");
    if let Err(e) = fs::write("/run/shoal/machine-id", format!("{machine_id}\n")) {
        tracing::warn!("writing /run/shoal/machine-id: {e}");
    }
    emit(Event::MachineId {
        id: machine_id.clone(),
        source: source.as_str().into(),
    });

    let (hostname, source) = match &cmdline.hostname {
        Some(name) => (name.clone(), "cmdline"),
        None => (identity::default_hostname(&machine_id), "machine-id"),
    };
    if let Err(e) = nix::unistd::sethostname(&hostname) {
        tracing::error!("sethostname {hostname}: {e}");
    }
    let _ = fs::write("/run/shoal/hostname", format!("{hostname}\n"));
    emit(Event::Hostname {
        hostname,
        source: source.into(),
    });

    match sys::loopback_up() {
        Ok(()) => emit(Event::LoopbackUp),
        Err(e) => tracing::error!("loopback: {e}"),
    }

    let watchdog = arm_watchdog(&cmdline, &mut plug);
    if cmdline.test_hang {
        // A broken image, for the update tests: PID 1 hangs before anything starts, and only
        // the watchdog it just armed gets the machine out.
        tracing::warn!("shoaltest.hang: PID 1 hangs as a broken image would");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let mut pid1 = MainLoop {
        plug,
        uevents,
        signal_fd,
        power_buttons: Vec::new(),
        keeper: Keeper::default(),
        inventory: Refresh::default(),
        watchdog,
        trial,
    };
    pid1.open_power_buttons();
    pid1.inventory
        .request(Instant::now(), inventory::BOOT_DELAY, inventory::BOOT);
    // What coldplug read from the socket, as if the main loop had: its drivers are loaded by
    // now, but the inventory and the power buttons want to know too.
    pid1.handle_messages(coldplug_uevents);
    start_boot_tasks(Path::new(BOOT_TASKS));
    pid1.start_supervisor();
    emit(Event::BootComplete);
    pid1.run()
}

/// Opens the watchdog with `shoal.watchdog=` as its timeout: the machine's hardware timer if a
/// driver for one is bound, else the kernel's software watchdog.
fn arm_watchdog(
    cmdline: &Cmdline,
    plug: &mut Coldplug<FinitLoader>,
) -> Option<(sys::Watchdog, Feeder)> {
    if cmdline.watchdog.is_zero() {
        return None;
    }
    let device = Path::new("/dev/watchdog0");
    if !device.exists() {
        let mut outcome = Outcome::default();
        plug.load_module("softdog", "", &mut outcome);
        sys::wait_for(Duration::from_secs(1), || device.exists().then_some(()));
    }
    match sys::Watchdog::open(device, cmdline.watchdog) {
        Ok((watchdog, identity, timeout_s)) => {
            emit(Event::WatchdogArmed {
                device: device.display().to_string(),
                identity,
                timeout_s,
            });
            if let Some(stall) = cmdline.test_watchdog_stall {
                tracing::warn!(
                    "shoaltest.watchdog_stall: PID 1 stops feeding the watchdog in {stall:?}"
                );
            }
            let feeder = Feeder::new(
                Duration::from_secs(timeout_s.max(1).into()),
                Instant::now(),
                cmdline.test_watchdog_stall,
            );
            Some((watchdog, feeder))
        }
        Err(e) => {
            emit(Event::WatchdogUnavailable {
                error: e.to_string(),
            });
            None
        }
    }
}

/// On a UEFI boot, the EFI variables (Secure Boot state, and the boot loader's entries and
/// counters) as efivarfs; a BIOS boot has none.
fn mount_efivars(plug: &mut Coldplug<FinitLoader>) {
    const EFIVARS: &str = "/sys/firmware/efi/efivars";
    if !Path::new("/sys/firmware/efi").is_dir() {
        return;
    }
    let mut outcome = Outcome::default();
    plug.load_module("efivarfs", EFIVARS, &mut outcome);
    let flags = nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC;
    if let Err(e) = nix::mount::mount(
        Some("efivarfs"),
        EFIVARS,
        Some("efivarfs"),
        flags,
        None::<&str>,
    ) {
        tracing::error!("mounting efivarfs on {EFIVARS}: {e}");
    }
}

/// Starts every executable in the boot task directory once, in name order, with the console as
/// its output and a clean signal mask.
/// Starts a program as PID 1's child: console output, no input, a clean signal mask, its own
/// session. The central reaper collects it; nothing waits on the handle.
fn spawn_child(path: &Path) -> std::io::Result<i32> {
    spawn_command(Command::new(path))
}

/// [`spawn_child`] for a command with arguments.
fn spawn_command(mut command: Command) -> std::io::Result<i32> {
    command.stdin(Stdio::null()).current_dir("/");
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (sigprocmask, setsid).
    unsafe {
        command.pre_exec(|| {
            SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)?;
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    command.spawn().map(|child| child.id() as i32)
}

fn start_boot_tasks(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut tasks: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    tasks.sort();
    for task in tasks {
        let executable =
            fs::metadata(&task).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            tracing::warn!(task = %task.display(), "boot task is not an executable file; skipped");
            continue;
        }
        match spawn_child(&task) {
            // The central reaper collects it.
            Ok(pid) => emit(Event::TaskStarted {
                path: task.display().to_string(),
                pid,
            }),
            Err(e) => tracing::error!(task = %task.display(), "starting boot task: {e}"),
        }
    }
}

/// What PID 1 does after boot: reap, hotplug, power button, signals.
struct MainLoop {
    plug: Coldplug<FinitLoader>,
    uevents: UeventSocket,
    signal_fd: SignalFd,
    power_buttons: Vec<(String, fs::File)>,
    keeper: Keeper,
    inventory: Refresh,
    watchdog: Option<(sys::Watchdog, Feeder)>,
    /// A slot on trial: reboot unless the updater blesses it in time.
    trial: Option<Trial>,
}

impl MainLoop {
    fn run(mut self) -> ! {
        loop {
            let (signal_ready, uevent_ready, pressed) = {
                let mut fds = vec![
                    PollFd::new(self.signal_fd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.uevents.fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    self.power_buttons
                        .iter()
                        .map(|(_, f)| PollFd::new(f.as_fd(), PollFlags::POLLIN)),
                );
                // Sleep until the supervisor is due for a restart, if it is down, or the
                // inventory for a refresh.
                let wake = [
                    self.keeper.next_start(),
                    self.inventory.deadline(),
                    self.watchdog.as_ref().and_then(|(_, f)| f.deadline()),
                    // Look for the blessing every few seconds, and at the deadline.
                    self.trial
                        .as_ref()
                        .map(|t| t.deadline.min(Instant::now() + TRIAL_POLL)),
                ]
                .into_iter()
                .flatten()
                .min();
                let timeout = wake.map_or(PollTimeout::NONE, |at| {
                    let ms = at.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
                });
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::Error::EINTR) => {}
                    Err(e) => {
                        tracing::error!("poll: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                let pressed: Vec<usize> = fds[2..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| ready(f))
                    .map(|(i, _)| i)
                    .collect();
                (ready(&fds[0]), ready(&fds[1]), pressed)
            };
            if let Some((watchdog, feeder)) = &mut self.watchdog
                && feeder.due(Instant::now())
            {
                watchdog.feed();
            }
            if signal_ready {
                self.handle_signals();
            }
            self.check_trial();
            if self.keeper.due(Instant::now()) {
                self.start_supervisor();
            }
            if uevent_ready {
                self.handle_uevents();
            }
            self.start_inventory();
            for index in pressed {
                self.handle_power_button(index);
            }
        }
    }

    fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.signal_fd.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match signal {
                Signal::SIGCHLD => self.reap(),
                Signal::SIGTERM | Signal::SIGPWR => {
                    self.shutdown(PowerAction::Poweroff, signal.as_str())
                }
                Signal::SIGINT => self.shutdown(PowerAction::Reboot, "SIGINT (Ctrl-Alt-Del)"),
                other => tracing::info!("ignoring {}", other.as_str()),
            }
        }
        // SIGCHLD coalesces; reap anyway in case a signal was merged with another.
        self.reap();
    }

    /// Ends the trial: blessed, or out of time (recorded, then an ordered reboot).
    fn check_trial(&mut self) {
        let Some(trial) = &self.trial else { return };
        match trial.check(Instant::now()) {
            Verdict::Waiting => {}
            Verdict::Blessed => {
                tracing::info!("slot {} blessed: the trial is over", trial.slot.as_str());
                self.trial = None;
            }
            Verdict::Expired => {
                let reason = format!(
                    "slot {} was not healthy within {} s of booting ({}); rebooting spends a try",
                    trial.slot.as_str(),
                    trial.timeout.as_secs(),
                    trial.entry
                );
                trial.write("unhealthy");
                emit(Event::UpdateUnhealthy {
                    reason: reason.clone(),
                });
                self.shutdown(PowerAction::Reboot, &reason)
            }
        }
    }

    fn shutdown(&self, action: PowerAction, reason: &str) -> ! {
        power::shutdown(action, reason, self.keeper.pid().map(Pid::from_raw))
    }

    /// Reaps every exited child; notices when the supervisor was one of them.
    fn reap(&mut self) {
        let Ok(statuses) = power::reap() else { return };
        let now = Instant::now();
        for status in statuses {
            let Some(pid) = status.pid() else { continue };
            if self.inventory.exited(pid.as_raw()) {
                continue;
            }
            if let Some(delay) = self.keeper.exited(pid.as_raw(), now) {
                tracing::error!(
                    ?status,
                    "the supervisor exited; starting it again in {delay:?}"
                );
            }
        }
    }

    /// Starts the supervisor if the image has one and it is due (at boot, or after a crash).
    fn start_supervisor(&mut self) {
        let path = Path::new(SUPERVISOR);
        if !path.exists() {
            return;
        }
        let now = Instant::now();
        match spawn_child(path) {
            Ok(pid) => {
                tracing::info!(pid, "started the supervisor");
                self.keeper.started(pid, now);
            }
            Err(e) => {
                let delay = self.keeper.spawn_failed(now);
                tracing::error!("starting {SUPERVISOR}: {e}; trying again in {delay:?}");
            }
        }
    }

    /// Runs the inventory collector if a run is due (see [`inventory`]).
    fn start_inventory(&mut self) {
        let Some(reason) = self.inventory.take_due(Instant::now()) else {
            return;
        };
        let collector = Path::new(inventory::COLLECTOR);
        if !collector.exists() {
            return;
        }
        let mut command = Command::new(collector);
        command.args(["--write", INVENTORY, "--event", reason]);
        // Collecting is never urgent: at boot it must not take CPU time from the services
        // on the way to cluster membership (under TCG it is a quarter of a second of CPU).
        // SCHED_IDLE runs it only when nothing else wants the CPU.
        // SAFETY: sched_setscheduler(2) and setpriority(2) are plain system calls,
        // async-signal-safe, run in the forked child before exec; `param` outlives the call.
        unsafe {
            command.pre_exec(|| {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                Ok(())
            });
        }
        match spawn_command(command) {
            Ok(pid) => self.inventory.started(pid),
            Err(e) => tracing::error!("starting {}: {e}", inventory::COLLECTOR),
        }
    }

    fn handle_uevents(&mut self) {
        let messages = self.uevents.drain();
        self.handle_messages(messages);
    }

    fn handle_messages(&mut self, messages: Vec<Vec<u8>>) {
        for message in messages {
            let Some(event) = uevent::parse(&message) else {
                continue;
            };
            if inventory::relevant(&event) {
                self.inventory
                    .request(Instant::now(), inventory::SETTLE, "hotplug");
            }
            if event.action != "add" {
                continue;
            }
            if let Some(modalias) = event.get("MODALIAS") {
                let device = Device {
                    devpath: event.devpath.clone(),
                    modalias: modalias.to_string(),
                };
                let mut outcome = Outcome::default();
                self.plug.device(&device, &mut outcome);
                if !outcome.loaded.is_empty() || !outcome.failed.is_empty() {
                    emit(Event::Hotplug {
                        device: device.devpath,
                        modalias: device.modalias,
                        loaded: outcome.loaded.into_iter().map(|l| l.module).collect(),
                    });
                }
            }
            if event.get("SUBSYSTEM") == Some("input")
                && let Some(name) = event.get("DEVNAME").and_then(|n| n.strip_prefix("input/"))
                && name.starts_with("event")
            {
                self.open_power_button(name);
            }
        }
    }

    fn open_power_buttons(&mut self) {
        let Ok(entries) = fs::read_dir("/sys/class/input") else {
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names.iter().filter(|n| n.starts_with("event")) {
            self.open_power_button(name);
        }
    }

    fn open_power_button(&mut self, name: &str) {
        if self.power_buttons.iter().any(|(n, _)| n == name)
            || !input::is_power_button(Path::new("/sys"), name)
        {
            return;
        }
        let path = format!("/dev/input/{name}");
        let opened = sys::wait_for(Duration::from_millis(500), || {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags_nonblock()
                .open(&path)
                .ok()
        });
        match opened {
            Some(file) => {
                tracing::info!(device = %path, "watching power button");
                self.power_buttons.push((name.to_string(), file));
            }
            None => tracing::warn!(device = %path, "power button device cannot be opened"),
        }
    }

    fn handle_power_button(&mut self, index: usize) {
        let Some((name, file)) = self.power_buttons.get(index) else {
            return;
        };
        let mut buf = [0u8; input::EVENT_SIZE * 16];
        // SAFETY: reading into a local buffer of the given length from an owned, open fd.
        let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ENODEV) {
                tracing::info!(device = %name, "power button device went away");
                self.power_buttons.remove(index);
            }
            return;
        }
        if input::power_pressed(&buf[..n as usize]) {
            self.shutdown(PowerAction::Poweroff, "power button");
        }
    }
}

trait NonBlocking {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlocking for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}
