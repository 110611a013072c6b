//! cgroup v2: one leaf per service, limits, stats, kill and removal.
//!
//! Layout below the cgroup2 mount (a parameter; `/sys/fs/cgroup` on a node):
//!
//! ```text
//! <root>/                      PID 1 may stay here: the root cgroup is exempt from the
//!                              "no internal processes" rule
//! <root>/shoal/                inner node, controllers enabled, never holds a process
//! <root>/shoal/supervisor/     leaf for the supervisor process itself
//! <root>/shoal/services/       inner node, controllers enabled, never holds a process
//! <root>/shoal/services/<name> one leaf per service
//! ```
//!
//! cgroup v2 refuses processes in a non-root cgroup whose `cgroup.subtree_control` enables
//! controllers ("no internal processes"). So every process lives in a leaf: services in
//! `services/<name>`, the supervisor in `supervisor/` ([`CgroupTree::enter_supervisor`]), and
//! the inner nodes `shoal/` and `shoal/services/` stay empty.
//!
//! Why not `cgroups-rs` (the brief's crate)? Version 0.5.1 hard-codes `/sys/fs/cgroup`
//! (`hierarchies::V2` has no constructor taking a root, and reads `cgroup.controllers` from the
//! constant), so it cannot run against a fixture tree in a tempdir as our style requires; it
//! unconditionally depends on zbus 5 (its systemd manager) and nix 0.25, about 74 crates in all
//! with `default-features = false`, for what is here a few hundred lines of file I/O; and it
//! unwraps in places, which a PID 1 process cannot afford. The files written below are the
//! kernel's documented interface (Documentation/admin-guide/cgroup-v2.rst), each value written
//! in one `write(2)`, and every error names the file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// The controllers Shoal enables for its services, in the order they are written.
pub const CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

const SHOAL_DIR: &str = "shoal";
const SERVICES_DIR: &str = "services";
const SUPERVISOR_DIR: &str = "supervisor";

/// Rounds of SIGKILL over `cgroup.procs` when the kernel has no `cgroup.kill` (before 5.14).
const KILL_FALLBACK_ROUNDS: usize = 16;

/// Why a cgroup operation failed. Every variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A read, write, mkdir or rmdir failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A service name that cannot be a cgroup directory.
    #[error("service name {name:?} cannot name a cgroup: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A limit outside what the kernel accepts.
    #[error("service {name}: {file}: {reason}")]
    InvalidLimit {
        name: String,
        file: &'static str,
        reason: String,
    },
    /// A limit was requested but its controller is not enabled in the service's cgroup.
    #[error(
        "service {name}: {file} needs the {controller} controller, not offered in {}",
        path.display()
    )]
    ControllerUnavailable {
        name: String,
        controller: &'static str,
        file: &'static str,
        path: PathBuf,
    },
    /// A kernel file whose contents we could not understand.
    #[error("parsing {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    /// `rmdir` refused because processes (or child cgroups) remain.
    #[error("removing {}: the cgroup still holds processes", path.display())]
    Busy { path: PathBuf },
}

/// The limits of one service's leaf are the service definition's `[resources]`: `None` means
/// "no limit" (`max`, or weight 100 for io).
pub type Limits = crate::config::Resources;
pub use crate::config::CpuMax;

/// What [`CgroupTree::setup`] managed to enable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// Controllers enabled all the way down to `shoal/services`.
    pub enabled: Vec<String>,
    /// Wanted controllers the kernel does not offer here (e.g. bound to a v1 hierarchy, or not
    /// built). Limits that need them fail with [`CgroupError::ControllerUnavailable`].
    pub missing: Vec<String>,
}

/// Resource usage of one service, each `None` when the kernel does not provide the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `memory.current`, bytes.
    pub memory_current: Option<u64>,
    /// `memory.peak`, bytes (Linux 5.19+).
    pub memory_peak: Option<u64>,
    /// `usage_usec` from `cpu.stat`.
    pub cpu_usage_usec: Option<u64>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// `oom` from `memory.events`: times memory.max was hit and the OOM killer ran.
    pub oom_events: Option<u64>,
    /// `oom_kill` from `memory.events`: processes killed by the OOM killer.
    pub oom_kills: Option<u64>,
    /// `oom_group_kill` from `memory.events` (Linux 5.17+).
    pub oom_group_kills: Option<u64>,
}

/// How [`CgroupTree::kill`] killed a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMethod {
    /// One write to `cgroup.kill` (Linux 5.14+): atomic, no process escapes by forking.
    CgroupKill,
    /// SIGKILL to every pid in `cgroup.procs`, repeated until none was left (or a bound hit).
    SignalEach { signalled: usize },
    /// The leaf does not exist: nothing to kill.
    Absent,
}

/// Shoal's cgroup tree under one cgroup2 mount.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    root: PathBuf,
}

impl CgroupTree {
    /// A tree under `root`, the cgroup2 mount point (`/sys/fs/cgroup` on a node, a fixture
    /// directory in tests).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cgroup2 mount this tree lives under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/shoal/services`.
    pub fn services_dir(&self) -> PathBuf {
        self.root.join(SHOAL_DIR).join(SERVICES_DIR)
    }

    /// `<root>/shoal/supervisor`, the supervisor's own leaf.
    pub fn supervisor_dir(&self) -> PathBuf {
        self.root.join(SHOAL_DIR).join(SUPERVISOR_DIR)
    }

    /// The leaf of service `name`. Panics never; see [`validate_name`] for what is accepted.
    pub fn leaf(&self, name: &str) -> Result<PathBuf, CgroupError> {
        validate_name(name)?;
        Ok(self.services_dir().join(name))
    }

    /// `cgroup.procs` of service `name`: writing a pid (or "0" for oneself) moves it in.
    pub fn procs_path(&self, name: &str) -> Result<PathBuf, CgroupError> {
        Ok(self.leaf(name)?.join("cgroup.procs"))
    }

    /// Opens the service's `cgroup.procs` for writing (close-on-exec), for the spawner's child
    /// to write "0" into before exec.
    pub fn open_procs(&self, name: &str) -> Result<OwnedFd, CgroupError> {
        let path = self.procs_path(name)?;
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| io_err("opening", &path, source))?;
        Ok(file.into())
    }

    /// Creates `shoal/`, `shoal/services/` and `shoal/supervisor/` and enables the wanted
    /// controllers in `cgroup.subtree_control` of the root, `shoal/` and `shoal/services/`:
    /// only those the parent offers in `cgroup.controllers`; the others are reported (and
    /// logged), not fatal. Idempotent.
    pub fn setup(&self) -> Result<SetupReport, CgroupError> {
        let shoal = self.root.join(SHOAL_DIR);
        let services = self.services_dir();
        let supervisor = self.supervisor_dir();
        for dir in [&shoal, &services, &supervisor] {
            mkdir(dir)?;
        }
        let mut report = SetupReport::default();
        let mut wanted: Vec<&str> = CONTROLLERS.to_vec();
        for node in [&self.root, &shoal, &services] {
            let offered = read_controllers(node)?;
            let (available, missing): (Vec<&str>, Vec<&str>) =
                wanted.iter().partition(|c| offered.iter().any(|o| o == *c));
            for controller in missing {
                tracing::warn!(
                    controller,
                    cgroup = %node.display(),
                    "cgroup controller not available; its limits cannot be enforced"
                );
                report.missing.push(controller.to_owned());
            }
            enable_controllers(node, &available)?;
            wanted = available;
        }
        report.enabled = wanted.iter().map(|c| (*c).to_owned()).collect();
        Ok(report)
    }

    /// Moves process `pid` (the supervisor; 0 means the writer) into `shoal/supervisor/`.
    pub fn enter_supervisor(&self, pid: Pid) -> Result<(), CgroupError> {
        write_file(
            &self.supervisor_dir().join("cgroup.procs"),
            &pid.as_raw().to_string(),
        )
    }

    /// Creates the leaf of service `name` (fine if it exists) and applies `limits`.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<(), CgroupError> {
        let leaf = self.leaf(name)?;
        mkdir(&leaf)?;
        self.apply(name, limits)
    }

    /// Writes every limit file of the leaf: `cpu.max` ("quota period"), `memory.max`,
    /// `memory.high`, `pids.max` and `io.weight` ("default N"); `None` writes "max" (io: the
    /// default weight 100). A limit whose controller is absent fails with
    /// [`CgroupError::ControllerUnavailable`]; an absent controller with nothing to limit is
    /// skipped.
    pub fn apply(&self, name: &str, limits: &Limits) -> Result<(), CgroupError> {
        let leaf = self.leaf(name)?;
        validate_limits(name, limits)?;
        let offered = read_controllers(&leaf)?;
        let cpu = limits.cpu_max.map(
            |CpuMax {
                 quota_us,
                 period_us,
             }| format!("{quota_us} {period_us}"),
        );
        let io = limits.io_weight.map(|w| format!("default {w}"));
        let entries: [(&'static str, &'static str, Option<String>, &str); 5] = [
            ("cpu", "cpu.max", cpu, "max"),
            (
                "memory",
                "memory.max",
                limits.memory_max.map(|v| v.to_string()),
                "max",
            ),
            (
                "memory",
                "memory.high",
                limits.memory_high.map(|v| v.to_string()),
                "max",
            ),
            (
                "pids",
                "pids.max",
                limits.pids_max.map(|v| v.to_string()),
                "max",
            ),
            ("io", "io.weight", io, "default 100"),
        ];
        for (controller, file, value, unlimited) in entries {
            let available = offered.iter().any(|c| c == controller);
            match (value, available) {
                (Some(value), true) => write_file(&leaf.join(file), &value)?,
                (None, true) => write_file(&leaf.join(file), unlimited)?,
                (Some(_), false) => {
                    return Err(CgroupError::ControllerUnavailable {
                        name: name.to_owned(),
                        controller,
                        file,
                        path: leaf.clone(),
                    });
                }
                (None, false) => {}
            }
        }
        Ok(())
    }

    /// Sets `memory.oom.group`: when true, an OOM kill in the leaf kills the whole service
    /// rather than one process of it. A no-op without the memory controller.
    pub fn set_oom_group(&self, name: &str, group: bool) -> Result<(), CgroupError> {
        let leaf = self.leaf(name)?;
        if !read_controllers(&leaf)?.iter().any(|c| c == "memory") {
            return Ok(());
        }
        write_file(
            &leaf.join("memory.oom.group"),
            if group { "1" } else { "0" },
        )
    }

    /// The processes in the leaf (`cgroup.procs`); empty when the leaf does not exist.
    pub fn pids(&self, name: &str) -> Result<Vec<Pid>, CgroupError> {
        let path = self.procs_path(name)?;
        let Some(text) = read_optional(&path)? else {
            return Ok(Vec::new());
        };
        parse_pids(&path, &text)
    }

    /// Kills every process of the service: `cgroup.kill` where the kernel has it, else SIGKILL
    /// to each pid in `cgroup.procs` (frozen meanwhile where `cgroup.freeze` exists, so forks
    /// cannot outrun us). Does not wait: watch [`CgroupTree::populated`] or the reaper.
    pub fn kill(&self, name: &str) -> Result<KillMethod, CgroupError> {
        let leaf = self.leaf(name)?;
        if !leaf.is_dir() {
            return Ok(KillMethod::Absent);
        }
        let kill_file = leaf.join("cgroup.kill");
        if kill_file.exists() {
            write_file(&kill_file, "1")?;
            return Ok(KillMethod::CgroupKill);
        }
        let freeze = leaf.join("cgroup.freeze");
        let frozen = freeze.exists() && write_file(&freeze, "1").is_ok();
        let mut signalled = 0;
        let mut result = Ok(());
        for _ in 0..KILL_FALLBACK_ROUNDS {
            let pids = match self.pids(name) {
                Ok(pids) => pids,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            };
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // ESRCH: it died meanwhile, which is what we want.
                if signal::kill(pid, Signal::SIGKILL).is_ok() {
                    signalled += 1;
                }
            }
            if signalled > 0 && self.pids(name).is_ok_and(|p| p.is_empty()) {
                break;
            }
            std::thread::yield_now();
        }
        if frozen {
            // SIGKILL reaches frozen tasks; thawing lets the survivors (none) run again.
            write_file(&freeze, "0")?;
        }
        result.map(|()| KillMethod::SignalEach { signalled })
    }

    /// Whether any process is left in the leaf (`populated` in `cgroup.events`); false when the
    /// leaf does not exist.
    pub fn populated(&self, name: &str) -> Result<bool, CgroupError> {
        let path = self.leaf(name)?.join("cgroup.events");
        let Some(text) = read_optional(&path)? else {
            return Ok(false);
        };
        match keyed_value(&text, "populated") {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(CgroupError::Parse {
                path,
                reason: "no \"populated 0|1\" line".to_owned(),
            }),
        }
    }

    /// Memory, CPU, pids and OOM counters of the leaf.
    pub fn stats(&self, name: &str) -> Result<Stats, CgroupError> {
        let leaf = self.leaf(name)?;
        let memory_events = read_optional(&leaf.join("memory.events"))?;
        let event = |key| memory_events.as_deref().and_then(|t| keyed_value(t, key));
        Ok(Stats {
            memory_current: read_u64(&leaf.join("memory.current"))?,
            memory_peak: read_u64(&leaf.join("memory.peak"))?,
            cpu_usage_usec: read_optional(&leaf.join("cpu.stat"))?
                .and_then(|t| keyed_value(&t, "usage_usec")),
            pids_current: read_u64(&leaf.join("pids.current"))?,
            oom_events: event("oom"),
            oom_kills: event("oom_kill"),
            oom_group_kills: event("oom_group_kill"),
        })
    }

    /// Removes the leaf (and any child cgroups a service made in it, deepest first). Fine if
    /// it does not exist; [`CgroupError::Busy`] while processes remain.
    pub fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let leaf = self.leaf(name)?;
        remove_tree(&leaf)
    }
}

/// Accepts the names a service can have: 1..=200 bytes of `[A-Za-z0-9_.@:-]`, not starting
/// with a dot or with `cgroup.` (the kernel's own file names).
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
    let invalid = |reason| CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 200 {
        return Err(invalid("must be 1 to 200 bytes long"));
    }
    if name.starts_with('.') || name.starts_with("cgroup.") {
        return Err(invalid("must not start with '.' or 'cgroup.'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.@:-".contains(&b))
    {
        return Err(invalid("only letters, digits and _ . @ : - are allowed"));
    }
    Ok(())
}

fn validate_limits(name: &str, limits: &Limits) -> Result<(), CgroupError> {
    let invalid = |file, reason: String| CgroupError::InvalidLimit {
        name: name.to_owned(),
        file,
        reason,
    };
    if let Some(CpuMax {
        quota_us,
        period_us,
    }) = limits.cpu_max
    {
        if !(1_000..=1_000_000).contains(&period_us) {
            return Err(invalid(
                "cpu.max",
                format!("period {period_us} us is outside 1000..=1000000"),
            ));
        }
        if quota_us < 1_000 {
            return Err(invalid(
                "cpu.max",
                format!("quota {quota_us} us is below the kernel's minimum of 1000"),
            ));
        }
    }
    if let Some(weight) = limits.io_weight
        && !(1..=10_000).contains(&weight)
    {
        return Err(invalid(
            "io.weight",
            format!("weight {weight} is outside 1..=10000"),
        ));
    }
    Ok(())
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(io_err("creating", path, source)),
    }
}

/// One `write(2)` of the whole value, as cgroup files require. The file must exist: cgroupfs
/// creates it; creating it ourselves would hide a missing controller in a fixture.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|source| io_err("opening", path, source))?;
    file.write_all(value.as_bytes())
        .map_err(|source| io_err("writing", path, source))
}

fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_err("reading", path, source)),
    }
}

fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let trimmed = text.trim();
    // "max" appears in limit files, not in the counters read here; still, never fail on it.
    if trimmed == "max" {
        return Ok(Some(u64::MAX));
    }
    trimmed.parse().map(Some).map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        reason: format!("{trimmed:?} is not a number"),
    })
}

fn read_controllers(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let path = dir.join("cgroup.controllers");
    let text = fs::read_to_string(&path).map_err(|source| io_err("reading", &path, source))?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

/// Enables `controllers` in `dir/cgroup.subtree_control`: one write for all, and one per
/// controller if that fails, so one refusing controller does not take the others down.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    if controllers.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    let all = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let Err(first) = write_file(&path, &all) else {
        return Ok(());
    };
    let mut any = false;
    for controller in controllers {
        match write_file(&path, &format!("+{controller}")) {
            Ok(()) => any = true,
            Err(err) => tracing::warn!(%err, controller, "cannot enable cgroup controller"),
        }
    }
    if any { Ok(()) } else { Err(first) }
}

/// The number after `key ` in a flat-keyed file (`cgroup.events`, `cpu.stat`, `memory.events`).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn parse_pids(path: &Path, text: &str) -> Result<Vec<Pid>, CgroupError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            line.trim()
                .parse::<i32>()
                .ok()
                .filter(|p| *p > 0)
                .map(Pid::from_raw)
                .ok_or_else(|| CgroupError::Parse {
                    path: path.to_owned(),
                    reason: format!("{line:?} is not a pid"),
                })
        })
        .collect()
}

fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_err("listing", dir, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| io_err("listing", dir, source))?;
        let is_dir = entry
            .file_type()
            .map_err(|source| io_err("inspecting", &entry.path(), source))?
            .is_dir();
        if is_dir {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::Busy {
            path: dir.to_owned(),
        }),
        Err(source) => Err(io_err("removing", dir, source)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

    /// What the kernel puts in a new cgroup directory, with `controllers` enabled by its parent.
    fn kernel_mkdir(dir: &Path, controllers: &str) {
        fs::create_dir_all(dir).unwrap();
        let files: &[(&str, &str)] = &[
            ("cgroup.controllers", controllers),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
            ("cgroup.events", "populated 0\nfrozen 0\n"),
            ("cgroup.kill", ""),
            ("cgroup.freeze", "0\n"),
            (
                "cpu.stat",
                "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n",
            ),
        ];
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
        let per_controller: &[(&str, &[(&str, &str)])] = &[
            ("cpu", &[("cpu.max", "max 100000\n")]),
            (
                "memory",
                &[
                    ("memory.max", "max\n"),
                    ("memory.high", "max\n"),
                    ("memory.current", "8192\n"),
                    ("memory.peak", "16384\n"),
                    ("memory.oom.group", "0\n"),
                    (
                        "memory.events",
                        "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
                    ),
                ],
            ),
            ("pids", &[("pids.max", "max\n"), ("pids.current", "3\n")]),
            ("io", &[("io.weight", "default 100\n")]),
        ];
        for (controller, files) in per_controller {
            if controllers.split_whitespace().any(|c| c == *controller) {
                for (name, content) in *files {
                    fs::write(dir.join(name), content).unwrap();
                }
            }
        }
    }

    /// A cgroup2 mount as the kernel shows it, with Shoal's nodes and a leaf "netd" already
    /// there (as mkdir on cgroupfs would have made them).
    fn fixture(offered: &str) -> (tempfile::TempDir, CgroupTree) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        kernel_mkdir(root, offered);
        for node in ["shoal", "shoal/services", "shoal/supervisor"] {
            kernel_mkdir(&root.join(node), offered);
        }
        kernel_mkdir(&root.join("shoal/services/netd"), offered);
        let tree = CgroupTree::new(root);
        (dir, tree)
    }

    fn read(path: PathBuf) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn setup_enables_all_controllers_at_every_level() {
        let (_dir, tree) = fixture(ALL);
        let report = tree.setup().unwrap();
        assert_eq!(report.enabled, ["cpu", "memory", "pids", "io"]);
        assert!(report.missing.is_empty());
        for node in ["", "shoal", "shoal/services"] {
            assert_eq!(
                read(tree.root().join(node).join("cgroup.subtree_control")),
                "+cpu +memory +pids +io",
                "{node}"
            );
        }
        // The supervisor's leaf enables nothing below it.
        assert_eq!(
            read(tree.supervisor_dir().join("cgroup.subtree_control")),
            ""
        );
    }

    #[test]
    fn setup_reports_missing_controllers_and_enables_the_rest() {
        let (_dir, tree) = fixture("cpu memory hugetlb\n");
        let report = tree.setup().unwrap();
        assert_eq!(report.enabled, ["cpu", "memory"]);
        assert_eq!(report.missing, ["pids", "io"]);
        assert_eq!(
            read(tree.services_dir().join("cgroup.subtree_control")),
            "+cpu +memory"
        );
    }

    #[test]
    fn setup_creates_the_nodes_and_names_a_missing_kernel_file() {
        let dir = tempfile::tempdir().unwrap();
        kernel_mkdir(dir.path(), "hugetlb\n");
        // Only the root exists: setup makes the directories, but in a fixture (unlike on
        // cgroupfs) mkdir creates no control files.
        let tree = CgroupTree::new(dir.path());
        let err = tree.setup().unwrap_err();
        // The fixture's new "shoal" has no cgroup.controllers, which the kernel would have
        // made: the error names that file.
        assert!(
            err.to_string().contains("shoal/cgroup.controllers"),
            "{err}"
        );
        assert!(tree.supervisor_dir().is_dir());
    }

    #[test]
    fn create_writes_every_limit_exactly() {
        let (_dir, tree) = fixture(ALL);
        let limits = Limits {
            cpu_max: Some(CpuMax {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            memory_max: Some(64 << 20),
            memory_high: Some(48 << 20),
            pids_max: Some(64),
            io_weight: Some(200),
        };
        tree.create("netd", &limits).unwrap();
        let leaf = tree.leaf("netd").unwrap();
        assert_eq!(read(leaf.join("cpu.max")), "50000 100000");
        assert_eq!(read(leaf.join("memory.max")), "67108864");
        assert_eq!(read(leaf.join("memory.high")), "50331648");
        assert_eq!(read(leaf.join("pids.max")), "64");
        assert_eq!(read(leaf.join("io.weight")), "default 200");
    }

    #[test]
    fn no_limit_writes_max() {
        let (_dir, tree) = fixture(ALL);
        tree.apply("netd", &Limits::default()).unwrap();
        let leaf = tree.leaf("netd").unwrap();
        for file in ["cpu.max", "memory.max", "memory.high", "pids.max"] {
            assert_eq!(read(leaf.join(file)), "max", "{file}");
        }
        assert_eq!(read(leaf.join("io.weight")), "default 100");
    }

    #[test]
    fn a_limit_without_its_controller_is_an_error_naming_the_controller() {
        let (_dir, tree) = fixture("cpu memory\n");
        // Nothing asked of pids/io: fine, their files are not touched.
        tree.apply("netd", &Limits::default()).unwrap();
        let err = tree
            .apply(
                "netd",
                &Limits {
                    pids_max: Some(10),
                    ..Limits::default()
                },
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::ControllerUnavailable {
                    controller: "pids",
                    file: "pids.max",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("pids.max"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let (_dir, tree) = fixture(ALL);
        let leaf = tree.leaf("netd").unwrap();
        fs::remove_file(leaf.join("memory.high")).unwrap();
        let err = tree.apply("netd", &Limits::default()).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("opening "), "{message}");
        assert!(
            message.contains("shoal/services/netd/memory.high"),
            "{message}"
        );
    }

    #[test]
    fn bad_names_and_limits_are_rejected() {
        let (_dir, tree) = fixture(ALL);
        for name in ["", "..", ".hidden", "a/b", "cgroup.procs", "sp ace", "x\0"] {
            assert!(
                matches!(tree.leaf(name), Err(CgroupError::InvalidName { .. })),
                "{name:?}"
            );
        }
        assert!(tree.leaf("getty@tty1").is_ok());
        let cases = [
            Limits {
                cpu_max: Some(CpuMax {
                    quota_us: 10,
                    period_us: 100_000,
                }),
                ..Limits::default()
            },
            Limits {
                cpu_max: Some(CpuMax {
                    quota_us: 10_000,
                    period_us: 10,
                }),
                ..Limits::default()
            },
            Limits {
                io_weight: Some(0),
                ..Limits::default()
            },
            Limits {
                io_weight: Some(10_001),
                ..Limits::default()
            },
        ];
        for limits in cases {
            assert!(
                matches!(
                    tree.apply("netd", &limits),
                    Err(CgroupError::InvalidLimit { .. })
                ),
                "{limits:?}"
            );
        }
    }

    #[test]
    fn stats_read_every_counter() {
        let (_dir, tree) = fixture(ALL);
        assert_eq!(
            tree.stats("netd").unwrap(),
            Stats {
                memory_current: Some(8192),
                memory_peak: Some(16384),
                cpu_usage_usec: Some(1234),
                pids_current: Some(3),
                oom_events: Some(2),
                oom_kills: Some(1),
                oom_group_kills: Some(0),
            }
        );
        // Without memory and pids controllers (or on older kernels) the counters are absent.
        let (_dir, tree) = fixture("cpu\n");
        assert_eq!(
            tree.stats("netd").unwrap(),
            Stats {
                cpu_usage_usec: Some(1234),
                ..Stats::default()
            }
        );
    }

    #[test]
    fn garbage_in_a_counter_names_the_file() {
        let (_dir, tree) = fixture(ALL);
        fs::write(tree.leaf("netd").unwrap().join("pids.current"), "lots\n").unwrap();
        let err = tree.stats("netd").unwrap_err().to_string();
        assert!(err.contains("netd/pids.current"), "{err}");
    }

    #[test]
    fn populated_follows_cgroup_events() {
        let (_dir, tree) = fixture(ALL);
        assert!(!tree.populated("netd").unwrap());
        fs::write(
            tree.leaf("netd").unwrap().join("cgroup.events"),
            "populated 1\nfrozen 0\n",
        )
        .unwrap();
        assert!(tree.populated("netd").unwrap());
        assert!(!tree.populated("absent").unwrap());
    }

    #[test]
    fn pids_and_procs() {
        let (_dir, tree) = fixture(ALL);
        let leaf = tree.leaf("netd").unwrap();
        fs::write(leaf.join("cgroup.procs"), "12\n345\n").unwrap();
        assert_eq!(
            tree.pids("netd").unwrap(),
            [Pid::from_raw(12), Pid::from_raw(345)]
        );
        assert_eq!(tree.procs_path("netd").unwrap(), leaf.join("cgroup.procs"));
        assert!(tree.pids("absent").unwrap().is_empty());
        drop(tree.open_procs("netd").unwrap());
        tree.enter_supervisor(Pid::from_raw(77)).unwrap();
        assert_eq!(read(tree.supervisor_dir().join("cgroup.procs")), "77");
    }

    #[test]
    fn kill_writes_cgroup_kill() {
        let (_dir, tree) = fixture(ALL);
        assert_eq!(tree.kill("netd").unwrap(), KillMethod::CgroupKill);
        assert_eq!(read(tree.leaf("netd").unwrap().join("cgroup.kill")), "1");
        assert_eq!(tree.kill("absent").unwrap(), KillMethod::Absent);
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("1000").spawn().unwrap()
    }

    #[test]
    fn kill_without_cgroup_kill_signals_every_pid() {
        let (_dir, tree) = fixture(ALL);
        let leaf = tree.leaf("netd").unwrap();
        fs::remove_file(leaf.join("cgroup.kill")).unwrap();
        // Real children of ours: their pids cannot be reused until we wait for them.
        let mut children = [sleeper(), sleeper()];
        let procs = children
            .iter()
            .map(|c| format!("{}\n", c.id()))
            .collect::<String>();
        fs::write(leaf.join("cgroup.procs"), procs).unwrap();
        let method = tree.kill("netd").unwrap();
        assert!(
            matches!(method, KillMethod::SignalEach { signalled } if signalled >= 2),
            "{method:?}"
        );
        for child in &mut children {
            assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        }
        // Frozen while signalling, thawed after.
        assert_eq!(read(leaf.join("cgroup.freeze")), "0");
    }

    #[test]
    fn remove_takes_child_cgroups_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let tree = CgroupTree::new(dir.path());
        let leaf = tree.leaf("netd").unwrap();
        fs::create_dir_all(leaf.join("worker/inner")).unwrap();
        tree.remove("netd").unwrap();
        assert!(!leaf.exists());
        tree.remove("netd").unwrap();
    }

    /// The cgroup2 mount of this host, if there is one we can write to.
    /// The host's writable cgroup2 mount, or `None` after printing why the calling test
    /// cannot run here (not root, or no cgroup2).
    pub(crate) fn cgroup2_or_skip(test: &str) -> Option<PathBuf> {
        host_cgroup2()
            .map_err(|why| println!("SKIPPED {test}: {why}"))
            .ok()
    }

    pub(crate) fn host_cgroup2() -> Result<PathBuf, String> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".to_owned());
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        // Prefer the pure v2 layout; a hybrid host has it at /sys/fs/cgroup/unified.
        let mut mounts: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let fstype = right.split_whitespace().next()?;
                let point = left.split_whitespace().nth(4)?;
                (fstype == "cgroup2").then(|| PathBuf::from(point))
            })
            .collect();
        mounts.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
        let mount = mounts
            .into_iter()
            .next()
            .ok_or("no cgroup2 filesystem is mounted")?;
        let probe = mount.join(format!("shoal-probe-{}", std::process::id()));
        fs::create_dir(&probe)
            .map_err(|e| format!("cgroup2 at {} is not writable: {e}", mount.display()))?;
        fs::remove_dir(&probe).map_err(|e| format!("removing {}: {e}", probe.display()))?;
        Ok(mount)
    }

    /// Removes a test's cgroups (its own root under the host's mount) even when an assertion
    /// fails.
    pub(crate) struct Cleanup(pub(crate) CgroupTree, pub(crate) &'static str);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.0.kill(self.1);
            for _ in 0..100 {
                if remove_tree(self.0.root()).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn real_cgroup2_leaf_lifecycle() {
        let Some(mount) = cgroup2_or_skip("real_cgroup2_leaf_lifecycle") else {
            return;
        };
        // Offer the wanted controllers one level down, into our own test subtree; a host's
        // init usually has them enabled already.
        let offered = read_controllers(&mount).unwrap();
        let wanted: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| offered.iter().any(|o| o == c))
            .collect();
        let test_root = mount.join(format!("shoal-test-{}", std::process::id()));
        mkdir(&test_root).unwrap();
        let tree = CgroupTree::new(&test_root);
        let _cleanup = Cleanup(tree.clone(), "it-svc");
        let _ = enable_controllers(&mount, &wanted);

        let report = tree.setup().unwrap();
        println!(
            "cgroup2 at {}: enabled {:?}, missing {:?}",
            mount.display(),
            report.enabled,
            report.missing
        );
        let has_pids = report.enabled.iter().any(|c| c == "pids");
        let limits = Limits {
            pids_max: has_pids.then_some(32),
            ..Limits::default()
        };
        tree.create("it-svc", &limits).unwrap();
        let leaf = tree.leaf("it-svc").unwrap();
        if has_pids {
            assert_eq!(read(leaf.join("pids.max")).trim(), "32");
        } else {
            println!("pids controller not offered here: pids.max not tested");
        }

        let mut child = sleeper();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let procs = fs::File::from(tree.open_procs("it-svc").unwrap());
        (&procs).write_all(pid.to_string().as_bytes()).unwrap();
        assert_eq!(tree.pids("it-svc").unwrap(), [pid]);
        assert!(tree.populated("it-svc").unwrap());
        let stats = tree.stats("it-svc").unwrap();
        println!("stats: {stats:?}");
        if has_pids {
            assert_eq!(stats.pids_current, Some(1));
        }
        assert!(stats.cpu_usage_usec.is_some());

        let method = tree.kill("it-svc").unwrap();
        println!("killed with {method:?}");
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        // The kernel updates cgroup.events asynchronously after the last exit.
        let mut populated = true;
        for _ in 0..200 {
            populated = tree.populated("it-svc").unwrap();
            if !populated {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!populated);
        tree.remove("it-svc").unwrap();
        assert!(!leaf.exists());
    }
}
