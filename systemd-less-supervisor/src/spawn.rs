//! Starting a service process: cgroup, session, stdio, ids, capabilities, then exec.
//!
//! The supervisor is multi-threaded, so after `fork` the child may only make
//! async-signal-safe calls: another thread may have held the allocator's lock at the moment of
//! the fork. Everything that allocates (C strings, pointer arrays, capability masks, the
//! `/dev/null` descriptor) is prepared in the parent by [`spawn`]; the child runs a straight
//! line of raw system calls (`child_main`) and reports a failure as a fixed-size record
//! (errno, step, argument) on a close-on-exec pipe before `_exit(127)`. The parent reads that
//! pipe: end-of-file means `execve` succeeded (the pipe closed with it).
//!
//! Order of the child's steps, and why:
//! 1. signal dispositions to default, then an empty signal mask (in that order, so that a
//!    pending signal cannot run one of the supervisor's handlers in the child);
//! 2. `setsid`: the service leads its own session and process group;
//! 3. write "0" to the service leaf's pre-opened `cgroup.procs` (before anything else can be
//!    charged to the supervisor, and while still root);
//! 4. stdin from `/dev/null`, stdout/stderr to the given descriptors (the log pipes), every
//!    other descriptor marked close-on-exec (`close_range`);
//! 5. `chdir`;
//! 6. `setgroups`, `setresgid`;
//! 7. drop every capability not kept from the bounding set (needs CAP_SETPCAP, so before the
//!    uid change clears the effective set);
//! 8. `PR_SET_KEEPCAPS`, `setresuid` (the permitted set survives the uid change);
//! 9. `capset`: effective = permitted = inheritable = kept;
//! 10. ambient set cleared, then each kept capability raised, so that it survives `execve`
//!     for a non-root user (for root the kernel recomputes permitted from the bounding set);
//! 11. `PR_SET_NO_NEW_PRIVS`;
//! 12. `execve` with exactly the given environment (plus `NOTIFY_SOCKET`).
//!
//! Reaping is not done here: one central reaper waits for every child (a failed child too,
//! whose pid [`SpawnError::Child`] carries).

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::Capability;
use nix::errno::Errno;
use nix::unistd::Pid;

/// A set of capabilities as the kernel's 64-bit mask (bit n = capability number n).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CapMask(u64);

impl CapMask {
    /// No capability at all.
    pub const EMPTY: CapMask = CapMask(0);

    /// The mask of `caps`.
    pub fn from_caps<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> Self {
        Self(caps.into_iter().fold(0, |mask, cap| mask | cap.bitmask()))
    }

    /// A raw mask, as `/proc/PID/status` prints it.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw mask.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bitmask() != 0
    }

    /// The capabilities in the set that the `caps` crate knows, lowest number first.
    pub fn to_caps(self) -> Vec<Capability> {
        let mut caps: Vec<Capability> = caps::all()
            .into_iter()
            .filter(|c| self.contains(*c))
            .collect();
        caps.sort_by_key(|c| c.index());
        caps
    }
}

impl FromIterator<Capability> for CapMask {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |mask, cap| mask | cap.bitmask()))
    }
}

impl From<&HashSet<Capability>> for CapMask {
    fn from(set: &HashSet<Capability>) -> Self {
        Self::from_caps(set)
    }
}

impl fmt::Debug for CapMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapMask({:#018x} ", self.0)?;
        f.debug_list().entries(self.to_caps()).finish()?;
        write!(f, ")")
    }
}

/// Everything needed to start one service process.
#[derive(Debug)]
pub struct ProcessSpec {
    /// The service's name, for error messages.
    pub service: String,
    /// Absolute path of the executable: no `PATH` search happens in the child.
    pub program: PathBuf,
    /// The arguments, `argv[0]` included.
    pub argv: Vec<OsString>,
    /// The complete environment (nothing is inherited from the supervisor).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; empty clears them.
    pub groups: Vec<u32>,
    /// Capabilities kept in every set (bounding, permitted, effective, inheritable, ambient);
    /// all others are dropped.
    pub keep_caps: CapMask,
    /// The service leaf's `cgroup.procs`, opened for writing (see
    /// `CgroupTree::open_procs`); `None` leaves the child in the supervisor's cgroup.
    pub cgroup_procs: Option<OwnedFd>,
    /// Where stdout goes (the write end of the service's log pipe); `None` is `/dev/null`.
    pub stdout: Option<OwnedFd>,
    /// Where stderr goes; `None` is `/dev/null`.
    pub stderr: Option<OwnedFd>,
    /// Exported as `NOTIFY_SOCKET` (replacing any such entry in `env`).
    pub notify_socket: Option<PathBuf>,
}

impl ProcessSpec {
    /// A root process running `program` with `argv = [program]`, in `/`, with no capability,
    /// no environment, no cgroup and no output.
    pub fn new(service: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        let program = program.into();
        Self {
            service: service.into(),
            argv: vec![program.clone().into_os_string()],
            program,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            keep_caps: CapMask::EMPTY,
            cgroup_procs: None,
            stdout: None,
            stderr: None,
            notify_socket: None,
        }
    }
}

/// Why a service process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The spec cannot be turned into an `execve` (NUL bytes, relative program, ...).
    #[error("service {service}: {reason}")]
    InvalidSpec { service: String, reason: String },
    /// A capability to keep that the supervisor does not hold itself.
    #[error("service {service}: the supervisor does not hold {missing}, so it cannot pass it on")]
    CapabilityUnavailable { service: String, missing: String },
    /// The parent's own preparation failed (pipe, fork, reading the error pipe).
    #[error("service {service}: {what}: {source}")]
    Parent {
        service: String,
        what: &'static str,
        source: io::Error,
    },
    /// A step in the child failed; the child exited with 127 and is left for the reaper.
    #[error("service {service}: {step}: {}", errno.desc())]
    Child {
        service: String,
        /// The failed child, still to be reaped by the caller's reaper.
        pid: Pid,
        /// The step and its argument, e.g. `setresuid(65534)`.
        step: String,
        errno: Errno,
    },
}

/// Starts `spec` and returns the pid once `execve` succeeded. Blocks only until the child
/// has exec'd or failed (a few system calls); run it off an async executor's reactor thread.
///
/// The descriptors in `spec` stay owned by the caller: drop `stdout`/`stderr` after the call
/// so the log pipe's reader sees end-of-file when the service exits.
pub fn spawn(spec: &ProcessSpec) -> Result<Pid, SpawnError> {
    let prepared = Prepared::new(spec)?;
    let parent_err = |what, source| SpawnError::Parent {
        service: spec.service.clone(),
        what,
        source,
    };
    let (report_read, report_write) =
        cloexec_pipe().map_err(|e| parent_err("creating the error pipe", e))?;

    // SAFETY: fork has no memory preconditions. The child only runs `child_main`, which makes
    // async-signal-safe system calls on memory prepared before the fork and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(parent_err("fork", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child; `prepared` and the pipe are valid copies.
        unsafe { child_main(&prepared, report_write.as_raw_fd()) }
    }
    drop(report_write);
    let pid = Pid::from_raw(pid);
    let mut record = [0u8; REPORT_LEN];
    let got = read_full(&report_read, &mut record)
        .map_err(|e| parent_err("reading the child's error pipe", e))?;
    match got {
        0 => {
            tracing::debug!(service = %spec.service, %pid, "service process started");
            Ok(pid)
        }
        REPORT_LEN => {
            let (errno, step, arg) = decode_report(&record);
            Err(SpawnError::Child {
                service: spec.service.clone(),
                pid,
                step: describe_step(spec, step, arg),
                errno: Errno::from_raw(errno),
            })
        }
        n => Err(parent_err(
            "reading the child's error pipe",
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated report of {n} bytes"),
            ),
        )),
    }
}

/// What the child was doing when it failed; travels as a number on the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    SignalMask = 1,
    Setsid,
    Cgroup,
    Stdio,
    Chdir,
    Setgroups,
    Setresgid,
    BoundingDrop,
    KeepCaps,
    Setresuid,
    Capset,
    AmbientClear,
    AmbientRaise,
    NoNewPrivs,
    Execve,
}

impl Step {
    const ALL: [Step; 15] = [
        Step::SignalMask,
        Step::Setsid,
        Step::Cgroup,
        Step::Stdio,
        Step::Chdir,
        Step::Setgroups,
        Step::Setresgid,
        Step::BoundingDrop,
        Step::KeepCaps,
        Step::Setresuid,
        Step::Capset,
        Step::AmbientClear,
        Step::AmbientRaise,
        Step::NoNewPrivs,
        Step::Execve,
    ];
}

const REPORT_LEN: usize = 16;

fn encode_report(errno: i32, step: Step, arg: u64) -> [u8; REPORT_LEN] {
    let mut record = [0u8; REPORT_LEN];
    record[..4].copy_from_slice(&errno.to_le_bytes());
    record[4..8].copy_from_slice(&(step as u32).to_le_bytes());
    record[8..].copy_from_slice(&arg.to_le_bytes());
    record
}

fn decode_report(record: &[u8; REPORT_LEN]) -> (i32, Option<Step>, u64) {
    let [e0, e1, e2, e3, s0, s1, s2, s3, a @ ..] = *record;
    let errno = i32::from_le_bytes([e0, e1, e2, e3]);
    let step = u32::from_le_bytes([s0, s1, s2, s3]);
    let step = Step::ALL.into_iter().find(|s| *s as u32 == step);
    (errno, step, u64::from_le_bytes(a))
}

fn describe_step(spec: &ProcessSpec, step: Option<Step>, arg: u64) -> String {
    let cap_name = || {
        CapMask::from_bits(1u64.checked_shl(arg as u32).unwrap_or(0))
            .to_caps()
            .first()
            .map_or_else(|| format!("capability {arg}"), ToString::to_string)
    };
    match step {
        Some(Step::SignalMask) => "resetting the signal mask".to_owned(),
        Some(Step::Setsid) => "setsid()".to_owned(),
        Some(Step::Cgroup) => "joining the cgroup (writing cgroup.procs)".to_owned(),
        Some(Step::Stdio) => format!("setting up stdio (fd {arg})"),
        Some(Step::Chdir) => format!("chdir({})", spec.cwd.display()),
        Some(Step::Setgroups) => format!("setgroups({:?})", spec.groups),
        Some(Step::Setresgid) => format!("setresgid({arg})"),
        Some(Step::BoundingDrop) => format!("dropping {} from the bounding set", cap_name()),
        Some(Step::KeepCaps) => "prctl(PR_SET_KEEPCAPS)".to_owned(),
        Some(Step::Setresuid) => format!("setresuid({arg})"),
        Some(Step::Capset) => format!("capset({arg:#x})"),
        Some(Step::AmbientClear) => "clearing the ambient capabilities".to_owned(),
        Some(Step::AmbientRaise) => format!("raising ambient {}", cap_name()),
        Some(Step::NoNewPrivs) => "prctl(PR_SET_NO_NEW_PRIVS)".to_owned(),
        Some(Step::Execve) => format!("execve({})", spec.program.display()),
        None => format!("unknown step (argument {arg})"),
    }
}

/// What the child needs, all allocated before the fork.
struct Prepared {
    program: CString,
    /// Owns the strings `argv_ptrs` points into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns the strings `env_ptrs` points into.
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    keep: u64,
    devnull: OwnedFd,
    cgroup_procs: Option<RawFd>,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
}

impl Prepared {
    fn new(spec: &ProcessSpec) -> Result<Self, SpawnError> {
        let invalid = |reason: String| SpawnError::InvalidSpec {
            service: spec.service.clone(),
            reason,
        };
        let c_string = |what: &str, s: &OsStr| {
            CString::new(s.as_bytes())
                .map_err(|_| invalid(format!("{what} {s:?} contains a NUL byte")))
        };
        if !spec.program.is_absolute() {
            return Err(invalid(format!(
                "program {} is not an absolute path",
                spec.program.display()
            )));
        }
        if spec.argv.is_empty() {
            return Err(invalid(
                "argv is empty (it needs at least argv[0])".to_owned(),
            ));
        }
        let program = c_string("program", spec.program.as_os_str())?;
        let argv = spec
            .argv
            .iter()
            .map(|a| c_string("argument", a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut env = Vec::with_capacity(spec.env.len() + 1);
        for (key, value) in &spec.env {
            if key.is_empty() || key.as_bytes().contains(&b'=') {
                return Err(invalid(format!(
                    "environment name {key:?} is empty or contains '='"
                )));
            }
            if spec.notify_socket.is_some() && key == "NOTIFY_SOCKET" {
                continue;
            }
            let mut entry = key.clone();
            entry.push("=");
            entry.push(value);
            env.push(c_string("environment entry", &entry)?);
        }
        if let Some(socket) = &spec.notify_socket {
            let mut entry = OsString::from("NOTIFY_SOCKET=");
            entry.push(socket);
            env.push(c_string("notify socket path", &entry)?);
        }
        let cwd = c_string("working directory", spec.cwd.as_os_str())?;
        check_capabilities_held(spec)?;
        let devnull = open_devnull().map_err(|source| SpawnError::Parent {
            service: spec.service.clone(),
            what: "opening /dev/null",
            source,
        })?;
        let argv_ptrs = null_terminated(&argv);
        let env_ptrs = null_terminated(&env);
        Ok(Self {
            program,
            _argv: argv,
            argv_ptrs,
            _env: env,
            env_ptrs,
            cwd,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.groups.clone(),
            keep: spec.keep_caps.bits(),
            devnull,
            cgroup_procs: spec.cgroup_procs.as_ref().map(AsRawFd::as_raw_fd),
            stdout: spec.stdout.as_ref().map(AsRawFd::as_raw_fd),
            stderr: spec.stderr.as_ref().map(AsRawFd::as_raw_fd),
        })
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A capability can only be kept if the supervisor's permitted set has it; failing here gives
/// a message naming it instead of a bare EPERM from `capset` in the child.
fn check_capabilities_held(spec: &ProcessSpec) -> Result<(), SpawnError> {
    if spec.keep_caps == CapMask::EMPTY {
        return Ok(());
    }
    let held = caps::read(None, caps::CapSet::Permitted).map_err(|e| SpawnError::Parent {
        service: spec.service.clone(),
        what: "reading the supervisor's capabilities",
        source: io::Error::other(e.to_string()),
    })?;
    let missing = spec.keep_caps.bits() & !CapMask::from(&held).bits();
    if missing == 0 {
        return Ok(());
    }
    let names: Vec<String> = CapMask::from_bits(missing)
        .to_caps()
        .iter()
        .map(ToString::to_string)
        .collect();
    Err(SpawnError::CapabilityUnavailable {
        service: spec.service.clone(),
        missing: if names.is_empty() {
            format!("capabilities {missing:#x}")
        } else {
            names.join(", ")
        },
    })
}

fn open_devnull() -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new("/dev/null"))?;
    Ok(file.into())
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

/// Reads until `buf` is full or end-of-file; returns how many bytes arrived.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: reading into the unfilled tail of a live buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(got)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_SLOTS: u64 = 64;

/// Writes the failure record and exits. Async-signal-safe: `write` and `_exit` only.
///
/// # Safety
/// Only to be called in the forked child.
unsafe fn fail(report: RawFd, step: Step, arg: u64) -> ! {
    let errno = Errno::last_raw();
    let record = encode_report(errno, step, arg);
    // SAFETY: writing a live stack buffer of REPORT_LEN bytes; a record this small (below
    // PIPE_BUF) is written atomically or not at all, and there is nothing to do on failure.
    unsafe {
        libc::write(report, record.as_ptr().cast(), REPORT_LEN);
        libc::_exit(127)
    }
}

/// The forked child: raw system calls only, in the order the module documentation gives.
///
/// # Safety
/// Only to be called in the child right after `fork`, with `report` the write end of the
/// close-on-exec error pipe. Never returns.
unsafe fn child_main(p: &Prepared, report: RawFd) -> ! {
    // SAFETY: (covers the whole function) every call below is an async-signal-safe system
    // call on memory prepared before the fork (C strings, pointer arrays, plain integers) or
    // on local stack values; nothing allocates, locks or unwinds.
    unsafe {
        // 1. Signals: dispositions first, then the mask. The raw system call, because the C
        //    library's wrapper refuses its reserved real-time signals (32, 33), which an
        //    ignoring parent would otherwise pass on. An all-zero kernel sigaction is SIG_DFL
        //    with no flags on every architecture; SIGKILL/SIGSTOP refuse with EINVAL.
        let default = [0u64; 4];
        for sig in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig as libc::c_long,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8 as libc::c_long,
            );
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(report, Step::SignalMask, 0);
        }

        // 2. Own session.
        if libc::setsid() < 0 {
            fail(report, Step::Setsid, 0);
        }

        // 3. Into the service's cgroup.
        if let Some(fd) = p.cgroup_procs
            && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
        {
            fail(report, Step::Cgroup, 0);
        }

        // 4. Stdio. First lift the sources above 2 so that dup2 onto 0..=2 cannot clobber a
        //    source still needed (or leave one close-on-exec when it already sits in place).
        let devnull = p.devnull.as_raw_fd();
        let sources = [
            devnull,
            p.stdout.unwrap_or(devnull),
            p.stderr.unwrap_or(devnull),
        ];
        let mut lifted = [-1; 3];
        for (target, &source) in sources.iter().enumerate() {
            let fd = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 3);
            if fd < 0 {
                fail(report, Step::Stdio, source as u64);
            }
            lifted[target] = fd;
        }
        for (target, fd) in lifted.iter().enumerate() {
            if libc::dup2(*fd, target as libc::c_int) < 0 {
                fail(report, Step::Stdio, target as u64);
            }
        }
        // Nothing of the supervisor's leaks into the service (ENOSYS before Linux 5.11: the
        // supervisor opens everything close-on-exec anyway). The error pipe closes at exec.
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );

        // 5. Working directory.
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(report, Step::Chdir, 0);
        }

        // 6. Groups.
        // Raw system calls: the C library's wrappers broadcast id changes to all threads
        // (setxid signals, locks); this child has exactly one thread.
        if libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr()) != 0 {
            fail(report, Step::Setgroups, 0);
        }
        if libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) != 0 {
            fail(report, Step::Setresgid, u64::from(p.gid));
        }

        // 7. Bounding set, while CAP_SETPCAP is still effective. EINVAL marks the first
        //    number past the kernel's last capability.
        for cap in 0..CAP_SLOTS {
            if p.keep & (1 << cap) != 0 {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                if Errno::last_raw() == libc::EINVAL {
                    break;
                }
                fail(report, Step::BoundingDrop, cap);
            }
        }

        // 8. User, keeping the permitted set across the change.
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            fail(report, Step::KeepCaps, 0);
        }
        if libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) != 0 {
            fail(report, Step::Setresuid, u64::from(p.uid));
        }

        // 9. Effective = permitted = inheritable = kept.
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let low = p.keep as u32;
        let high = (p.keep >> 32) as u32;
        let data = [
            CapData {
                effective: low,
                permitted: low,
                inheritable: low,
            },
            CapData {
                effective: high,
                permitted: high,
                inheritable: high,
            },
        ];
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) != 0 {
            fail(report, Step::Capset, p.keep);
        }

        // 10. Ambient: exactly the kept capabilities.
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(report, Step::AmbientClear, 0);
        }
        for cap in 0..CAP_SLOTS {
            if p.keep & (1 << cap) != 0
                && libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                ) != 0
            {
                fail(report, Step::AmbientRaise, cap);
            }
        }

        // 11. No setuid or file-capability gains from here on.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            fail(report, Step::NoNewPrivs, 0);
        }

        // 12. Exec.
        libc::execve(
            p.program.as_ptr(),
            p.argv_ptrs.as_ptr(),
            p.env_ptrs.as_ptr(),
        );
        fail(report, Step::Execve, 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    macro_rules! require_root {
        () => {
            if !is_root() {
                println!("SKIPPED: spawning with uid/capability changes needs root");
                return;
            }
        };
    }

    /// Runs `spec` with stdout to a pipe; returns (pid, output, exit status).
    fn run(mut spec: ProcessSpec) -> Result<(String, libc::c_int), SpawnError> {
        let (mut reader, writer) = io::pipe().unwrap();
        spec.stdout = Some(writer.into());
        let pid = spawn(&spec);
        drop(spec);
        let pid = pid?;
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        Ok((out, wait(pid)))
    }

    fn wait(pid: Pid) -> libc::c_int {
        let mut status = 0;
        // SAFETY: waiting for our own child into a local status word.
        let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) };
        assert_eq!(r, pid.as_raw());
        status
    }

    fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("{key} missing in {status}"))
            .trim()
    }

    fn cat_status_as_nobody(keep: CapMask) -> String {
        let mut spec = ProcessSpec::new("captest", "/bin/cat");
        spec.argv = vec!["cat".into(), "/proc/self/status".into()];
        spec.uid = 65534;
        spec.gid = 65534;
        spec.groups = vec![65533, 65534];
        spec.keep_caps = keep;
        let (out, status) = run(spec).unwrap();
        assert_eq!(status, 0, "{out}");
        out
    }

    #[test]
    fn kept_capabilities_are_exactly_in_every_set() {
        require_root!();
        let keep: CapMask = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW]
            .into_iter()
            .collect();
        assert_eq!(keep.bits(), 0x3000);
        // A blocked signal in the spawning thread must not reach the service.
        // SAFETY: changes this test thread's own mask, with valid local sets.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let status = cat_status_as_nobody(keep);
        println!("{status}");
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
            assert_eq!(status_field(&status, set), "0000000000003000", "{set}");
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
        assert_eq!(status_field(&status, "Uid"), "65534\t65534\t65534\t65534");
        assert_eq!(status_field(&status, "Gid"), "65534\t65534\t65534\t65534");
        assert_eq!(status_field(&status, "Groups"), "65533 65534");
        // The Rust runtime ignores SIGPIPE and the test thread blocks SIGUSR1: both reset.
        assert_eq!(status_field(&status, "SigBlk"), "0000000000000000");
        assert_eq!(status_field(&status, "SigIgn"), "0000000000000000");
    }

    #[test]
    fn keeping_nothing_leaves_every_set_empty() {
        require_root!();
        let status = cat_status_as_nobody(CapMask::EMPTY);
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
            assert_eq!(status_field(&status, set), "0000000000000000", "{set}");
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    }

    #[test]
    fn a_root_service_keeps_only_its_capabilities() {
        require_root!();
        let mut spec = ProcessSpec::new("rootcaps", "/bin/cat");
        spec.argv = vec!["cat".into(), "/proc/self/status".into()];
        spec.keep_caps = [Capability::CAP_NET_BIND_SERVICE].into_iter().collect();
        let (out, _) = run(spec).unwrap();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(status_field(&out, set), "0000000000000400", "{set}");
        }
        assert_eq!(status_field(&out, "Uid"), "0\t0\t0\t0");
    }

    #[test]
    fn environment_is_exact_and_carries_notify_socket() {
        require_root!();
        let mut spec = ProcessSpec::new("envtest", "/usr/bin/env");
        spec.env = vec![
            ("A".into(), "1".into()),
            ("NOTIFY_SOCKET".into(), "/wrong".into()),
        ];
        spec.notify_socket = Some(PathBuf::from("/run/shoal/notify"));
        let (out, _) = run(spec).unwrap();
        assert_eq!(out, "A=1\nNOTIFY_SOCKET=/run/shoal/notify\n");
    }

    #[test]
    fn cwd_stdio_and_no_leaked_descriptors() {
        require_root!();
        let mut spec = ProcessSpec::new("fdtest", "/bin/sh");
        spec.argv = vec![
            "sh".into(),
            "-c".into(),
            "pwd; ls /proc/self/fd; read x || echo stdin-eof".into(),
        ];
        spec.cwd = PathBuf::from("/tmp");
        // An extra descriptor without close-on-exec in the supervisor must not leak.
        let leaky = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: clears FD_CLOEXEC on a descriptor this test owns.
        unsafe { libc::fcntl(leaky.as_raw_fd(), libc::F_SETFD, 0) };
        let (out, _) = run(spec).unwrap();
        // ls has its directory open as fd 3; nothing else beyond stdio.
        assert_eq!(out, "/tmp\n0\n1\n2\n3\nstdin-eof\n");
        drop(leaky);
    }

    #[test]
    fn stdout_and_stderr_to_the_same_pipe() {
        require_root!();
        let (mut reader, writer) = io::pipe().unwrap();
        let mut spec = ProcessSpec::new("stdio", "/bin/sh");
        spec.argv = vec!["sh".into(), "-c".into(), "echo out; echo err >&2".into()];
        let writer: OwnedFd = writer.into();
        spec.stderr = Some(writer.try_clone().unwrap());
        spec.stdout = Some(writer);
        let pid = spawn(&spec).unwrap();
        drop(spec);
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        assert_eq!(out, "out\nerr\n");
        assert_eq!(wait(pid), 0);
    }

    #[test]
    fn the_child_joins_its_cgroup_before_exec() {
        require_root!();
        let Some(mount) =
            crate::cgroup::tests::cgroup2_or_skip("the_child_joins_its_cgroup_before_exec")
        else {
            return;
        };
        let dir_name = format!("shoal-test-{}-spawn", std::process::id());
        let tree = crate::cgroup::CgroupTree::new(mount.join(&dir_name));
        std::fs::create_dir(tree.root()).unwrap();
        let _cleanup = crate::cgroup::tests::Cleanup(tree.clone(), "spawn-it");
        tree.setup().unwrap();
        tree.create("spawn-it", &crate::cgroup::Limits::default())
            .unwrap();
        let mut spec = ProcessSpec::new("spawn-it", "/bin/cat");
        spec.argv = vec!["cat".into(), "/proc/self/cgroup".into()];
        spec.cgroup_procs = Some(tree.open_procs("spawn-it").unwrap());
        let (out, status) = run(spec).unwrap();
        assert_eq!(status, 0);
        let v2 = out.lines().find(|l| l.starts_with("0::")).unwrap();
        assert_eq!(v2, format!("0::/{dir_name}/shoal/services/spawn-it"));
    }

    #[test]
    fn real_pids_and_memory_limits_hold() {
        require_root!();
        let Some(mount) = crate::cgroup::tests::cgroup2_or_skip("real_pids_and_memory_limits_hold")
        else {
            return;
        };
        let dir_name = format!("shoal-test-{}-limits", std::process::id());
        let tree = crate::cgroup::CgroupTree::new(mount.join(&dir_name));
        std::fs::create_dir(tree.root()).unwrap();
        let _cleanup = crate::cgroup::tests::Cleanup(tree.clone(), "limits-it");
        let report = tree.setup().unwrap();
        if !["pids", "memory"]
            .iter()
            .all(|c| report.enabled.iter().any(|e| e == c))
        {
            println!(
                "SKIPPED real_pids_and_memory_limits_hold: pids/memory controllers not offered \
                 (enabled: {:?})",
                report.enabled
            );
            return;
        }
        let limits = crate::cgroup::Limits {
            pids_max: Some(4),
            memory_max: Some(32 << 20),
            ..Default::default()
        };
        tree.create("limits-it", &limits).unwrap();
        let shell = |script: &str| {
            let mut spec = ProcessSpec::new("limits-it", "/bin/sh");
            spec.argv = vec!["sh".into(), "-c".into(), script.into()];
            spec.cgroup_procs = Some(tree.open_procs("limits-it").unwrap());
            let (err_read, err_write) = io::pipe().unwrap();
            spec.stderr = Some(err_write.into());
            (spec, err_read)
        };

        // A fork bomb in miniature: the shell and three sleeps fit, the rest cannot fork.
        let (spec, mut errors) = shell("for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait");
        let (_, status) = run(spec).unwrap();
        let mut stderr = String::new();
        errors.read_to_string(&mut stderr).unwrap();
        let leaf = tree.leaf("limits-it").unwrap();
        let pids_events = std::fs::read_to_string(leaf.join("pids.events")).unwrap();
        println!("pids: status {status:#x}, stderr {stderr:?}, pids.events {pids_events:?}");
        assert!(stderr.contains("fork"), "{stderr}");
        assert_ne!(pids_events.trim(), "max 0");
        // dash gives up at the first failed fork: the sleeps it started outlive it.
        tree.kill("limits-it").unwrap();
        for _ in 0..400 {
            if !tree.populated("limits-it").unwrap() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }

        // Memory: a shell holding a 100 MB string is OOM-killed inside its leaf; with
        // memory.oom.group the whole leaf goes, so the shell is the one killed for sure.
        tree.set_oom_group("limits-it", true).unwrap();
        let memory_only = crate::cgroup::Limits {
            pids_max: None,
            ..limits
        };
        tree.apply("limits-it", &memory_only).unwrap();
        let (spec, mut errors) = shell("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}");
        let (out, status) = run(spec).unwrap();
        let mut stderr = String::new();
        errors.read_to_string(&mut stderr).unwrap();
        let stats = tree.stats("limits-it").unwrap();
        println!("memory: status {status:#x}, out {out:?}, stderr {stderr:?}, {stats:?}");
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        assert!(stats.oom_kills.unwrap() >= 1);
        assert!(stats.memory_peak.is_none_or(|p| p <= 32 << 20));
    }

    #[test]
    fn a_missing_program_names_execve_and_enoent() {
        require_root!();
        let spec = ProcessSpec::new("ghost", "/nonexistent/ghostd");
        let err = spawn(&spec).unwrap_err();
        let SpawnError::Child { pid, errno, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*errno, Errno::ENOENT);
        assert_eq!(
            err.to_string(),
            "service ghost: execve(/nonexistent/ghostd): No such file or directory"
        );
        // The failed child exited 127 and waits for the reaper.
        let status = wait(*pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 127);
    }

    #[test]
    fn a_missing_cwd_names_chdir() {
        require_root!();
        let mut spec = ProcessSpec::new("lost", "/bin/true");
        spec.cwd = PathBuf::from("/nonexistent/dir");
        let err = spawn(&spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service lost: chdir(/nonexistent/dir): No such file or directory"
        );
        if let SpawnError::Child { pid, .. } = err {
            wait(pid);
        }
    }

    #[test]
    fn bad_specs_fail_before_forking() {
        let spec = ProcessSpec::new("rel", "bin/true");
        assert!(matches!(spawn(&spec), Err(SpawnError::InvalidSpec { .. })));
        let mut spec = ProcessSpec::new("nul", "/bin/true");
        spec.argv.push(OsString::from("a\0b"));
        let err = spawn(&spec).unwrap_err().to_string();
        assert!(err.contains("NUL"), "{err}");
        let mut spec = ProcessSpec::new("env", "/bin/true");
        spec.env.push(("A=B".into(), "c".into()));
        assert!(matches!(spawn(&spec), Err(SpawnError::InvalidSpec { .. })));
    }

    #[test]
    fn a_capability_the_supervisor_lacks_is_named() {
        let held = caps::read(None, caps::CapSet::Permitted).unwrap();
        let Some(absent) = caps::all().into_iter().find(|c| !held.contains(c)) else {
            println!("SKIPPED: this process holds every capability");
            return;
        };
        let mut spec = ProcessSpec::new("greedy", "/bin/true");
        spec.keep_caps = [absent].into_iter().collect();
        let err = spawn(&spec).unwrap_err().to_string();
        assert!(err.contains(&absent.to_string()), "{err}");
    }

    #[test]
    fn report_round_trip_and_step_names() {
        let record = encode_report(libc::EPERM, Step::Setresuid, 65534);
        assert_eq!(
            decode_report(&record),
            (libc::EPERM, Some(Step::Setresuid), 65534)
        );
        let spec = ProcessSpec::new("netd", "/usr/lib/shoal/netd");
        let err = SpawnError::Child {
            service: "netd".to_owned(),
            pid: Pid::from_raw(1),
            step: describe_step(&spec, Some(Step::Setresuid), 65534),
            errno: Errno::EPERM,
        };
        assert_eq!(
            err.to_string(),
            "service netd: setresuid(65534): Operation not permitted"
        );
        assert_eq!(
            describe_step(&spec, Some(Step::AmbientRaise), 12),
            "raising ambient CAP_NET_ADMIN"
        );
    }

    #[test]
    fn cap_mask_conversions() {
        let set: HashSet<Capability> = [Capability::CAP_SYS_ADMIN, Capability::CAP_BPF].into();
        let mask = CapMask::from(&set);
        assert_eq!(mask.bits(), (1 << 21) | (1 << 39));
        assert_eq!(
            mask.to_caps(),
            [Capability::CAP_SYS_ADMIN, Capability::CAP_BPF]
        );
        assert!(format!("{mask:?}").contains("CAP_BPF"));
    }
}
