//! Notices the network changing, so that a source that failed because the network was not up
//! yet is tried again at once rather than at the next retry: a NETLINK_ROUTE socket subscribed
//! to address and route changes (IPv4 and IPv6). Whatever changed, it is worth another try, so
//! messages are drained, never parsed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};

/// Addresses and routes, IPv4 and IPv6: what makes an unreachable source reachable.
const GROUPS: u32 = (nix::libc::RTMGRP_IPV4_IFADDR
    | nix::libc::RTMGRP_IPV6_IFADDR
    | nix::libc::RTMGRP_IPV4_ROUTE
    | nix::libc::RTMGRP_IPV6_ROUTE) as u32;

/// A subscription to the kernel's address and route changes (in this thread's network
/// namespace).
#[derive(Debug)]
pub struct NetWatch {
    fd: OwnedFd,
}

impl NetWatch {
    /// Opens the socket (non-blocking, close-on-exec) and joins the groups.
    pub fn open() -> io::Result<NetWatch> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
        Ok(NetWatch { fd })
    }

    /// Waits up to `timeout` for a change. Says whether there was one; every message pending
    /// is read first, so that one burst (an address, then its routes) wakes the caller once.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Rounded up: a timeout under a millisecond would otherwise spin.
            let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) => return false,
                Ok(_) => return self.drain(),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // Never on a good socket; sleep rather than have the caller spin.
                    tracing::debug!("polling the netlink socket: {e}");
                    std::thread::sleep(left);
                    return false;
                }
            }
        }
    }

    /// Reads every pending message; says whether there was any.
    fn drain(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut changed = false;
        loop {
            // A message longer than the buffer is cut short, which is fine: it is not read.
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => changed = true,
                Err(Errno::EINTR) => {}
                // The socket overran: messages were lost, so something changed.
                Err(Errno::ENOBUFS) => changed = true,
                Err(_) => return changed,
            }
        }
    }
}

/// Runs `test` on a thread of its own in a new, empty network namespace (only `lo`, down),
/// which goes away with the thread and whatever it opened there. Needs root.
#[cfg(test)]
pub(crate) fn in_new_namespace<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        test()
    })
    .join()
    .unwrap()
}

/// Brings `lo` up in the calling thread's namespace (a child inherits it): 127.0.0.1 and ::1
/// and their routes appear. Needs root.
#[cfg(test)]
pub(crate) fn bring_lo_up() {
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(status.success(), "ip link set lo up: {status}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn an_address_coming_up_wakes_it_at_once() {
        if !is_root() {
            eprintln!("SKIPPED: needs root for a network namespace");
            return;
        }
        let woke_after = in_new_namespace(|| {
            let watch = NetWatch::open().unwrap();
            bring_lo_up();
            let started = Instant::now();
            assert!(watch.wait(Duration::from_secs(10)), "no change seen");
            let woke_after = started.elapsed();
            // All of it was drained: nothing more is pending.
            assert!(!watch.wait(Duration::ZERO), "messages left after a drain");
            woke_after
        });
        assert!(woke_after < Duration::from_secs(1), "{woke_after:?}");
    }

    #[test]
    fn without_a_change_it_waits_the_whole_timeout() {
        if !is_root() {
            eprintln!("SKIPPED: needs root for a network namespace");
            return;
        }
        let waited = in_new_namespace(|| {
            let watch = NetWatch::open().unwrap();
            let started = Instant::now();
            assert!(!watch.wait(Duration::from_millis(200)));
            started.elapsed()
        });
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
    }
}
