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

use crate::cmdline::{self, Cmdline};
use crate::coldplug::{Coldplug, Device, Modules, Outcome, loaded_modules, scan_devices};
use crate::console::{self, emit};
use crate::identity;
use crate::input;
use crate::inventory::{self, Refresh};
use crate::keeper::Keeper;
use crate::mounts;
use crate::power::{self, fatal};
use crate::sys::{self, FinitLoader, UeventSocket};
use crate::uevent;

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

/// Loads drivers for every device present, and again for devices that appeared because a
/// driver was loaded (a PCI function's virtio device, say), until nothing new turns up.
fn coldplug(stage: Stage, cmdline: &Cmdline) -> Coldplug<FinitLoader> {
    let start = Instant::now();
    let mut plug = open_modules(cmdline);
    let mut outcome = Outcome::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for _pass in 0..8 {
        let new: Vec<Device> = scan_devices(Path::new("/sys"))
            .into_iter()
            .filter(|d| seen.insert(format!("{}\0{}", d.devpath, d.modalias)))
            .collect();
        if new.is_empty() {
            break;
        }
        let pass = plug.run(&new);
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
    plug
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

    // A root image inside the initramfs needs no device drivers, only loop and its filesystem:
    // leave coldplug to the root stage, which has every module. A root on a disk needs the
    // storage drivers first.
    let mut plug = if cmdline.root.starts_with("/dev") {
        coldplug(Stage::Initramfs, &cmdline)
    } else {
        open_modules(&cmdline)
    };
    mount_root(&cmdline, &mut plug);
    switch_root()
}

/// Finds the root image or device, attaches it, mounts it read-only on /sysroot and checks that
/// it holds an init. Every failure is fatal with a message that names what was wrong.
fn mount_root(cmdline: &Cmdline, plug: &mut Coldplug<FinitLoader>) {
    let start = Instant::now();
    let fstype = cmdline.root_fstype.as_str();
    let root = &cmdline.root;
    let mut outcome = Outcome::default();
    plug.load_module(fstype, "", &mut outcome);

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
    let _ = fs::create_dir_all(SYSROOT);
    let flags = nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NODEV;
    if let Err(e) = nix::mount::mount(Some(&device), SYSROOT, Some(fstype), flags, None::<&str>) {
        fatal(format!(
            "root {} ({}) cannot be mounted as {fstype}: {} (corrupt or not a {fstype} image?)",
            root.display(),
            device.display(),
            e.desc()
        ));
    }
    let init = Path::new(SYSROOT).join(ROOT_INIT.trim_start_matches('/'));
    let executable =
        fs::metadata(&init).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        fatal(format!(
            "root {} has no executable {ROOT_INIT}",
            root.display()
        ));
    }
    emit(Event::RootMounted {
        source: root.display().to_string(),
        fstype: fstype.into(),
        ms: crate::console::ms_since(start),
    });
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
    let mut plug = coldplug(Stage::Root, &cmdline);
    mount_efivars(&mut plug);

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

    let mut pid1 = MainLoop {
        plug,
        uevents,
        signal_fd,
        power_buttons: Vec::new(),
        keeper: Keeper::default(),
        inventory: Refresh::default(),
    };
    pid1.open_power_buttons();
    pid1.inventory
        .request(Instant::now(), Duration::ZERO, "boot");
    pid1.start_inventory();
    start_boot_tasks(Path::new(BOOT_TASKS));
    pid1.start_supervisor();
    emit(Event::BootComplete);
    pid1.run()
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
                let wake = [self.keeper.next_start(), self.inventory.deadline()]
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
            if signal_ready {
                self.handle_signals();
            }
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
        for message in self.uevents.drain() {
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
