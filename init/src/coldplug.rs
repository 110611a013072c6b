//! Driver coldplug and hotplug: find the devices that need a driver, work out which modules
//! serve them and load those in dependency order.
//!
//! A coldplug pass loads several modules at once: a module starts as soon as the ones it
//! depends on are in the kernel. A driver whose probe waits on its hardware no longer holds up
//! the modules after it, and under emulation the CPU-bound part of one load (relocations,
//! signature check) overlaps another's wait. One limit stays: the kernel finishes every
//! `finit_module` by waiting for *all* asynchronous work in flight (`async_synchronize_full`),
//! so libata's background port probing still delays any load that ends while it runs. The plan
//! is a pure [`Schedule`]; threads only run it.
//!
//! The sysfs root is a parameter and module loading goes through the [`Loader`] trait, so the
//! whole flow runs against a fixture tree and a recording loader in tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use shoal_boot_events::{FailedModule, LoadedModule};

use crate::kmod::{AliasIndex, ModuleDb, normalize};

/// A device that announces which driver it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Path under /sys, starting with `/devices/`.
    pub devpath: String,
    pub modalias: String,
}

/// Lists every device under `<sys>/devices` with a `modalias` file, in path order. Symlinks are
/// not followed (sysfs is full of them, and some loop).
pub fn scan_devices(sys: &Path) -> Vec<Device> {
    let mut devices = Vec::new();
    let mut stack = vec![sys.join("devices")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.file_name() == "modalias" {
                let Ok(text) = fs::read_to_string(entry.path()) else {
                    continue;
                };
                let modalias = text.trim();
                if modalias.is_empty() {
                    continue;
                }
                let devpath = dir.strip_prefix(sys).map(|p| format!("/{}", p.display()));
                devices.push(Device {
                    devpath: devpath.unwrap_or_else(|_| dir.display().to_string()),
                    modalias: modalias.to_string(),
                });
            }
        }
    }
    devices.sort_by(|a, b| a.devpath.cmp(&b.devpath));
    devices
}

/// The devices that kernel uevents (raw `NETLINK_KOBJECT_UEVENT` datagrams) announce as added
/// with a driver alias, in the order they came.
pub fn devices_in_uevents(messages: &[Vec<u8>]) -> Vec<Device> {
    messages
        .iter()
        .filter_map(|m| crate::uevent::parse(m))
        .filter(|e| e.action == "add")
        .filter_map(|e| {
            let modalias = e.get("MODALIAS")?.to_string();
            Some(Device {
                devpath: e.devpath,
                modalias,
            })
        })
        .collect()
}

/// Loads one module file. The real one calls `finit_module(2)`. Coldplug calls it from several
/// threads at once.
pub trait Loader: Sync {
    /// Loads the module at `path` with `params` (space-separated `key=value`). Loading a module
    /// that is already loaded must succeed.
    fn load(&self, name: &str, path: &Path, params: &str) -> io::Result<()>;
}

/// The module directory of the running kernel with its parsed indexes.
#[derive(Debug)]
pub struct Modules {
    pub dir: PathBuf,
    pub db: ModuleDb,
}

impl Modules {
    /// Reads `modules.alias`, `modules.dep`, `modules.softdep` and `modules.builtin` from `dir`.
    /// A missing `modules.dep` is an error (the image is broken); the others may be absent.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let read_opt = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
        let dep = fs::read_to_string(dir.join("modules.dep")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: {e}", dir.join("modules.dep").display()),
            )
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db: ModuleDb::parse(
                &dep,
                &read_opt("modules.softdep"),
                &read_opt("modules.builtin"),
                AliasIndex::parse(&read_opt("modules.alias")),
            ),
        })
    }
}

/// What a coldplug or hotplug pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub loaded: Vec<LoadedModule>,
    pub failed: Vec<FailedModule>,
}

/// Loads modules and remembers which ones are in the kernel, so each is tried once.
#[derive(Debug)]
pub struct Coldplug<L> {
    pub modules: Modules,
    loader: L,
    /// Modules known to be in the kernel (loaded before us or by us).
    loaded: BTreeSet<String>,
    /// Modules that failed once: not retried for every device that wants them.
    failed: BTreeSet<String>,
    params: std::collections::BTreeMap<String, Vec<String>>,
}

impl<L: Loader> Coldplug<L> {
    /// `already_loaded` is what `/sys/module` lists at start; `params` are module parameters
    /// from the kernel command line.
    pub fn new(
        modules: Modules,
        loader: L,
        already_loaded: BTreeSet<String>,
        params: std::collections::BTreeMap<String, Vec<String>>,
    ) -> Self {
        Self {
            modules,
            loader,
            loaded: already_loaded,
            failed: BTreeSet::new(),
            params,
        }
    }

    pub fn loader(&self) -> &L {
        &self.loader
    }

    /// Loads the drivers every device in `devices` asks for, up to `workers` modules at a time
    /// (each once its dependencies are in). `loaded` lists them in the order they finished;
    /// with one worker, that is the order of the devices and of each module's dependencies.
    pub fn run(&mut self, devices: &[Device], workers: usize) -> Outcome {
        let mut outcome = Outcome::default();
        let mut schedule = Schedule::default();
        for device in devices {
            for module in self.modules.db.modules_for(&device.modalias) {
                self.plan_into(
                    &mut schedule,
                    &normalize(&module),
                    &device.devpath,
                    &mut outcome,
                );
            }
        }
        self.execute(schedule, outcome, workers)
    }

    /// Loads modules by name (and what they depend on), up to `workers` at a time, as
    /// [`Coldplug::run`] does for devices; `device` says on whose behalf.
    pub fn load_modules(&mut self, names: &[&str], device: &str, workers: usize) -> Outcome {
        let mut outcome = Outcome::default();
        let mut schedule = Schedule::default();
        for name in names {
            self.plan_into(&mut schedule, &normalize(name), device, &mut outcome);
        }
        self.execute(schedule, outcome, workers)
    }

    /// Runs a planned pass on up to `workers` threads and records how it went.
    fn execute(&mut self, schedule: Schedule, mut outcome: Outcome, workers: usize) -> Outcome {
        let schedule = Mutex::new(schedule);
        let changed = Condvar::new();
        let loader = &self.loader;
        std::thread::scope(|scope| {
            for _ in 1..workers.max(1) {
                let spawned = std::thread::Builder::new()
                    .name("coldplug".into())
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(scope, || work(&schedule, &changed, loader));
                if let Err(e) = spawned {
                    // Fewer workers only make the pass slower.
                    tracing::warn!("cannot start a coldplug thread: {e}");
                    break;
                }
            }
            work(&schedule, &changed, loader);
        });
        let schedule = schedule.into_inner().unwrap_or_else(|p| p.into_inner());
        for index in schedule.finished.iter().copied() {
            let job = &schedule.jobs[index];
            match &job.state {
                State::Loaded => {
                    self.loaded.insert(job.name.clone());
                    outcome.loaded.push(LoadedModule {
                        module: job.name.clone(),
                        device: job.device.clone(),
                    });
                }
                State::Failed(error) => {
                    self.failed.insert(job.name.clone());
                    if !job.optional {
                        outcome.failed.push(FailedModule {
                            module: job.name.clone(),
                            error: error.clone(),
                        });
                    }
                }
                // A hard dependency failed: this one cannot load either, and is not retried.
                State::Skipped => {
                    self.failed.insert(job.name.clone());
                }
                State::Waiting | State::Running => {}
            }
        }
        // Only a dependency cycle in modules.dep leaves a job waiting.
        for job in schedule.jobs.iter().filter(|j| j.state == State::Waiting) {
            self.failed.insert(job.name.clone());
            outcome.failed.push(FailedModule {
                module: job.name.clone(),
                error: "its dependencies in modules.dep form a cycle".into(),
            });
        }
        outcome
    }

    /// Adds `name` and what it needs to a pass, each with the modules it waits for. A module
    /// that cannot be planned (not in this image) goes straight to `outcome.failed`.
    fn plan_into(
        &mut self,
        schedule: &mut Schedule,
        name: &str,
        device: &str,
        outcome: &mut Outcome,
    ) {
        if self.failed.contains(name) {
            return;
        }
        let mut known = self.loaded.clone();
        known.extend(schedule.index.keys().cloned());
        let plan = match self.modules.db.plan(name, &known) {
            Ok(plan) => plan,
            Err(e) => {
                self.failed.insert(name.to_string());
                outcome.failed.push(FailedModule {
                    module: name.to_string(),
                    error: e.to_string(),
                });
                return;
            }
        };
        for step in plan {
            if self.failed.contains(&step.name) {
                if step.optional {
                    continue;
                }
                // A dependency that failed before: the module cannot load either.
                self.failed.insert(name.to_string());
                return;
            }
            let after = self
                .modules
                .db
                .prerequisites(&step.name)
                .into_iter()
                .filter_map(|(m, hard)| schedule.index.get(&m).map(|&i| (i, hard)))
                .collect();
            let params = self
                .params
                .get(&step.name)
                .map(|p| p.join(" "))
                .unwrap_or_default();
            schedule.add(Job {
                path: self.modules.dir.join(&step.path),
                name: step.name,
                params,
                optional: step.optional,
                device: device.to_string(),
                after,
                state: State::Waiting,
            });
        }
        // Anything planned earlier as best effort that this module needs is no longer.
        schedule.require(name);
    }

    /// Loads the drivers one device asks for (a hotplug event), on this thread, adding to
    /// `outcome`.
    pub fn device(&mut self, device: &Device, outcome: &mut Outcome) {
        let pass = self.run(std::slice::from_ref(device), 1);
        outcome.loaded.extend(pass.loaded);
        outcome.failed.extend(pass.failed);
    }

    /// Loads a module by name (and what it depends on) on this thread, adding to `outcome`;
    /// `device` says on whose behalf.
    pub fn load_module(&mut self, module: &str, device: &str, outcome: &mut Outcome) {
        let pass = self.load_modules(&[module], device, 1);
        outcome.loaded.extend(pass.loaded);
        outcome.failed.extend(pass.failed);
    }
}

/// Stack of a coldplug thread: it only opens a file and calls `finit_module`.
const WORKER_STACK: usize = 256 * 1024;

/// One coldplug worker: takes the next module whose dependencies are in, loads it, and records
/// how that went, until nothing is left to start.
fn work<L: Loader>(schedule: &Mutex<Schedule>, changed: &Condvar, loader: &L) {
    let lock = || schedule.lock().unwrap_or_else(|p| p.into_inner());
    let mut guard = lock();
    loop {
        match guard.next() {
            Next::Load(index) => {
                let job = &guard.jobs[index];
                let (name, path, params) = (job.name.clone(), job.path.clone(), job.params.clone());
                let (optional, device) = (job.optional, job.device.clone());
                drop(guard);
                let result = loader.load(&name, &path, &params);
                match &result {
                    Ok(()) => tracing::info!(module = %name, device, "loaded driver"),
                    // Best effort: another provider of the same function usually loaded.
                    Err(e) if optional => {
                        tracing::info!(module = %name, error = %e, "optional module not loaded");
                    }
                    Err(e) => {
                        tracing::warn!(module = %name, device, error = %e, "driver failed to load");
                    }
                }
                guard = lock();
                guard.finish(index, result.map_err(|e| e.to_string()));
                changed.notify_all();
            }
            Next::Wait => guard = changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
            Next::Done => {
                changed.notify_all();
                return;
            }
        }
    }
}

/// A coldplug pass as a graph: the modules to load and what each waits for. Pure: workers ask
/// it what to load next and tell it how each load went.
#[derive(Debug, Default)]
pub struct Schedule {
    jobs: Vec<Job>,
    /// Module name -> its job.
    index: BTreeMap<String, usize>,
    /// Jobs in the order they ended (loaded, failed or skipped).
    finished: Vec<usize>,
}

#[derive(Debug)]
struct Job {
    name: String,
    path: PathBuf,
    params: String,
    /// Best effort in every plan that has it: its failure stops nothing.
    optional: bool,
    /// On whose behalf: the first device that needed it.
    device: String,
    /// The jobs that end before this one starts; `true` for a hard dependency, whose failure
    /// means this one cannot load.
    after: Vec<(usize, bool)>,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Loaded,
    Failed(String),
    /// Not tried: a hard dependency failed.
    Skipped,
}

/// What a worker does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Load(usize),
    /// Nothing can start until a running load ends.
    Wait,
    /// Nothing is running and nothing more can start.
    Done,
}

impl Schedule {
    fn add(&mut self, job: Job) {
        self.index.insert(job.name.clone(), self.jobs.len());
        self.jobs.push(job);
    }

    /// Makes a job, and every job it hard-depends on, no longer best effort.
    fn require(&mut self, name: &str) {
        let mut stack: Vec<usize> = self.index.get(name).copied().into_iter().collect();
        let mut seen = BTreeSet::new();
        while let Some(index) = stack.pop() {
            if seen.insert(index) {
                let job = &mut self.jobs[index];
                job.optional = false;
                stack.extend(job.after.iter().filter(|(_, hard)| *hard).map(|(i, _)| *i));
            }
        }
    }

    /// The first waiting job, in planning order, whose dependencies have all ended; jobs
    /// whose hard dependency failed are skipped on the way.
    fn next(&mut self) -> Next {
        let mut running = false;
        let mut index = 0;
        while index < self.jobs.len() {
            let job = &self.jobs[index];
            match job.state {
                State::Running => running = true,
                State::Waiting => {
                    let ended = |&(i, _): &(usize, bool)| {
                        !matches!(self.jobs[i].state, State::Waiting | State::Running)
                    };
                    let broken = |&(i, hard): &(usize, bool)| {
                        hard && matches!(self.jobs[i].state, State::Failed(_) | State::Skipped)
                    };
                    if job.after.iter().any(broken) {
                        self.jobs[index].state = State::Skipped;
                        self.finished.push(index);
                        // Its dependents may be earlier in the list: look again from the top.
                        running = false;
                        index = 0;
                        continue;
                    }
                    if job.after.iter().all(ended) {
                        self.jobs[index].state = State::Running;
                        return Next::Load(index);
                    }
                }
                _ => {}
            }
            index += 1;
        }
        if running { Next::Wait } else { Next::Done }
    }

    fn finish(&mut self, index: usize, result: Result<(), String>) {
        self.jobs[index].state = match result {
            Ok(()) => State::Loaded,
            Err(e) => State::Failed(e),
        };
        self.finished.push(index);
    }
}

/// The modules the kernel has now: every directory in `<sys>/module` (built-ins with
/// parameters appear there too, which is harmless: they need no loading either).
pub fn loaded_modules(sys: &Path) -> BTreeSet<String> {
    fs::read_dir(sys.join("module"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(normalize))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Recording {
        calls: Mutex<Vec<(String, PathBuf, String)>>,
        fail: Vec<&'static str>,
    }

    impl Recording {
        fn calls(&self) -> Vec<(String, PathBuf, String)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Loader for Recording {
        fn load(&self, name: &str, path: &Path, params: &str) -> io::Result<()> {
            self.calls.lock().unwrap().push((
                name.to_string(),
                path.to_path_buf(),
                params.to_string(),
            ));
            if self.fail.contains(&name) {
                return Err(io::Error::from_raw_os_error(libc::ENOEXEC));
            }
            Ok(())
        }
    }

    /// Coldplug over the module tree in `dir`, nothing loaded yet, no parameters.
    fn coldplug_with<L: Loader>(dir: &Path, loader: L) -> Coldplug<L> {
        let modules = Modules::open(dir).unwrap();
        Coldplug::new(modules, loader, BTreeSet::new(), Default::default())
    }

    fn fixture() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        for (dir, alias) in [
            (
                "devices/pci0000:00/0000:00:02.0",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            ),
            (
                "devices/pci0000:00/0000:00:02.0/virtio0",
                "virtio:d00000001v00001AF4",
            ),
            (
                "devices/pci0000:00/0000:00:03.0/virtio1",
                "virtio:d00000002v00001AF4",
            ),
            ("devices/platform/serial8250", "platform:serial8250"),
            ("devices/LNXSYSTM:00/LNXPWRBN:00", "acpi:LNXPWRBN:"),
            ("devices/system/cpu/cpu0", ""),
        ] {
            fs::create_dir_all(sys.join(dir)).unwrap();
            fs::write(sys.join(dir).join("modalias"), format!("{alias}\n")).unwrap();
        }
        // A symlink loop must not be followed.
        std::os::unix::fs::symlink("..", sys.join("devices/pci0000:00/0000:00:02.0/subsystem"))
            .unwrap();
        fs::create_dir_all(sys.join("module/virtio")).unwrap();

        let modules = root.path().join("modules");
        fs::create_dir_all(&modules).unwrap();
        fs::write(
            modules.join("modules.alias"),
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000001v* virtio_net\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias acpi*:LNXPWRBN:* button\n",
        )
        .unwrap();
        fs::write(
            modules.join("modules.dep"),
            "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
             kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
             kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/block/virtio_blk.ko:\n",
        )
        .unwrap();
        root
    }

    #[test]
    fn scans_devices_with_a_modalias() {
        let root = fixture();
        let devices = scan_devices(&root.path().join("sys"));
        let paths: Vec<&str> = devices.iter().map(|d| d.devpath.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/devices/LNXSYSTM:00/LNXPWRBN:00",
                "/devices/pci0000:00/0000:00:02.0",
                "/devices/pci0000:00/0000:00:02.0/virtio0",
                "/devices/pci0000:00/0000:00:03.0/virtio1",
                "/devices/platform/serial8250",
            ]
        );
        assert_eq!(
            loaded_modules(&root.path().join("sys")),
            ["virtio".to_string()].into()
        );
    }

    #[test]
    fn uevents_name_the_added_devices_that_want_a_driver() {
        let message = |text: &str| text.replace('|', "\0").into_bytes();
        let messages = vec![
            message(
                "add@/devices/pci0000:00/0000:00:03.0/virtio1|ACTION=add|\
                 DEVPATH=/devices/pci0000:00/0000:00:03.0/virtio1|SUBSYSTEM=virtio|\
                 MODALIAS=virtio:d00000001v00001AF4|SEQNUM=812",
            ),
            // No alias: nothing to load for it.
            message("add@/devices/virtual/net/lo|ACTION=add|DEVPATH=/devices/virtual/net/lo"),
            message(
                "bind@/devices/pci0000:00/0000:00:03.0/virtio1|ACTION=bind|\
                 DEVPATH=/devices/pci0000:00/0000:00:03.0/virtio1|MODALIAS=virtio:d00000001v00001AF4",
            ),
            message("libudev\0garbage"),
            message(
                "add@/devices/platform/i8042/serio1|ACTION=add|DEVPATH=/devices/platform/i8042/serio1|\
                 MODALIAS=serio:ty01pr00id00ex00",
            ),
        ];
        assert_eq!(
            devices_in_uevents(&messages),
            vec![
                Device {
                    devpath: "/devices/pci0000:00/0000:00:03.0/virtio1".into(),
                    modalias: "virtio:d00000001v00001AF4".into(),
                },
                Device {
                    devpath: "/devices/platform/i8042/serio1".into(),
                    modalias: "serio:ty01pr00id00ex00".into(),
                },
            ]
        );
    }

    #[test]
    fn loads_drivers_in_dependency_order_once() {
        let root = fixture();
        let modules = Modules::open(&root.path().join("modules")).unwrap();
        let devices = scan_devices(&root.path().join("sys"));
        let params = [("virtio_net".to_string(), vec!["napi_tx=1".to_string()])].into();
        let mut coldplug = Coldplug::new(modules, Recording::default(), BTreeSet::new(), params);
        let outcome = coldplug.run(&devices, 1);

        let loaded: Vec<(&str, &str)> = outcome
            .loaded
            .iter()
            .map(|l| (l.module.as_str(), l.device.as_str()))
            .collect();
        assert_eq!(
            loaded,
            vec![
                ("virtio_pci_modern_dev", "/devices/pci0000:00/0000:00:02.0"),
                ("virtio_pci", "/devices/pci0000:00/0000:00:02.0"),
                ("failover", "/devices/pci0000:00/0000:00:02.0/virtio0"),
                ("net_failover", "/devices/pci0000:00/0000:00:02.0/virtio0"),
                ("virtio_net", "/devices/pci0000:00/0000:00:02.0/virtio0"),
                ("virtio_blk", "/devices/pci0000:00/0000:00:03.0/virtio1"),
            ]
        );
        // button is in modules.alias but not in modules.dep: reported, not fatal.
        assert_eq!(outcome.failed.len(), 1);
        assert_eq!(outcome.failed[0].module, "button");
        let calls = coldplug.loader().calls();
        assert_eq!(calls.len(), 6, "each module loaded once");
        assert!(
            calls[4]
                .1
                .ends_with("modules/kernel/drivers/net/virtio_net.ko")
        );
        assert_eq!(calls[4].2, "napi_tx=1");

        // A second pass (hotplug of the same kind of device) loads nothing new.
        assert_eq!(coldplug.run(&devices, 4).loaded, vec![]);
    }

    #[test]
    fn a_failed_dependency_stops_its_dependents() {
        let root = fixture();
        let loader = Recording {
            fail: vec!["failover"],
            ..Default::default()
        };
        let mut coldplug = coldplug_with(&root.path().join("modules"), loader);
        let mut outcome = Outcome::default();
        coldplug.load_module("virtio_net", "", &mut outcome);
        assert!(outcome.loaded.is_empty());
        assert_eq!(outcome.failed[0].module, "failover");
        assert!(
            outcome.failed[0].error.contains("Exec format error"),
            "{:?}",
            outcome.failed
        );
        // Not retried.
        coldplug.load_module("virtio-net", "", &mut outcome);
        assert_eq!(coldplug.loader().calls().len(), 1);
    }

    /// Gives the fixture's virtio_blk a soft pre-dependency on crc32c, with more aliases and
    /// more lines of modules.dep.
    fn with_crc32c_softdep(dir: &Path, aliases: &str, deps: &str) {
        fs::write(
            dir.join("modules.softdep"),
            "softdep virtio_blk pre: crc32c\n",
        )
        .unwrap();
        let mut alias = fs::read_to_string(dir.join("modules.alias")).unwrap();
        alias.push_str(aliases);
        fs::write(dir.join("modules.alias"), alias).unwrap();
        let mut dep = fs::read_to_string(dir.join("modules.dep")).unwrap();
        dep.push_str(deps);
        fs::write(dir.join("modules.dep"), dep).unwrap();
    }

    #[test]
    fn a_failed_soft_dependency_does_not_stop_the_module() {
        let root = fixture();
        let dir = root.path().join("modules");
        with_crc32c_softdep(
            &dir,
            "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n",
            "kernel/crypto/crc32c_generic.ko:\nkernel/arch/x86/crypto/crc32c-intel.ko:\n",
        );

        let loader = Recording {
            fail: vec!["crc32c_intel"],
            ..Default::default()
        };
        let mut coldplug = coldplug_with(&dir, loader);
        let mut outcome = Outcome::default();
        coldplug.load_module("virtio_blk", "", &mut outcome);
        let loaded: Vec<&str> = outcome.loaded.iter().map(|l| l.module.as_str()).collect();
        assert_eq!(loaded, vec!["crc32c_generic", "virtio_blk"]);
        assert!(
            outcome.failed.is_empty(),
            "optional failures are not failures: {:?}",
            outcome.failed
        );
    }

    /// A loader that logs when each load starts and ends, slowly.
    #[derive(Debug, Default)]
    struct Timed {
        log: Mutex<Vec<(String, &'static str)>>,
        fail: Vec<&'static str>,
    }

    impl Loader for Timed {
        fn load(&self, name: &str, _path: &Path, _params: &str) -> io::Result<()> {
            self.log.lock().unwrap().push((name.to_string(), "start"));
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.log.lock().unwrap().push((name.to_string(), "end"));
            if self.fail.contains(&name) {
                return Err(io::Error::from_raw_os_error(libc::ENOEXEC));
            }
            Ok(())
        }
    }

    #[test]
    fn with_several_workers_a_module_starts_only_after_its_dependencies_ended() {
        let root = fixture();
        let devices = scan_devices(&root.path().join("sys"));
        for _ in 0..5 {
            let mut coldplug = coldplug_with(&root.path().join("modules"), Timed::default());
            let outcome = coldplug.run(&devices, 4);
            let log = coldplug.loader().log.lock().unwrap().clone();
            let at = |name: &str, what: &str| {
                log.iter()
                    .position(|(n, w)| n == name && *w == what)
                    .unwrap_or_else(|| panic!("{name} {what} missing: {log:?}"))
            };
            for (module, dependency) in [
                ("virtio_pci", "virtio_pci_modern_dev"),
                ("net_failover", "failover"),
                ("virtio_net", "net_failover"),
                ("virtio_net", "failover"),
            ] {
                assert!(
                    at(dependency, "end") < at(module, "start"),
                    "{module} started before {dependency} ended: {log:?}"
                );
            }
            let mut loaded: Vec<&str> = outcome.loaded.iter().map(|l| l.module.as_str()).collect();
            loaded.sort();
            assert_eq!(
                loaded,
                [
                    "failover",
                    "net_failover",
                    "virtio_blk",
                    "virtio_net",
                    "virtio_pci",
                    "virtio_pci_modern_dev"
                ]
            );
            assert_eq!(log.len(), 12, "each module loaded once: {log:?}");
        }
    }

    #[test]
    fn independent_modules_load_at_the_same_time() {
        /// Each load waits until the other has started, so one at a time never finishes.
        #[derive(Debug, Default)]
        struct Rendezvous {
            started: Mutex<BTreeSet<String>>,
            changed: Condvar,
        }
        impl Loader for Rendezvous {
            fn load(&self, name: &str, _path: &Path, _params: &str) -> io::Result<()> {
                let mut started = self.started.lock().unwrap();
                started.insert(name.to_string());
                self.changed.notify_all();
                let (started, timeout) = self
                    .changed
                    .wait_timeout_while(started, std::time::Duration::from_secs(10), |s| {
                        s.len() < 2
                    })
                    .unwrap();
                if timeout.timed_out() {
                    return Err(io::Error::other(format!("alone: {started:?}")));
                }
                Ok(())
            }
        }
        let root = fixture();
        let devices: Vec<Device> = scan_devices(&root.path().join("sys"))
            .into_iter()
            .filter(|d| d.devpath.contains("virtio1") || d.devpath.ends_with("02.0"))
            .collect();
        let mut coldplug = coldplug_with(&root.path().join("modules"), Rendezvous::default());
        // virtio_pci_modern_dev (for the PCI function) and virtio_blk share nothing.
        let outcome = coldplug.run(&devices, 2);
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        let mut loaded: Vec<&str> = outcome.loaded.iter().map(|l| l.module.as_str()).collect();
        loaded.sort();
        assert_eq!(
            loaded,
            ["virtio_blk", "virtio_pci", "virtio_pci_modern_dev"]
        );
    }

    #[test]
    fn with_several_workers_a_failed_dependency_skips_its_dependents_and_nothing_else() {
        let root = fixture();
        let devices = scan_devices(&root.path().join("sys"));
        let loader = Timed {
            fail: vec!["failover"],
            ..Default::default()
        };
        let mut coldplug = coldplug_with(&root.path().join("modules"), loader);
        let outcome = coldplug.run(&devices, 4);
        let mut loaded: Vec<&str> = outcome.loaded.iter().map(|l| l.module.as_str()).collect();
        loaded.sort();
        assert_eq!(
            loaded,
            ["virtio_blk", "virtio_pci", "virtio_pci_modern_dev"]
        );
        let failed: Vec<&str> = outcome.failed.iter().map(|f| f.module.as_str()).collect();
        assert_eq!(failed, ["button", "failover"], "{:?}", outcome.failed);
        let tried: BTreeSet<String> = coldplug
            .loader()
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        assert!(!tried.contains("net_failover") && !tried.contains("virtio_net"));
        // The skipped modules are not tried again for the next device that wants them.
        let again = coldplug.run(&devices, 4);
        assert!(
            again.loaded.is_empty() && again.failed.is_empty(),
            "{again:?}"
        );
        assert_eq!(
            coldplug.loader().log.lock().unwrap().len(),
            8,
            "four loads in all"
        );
    }

    #[test]
    fn a_best_effort_module_another_module_needs_is_no_longer_best_effort() {
        let root = fixture();
        let dir = root.path().join("modules");
        with_crc32c_softdep(
            &dir,
            "alias crypto-crc32c crc32c_generic\nalias platform:serial8250 libcrc32c\n",
            "kernel/crypto/crc32c_generic.ko:\n\
             kernel/lib/libcrc32c.ko: kernel/crypto/crc32c_generic.ko\n",
        );
        let loader = Timed {
            fail: vec!["crc32c_generic"],
            ..Default::default()
        };
        let mut coldplug = coldplug_with(&dir, loader);
        // virtio_blk (virtio1) plans crc32c_generic as best effort; libcrc32c (serial8250,
        // later in path order) needs it.
        let outcome = coldplug.run(&scan_devices(&root.path().join("sys")), 4);
        let loaded: BTreeSet<&str> = outcome.loaded.iter().map(|l| l.module.as_str()).collect();
        assert!(loaded.contains("virtio_blk"), "{loaded:?}");
        assert!(!loaded.contains("libcrc32c"), "{loaded:?}");
        let failed: Vec<&str> = outcome.failed.iter().map(|f| f.module.as_str()).collect();
        assert_eq!(failed, ["button", "crc32c_generic"], "{:?}", outcome.failed);
    }

    #[test]
    fn modules_by_name_load_together_with_their_dependencies() {
        let root = fixture();
        let mut coldplug = coldplug_with(&root.path().join("modules"), Timed::default());
        let outcome = coldplug.load_modules(&["virtio-net", "virtio_blk", "nonesuch"], "", 4);
        let mut loaded: Vec<&str> = outcome.loaded.iter().map(|l| l.module.as_str()).collect();
        loaded.sort();
        assert_eq!(
            loaded,
            ["failover", "net_failover", "virtio_blk", "virtio_net"]
        );
        assert_eq!(outcome.failed.len(), 1);
        assert!(
            outcome.failed[0].error.contains("nonesuch"),
            "{:?}",
            outcome.failed
        );
        // Loaded ones are not loaded again.
        let again = coldplug.load_modules(&["virtio_net"], "", 4);
        assert_eq!(again, Outcome::default());
        assert_eq!(coldplug.loader().log.lock().unwrap().len(), 8);
    }

    #[test]
    fn missing_module_index_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Modules::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("modules.dep"), "{err}");
    }
}
