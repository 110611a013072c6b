//! The real [`Host`]: cgroups, processes, signals, probes and logs on this machine.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_boot_events::Event;
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;

use crate::cgroup::{CgroupTree, KillMethod, Stats};
use crate::config::{Probe, Resources, Service};
use crate::machine::Exit;
use crate::spawn::{CapMask, ProcessSpec, spawn};
use crate::users::Users;

use super::api::{Msg, StateChange};
use super::console::Console;
use super::engine::Host;
use super::output::{self, LogMap};
use super::probe::{self, ExecProbe, Watchers};

/// `f_type` of a cgroup2 filesystem (linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The services' cgroups, when the daemon has them.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    pub tree: CgroupTree,
    /// How `/proc/PID/cgroup` shows the services' node, with a trailing `/`
    /// (`/shoal/services/` when the tree is at the root of the hierarchy).
    pub services_path: String,
}

/// What the host needs besides the engine's calls.
#[derive(Debug)]
pub(crate) struct RealHost {
    pub cgroups: Option<Cgroups>,
    /// Why there are no cgroups, for the error of a service that sets limits.
    pub no_cgroups_reason: String,
    pub proc_root: PathBuf,
    pub users: Users,
    pub notify_path: Option<PathBuf>,
    pub logs: LogMap,
    pub console: Console,
    pub tx: mpsc::Sender<Msg>,
    pub changes: broadcast::Sender<StateChange>,
    pub watchers: Watchers,
    port_probes: BTreeMap<String, AbortHandle>,
    health: BTreeMap<String, AbortHandle>,
    /// Leaves to remove once their processes are gone.
    draining: BTreeSet<String>,
}

impl RealHost {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cgroups: Option<Cgroups>,
        no_cgroups_reason: String,
        proc_root: PathBuf,
        users: Users,
        notify_path: Option<PathBuf>,
        logs: LogMap,
        console: Console,
        tx: mpsc::Sender<Msg>,
        changes: broadcast::Sender<StateChange>,
    ) -> Self {
        Self {
            cgroups,
            no_cgroups_reason,
            proc_root,
            users,
            notify_path,
            logs,
            console,
            tx,
            changes,
            watchers: Watchers::default(),
            port_probes: BTreeMap::new(),
            health: BTreeMap::new(),
            draining: BTreeSet::new(),
        }
    }

    /// Whether some cgroup still waits to be removed.
    pub(crate) fn draining(&self) -> bool {
        !self.draining.is_empty()
    }

    /// Removes the leaves whose processes are all gone.
    pub(crate) fn poll_draining(&mut self) {
        let Some(cgroups) = &self.cgroups else {
            self.draining.clear();
            return;
        };
        self.draining
            .retain(|name| match cgroups.tree.populated(name) {
                Ok(true) => true,
                Ok(false) => match cgroups.tree.remove(name) {
                    Ok(()) => false,
                    Err(error) => {
                        tracing::debug!(service = %name, "{error}");
                        true
                    }
                },
                Err(error) => {
                    tracing::warn!(service = %name, "{error}");
                    false
                }
            });
    }

    fn stop_probes(&mut self, service: &str) {
        if let Some(probe) = self.port_probes.remove(service) {
            probe.abort();
        }
        if let Some(checks) = self.health.remove(service) {
            checks.abort();
        }
    }

    /// Creates the cgroup leaf, resolves ids, opens the log pipe and starts the process.
    fn start_process(&mut self, service: &Service) -> Result<i32, String> {
        let name = service.name.as_str();
        let program = service
            .command
            .first()
            .ok_or_else(|| "the definition has no command".to_owned())?;
        let mut spec = ProcessSpec::new(name, program);
        match &self.cgroups {
            Some(cgroups) => {
                self.draining.remove(name);
                let tree = &cgroups.tree;
                tree.create(name, &service.resources)
                    .map_err(|e| e.to_string())?;
                tree.set_oom_group(name, true).map_err(|e| e.to_string())?;
                spec.cgroup_procs = Some(tree.open_procs(name).map_err(|e| e.to_string())?);
            }
            None if service.resources != Resources::default() => {
                return Err(format!(
                    "it sets [resources] limits, but services run without cgroups here ({}); \
                     refusing to start it without its limits",
                    self.no_cgroups_reason
                ));
            }
            None => {}
        }
        let ids = self.users.resolve(
            &service.user,
            service.group.as_ref(),
            &service.supplementary_groups,
        )?;
        let (read_end, write_end) = cloexec_pipe().map_err(|e| format!("creating a pipe: {e}"))?;
        let stderr = write_end
            .try_clone()
            .map_err(|e| format!("duplicating a pipe: {e}"))?;
        spec.argv = service.command.iter().map(OsString::from).collect();
        spec.env = environment(service);
        spec.cwd = service.working_directory.clone();
        spec.uid = ids.uid;
        spec.gid = ids.gid;
        spec.groups = ids.groups;
        spec.keep_caps = CapMask::from(&service.capabilities);
        spec.stdout = Some(write_end);
        spec.stderr = Some(stderr);
        spec.notify_socket = self.notify_path.clone();
        // Blocks until the child has exec'd (a few system calls): see the module docs of
        // `daemon` for why that is accepted.
        let pid = spawn(&spec).map_err(|e| e.to_string())?.as_raw();
        // Our copies of the write end close here, so the reader sees EOF with the service.
        drop(spec);
        if let Some(log) = self.logs.get(name)
            && let Err(error) = output::read_pipe(
                name.to_owned(),
                Arc::clone(log),
                self.console.clone(),
                read_end,
            )
        {
            tracing::warn!(service = name, "cannot read its output: {error}");
        }
        Ok(pid)
    }

    fn kill_group(service: &str, pid: i32) {
        // The main process leads its own process group (spawn calls setsid); the group
        // outlives its leader as long as members remain, so its id is not reused meanwhile.
        match kill(Pid::from_raw(-pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => tracing::warn!(service, pid, "killing the process group: {error}"),
        }
    }
}

impl Host for RealHost {
    fn spawn(&mut self, service: &Service) -> Result<i32, String> {
        let result = self.start_process(service);
        if result.is_err() && self.cgroups.is_some() {
            // The leaf may have been made before the failure.
            self.draining.insert(service.name.as_str().to_owned());
        }
        result
    }

    fn signal(&mut self, service: &str, pid: i32, signal: Signal) {
        if let Err(error) = kill(Pid::from_raw(pid), signal) {
            tracing::debug!(service, pid, "sending {}: {error}", signal.as_str());
        }
    }

    fn kill_service(&mut self, service: &str, main_pid: Option<i32>) {
        let killed = match &self.cgroups {
            Some(cgroups) => match cgroups.tree.kill(service) {
                Ok(KillMethod::Absent) => false,
                Ok(_) => true,
                Err(error) => {
                    tracing::warn!(service, "{error}");
                    false
                }
            },
            None => false,
        };
        if let Some(pid) = main_pid.filter(|_| !killed) {
            Self::kill_group(service, pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if self.cgroups.is_some() {
            self.draining.insert(service.to_owned());
        }
    }

    fn main_exited(&mut self, service: &str, pid: i32) {
        self.stop_probes(service);
        match &self.cgroups {
            Some(cgroups) => {
                // Whatever the main process left behind goes with it.
                if cgroups.tree.populated(service).unwrap_or(true)
                    && let Err(error) = cgroups.tree.kill(service)
                {
                    tracing::warn!(service, "killing leftover processes: {error}");
                }
                self.draining.insert(service.to_owned());
            }
            None => Self::kill_group(service, pid),
        }
    }

    fn other_exited(&mut self, pid: i32, exit: Exit) {
        let waiting = self
            .watchers
            .lock()
            .ok()
            .and_then(|mut watchers| watchers.remove(&pid));
        match waiting {
            Some(watcher) => {
                let _ = watcher.send(exit);
            }
            None => tracing::debug!(pid, %exit, "reaped a process"),
        }
    }

    fn probe_tcp(&mut self, service: &str, pid: i32, port: u16) {
        let probe = probe::port_probe(self.tx.clone(), service.to_owned(), pid, port);
        if let Some(old) = self.port_probes.insert(service.to_owned(), probe) {
            old.abort();
        }
    }

    fn health_checks(&mut self, service: &Service, pid: Option<i32>, enabled: bool) {
        let name = service.name.as_str();
        if let Some(old) = self.health.remove(name) {
            old.abort();
        }
        let (Some(pid), Some(check), true) = (pid, &service.health, enabled) else {
            return;
        };
        let exec = match &check.probe {
            Probe::Exec(argv) => {
                let ids = self
                    .users
                    .resolve(
                        &service.user,
                        service.group.as_ref(),
                        &service.supplementary_groups,
                    )
                    .map_err(|e| tracing::warn!(service = name, "health check: {e}"))
                    .ok();
                ids.map(|ids| ExecProbe {
                    service: name.to_owned(),
                    argv: argv.clone(),
                    env: environment(service),
                    cwd: service.working_directory.clone(),
                    ids,
                    keep_caps: CapMask::from(&service.capabilities),
                    cgroups: self.cgroups.as_ref().map(|c| c.tree.clone()),
                    watchers: Arc::clone(&self.watchers),
                })
            }
            Probe::Tcp(_) | Probe::Http { .. } => None,
        };
        let task = probe::health_checks(self.tx.clone(), name.to_owned(), pid, check.clone(), exec);
        self.health.insert(name.to_owned(), task);
    }

    fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    fn cgroup_service_of(&self, pid: i32) -> Option<String> {
        let cgroups = self.cgroups.as_ref()?;
        let text =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        service_in(&text, &cgroups.services_path)
    }

    fn parent_of(&self, pid: i32) -> Option<i32> {
        let stat =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat")).ok()?;
        parent_in_stat(&stat)
    }

    fn stats(&self, service: &str) -> Option<Stats> {
        self.cgroups.as_ref()?.tree.stats(service).ok()
    }

    fn event(&mut self, event: Event) {
        if let Event::Service {
            name,
            from,
            to,
            reason,
        } = &event
        {
            // No subscriber is no error.
            let _ = self.changes.send(StateChange {
                name: name.clone(),
                from: from.clone(),
                to: to.clone(),
                reason: reason.clone(),
            });
        }
        self.console.event(event);
    }

    fn log(&mut self, service: &str, text: &str) {
        if let Some(log) = self.logs.get(service) {
            log.note(text);
        }
    }
}

/// The service's environment as the process gets it (`NOTIFY_SOCKET` is added by spawn).
fn environment(service: &Service) -> Vec<(OsString, OsString)> {
    service
        .environment
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

/// The service named by a `/proc/PID/cgroup` text, given how the services' node appears there.
fn service_in(proc_cgroup: &str, services_path: &str) -> Option<String> {
    let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rest = path.trim_end().strip_prefix(services_path)?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// The parent pid from `/proc/PID/stat` (`pid (comm) state ppid ...`; comm may hold spaces
/// and parentheses, so the last `)` ends it).
fn parent_in_stat(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether `path` is on a cgroup2 filesystem.
fn is_cgroup2(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value for it.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and buf a valid, writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(buf.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

/// Sets up Shoal's cgroup tree under `root` and moves the daemon into its own leaf; kills
/// what a previous daemon's services left there (PID 1 restarts a daemon that died, and its
/// services must not run twice). `Err` says why services must run without cgroups.
pub(crate) fn setup_cgroups(root: &Path, proc_root: &Path) -> Result<Cgroups, String> {
    match is_cgroup2(root) {
        Ok(true) => {}
        Ok(false) => return Err(format!("{} is not a cgroup2 filesystem", root.display())),
        Err(error) => return Err(format!("{}: {error}", root.display())),
    }
    let tree = CgroupTree::new(root);
    let report = tree.setup().map_err(|e| e.to_string())?;
    if !report.missing.is_empty() {
        tracing::warn!(
            missing = ?report.missing,
            "cgroup controllers not available: services that set these limits will not start"
        );
    }
    if let Err(error) = tree.enter_supervisor(Pid::from_raw(0)) {
        tracing::warn!("cannot move the supervisor into its own cgroup: {error}");
    }
    let own = std::fs::read_to_string(proc_root.join("self").join("cgroup")).unwrap_or_default();
    let base = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| p.trim_end().strip_suffix("/shoal/supervisor"))
        .unwrap_or("");
    let services_path = format!("{base}/shoal/services/");
    kill_leftovers(&tree);
    Ok(Cgroups {
        tree,
        services_path,
    })
}

/// Kills and removes every service leaf found at startup.
fn kill_leftovers(tree: &CgroupTree) {
    let Ok(entries) = std::fs::read_dir(tree.services_dir()) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for name in &names {
        if tree.populated(name).unwrap_or(false) {
            tracing::warn!(service = %name, "killing processes left by a previous supervisor");
            let _ = tree.kill(name);
        }
    }
    // They die at once (SIGKILL); removal needs them gone, so try for a moment.
    for _ in 0..50 {
        let mut left = 0;
        for name in &names {
            if tree.remove(name).is_err() {
                left += 1;
            }
        }
        if left == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn services_are_found_in_proc_cgroup_text() {
        let text = "1:name=systemd:/\n0::/shoal/services/netd\n";
        assert_eq!(service_in(text, "/shoal/services/"), Some("netd".into()));
        let nested = "0::/test-7/shoal/services/db/worker\n";
        assert_eq!(
            service_in(nested, "/test-7/shoal/services/"),
            Some("db".into())
        );
        assert_eq!(service_in(nested, "/shoal/services/"), None);
        assert_eq!(
            service_in("0::/shoal/supervisor\n", "/shoal/services/"),
            None
        );
        assert_eq!(
            service_in("0::/shoal/services/\n", "/shoal/services/"),
            None
        );
    }

    #[test]
    fn parents_are_read_from_stat() {
        assert_eq!(parent_in_stat("42 (sh) S 7 42 42 0"), Some(7));
        assert_eq!(parent_in_stat("42 (a) b (c)) R 9 1"), Some(9));
        assert_eq!(parent_in_stat("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(
            parent_in_stat(&own),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup2_root() {
        let dir = tempfile::tempdir().unwrap();
        let err = setup_cgroups(dir.path(), Path::new("/proc")).unwrap_err();
        assert!(err.ends_with("is not a cgroup2 filesystem"), "{err}");
        assert!(setup_cgroups(&dir.path().join("nope"), Path::new("/proc")).is_err());
    }
}
