//! The thin layer that touches the real system: mounts, module loading, loop devices, the
//! loopback link, the uevent socket and power. Everything that decides something lives in the
//! pure modules; these functions only carry decisions out and report errors with context.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt, socket,
    sockopt,
};

use crate::coldplug::Loader;
use crate::mounts::Mount;

/// Adds what went wrong to an I/O error: `"{what}: {error}"`.
pub fn context(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Mounts one filesystem, creating its mount point if needed.
pub fn mount_one(m: &Mount) -> io::Result<()> {
    if let Err(e) = fs::create_dir_all(m.target) {
        // A read-only root must already have the mount point; mount(2) says so if not.
        tracing::debug!(target = m.target, error = %e, "cannot create mount point");
    }
    let data = (!m.data.is_empty()).then_some(m.data);
    let mut result = mount(Some(m.source), m.target, Some(m.fstype), m.flags, data);
    if result == Err(nix::Error::EINVAL)
        && let Some(known) = crate::mounts::without_optional_options(m.data)
    {
        tracing::info!(
            target = m.target,
            "the kernel refused options {:?}; mounting with {known:?}",
            m.data
        );
        let data = (!known.is_empty()).then_some(known.as_str());
        result = mount(Some(m.source), m.target, Some(m.fstype), m.flags, data);
    }
    result.map_err(nix_io).map_err(context(format_args!(
        "mounting {} ({}) on {}",
        m.source, m.fstype, m.target
    )))
}

/// Makes sure fds 0, 1 and 2 are open on the console: the kernel leaves them closed when the
/// initramfs has no `/dev/console`.
pub fn ensure_console_fds() {
    // SAFETY: fcntl(F_GETFD) only queries a descriptor number; it has no memory effects.
    let closed = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1;
    if !(closed(0) || closed(1) || closed(2)) {
        return;
    }
    let Ok(console) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        if closed(fd) {
            // SAFETY: dup2 onto a closed standard descriptor; `console` stays open meanwhile.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

/// Loads modules with `finit_module(2)`.
#[derive(Debug, Default)]
pub struct FinitLoader;

impl Loader for FinitLoader {
    fn load(&self, _name: &str, path: &Path, params: &str) -> io::Result<()> {
        let file = File::open(path).map_err(context(path.display()))?;
        let params =
            CString::new(params).map_err(|_| io::Error::other("module parameters contain NUL"))?;
        match finit_module(&file, &params, ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(nix_io(e)),
        }
    }
}

// Loop device interface from <linux/loop.h>.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` read-only to a free loop device and returns the device's path and an open
/// handle on it. The device detaches itself when its last user goes, so the caller keeps the
/// handle until the device is mounted.
pub fn attach_loop(image: &Path) -> io::Result<(PathBuf, File)> {
    let file = File::open(image).map_err(context(image.display()))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(context("/dev/loop-control (is the loop module loaded?)"))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
    let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if number < 0 {
        return Err(context("LOOP_CTL_GET_FREE")(io::Error::last_os_error()));
    }
    let device = PathBuf::from(format!("/dev/loop{number}"));
    // devtmpfs creates the node asynchronously; give it a moment.
    let loop_dev = wait_for(Duration::from_secs(2), || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&device)
            .ok()
    })
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} did not appear", device.display()),
        )
    })?;

    let mut name = [0u8; 64];
    let path_bytes = image.as_os_str().as_encoded_bytes();
    let n = path_bytes.len().min(63);
    name[..n].copy_from_slice(&path_bytes[..n]);
    let config = LoopConfig {
        fd: file.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            lo_file_name: name,
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a fully initialised `struct loop_config` that outlives the call; the
    // kernel only reads it.
    let rc = unsafe {
        libc::ioctl(
            loop_dev.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if rc < 0 {
        return Err(context(format_args!(
            "attaching {} to {}",
            image.display(),
            device.display()
        ))(io::Error::last_os_error()));
    }
    Ok((device, loop_dev))
}

/// Polls `f` every 10 ms until it returns something or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Brings `lo` up; the kernel then gives it 127.0.0.1/8 and ::1 by itself.
pub fn loopback_up() -> io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_io)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills `req.ifr_ifru.ifru_flags` of a valid, named ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(context("SIOCGIFFLAGS lo")(io::Error::last_os_error()));
    }
    // SAFETY: the union member written by SIOCGIFFLAGS is `ifru_flags`.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the same valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(context("SIOCSIFFLAGS lo")(io::Error::last_os_error()));
    }
    Ok(())
}

/// The kernel's device event socket.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(nix_io)
        .map_err(context("uevent socket"))?;
        // A burst of hotplug events must not overflow the socket; the force variant ignores
        // rmem_max, which PID 1 may do.
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &(4 << 20));
        // Group 1 is the kernel's broadcast group (udev daemons use group 2).
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))
            .map_err(nix_io)
            .map_err(context("binding uevent socket"))?;
        Ok(Self { fd })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Reads every pending message.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        self.drain_reporting_overrun().0
    }

    /// Reads every pending message, and says whether the socket overran (messages were lost).
    pub fn drain_reporting_overrun(&self) -> (Vec<Vec<u8>>, bool) {
        let mut overran = false;
        let mut messages = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match recv(
                self.fd.as_raw_fd(),
                &mut buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(n) => messages.push(buf[..n].to_vec()),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::ENOBUFS) => {
                    tracing::warn!("uevent socket overran; some hotplug events were lost");
                    overran = true;
                    continue;
                }
                Err(_) => break,
            }
        }
        (messages, overran)
    }
}

/// Whether `/` is still the initramfs (ramfs or tmpfs).
pub fn root_is_initramfs() -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    nix::sys::statfs::statfs("/")
        .map(|s| {
            let t = s.filesystem_type().0;
            t == RAMFS_MAGIC || t == TMPFS_MAGIC
        })
        .unwrap_or(false)
}

/// Deletes everything under `dir` that lives on the same filesystem, except `keep`. Used to
/// free the initramfs' memory before leaving it.
pub fn delete_same_fs(dir: &Path, keep: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    let dev = meta.dev();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        if m.dev() != dev {
            continue; // a mount point
        }
        if m.is_dir() {
            delete_same_fs(&path, keep);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// 16 random bytes from the kernel (never blocks: early boot may lack entropy, and an id that
/// is merely unpredictable enough is fine here).
pub fn random16() -> [u8; 16] {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf
}

/// Moves a mount to a new place (`mount --move`).
pub fn move_mount(from: &str, to: &Path) -> io::Result<()> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(nix_io)
        .map_err(context(format_args!("moving {from} to {}", to.display())))
}

/// One device-mapper ioctl on `control` with the buffer `buf` (a `struct dm_ioctl` and its
/// data), which the kernel may overwrite with its answer.
fn dm_ioctl(control: &File, request: u64, buf: &mut [u8], what: &str) -> io::Result<()> {
    // SAFETY: `buf` starts with a `struct dm_ioctl` whose `data_size` is `buf.len()`, so the
    // kernel reads and writes only inside it; it stays borrowed for the whole call.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), request as _, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(context(what)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Creates the read-only device-mapper device `name` with one `target` of `sectors` and
/// `params`, activates it and returns its node (`/dev/dm-N`). On failure nothing is left behind.
pub fn dm_create(name: &str, target: &str, sectors: u64, params: &str) -> io::Result<PathBuf> {
    use crate::verity;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/mapper/control")
        .map_err(context("/dev/mapper/control (is dm_mod loaded?)"))?;
    dm_ioctl(
        &control,
        verity::DM_DEV_CREATE,
        &mut verity::dm_simple(name, 0),
        &format!("creating device-mapper device {name}"),
    )?;
    let activate = || -> io::Result<PathBuf> {
        let mut load =
            verity::dm_table_load(name, target, sectors, params, verity::DM_READONLY_FLAG);
        dm_ioctl(
            &control,
            verity::DM_TABLE_LOAD,
            &mut load,
            &format!("loading the {target} table ({params})"),
        )?;
        let mut resume = verity::dm_simple(name, 0);
        dm_ioctl(
            &control,
            verity::DM_DEV_SUSPEND,
            &mut resume,
            &format!("activating {name}"),
        )?;
        let (_, minor) = verity::dm_answer_dev(&resume)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let node = PathBuf::from(format!("/dev/dm-{minor}"));
        wait_for(Duration::from_secs(2), || node.exists().then_some(())).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} did not appear", node.display()),
            )
        })?;
        Ok(node)
    };
    activate().inspect_err(|_| {
        let _ = dm_ioctl(
            &control,
            verity::DM_DEV_REMOVE,
            &mut verity::dm_simple(name, 0),
            "removing",
        );
    })
}

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

/// Tells the kernel that partition `number` of the open whole `disk` now spans `start..+length`
/// bytes (the start is unchanged), without re-reading the table while partitions are in use.
pub fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at `part`, both fully initialised and alive for the call; the kernel
    // only reads them.
    if unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &arg) } < 0 {
        return Err(context(format_args!("resizing partition {number}"))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `_IOW('f', 16, __u64)`.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Grows the mounted ext4 filesystem at `mountpoint` to `blocks` of its block size, online.
pub fn ext4_grow(mountpoint: &Path, blocks: u64) -> io::Result<()> {
    let dir = File::open(mountpoint).map_err(context(mountpoint.display()))?;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 that lives for the call.
    if unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &blocks) } < 0 {
        return Err(context(format_args!(
            "growing the filesystem on {} to {blocks} blocks",
            mountpoint.display()
        ))(io::Error::last_os_error()));
    }
    Ok(())
}

/// An open watchdog device. Dropping it without the magic close leaves it running: the machine
/// is reset unless someone feeds it, which is the point.
#[derive(Debug)]
pub struct Watchdog {
    file: File,
}

/// `_IOR('W', 0, struct watchdog_info)`, `_IOR('W', 5, int)`, `_IOWR('W', 6, int)`.
const WDIOC_GETSUPPORT: libc::c_ulong = 0x8028_5700;
const WDIOC_KEEPALIVE: libc::c_ulong = 0x8004_5705;
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xc004_5706;

impl Watchdog {
    /// Opens `path` (opening starts the timer), sets `timeout` and returns the device with the
    /// driver's identity and the timeout it accepted.
    pub fn open(path: &Path, timeout: Duration) -> io::Result<(Watchdog, String, u32)> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(context(path.display()))?;
        let mut info = [0u8; 40];
        // SAFETY: WDIOC_GETSUPPORT fills a 40-byte struct watchdog_info; `info` is that size.
        let identity =
            if unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_GETSUPPORT as _, info.as_mut_ptr()) }
                == 0
            {
                let name = &info[8..40];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                String::from_utf8_lossy(&name[..end]).into_owned()
            } else {
                String::new()
            };
        let mut seconds: libc::c_int = timeout.as_secs().try_into().unwrap_or(libc::c_int::MAX);
        // SAFETY: WDIOC_SETTIMEOUT reads and writes back one int that lives for the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_SETTIMEOUT as _, &mut seconds) } < 0 {
            return Err(context(format_args!(
                "setting a {}-second timeout on {}",
                timeout.as_secs(),
                path.display()
            ))(io::Error::last_os_error()));
        }
        let watchdog = Watchdog { file };
        watchdog.feed();
        Ok((watchdog, identity, seconds.max(0) as u32))
    }

    /// Restarts the timer.
    pub fn feed(&self) {
        let mut dummy: libc::c_int = 0;
        // SAFETY: WDIOC_KEEPALIVE takes (and ignores) an int pointer that lives for the call.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_KEEPALIVE as _, &mut dummy) } < 0 {
            tracing::warn!("feeding the watchdog: {}", io::Error::last_os_error());
        }
    }
}
