//! Driver coldplug and hotplug: find the devices that need a driver, work out which modules
//! serve them and load those in dependency order.
//!
//! The sysfs root is a parameter and module loading goes through the [`Loader`] trait, so the
//! whole flow runs against a fixture tree and a recording loader in tests.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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

/// Loads one module file. The real one calls `finit_module(2)`.
pub trait Loader {
    /// Loads the module at `path` with `params` (space-separated `key=value`). Loading a module
    /// that is already loaded must succeed.
    fn load(&mut self, name: &str, path: &Path, params: &str) -> io::Result<()>;
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

    /// Loads the drivers every device in `devices` asks for.
    pub fn run(&mut self, devices: &[Device]) -> Outcome {
        let mut outcome = Outcome::default();
        for device in devices {
            self.device(device, &mut outcome);
        }
        outcome
    }

    /// Loads the drivers one device asks for (a hotplug event, or one coldplug device).
    pub fn device(&mut self, device: &Device, outcome: &mut Outcome) {
        for module in self.modules.db.modules_for(&device.modalias) {
            self.load_module(&module, &device.devpath, outcome);
        }
    }

    /// Loads a module by name (and what it depends on); `device` says on whose behalf.
    pub fn load_module(&mut self, module: &str, device: &str, outcome: &mut Outcome) {
        let name = normalize(module);
        if self.failed.contains(&name) {
            return;
        }
        let plan = match self.modules.db.plan(&name, &self.loaded) {
            Ok(plan) => plan,
            Err(e) => {
                self.failed.insert(name.clone());
                outcome.failed.push(FailedModule {
                    module: name,
                    error: e.to_string(),
                });
                return;
            }
        };
        for step in plan {
            if self.failed.contains(&step.name) && step.optional {
                continue;
            }
            if self.failed.contains(&step.name) {
                // A dependency that failed before: the module cannot load either.
                self.failed.insert(name);
                return;
            }
            let params = self
                .params
                .get(&step.name)
                .map(|p| p.join(" "))
                .unwrap_or_default();
            let path = self.modules.dir.join(&step.path);
            match self.loader.load(&step.name, &path, &params) {
                Ok(()) => {
                    tracing::info!(module = %step.name, device, "loaded driver");
                    self.loaded.insert(step.name.clone());
                    outcome.loaded.push(LoadedModule {
                        module: step.name,
                        device: device.to_string(),
                    });
                }
                Err(e) if step.optional => {
                    // Best effort: another provider of the same function usually loaded.
                    tracing::info!(module = %step.name, error = %e, "optional module not loaded");
                    self.failed.insert(step.name);
                }
                Err(e) => {
                    tracing::warn!(module = %step.name, device, error = %e, "driver failed to load");
                    self.failed.insert(step.name.clone());
                    self.failed.insert(name);
                    outcome.failed.push(FailedModule {
                        module: step.name,
                        error: e.to_string(),
                    });
                    // The modules after it in the plan depend on it.
                    return;
                }
            }
        }
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
        calls: Vec<(String, PathBuf, String)>,
        fail: Vec<&'static str>,
    }

    impl Loader for Recording {
        fn load(&mut self, name: &str, path: &Path, params: &str) -> io::Result<()> {
            self.calls
                .push((name.to_string(), path.to_path_buf(), params.to_string()));
            if self.fail.contains(&name) {
                return Err(io::Error::from_raw_os_error(libc::ENOEXEC));
            }
            Ok(())
        }
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
    fn loads_drivers_in_dependency_order_once() {
        let root = fixture();
        let modules = Modules::open(&root.path().join("modules")).unwrap();
        let devices = scan_devices(&root.path().join("sys"));
        let params = [("virtio_net".to_string(), vec!["napi_tx=1".to_string()])].into();
        let mut coldplug = Coldplug::new(modules, Recording::default(), BTreeSet::new(), params);
        let outcome = coldplug.run(&devices);

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
        let calls = &coldplug.loader().calls;
        assert_eq!(calls.len(), 6, "each module loaded once");
        assert!(
            calls[4]
                .1
                .ends_with("modules/kernel/drivers/net/virtio_net.ko")
        );
        assert_eq!(calls[4].2, "napi_tx=1");

        // A second pass (hotplug of the same kind of device) loads nothing new.
        assert_eq!(coldplug.run(&devices).loaded, vec![]);
    }

    #[test]
    fn a_failed_dependency_stops_its_dependents() {
        let root = fixture();
        let modules = Modules::open(&root.path().join("modules")).unwrap();
        let loader = Recording {
            fail: vec!["failover"],
            ..Default::default()
        };
        let mut coldplug = Coldplug::new(modules, loader, BTreeSet::new(), Default::default());
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
        assert_eq!(coldplug.loader().calls.len(), 1);
    }

    #[test]
    fn a_failed_soft_dependency_does_not_stop_the_module() {
        let root = fixture();
        let dir = root.path().join("modules");
        fs::write(
            dir.join("modules.softdep"),
            "softdep virtio_blk pre: crc32c\n",
        )
        .unwrap();
        let mut alias = fs::read_to_string(dir.join("modules.alias")).unwrap();
        alias.push_str("alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n");
        fs::write(dir.join("modules.alias"), alias).unwrap();
        let mut dep = fs::read_to_string(dir.join("modules.dep")).unwrap();
        dep.push_str("kernel/crypto/crc32c_generic.ko:\nkernel/arch/x86/crypto/crc32c-intel.ko:\n");
        fs::write(dir.join("modules.dep"), dep).unwrap();

        let loader = Recording {
            fail: vec!["crc32c_intel"],
            ..Default::default()
        };
        let mut coldplug = Coldplug::new(
            Modules::open(&dir).unwrap(),
            loader,
            BTreeSet::new(),
            Default::default(),
        );
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

    #[test]
    fn missing_module_index_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Modules::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("modules.dep"), "{err}");
    }
}
