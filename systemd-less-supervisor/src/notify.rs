//! sd_notify-compatible readiness: a unix datagram socket services send `READY=1` (and
//! friends) to, named to them in `NOTIFY_SOCKET`.
//!
//! The kernel stamps every datagram with the sender's credentials (`SO_PASSCRED`), so the
//! supervisor learns which process spoke and maps it to a service itself (it knows its pids,
//! and [`cgroup_of`] names the service of any pid in a service leaf). Nothing a datagram says
//! about its sender is trusted. The socket is world-writable for that reason: services run as
//! unprivileged users and must be able to send, and a forged message can only speak for the
//! sender's own cgroup.

use std::fs;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, sockopt};
use nix::unistd::Pid;

/// The longest datagram accepted, as systemd's limit (`PIPE_BUF`).
pub const MAX_MESSAGE: usize = 4096;

/// One assignment from a notification, those the supervisor acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// `READY=1`: startup finished.
    Ready,
    /// `STOPPING=1`: the service began shutting down.
    Stopping,
    /// `RELOADING=1`: the service is reloading its configuration.
    Reloading,
    /// `STATUS=...`: free-form status text.
    Status(String),
    /// `MAINPID=n`: the service's main process is another pid (a forking daemon).
    MainPid(Pid),
    /// `WATCHDOG=1`: keep-alive ping.
    Watchdog,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    WatchdogTrigger,
    /// `ERRNO=n`: the service failed with this errno.
    Errno(i32),
}

/// Why a datagram was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("notification of {len} bytes exceeds the limit of {MAX_MESSAGE}")]
    TooLong { len: usize },
    #[error("notification contains a NUL byte")]
    Nul,
    #[error("notification is not UTF-8")]
    NotUtf8,
    #[error("notification sets {key} to {value:?}, which is not valid for it")]
    InvalidValue { key: &'static str, value: String },
}

/// Why the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{op} notify socket {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Parses one datagram: newline-separated `KEY=VALUE` assignments. Unknown keys, lines
/// without `=` and empty lines are ignored (as systemd does); known keys with values outside
/// their grammar, NUL bytes, invalid UTF-8 and oversized datagrams reject the whole datagram.
pub fn parse(message: &[u8]) -> Result<Vec<Notify>, ParseError> {
    if message.len() > MAX_MESSAGE {
        return Err(ParseError::TooLong { len: message.len() });
    }
    if message.contains(&0) {
        return Err(ParseError::Nul);
    }
    let text = std::str::from_utf8(message).map_err(|_| ParseError::NotUtf8)?;
    let invalid = |key, value: &str| ParseError::InvalidValue {
        key,
        value: value.to_owned(),
    };
    let mut out = Vec::new();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let flag = |key: &'static str, item: Notify| match value {
            "1" => Ok(Some(item)),
            // "READY=0" and the like say nothing.
            "0" => Ok(None),
            _ => Err(invalid(key, value)),
        };
        let item = match key {
            "READY" => flag("READY", Notify::Ready)?,
            "STOPPING" => flag("STOPPING", Notify::Stopping)?,
            "RELOADING" => flag("RELOADING", Notify::Reloading)?,
            "STATUS" => Some(Notify::Status(value.to_owned())),
            "MAINPID" => {
                let pid = value
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid("MAINPID", value))?;
                Some(Notify::MainPid(Pid::from_raw(pid)))
            }
            "WATCHDOG" => match value {
                "1" => Some(Notify::Watchdog),
                "trigger" => Some(Notify::WatchdogTrigger),
                _ => return Err(invalid("WATCHDOG", value)),
            },
            "ERRNO" => {
                let errno = value
                    .parse::<i32>()
                    .ok()
                    .filter(|e| *e >= 0)
                    .ok_or_else(|| invalid("ERRNO", value))?;
                Some(Notify::Errno(errno))
            }
            _ => None,
        };
        out.extend(item);
    }
    Ok(out)
}

/// One datagram as received: who sent it (from the kernel) and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub pid: Pid,
    pub uid: u32,
    pub gid: u32,
    pub notifications: Vec<Notify>,
}

/// The bound notify socket. Non-blocking; poll its descriptor for readability (or wrap it in
/// tokio's `AsyncFd`) and call [`NotifySocket::recv`] until it returns `None`.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds at `path` (`/run/shoal/notify` on a node; the directory must exist). A stale
    /// socket left at `path` is replaced; any other file there is an error.
    pub fn bind(path: impl Into<PathBuf>) -> Result<Self, NotifyError> {
        let path = path.into();
        let err = |op, source| NotifyError::Io {
            op,
            path: path.clone(),
            source,
        };
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                fs::remove_file(&path).map_err(|e| err("removing stale", e))?;
            }
            Ok(_) => {
                return Err(err(
                    "binding",
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is in the way",
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("inspecting", e)),
        }
        let socket = UnixDatagram::bind(&path).map_err(|e| err("binding", e))?;
        socket::setsockopt(&socket, sockopt::PassCred, &true)
            .map_err(|e| err("enabling SO_PASSCRED on", e.into()))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| err("making non-blocking", e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(|e| err("setting permissions of", e))?;
        Ok(Self { socket, path })
    }

    /// Where the socket is bound: the value of `NOTIFY_SOCKET` for services.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next valid datagram, or `None` when none is waiting. Datagrams that fail to parse
    /// (or arrive without credentials, or truncated) are logged and skipped. File descriptors
    /// sent along (`FDSTORE=1`) are closed: we do not keep a file-descriptor store.
    pub fn recv(&self) -> Result<Option<Received>, NotifyError> {
        loop {
            let mut buf = [0u8; MAX_MESSAGE + 1];
            // Room for the most descriptors one message can carry (SCM_MAX_FD), so the control
            // data is never cut: cut, the kernel would have installed some we could not see.
            let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; 253]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match socket::recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(NotifyError::Io {
                        op: "receiving from",
                        path: self.path.clone(),
                        source: e.into(),
                    });
                }
            };
            let mut creds = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmCredentials(c) => creds = Some(c),
                        ControlMessageOwned::ScmRights(fds) => {
                            for fd in fds {
                                // SAFETY: the kernel just installed these descriptors in our
                                // table for us; nobody else owns them, and we drop them now.
                                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                        _ => {}
                    }
                }
            }
            // MSG_TRUNC makes `bytes` the datagram's real length even when it did not fit.
            let len = msg.bytes;
            let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
            let Some(creds) = creds else {
                tracing::warn!(path = %self.path.display(), "notification without sender ignored");
                continue;
            };
            let pid = Pid::from_raw(creds.pid());
            let parsed = if truncated || len > MAX_MESSAGE {
                Err(ParseError::TooLong { len })
            } else {
                parse(&buf[..len])
            };
            match parsed {
                Ok(notifications) => {
                    return Ok(Some(Received {
                        pid,
                        uid: creds.uid(),
                        gid: creds.gid(),
                        notifications,
                    }));
                }
                Err(err) => tracing::warn!(%pid, %err, "notification rejected"),
            }
        }
    }
}

impl AsRawFd for NotifySocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for NotifySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Sends one notification to the socket at `path`, as a service's `sd_notify` would (for test
/// services and tools written in Rust).
pub fn send(path: &Path, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.send_to(message.as_bytes(), path)?;
    Ok(())
}

/// The service whose leaf holds `pid`, from `<proc_root>/<pid>/cgroup` (`/proc` on a node).
/// `None` when the process is gone or not in a service leaf.
pub fn cgroup_of(proc_root: &Path, pid: Pid) -> Option<String> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .and_then(service_of_cgroup_path)
        .map(str::to_owned)
}

/// The service named by a cgroup v2 path as `/proc/PID/cgroup` shows it: the component after
/// `/shoal/services/` (deeper paths belong to the same service). Pure.
pub fn service_of_cgroup_path(path: &str) -> Option<&str> {
    let rest = path.trim_end().strip_prefix("/shoal/services/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_known_assignments() {
        let msg = b"READY=1\nSTATUS=listening on :80\nMAINPID=42\nWATCHDOG=1\nERRNO=2\n\
                    STOPPING=1\nRELOADING=1\nWATCHDOG=trigger\n";
        assert_eq!(
            parse(msg).unwrap(),
            [
                Notify::Ready,
                Notify::Status("listening on :80".to_owned()),
                Notify::MainPid(Pid::from_raw(42)),
                Notify::Watchdog,
                Notify::Errno(2),
                Notify::Stopping,
                Notify::Reloading,
                Notify::WatchdogTrigger,
            ]
        );
    }

    #[test]
    fn ignores_unknown_keys_and_junk_lines() {
        assert_eq!(
            parse(b"FDSTORE=1\nX_CUSTOM=yes\nno equals sign\n\nREADY=1").unwrap(),
            [Notify::Ready]
        );
        assert_eq!(parse(b"READY=0").unwrap(), []);
        assert_eq!(parse(b"").unwrap(), []);
        // A status may contain '='.
        assert_eq!(
            parse(b"STATUS=a=b").unwrap(),
            [Notify::Status("a=b".to_owned())]
        );
    }

    #[test]
    fn rejects_garbage_clearly() {
        assert_eq!(parse(b"READY=1\0"), Err(ParseError::Nul));
        assert_eq!(parse(b"STATUS=\xff"), Err(ParseError::NotUtf8));
        let long = vec![b'a'; MAX_MESSAGE + 1];
        assert_eq!(
            parse(&long),
            Err(ParseError::TooLong {
                len: MAX_MESSAGE + 1
            })
        );
        for bad in [
            "MAINPID=0",
            "MAINPID=x",
            "MAINPID=-3",
            "READY=yes",
            "ERRNO=-1",
        ] {
            let err = parse(bad.as_bytes()).unwrap_err();
            assert!(matches!(err, ParseError::InvalidValue { .. }), "{bad}");
        }
        assert_eq!(
            parse(b"MAINPID=abc").unwrap_err().to_string(),
            "notification sets MAINPID to \"abc\", which is not valid for it"
        );
    }

    #[test]
    fn a_real_socket_delivers_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = NotifySocket::bind(&path).unwrap();
        assert_eq!(sock.recv().unwrap(), None);

        // Garbage first: skipped, the valid datagram after it still arrives.
        send(&path, "READY=1\0junk").unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        let got = sock.recv().unwrap().unwrap();
        assert_eq!(got.pid, Pid::this());
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((got.uid, got.gid), (uid, gid));
        assert_eq!(
            got.notifications,
            [Notify::Ready, Notify::Status("up".to_owned())]
        );
        assert_eq!(sock.recv().unwrap(), None);

        // An oversized datagram is rejected, not cut to a prefix that might parse.
        let mut big = b"READY=1\nSTATUS=".to_vec();
        big.resize(MAX_MESSAGE + 100, b'x');
        client.send_to(&big, &path).unwrap();
        assert_eq!(sock.recv().unwrap(), None);

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
    }

    const CLIENT_ENV: &str = "SHOAL_NOTIFY_TEST_SOCKET";

    /// Not a test of its own: the client half of the next test, run in a re-executed copy of
    /// this test binary. Does nothing in a normal run.
    #[test]
    fn notify_client_helper() {
        if let Some(path) = std::env::var_os(CLIENT_ENV) {
            send(Path::new(&path), "READY=1\nSTATUS=from child").unwrap();
        }
    }

    #[test]
    fn credentials_name_a_child_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = NotifySocket::bind(&path).unwrap();
        // A separate process: the pid the kernel reports is the child's, not ours.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "notify::tests::notify_client_helper", "--quiet"])
            .env(CLIENT_ENV, &path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let child_pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        assert!(child.wait().unwrap().success());
        let got = sock.recv().unwrap().unwrap();
        assert_eq!(got.pid, child_pid);
        assert_eq!(
            got.notifications,
            [Notify::Ready, Notify::Status("from child".to_owned())]
        );
    }

    #[test]
    fn rebinding_replaces_a_stale_socket_but_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        drop(NotifySocket::bind(&path).unwrap());
        let sock = NotifySocket::bind(&path).unwrap();
        assert_eq!(sock.path(), path);
        let file = dir.path().join("plain");
        fs::write(&file, "").unwrap();
        let err = NotifySocket::bind(&file).unwrap_err().to_string();
        assert!(err.contains("plain"), "{err}");
    }

    #[test]
    fn cgroup_paths_name_services() {
        assert_eq!(service_of_cgroup_path("/shoal/services/netd"), Some("netd"));
        assert_eq!(
            service_of_cgroup_path("/shoal/services/netd/worker\n"),
            Some("netd")
        );
        assert_eq!(service_of_cgroup_path("/shoal/supervisor"), None);
        assert_eq!(service_of_cgroup_path("/"), None);
        assert_eq!(service_of_cgroup_path("/shoal/services/"), None);

        let proc_root = tempfile::tempdir().unwrap();
        let pid_dir = proc_root.path().join("123");
        fs::create_dir(&pid_dir).unwrap();
        fs::write(
            pid_dir.join("cgroup"),
            "4:memory:/x\n0::/shoal/services/clusterd\n",
        )
        .unwrap();
        assert_eq!(
            cgroup_of(proc_root.path(), Pid::from_raw(123)).as_deref(),
            Some("clusterd")
        );
        assert_eq!(cgroup_of(proc_root.path(), Pid::from_raw(124)), None);
    }
}
