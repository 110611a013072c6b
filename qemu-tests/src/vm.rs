//! One QEMU virtual machine: a builder for its command line, console capture, waiting for boot
//! events, faults (power cut, freeze, link loss, power button, Ctrl-Alt-Del) and hotplug.
//!
//! QEMU always runs with `-no-reboot`, so a guest that reboots makes QEMU exit: tests use that to
//! see "the machine rebooted". A VM whose wait failed, or that is dropped while its test panics,
//! prints the end of its console to stderr and keeps its directory (console log, QEMU's stderr).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shoal_boot_events::{Record, parse_test_line};

use crate::accel::Accel;
use crate::console::{Console, ConsoleLine, ConsoleState, TimedEvent};
use crate::image::Image;
use crate::net::{self, Namespace, Network, Tap};
use crate::qmp::Qmp;
use crate::{Error, Result, process, require_root};

/// QEMU's x86 system emulator.
pub const QEMU: &str = "qemu-system-x86_64";
/// Console lines printed when a VM fails.
const FAILURE_TAIL_LINES: usize = 80;
/// Console lines carried in a timeout or exit error.
const ERROR_TAIL_LINES: usize = 25;
/// Environment variable: the `-cpu` model for VMs that do not set one (QEMU's default otherwise).
pub const CPU_ENV: &str = "SHOAL_QEMU_CPU";
/// OVMF's firmware code (read-only) and the variable store each UEFI VM gets a copy of.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_MAC: AtomicU32 = AtomicU32::new(1);

/// A locally administered MAC, unique within this process: `52:54:00:77:HH:LL`.
pub fn next_mac() -> String {
    let n = NEXT_MAC.fetch_add(1, Ordering::Relaxed);
    format!("52:54:00:77:{:02x}:{:02x}", (n >> 8) & 0xff, n & 0xff)
}

/// A NIC model (QEMU device driver name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicModel {
    VirtioNet,
    E1000e,
    Other(String),
}

impl NicModel {
    pub fn driver(&self) -> &str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
            NicModel::Other(driver) => driver,
        }
    }
}

/// A disk image attached to the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
    /// QEMU device driver: `virtio-blk-pci`, `nvme`, ...
    pub driver: String,
    pub read_only: bool,
    /// Extra device properties, e.g. `serial=abc`.
    pub device_options: Vec<String>,
}

impl Disk {
    /// A raw image as a virtio block device (`/dev/vda` for the first one).
    pub fn virtio(path: impl Into<PathBuf>) -> Disk {
        Disk {
            path: path.into(),
            format: "raw".into(),
            driver: "virtio-blk-pci".into(),
            read_only: false,
            device_options: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct NicSpec {
    namespace: Arc<Namespace>,
    bridge: String,
    tap: Option<Tap>,
    model: NicModel,
    mac: String,
}

/// Describes a VM; [`VmBuilder::start`] launches it.
#[derive(Debug)]
pub struct VmBuilder {
    name: String,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    base_cmdline: Option<String>,
    cmdline: Vec<String>,
    memory_mb: u32,
    smp: Option<String>,
    cpu: Option<String>,
    disks: Vec<Disk>,
    nics: Vec<NicSpec>,
    pxe: bool,
    uefi: bool,
    uefi_vars: Option<PathBuf>,
    firmware_boot: bool,
    args: Vec<String>,
    accel: Option<Accel>,
    stage_errors: Vec<String>,
}

impl VmBuilder {
    fn new(name: &str) -> VmBuilder {
        VmBuilder {
            name: name.to_string(),
            kernel: None,
            initrd: None,
            base_cmdline: None,
            cmdline: Vec::new(),
            memory_mb: 512,
            smp: None,
            cpu: None,
            disks: Vec::new(),
            nics: Vec::new(),
            pxe: false,
            uefi: false,
            uefi_vars: None,
            firmware_boot: false,
            args: Vec::new(),
            accel: None,
            stage_errors: Vec::new(),
        }
    }

    /// Boots `image`: its kernel, initramfs and command line.
    pub fn image(mut self, image: &Image) -> Self {
        self.kernel = Some(image.kernel());
        self.initrd = Some(image.initramfs());
        self.base_cmdline = Some(image.cmdline().to_string());
        self
    }

    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd = Some(path.into());
        self
    }

    /// Replaces the base command line (normally the image's).
    pub fn base_cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.base_cmdline = Some(cmdline.into());
        self
    }

    /// Appends to the kernel command line, e.g. `shoal.reboot_delay=1`.
    pub fn cmdline(mut self, extra: impl Into<String>) -> Self {
        self.cmdline.push(extra.into());
        self
    }

    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// `-smp` value, e.g. `2` or `sockets=1,cores=2,threads=1`.
    pub fn smp(mut self, smp: impl Into<String>) -> Self {
        self.smp = Some(smp.into());
        self
    }

    /// `-cpu` value, e.g. `max,vendor=GenuineIntel`.
    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = Some(cpu.into());
        self
    }

    pub fn disk(mut self, disk: Disk) -> Self {
        self.disks.push(disk);
        self
    }

    /// A raw image as a virtio disk.
    pub fn virtio_disk(self, path: impl Into<PathBuf>) -> Self {
        self.disk(Disk::virtio(path))
    }

    /// A NIC on `network` (a new tap on its bridge) with the next free MAC.
    pub fn nic(self, network: &Network, model: NicModel) -> Self {
        self.nic_with_mac(network, model, next_mac())
    }

    pub fn nic_with_mac(
        mut self,
        network: &Network,
        model: NicModel,
        mac: impl Into<String>,
    ) -> Self {
        if let Some(first) = self.nics.first()
            && !Arc::ptr_eq(&first.namespace, &network.namespace())
        {
            self.stage_errors
                .push("all NICs of one VM must be on the same Network".into());
        }
        self.nics.push(NicSpec {
            namespace: network.namespace(),
            bridge: "br0".into(),
            tap: None,
            model,
            mac: mac.into(),
        });
        self
    }

    /// A NIC on a segment of `network` (see [`Network::add_segment`]).
    pub fn nic_on(self, network: &Network, segment: &crate::net::Segment, model: NicModel) -> Self {
        let mut builder = self.nic(network, model);
        if let Some(nic) = builder.nics.last_mut() {
            nic.bridge = segment.bridge.clone();
        }
        builder
    }

    /// Boots from the first NIC's iPXE option ROM instead of `-kernel` (`-boot n`). The network
    /// must serve PXE ([`Network::enable_pxe`]); the command line comes from `boot.ipxe`.
    pub fn pxe(mut self) -> Self {
        self.pxe = true;
        self
    }

    /// Raw QEMU arguments, passed through as they are.
    /// UEFI firmware (OVMF) instead of SeaBIOS, with a variable store of the VM's own.
    pub fn uefi(mut self) -> Self {
        self.uefi = true;
        self
    }

    /// UEFI with the variable store in `vars` (created from OVMF's template when missing), so
    /// it outlives this VM: a later VM on the same disk reboots the same machine.
    pub fn uefi_vars(mut self, vars: impl Into<PathBuf>) -> Self {
        self.uefi = true;
        self.uefi_vars = Some(vars.into());
        self
    }

    /// The firmware boots from the VM's disks (no `-kernel`): the disk image's own bootloader,
    /// kernel and command line.
    pub fn firmware_boot(mut self) -> Self {
        self.firmware_boot = true;
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Forces an accelerator (default: [`Accel::detect`]).
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = Some(accel);
        self
    }

    fn config_error(&self, message: impl Into<String>) -> Error {
        Error::Config {
            vm: self.name.clone(),
            message: message.into(),
        }
    }

    /// QEMU's arguments (without the program), given the VM's directory.
    fn qemu_args(&self, dir: &Path, accel: Accel) -> Result<Vec<String>> {
        let mut args: Vec<String> = vec![
            "-name".into(),
            self.name.clone(),
            "-machine".into(),
            "pc".into(),
        ];
        args.extend(accel.args());
        args.extend([
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-no-reboot".into(),
            "-display".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
            "-m".into(),
            format!("{}M", self.memory_mb),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        ]);
        if let Some(smp) = &self.smp {
            args.extend(["-smp".into(), smp.clone()]);
        }
        // An entropy source, as KVM clouds and libvirt give every VM (and RDRAND gives physical
        // servers): without one the kernel's CRNG under TCG is seeded only when a blocking
        // getrandom() runs its jitter collector, about a second of one vCPU.
        args.extend(["-device".into(), "virtio-rng-pci".into()]);
        let cpu = self
            .cpu
            .clone()
            .or_else(|| std::env::var(CPU_ENV).ok().filter(|c| !c.is_empty()));
        if let Some(cpu) = cpu {
            args.extend(["-cpu".into(), cpu]);
        }
        if self.pxe {
            if self.nics.is_empty() {
                return Err(self.config_error("PXE boot needs a NIC"));
            }
            if !self.cmdline.is_empty() {
                return Err(self.config_error("a PXE boot takes its command line from boot.ipxe"));
            }
            args.extend(["-boot".into(), "n".into()]);
            // SeaBIOS mirrors the (absent) VGA text screen to the serial port, so iPXE's progress
            // (DHCP, downloads, errors) lands in the console log.
            args.extend([
                "-fw_cfg".into(),
                format!(
                    "name=etc/sercon-port,file={}",
                    dir.join("sercon-port").display()
                ),
            ]);
        } else if self.firmware_boot {
            if !self.cmdline.is_empty() || self.kernel.is_some() {
                return Err(self.config_error(
                    "a firmware boot takes its kernel and command line from the disk",
                ));
            }
        } else {
            let kernel = self
                .kernel
                .as_ref()
                .ok_or_else(|| self.config_error("no kernel (use .image() or .kernel())"))?;
            args.extend(["-kernel".into(), kernel.display().to_string()]);
            if let Some(initrd) = &self.initrd {
                args.extend(["-initrd".into(), initrd.display().to_string()]);
            }
            let mut cmdline: Vec<&str> = Vec::new();
            if let Some(base) = &self.base_cmdline {
                cmdline.push(base);
            }
            cmdline.extend(self.cmdline.iter().map(String::as_str));
            args.extend(["-append".into(), cmdline.join(" ")]);
        }
        if self.uefi {
            let vars = self
                .uefi_vars
                .clone()
                .unwrap_or_else(|| dir.join("OVMF_VARS.fd"));
            if !vars.exists() {
                std::fs::copy(OVMF_VARS, &vars).map_err(|e| {
                    self.config_error(format!("copying {OVMF_VARS}: {e} (package ovmf)"))
                })?;
            }
            args.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
            ]);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            let mut drive = format!(
                "file={},if=none,id=disk{i},format={}",
                disk.path.display().to_string().replace(',', ",,"),
                disk.format
            );
            if disk.read_only {
                drive.push_str(",readonly=on");
            }
            let mut device = format!("{},drive=disk{i}", disk.driver);
            for option in &disk.device_options {
                device.push(',');
                device.push_str(option);
            }
            args.extend(["-drive".into(), drive, "-device".into(), device]);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            let tap = nic
                .tap
                .as_ref()
                .ok_or_else(|| self.config_error("tap not created"))?;
            args.extend([
                "-netdev".into(),
                format!("tap,id=net{i},ifname={},script=no,downscript=no", tap.name),
                "-device".into(),
                // Only a PXE NIC needs its iPXE option ROM; skipping it elsewhere saves boot time.
                format!(
                    "{},netdev=net{i},id=nic{i},mac={}{}",
                    nic.model.driver(),
                    nic.mac,
                    if self.pxe && i == 0 { "" } else { ",romfile=" }
                ),
            ]);
        }
        args.extend(self.args.iter().cloned());
        Ok(args)
    }

    /// Creates the taps, starts QEMU and the console reader.
    pub fn start(mut self) -> Result<Vm> {
        require_root()?;
        if let Some(message) = self.stage_errors.first() {
            return Err(self.config_error(message.clone()));
        }
        let accel = self.accel.unwrap_or_else(Accel::detect);
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-vm-{}-", self.name))
            .tempdir()
            .map_err(Error::io("create the VM directory"))?;
        let mut taps = Vec::new();
        for nic in &mut self.nics {
            let tap = nic.namespace.add_tap_on(&nic.bridge)?;
            taps.push(tap.clone());
            nic.tap = Some(tap);
        }
        let namespace = self.nics.first().map(|nic| Arc::clone(&nic.namespace));
        if self.pxe {
            // The I/O port of COM1 (0x3f8) as SeaBIOS reads it: a little-endian integer.
            std::fs::write(dir.path().join("sercon-port"), 0x3f8u16.to_le_bytes())
                .map_err(Error::io("write sercon-port"))?;
        }
        let args = self.qemu_args(dir.path(), accel)?;
        let mut command = match &namespace {
            Some(namespace) => namespace.command(QEMU),
            None => Command::new(QEMU),
        };
        command.args(&args);
        std::fs::write(dir.path().join("qemu.cmdline"), process::describe(&command))
            .map_err(Error::io("write qemu.cmdline"))?;
        let stderr = File::create(dir.path().join("qemu.stderr"))
            .map_err(Error::io("create qemu.stderr"))?;
        let log = File::create(dir.path().join("console.log"))
            .map_err(Error::io("create console.log"))?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // Its own process group: a Ctrl-C in the terminal reaches only the harness, which then
        // powers the VMs off in order.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        process::die_with_parent(&mut command);
        tracing::debug!("{}: {}", self.name, process::describe(&command));
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(Error::io(format!("start {QEMU}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| self.config_error("no stdout pipe"))?;
        let stdin = child.stdin.take();
        let (console, reader) = match Console::spawn(&self.name, stdout, log, started) {
            Ok(spawned) => spawned,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io("start the console reader")(e));
            }
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        Ok(Vm {
            name: self.name,
            qmp_path: dir.path().join("qmp.sock"),
            dir,
            started,
            pid,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            stdin: Mutex::new(stdin),
            console,
            reader: Mutex::new(Some(reader)),
            qmp: Mutex::new(None),
            namespace,
            taps: Mutex::new(taps),
            failed: AtomicBool::new(false),
            report_failures: AtomicBool::new(true),
            next_hotplug: AtomicU32::new(0),
        })
    }
}

/// A NIC added after boot through QMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotplugNic {
    /// The QEMU device id (for `device_del`).
    pub id: String,
    pub tap: Tap,
    pub mac: String,
}

/// A running (or exited) VM.
#[derive(Debug)]
pub struct Vm {
    name: String,
    dir: tempfile::TempDir,
    qmp_path: PathBuf,
    started: Instant,
    pid: Pid,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    stdin: Mutex<Option<ChildStdin>>,
    console: Arc<Console>,
    reader: Mutex<Option<JoinHandle<()>>>,
    qmp: Mutex<Option<Qmp>>,
    namespace: Option<Arc<Namespace>>,
    taps: Mutex<Vec<Tap>>,
    failed: AtomicBool,
    report_failures: AtomicBool,
    next_hotplug: AtomicU32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Vm {
    /// Starts describing a VM called `name` (used in logs and error messages).
    pub fn builder(name: &str) -> VmBuilder {
        VmBuilder::new(name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The VM's directory: `console.log`, `qemu.stderr`, `qemu.cmdline`, `qmp.sock`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn console_log(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// When QEMU was spawned: the zero of every `at` this VM reports.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's pid.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The taps of the VM's NICs, in order (hotplugged ones appended).
    pub fn taps(&self) -> Vec<Tap> {
        lock(&self.taps).clone()
    }

    /// Every console line so far.
    pub fn lines(&self) -> Vec<ConsoleLine> {
        self.console.lock().lines.clone()
    }

    /// Every boot event so far, with the host time since QEMU started.
    pub fn events(&self) -> Vec<TimedEvent> {
        self.console.lock().events.clone()
    }

    /// The IPv4 address of the first DHCP lease the guest reported (`dhcp.bound`), without
    /// its prefix length.
    pub fn leased_address(&self) -> Option<String> {
        self.events()
            .into_iter()
            .find_map(|e| match e.record.event {
                shoal_boot_events::Event::DhcpBound { address, .. } => {
                    address.split('/').next().map(str::to_owned)
                }
                _ => None,
            })
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        self.console.tail(n)
    }

    /// Marks the VM failed: its console is printed when it is dropped.
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Failed waits are expected (probes): do not print the console for them.
    pub fn expect_failures(&self) {
        self.report_failures.store(false, Ordering::Relaxed);
    }

    /// Waits until `check` finds something in the console state; `what` names it in errors.
    fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut(&ConsoleState) -> Option<T>,
    ) -> Result<T> {
        match self.console.wait(timeout, check) {
            Ok(found) => Ok(found),
            Err(closed) => {
                self.mark_failed();
                let tail = self.console.tail(ERROR_TAIL_LINES);
                let log = self.console_log();
                if closed {
                    // The console closes when QEMU exits; collect its status.
                    match self.wait_exit_quietly(Duration::from_secs(5)) {
                        Some(status) => {
                            return Err(Error::Exited {
                                vm: self.name.clone(),
                                what: what.into(),
                                status,
                                log,
                                tail,
                            });
                        }
                        None => tracing::warn!("{}: console closed but QEMU still runs", self.name),
                    }
                }
                Err(Error::Timeout {
                    vm: self.name.clone(),
                    what: what.into(),
                    timeout,
                    log,
                    tail,
                })
            }
        }
    }

    /// The first event called `name` (e.g. `boot.complete`) since boot, waiting for it.
    pub fn wait_for_event(&self, name: &str, timeout: Duration) -> Result<Record> {
        self.wait_for_event_matching(&format!("event {name}"), timeout, |r| {
            r.event.name() == name
        })
    }

    /// The first event for which `matches` holds, waiting for it.
    pub fn wait_for_event_matching(
        &self,
        what: &str,
        timeout: Duration,
        mut matches: impl FnMut(&Record) -> bool,
    ) -> Result<Record> {
        self.wait_until(what, timeout, |state| {
            state
                .events
                .iter()
                .find(|e| matches(&e.record))
                .map(|e| e.record.clone())
        })
    }

    /// The first event called `name` after the first `skip` of them (for events that come once
    /// per stage or once per device).
    pub fn wait_for_nth_event(&self, name: &str, skip: usize, timeout: Duration) -> Result<Record> {
        self.wait_until(&format!("event {name} #{}", skip + 1), timeout, |state| {
            state
                .events
                .iter()
                .filter(|e| e.name() == name)
                .nth(skip)
                .map(|e| e.record.clone())
        })
    }

    /// The first console line for which `matches` holds, waiting for it.
    pub fn wait_for_line(
        &self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<ConsoleLine> {
        self.wait_until("a console line matching the predicate", timeout, |state| {
            state.lines.iter().find(|l| matches(&l.text)).cloned()
        })
    }

    /// The first console line containing `needle`, waiting for it.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> Result<ConsoleLine> {
        self.wait_until(&format!("console text {needle:?}"), timeout, |state| {
            state
                .lines
                .iter()
                .find(|l| l.text.contains(needle))
                .cloned()
        })
    }

    /// The first `SHOAL-TEST` report whose `"test"` field is `test`, waiting for it.
    pub fn wait_for_test_report(&self, test: &str, timeout: Duration) -> Result<Value> {
        self.wait_until(&format!("SHOAL-TEST report {test:?}"), timeout, |state| {
            state
                .lines
                .iter()
                .filter_map(|l| parse_test_line(&l.text))
                .find(|v| v.get("test").and_then(Value::as_str) == Some(test))
        })
    }

    /// Waits for QEMU to exit by itself. A timeout is an error (QEMU keeps running; drop or
    /// [`Vm::kill`] ends it).
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        match self.wait_exit_quietly(timeout) {
            Some(status) => Ok(status),
            None => {
                self.mark_failed();
                Err(Error::Timeout {
                    vm: self.name.clone(),
                    what: "QEMU to exit".into(),
                    timeout,
                    log: self.console_log(),
                    tail: self.console.tail(ERROR_TAIL_LINES),
                })
            }
        }
    }

    fn wait_exit_quietly(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// QEMU's exit status if it has exited; then the console is complete too.
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut exit = lock(&self.exit);
        if exit.is_none()
            && let Ok(Some(status)) = lock(&self.child).try_wait()
        {
            // QEMU's stdout is closed now: let the reader drain it before reporting the exit.
            if let Some(reader) = lock(&self.reader).take() {
                let _ = reader.join();
            }
            *exit = Some(status);
        }
        *exit
    }

    /// Whether QEMU is still running.
    pub fn is_running(&self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Power cut: SIGKILL to QEMU, then reap it.
    pub fn kill(&self) {
        if self.is_running() {
            let _ = lock(&self.child).kill();
        }
        let _ = self.wait_exit_quietly(Duration::from_secs(10));
    }

    /// Freezes QEMU (SIGSTOP): the guest's clocks jump when it resumes.
    pub fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        kill(self.pid, signal).map_err(|e| Error::Io {
            what: format!("{signal} to {}", self.name),
            source: e.into(),
        })
    }

    /// Pulls the cable of NIC `n` at the switch (the tap goes down).
    pub fn link_down(&self, n: usize) -> Result<()> {
        self.set_tap_link(n, false)
    }

    pub fn link_up(&self, n: usize) -> Result<()> {
        self.set_tap_link(n, true)
    }

    fn set_tap_link(&self, n: usize, up: bool) -> Result<()> {
        let tap = lock(&self.taps).get(n).cloned();
        match (tap, &self.namespace) {
            (Some(tap), Some(namespace)) => net::set_link(namespace, &tap.name, up),
            _ => Err(Error::Config {
                vm: self.name.clone(),
                message: format!("no NIC #{n}"),
            }),
        }
    }

    /// Runs `f` with the QMP session, connecting on first use.
    pub fn qmp<T>(&self, f: impl FnOnce(&mut Qmp) -> Result<T>) -> Result<T> {
        let mut qmp = lock(&self.qmp);
        if qmp.is_none() {
            *qmp = Some(Qmp::connect(
                &self.name,
                &self.qmp_path,
                QMP_CONNECT_TIMEOUT,
            )?);
        }
        match qmp.as_mut() {
            Some(session) => f(session),
            None => unreachable!("connected above"),
        }
    }

    /// Presses the ACPI power button (QMP `system_powerdown`).
    pub fn powerdown(&self) -> Result<()> {
        self.qmp(Qmp::system_powerdown)
    }

    /// Ctrl-Alt-Del on the PS/2 keyboard.
    pub fn ctrl_alt_delete(&self) -> Result<()> {
        self.qmp(|q| q.send_key(&["ctrl", "alt", "delete"]))
    }

    /// Types `text` on the serial console.
    pub fn send_console(&self, text: &str) -> Result<()> {
        let mut stdin = lock(&self.stdin);
        let stdin = stdin.as_mut().ok_or_else(|| Error::Config {
            vm: self.name.clone(),
            message: "no console input".into(),
        })?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(Error::io(format!("write to {}'s console", self.name)))
    }

    /// Hot-plugs a NIC of `model` (e.g. [`NicModel::E1000e`]) on a new tap of `network`.
    pub fn hotplug_nic(&self, network: &Network, model: NicModel) -> Result<HotplugNic> {
        match &self.namespace {
            Some(namespace) if Arc::ptr_eq(namespace, &network.namespace()) => {}
            _ => {
                return Err(Error::Config {
                    vm: self.name.clone(),
                    message: "hotplug needs the network the VM runs in (start it with a NIC on it)"
                        .into(),
                });
            }
        }
        let tap = network.add_tap()?;
        lock(&self.taps).push(tap.clone());
        let n = self.next_hotplug.fetch_add(1, Ordering::Relaxed);
        let (netdev, id, mac) = (format!("hpnet{n}"), format!("hpnic{n}"), next_mac());
        self.qmp(|q| {
            q.netdev_add(json!({
                "type": "tap", "id": netdev, "ifname": tap.name, "script": "no", "downscript": "no"
            }))?;
            q.device_add(
                json!({ "driver": model.driver(), "id": id, "netdev": netdev, "mac": mac }),
            )
        })?;
        Ok(HotplugNic { id, tap, mac })
    }

    /// Hot-plugs any device (QMP `device_add` arguments).
    pub fn device_add(&self, arguments: Value) -> Result<()> {
        self.qmp(|q| q.device_add(arguments))
    }

    pub fn device_del(&self, id: &str) -> Result<()> {
        self.qmp(|q| q.device_del(id))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
        let failed = std::thread::panicking() || self.failed.load(Ordering::Relaxed);
        if failed && self.report_failures.load(Ordering::Relaxed) {
            self.dir.disable_cleanup(true);
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "---- VM {} failed: last {FAILURE_TAIL_LINES} console lines ----\n{}---- full console log: {} (QEMU's stderr: {}) ----",
                self.name,
                self.console.tail(FAILURE_TAIL_LINES),
                self.console_log().display(),
                self.dir.path().join("qemu.stderr").display(),
            );
        }
        // Taps go with the namespace; this VM's reference to it is released here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_for_a_kernel_boot() {
        let builder = Vm::builder("n0")
            .kernel("/img/vmlinuz")
            .initrd("/img/initramfs")
            .base_cmdline("console=ttyS0")
            .cmdline("shoal.reboot_delay=1")
            .virtio_disk("/tmp/d,1.img")
            .memory_mb(256)
            .arg("-device")
            .arg("i6300esb");
        let args = builder.qemu_args(Path::new("/run/vm"), Accel::Tcg).unwrap();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg"), "{joined}");
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains("-nodefaults"));
        assert!(joined.contains("-serial stdio"));
        assert!(joined.contains("-m 256M"));
        assert!(joined.contains("-qmp unix:/run/vm/qmp.sock,server=on,wait=off"));
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[append + 1], "console=ttyS0 shoal.reboot_delay=1");
        assert!(joined.contains("-drive file=/tmp/d,,1.img,if=none,id=disk0,format=raw"));
        assert!(joined.contains("-device virtio-blk-pci,drive=disk0"));
        assert!(joined.ends_with("-device i6300esb"));
    }

    #[test]
    fn pxe_without_a_nic_is_refused() {
        let err = Vm::builder("n0")
            .pxe()
            .qemu_args(Path::new("/x"), Accel::Tcg)
            .unwrap_err();
        assert!(err.to_string().contains("PXE boot needs a NIC"), "{err}");
        let err = Vm::builder("n0")
            .qemu_args(Path::new("/x"), Accel::Tcg)
            .unwrap_err();
        assert!(err.to_string().contains("no kernel"), "{err}");
    }

    #[test]
    fn macs_are_unique_and_locally_administered() {
        let (a, b) = (next_mac(), next_mac());
        assert_ne!(a, b);
        assert!(a.starts_with("52:54:00:77:"));
        assert_eq!(a.len(), 17);
    }
}
