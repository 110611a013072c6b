//! 802.1Q VLANs on the test network without VLAN support in the host kernel (the build hosts
//! have no `8021q` module and bridges without `vlan_filtering`).
//!
//! [`crate::Network::add_vlan`] builds an untagged segment (`br<N>`, `10.77.N.1/24`) and joins it
//! to the tagged world on `br0` through a relay thread:
//!
//! ```text
//!  VMs --tagged-- br0 == trunk<N>-br ~veth~ trunk<N> [relay] access<N> ~veth~ access<N>-br == br<N>
//! ```
//!
//! The relay reads both free veth ends with `AF_PACKET` sockets. A frame from the trunk side
//! with tag `id` goes to the segment without its tag; a frame from the segment goes to the
//! trunk with tag `id` inserted; every other frame is dropped. `br0` floods broadcasts to its
//! `trunk<N>-br` port and forwards unicast for the MACs it learned there, like a switch port
//! configured as a trunk.
//!
//! Two kernel details shape the socket code:
//! - On receive, the core path moves a VLAN tag out of the frame into packet metadata (with or
//!   without the 8021q module), so the relay reads it from `PACKET_AUXDATA`. A tag written into
//!   the data of a sent frame goes out as is.
//! - Frames the host stack sends (dnsmasq's DHCP replies) and frames from a VM's virtio NIC may
//!   carry a checksum the hardware was to fill in (`CHECKSUM_PARTIAL`). Forwarded as plain data
//!   they would arrive with a wrong checksum, so the sockets use `PACKET_VNET_HDR`, which says
//!   where the checksum goes, and the relay computes it.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::net::{Namespace, Segment};
use crate::{Error, Result};

/// The 802.1Q tag protocol identifier (a customer tag).
pub const TPID_8021Q: u16 = 0x8100;
/// The largest VLAN id (4095 is reserved).
pub const MAX_VLAN_ID: u16 = 4094;

/// Destination and source MAC addresses: the tag goes right after them.
const MAC_ADDRS_LEN: usize = 12;
const ETH_HEADER_LEN: usize = 14;
const TAG_LEN: usize = 4;
const VID_MASK: u16 = 0x0fff;

/// `struct virtio_net_hdr`, which `PACKET_VNET_HDR` puts before every frame.
const VNET_HEADER_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// A VNET header, a 64 KiB frame (GSO packets can be that large) and room to notice truncation.
const RECEIVE_BUFFER: usize = VNET_HEADER_LEN + 65536 + 64;
/// How long the relay waits for frames before it checks whether it should stop.
const POLL_INTERVAL_MS: libc::c_int = 100;
/// Frames read from one side before the other side gets its turn.
const BURST: usize = 64;

/// An 802.1Q tag: protocol identifier and tag control information (priority, DEI, VLAN id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    /// A customer tag for VLAN `id`, priority 0.
    pub fn new(id: u16) -> Tag {
        Tag {
            tpid: TPID_8021Q,
            tci: id & VID_MASK,
        }
    }

    /// The VLAN id.
    pub fn vid(self) -> u16 {
        self.tci & VID_MASK
    }
}

/// `frame` with `tag` after the MAC addresses; `None` for a frame too short to be Ethernet.
pub fn insert_tag(frame: &[u8], tag: Tag) -> Option<Vec<u8>> {
    if frame.len() < ETH_HEADER_LEN {
        return None;
    }
    let mut tagged = Vec::with_capacity(frame.len() + TAG_LEN);
    tagged.extend_from_slice(&frame[..MAC_ADDRS_LEN]);
    tagged.extend_from_slice(&tag.tpid.to_be_bytes());
    tagged.extend_from_slice(&tag.tci.to_be_bytes());
    tagged.extend_from_slice(&frame[MAC_ADDRS_LEN..]);
    Some(tagged)
}

/// The 802.1Q tag written in `frame` and the frame without it; `None` when it has none.
pub fn remove_tag(frame: &[u8]) -> Option<(Tag, Vec<u8>)> {
    if frame.len() < ETH_HEADER_LEN + TAG_LEN || ethertype(frame) != Some(TPID_8021Q) {
        return None;
    }
    let tag = Tag {
        tpid: TPID_8021Q,
        tci: u16::from_be_bytes([frame[MAC_ADDRS_LEN + 2], frame[MAC_ADDRS_LEN + 3]]),
    };
    let mut untagged = Vec::with_capacity(frame.len() - TAG_LEN);
    untagged.extend_from_slice(&frame[..MAC_ADDRS_LEN]);
    untagged.extend_from_slice(&frame[MAC_ADDRS_LEN + TAG_LEN..]);
    Some((tag, untagged))
}

/// The type field after the MAC addresses (a tag's TPID when the frame carries one).
fn ethertype(frame: &[u8]) -> Option<u16> {
    let bytes = frame.get(MAC_ADDRS_LEN..MAC_ADDRS_LEN + 2)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// What `PACKET_VNET_HDR` says about a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VnetHeader {
    flags: u8,
    gso_type: u8,
    csum_start: u16,
    csum_offset: u16,
}

/// Splits a received packet into its VNET header and the frame.
fn split_vnet_header(packet: &[u8]) -> Option<(VnetHeader, &[u8])> {
    if packet.len() < VNET_HEADER_LEN {
        return None;
    }
    let (header, frame) = packet.split_at(VNET_HEADER_LEN);
    // The kernel writes the header in native byte order (legacy virtio on a little-endian host).
    let field = |at: usize| u16::from_ne_bytes([header[at], header[at + 1]]);
    Some((
        VnetHeader {
            flags: header[0],
            gso_type: header[1],
            csum_start: field(6),
            csum_offset: field(8),
        },
        frame,
    ))
}

/// The 16-bit ones' complement sum of `data` (big-endian words, an odd last byte padded), folded.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = data
        .chunks(2)
        .map(|word| {
            u64::from(u16::from_be_bytes([
                word[0],
                word.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Does what a NIC does with a `CHECKSUM_PARTIAL` frame: the checksum of everything from
/// `start` on goes to `start + offset`. The field already holds the pseudo-header's sum.
/// `None` when the offsets lie outside the frame.
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> Option<()> {
    let field = start.checked_add(offset)?;
    if start > frame.len() || field.checked_add(2)? > frame.len() {
        return None;
    }
    let checksum = match !ones_complement_sum(&frame[start..]) {
        // UDP reads 0 as "no checksum"; 0xffff is the same value in ones' complement.
        0 => 0xffff,
        checksum => checksum,
    };
    frame[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
    Some(())
}

/// Which veth end a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `br0`'s side, where frames carry tags.
    Trunk,
    /// The segment's side, untagged.
    Access,
}

/// Why a frame was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// Shorter than a VNET header and an Ethernet header.
    Runt,
    /// From the trunk without a tag (plain `br0` traffic).
    Untagged,
    /// From the trunk, tagged for another VLAN.
    OtherVlan,
    /// From the segment, already tagged.
    TaggedOnAccess,
    /// A GSO packet larger than one frame (TCP segmentation offload); the tests send none.
    Segmented,
    /// The checksum offsets point outside the frame.
    BadChecksumOffsets,
}

/// The relay's decision for one packet read from `from` (VNET header and frame) with the tag
/// the kernel took out of it: the frame to send on the other side, or why there is none.
fn relay_frame(
    from: Side,
    id: u16,
    packet: &[u8],
    kernel_tag: Option<Tag>,
) -> Result<Vec<u8>, Dropped> {
    let (vnet, frame) = split_vnet_header(packet).ok_or(Dropped::Runt)?;
    if frame.len() < ETH_HEADER_LEN {
        return Err(Dropped::Runt);
    }
    if vnet.gso_type != VIRTIO_NET_HDR_GSO_NONE {
        return Err(Dropped::Segmented);
    }
    // Decide before copying: most frames on br0 are not for this VLAN.
    match (from, kernel_tag) {
        (Side::Trunk, Some(tag)) if tag.tpid != TPID_8021Q || tag.vid() != id => {
            return Err(Dropped::OtherVlan);
        }
        (Side::Trunk, None) if ethertype(frame) != Some(TPID_8021Q) => {
            return Err(Dropped::Untagged);
        }
        (Side::Access, Some(_)) => return Err(Dropped::TaggedOnAccess),
        (Side::Access, None) if ethertype(frame) == Some(TPID_8021Q) => {
            return Err(Dropped::TaggedOnAccess);
        }
        _ => {}
    }
    // The checksum offsets count from the start of the frame as received, so fill it in first.
    let mut frame = frame.to_vec();
    if vnet.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        complete_checksum(
            &mut frame,
            usize::from(vnet.csum_start),
            usize::from(vnet.csum_offset),
        )
        .ok_or(Dropped::BadChecksumOffsets)?;
    }
    match (from, kernel_tag) {
        // The kernel already took the tag out.
        (Side::Trunk, Some(_)) => Ok(frame),
        // The tag is still in the data (a kernel that does not move it to metadata).
        (Side::Trunk, None) => match remove_tag(&frame) {
            Some((tag, untagged)) if tag.vid() == id => Ok(untagged),
            Some(_) => Err(Dropped::OtherVlan),
            None => Err(Dropped::Untagged),
        },
        (Side::Access, _) => insert_tag(&frame, Tag::new(id)).ok_or(Dropped::Runt),
    }
}

/// How many frames a VLAN relay has passed on, in each direction, and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Tagged frames from `br0` sent untagged to the segment.
    pub to_segment: u64,
    /// Frames from the segment sent tagged to `br0`.
    pub to_trunk: u64,
    /// Frames not relayed: `br0` traffic without this VLAN's tag, and failed sends.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    to_segment: AtomicU64,
    to_trunk: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RelayCounters {
        RelayCounters {
            to_segment: self.to_segment.load(Ordering::Relaxed),
            to_trunk: self.to_trunk.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn relayed(&self, from: Side) {
        let counter = match from {
            Side::Trunk => &self.to_segment,
            Side::Access => &self.to_trunk,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A VLAN on a [`crate::Network`]: frames tagged `id` on `br0` reach the untagged
/// [`Segment`] and back. The relay belongs to the network and stops when it is dropped.
#[derive(Debug, Clone)]
pub struct Vlan {
    pub id: u16,
    pub segment: Segment,
    counters: Arc<Counters>,
}

impl Vlan {
    /// What the relay has done so far (for a failing test's message).
    pub fn counters(&self) -> RelayCounters {
        self.counters.snapshot()
    }
}

/// The relay thread; stops and is joined on drop.
#[derive(Debug)]
pub(crate) struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays VLAN `id` between the free veth ends `trunk` (joined to `br0`) and `access`
    /// (joined to `segment`'s bridge), inside `namespace`.
    pub(crate) fn start(
        namespace: &Namespace,
        id: u16,
        trunk: &str,
        access: &str,
        segment: Segment,
    ) -> Result<(Relay, Vlan)> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let handle = namespace.handle();
        let (trunk, access) = (trunk.to_string(), access.to_string());
        let thread = {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            std::thread::Builder::new()
                .name(format!("shoal-vlan{id}"))
                .spawn(move || {
                    let sockets = crate::net::enter_namespace(&handle).and_then(|()| {
                        let open = |name: &str| {
                            PacketSocket::open(name)
                                .map_err(Error::io(format!("packet socket on {name}")))
                        };
                        Ok((open(&trunk)?, open(&access)?))
                    });
                    match sockets {
                        Ok((trunk, access)) => {
                            let _ = ready_tx.send(Ok(()));
                            run(&trunk, &access, id, &stop, &counters);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(Error::io("spawn the VLAN relay thread"))?
        };
        let relay = Relay {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Io {
                    what: format!("VLAN {id} relay thread"),
                    source: io::Error::other("exited before opening its sockets"),
                });
            }
        }
        let vlan = Vlan {
            id,
            segment,
            counters,
        };
        Ok((relay, vlan))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The relay loop: wait for frames on either side, pass each on or drop it, until `stop`.
fn run(
    trunk: &PacketSocket,
    access: &PacketSocket,
    id: u16,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    while !stop.load(Ordering::Relaxed) {
        let [trunk_ready, access_ready] = match poll_readable([trunk, access]) {
            Ok(ready) => ready,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("VLAN {id} relay: poll failed: {e}");
                return;
            }
        };
        if trunk_ready {
            pump(Side::Trunk, trunk, access, id, &mut buffer, counters);
        }
        if access_ready {
            pump(Side::Access, access, trunk, id, &mut buffer, counters);
        }
    }
}

/// Relays up to [`BURST`] frames waiting on `rx` to `tx`.
fn pump(
    from: Side,
    rx: &PacketSocket,
    tx: &PacketSocket,
    id: u16,
    buffer: &mut [u8],
    counters: &Counters,
) {
    for _ in 0..BURST {
        let received = match rx.receive(buffer) {
            Ok(Some(received)) => received,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("VLAN {id} relay: receive on {} failed: {e}", rx.name);
                return;
            }
        };
        // Our own sends on this end (the socket should not see them, but make sure).
        if received.outgoing {
            continue;
        }
        if received.len > buffer.len() {
            counters.dropped();
            continue;
        }
        match relay_frame(from, id, &buffer[..received.len], received.tag) {
            Ok(frame) => match tx.send(&frame) {
                Ok(()) => counters.relayed(from),
                Err(e) => {
                    tracing::debug!("VLAN {id} relay: send on {} failed: {e}", tx.name);
                    counters.dropped();
                }
            },
            Err(reason) => {
                tracing::trace!("VLAN {id} relay: {from:?} frame dropped: {reason:?}");
                counters.dropped();
            }
        }
    }
}

/// One packet read from a [`PacketSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// The packet's full length (VNET header and frame); more than the buffer when truncated.
    pub(crate) len: usize,
    /// The tag the kernel took out of the frame.
    pub(crate) tag: Option<Tag>,
    /// Sent by this host on the interface, not received on it.
    pub(crate) outgoing: bool,
}

/// A raw `AF_PACKET` socket bound to one interface, with `PACKET_AUXDATA` (the VLAN tag) and
/// `PACKET_VNET_HDR` (checksum offsets) on, non-blocking. Must be opened by a thread inside the
/// interface's namespace.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    name: String,
}

impl PacketSocket {
    pub(crate) fn open(interface: &str) -> io::Result<PacketSocket> {
        let c_name = CString::new(interface).map_err(io::Error::other)?;
        // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        // Protocol 0: the socket receives nothing until it is bound to the interface below,
        // so no frame from another interface gets queued in between.
        // SAFETY: a plain system call with constant arguments; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns or closes.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let socket = PacketSocket {
            fd,
            name: interface.to_string(),
        };
        socket.set_option(libc::PACKET_AUXDATA, 1)?;
        socket.set_option(libc::PACKET_VNET_HDR, 1)?;
        // Linux 4.20 and later; `outgoing` in `Received` covers older kernels.
        if let Err(e) = socket.set_option(libc::PACKET_IGNORE_OUTGOING, 1) {
            tracing::debug!("PACKET_IGNORE_OUTGOING on {interface}: {e}");
        }
        // SAFETY: all-zero bytes are a valid `sockaddr_ll` (integers and a byte array).
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as libc::c_ushort;
        address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        address.sll_ifindex = index as libc::c_int;
        // SAFETY: `address` is a live `sockaddr_ll` and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    fn set_option(&self, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` is a live `c_int` and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reads one packet (VNET header and frame) into `buffer`; `None` when none is waiting.
    pub(crate) fn receive(&self, buffer: &mut [u8]) -> io::Result<Option<Received>> {
        // SAFETY: all-zero bytes are a valid `sockaddr_ll`.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        // u64s: cmsghdr alignment. Room for the auxdata message and more.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: all-zero bytes are a valid `msghdr` (null pointers, zero lengths).
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_name = (&raw mut address).cast();
        message.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = size_of_val(&control);
        // SAFETY: every pointer in `message` refers to a live local (`address`, `iov` and the
        // `buffer` it describes, `control`) of the length given, for the whole call.
        // MSG_TRUNC: the return value is the packet's real length, so truncation shows.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut message, libc::MSG_TRUNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let mut tag = None;
        // SAFETY: `message` was filled in by recvmsg and its control buffer is still alive.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const message) };
        while !cmsg.is_null() {
            // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return null or a header that lies wholly
            // inside `control`.
            let header = unsafe { &*cmsg };
            let wanted = size_of::<libc::tpacket_auxdata>() as libc::c_uint;
            // SAFETY: CMSG_LEN only computes a length.
            let needed = unsafe { libc::CMSG_LEN(wanted) } as usize;
            if header.cmsg_level == libc::SOL_PACKET
                && header.cmsg_type == libc::PACKET_AUXDATA
                && header.cmsg_len >= needed
            {
                // SAFETY: the message is a PACKET_AUXDATA one whose length covers a
                // `tpacket_auxdata` after the header; the data need not be aligned for it.
                let aux = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>())
                };
                tag = tag_from_auxdata(&aux);
            }
            // SAFETY: `cmsg` is a header inside `message`'s control buffer.
            cmsg = unsafe { libc::CMSG_NXTHDR(&raw const message, cmsg) };
        }
        Ok(Some(Received {
            len: n as usize,
            tag,
            outgoing: address.sll_pkttype == libc::PACKET_OUTGOING,
        }))
    }

    /// Sends `frame` (written as is, a tag in it included) out of the interface.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        // An all-zero VNET header: the checksums are complete, no segmentation.
        let mut packet = Vec::with_capacity(VNET_HEADER_LEN + frame.len());
        packet.extend_from_slice(&[0; VNET_HEADER_LEN]);
        packet.extend_from_slice(frame);
        // SAFETY: the pointer and length describe `packet`, which outlives the call; the
        // socket is bound, so the kernel knows the interface.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn tag_from_auxdata(aux: &libc::tpacket_auxdata) -> Option<Tag> {
    if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        aux.tp_vlan_tpid
    } else {
        TPID_8021Q
    };
    Some(Tag {
        tpid,
        tci: aux.tp_vlan_tci,
    })
}

/// Waits up to [`POLL_INTERVAL_MS`] for either socket to become readable.
fn poll_readable(sockets: [&PacketSocket; 2]) -> io::Result<[bool; 2]> {
    let mut fds = sockets.map(|s| libc::pollfd {
        fd: s.fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `fds` is a live array of `pollfd` and its length is passed with it.
    let rc = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            POLL_INTERVAL_MS,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let ready = |fd: &libc::pollfd| fd.revents & (libc::POLLIN | libc::POLLERR) != 0;
    Ok([ready(&fds[0]), ready(&fds[1])])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: [u8; 6] = [0xff; 6];
    const SRC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x01];

    fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&DST);
        frame.extend_from_slice(&SRC);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn tagged(tci: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&DST);
        frame.extend_from_slice(&SRC);
        frame.extend_from_slice(&TPID_8021Q.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// `frame` behind a VNET header.
    fn packet(header: [u8; VNET_HEADER_LEN], frame: &[u8]) -> Vec<u8> {
        let mut packet = header.to_vec();
        packet.extend_from_slice(frame);
        packet
    }

    fn plain(frame: &[u8]) -> Vec<u8> {
        packet([0; VNET_HEADER_LEN], frame)
    }

    #[test]
    fn a_tag_goes_after_the_mac_addresses() {
        let untagged = frame(0x0800, b"payload");
        let with_tag = insert_tag(&untagged, Tag::new(10)).unwrap();
        assert_eq!(with_tag, tagged(10, 0x0800, b"payload"));
        assert_eq!(remove_tag(&with_tag), Some((Tag::new(10), untagged)));
    }

    #[test]
    fn the_vlan_id_is_the_low_twelve_bits() {
        let tag = Tag {
            tpid: TPID_8021Q,
            tci: 0xe00a,
        };
        assert_eq!(tag.vid(), 10);
        assert_eq!(Tag::new(0x100a).tci, 0x000a);
        let (removed, _) = remove_tag(&tagged(0xe00a, 0x0806, b"x")).unwrap();
        assert_eq!(removed, tag);
    }

    #[test]
    fn frames_without_a_tag_or_too_short_have_none_to_remove() {
        assert_eq!(remove_tag(&frame(0x0800, b"payload")), None);
        assert_eq!(remove_tag(&tagged(10, 0x0800, b"")[..16]), None);
        assert_eq!(insert_tag(&frame(0x0800, b"")[..13], Tag::new(10)), None);
        assert!(insert_tag(&frame(0x0800, b""), Tag::new(10)).is_some());
    }

    #[test]
    fn from_the_trunk_only_this_vlan_passes_untagged() {
        let untagged = frame(0x0806, b"arp");
        // The kernel moved the tag into metadata: the data is already untagged.
        assert_eq!(
            relay_frame(Side::Trunk, 10, &plain(&untagged), Some(Tag::new(10))),
            Ok(untagged.clone())
        );
        // The priority bits do not matter.
        let prio = Tag {
            tpid: TPID_8021Q,
            tci: 0xa00a,
        };
        assert_eq!(
            relay_frame(Side::Trunk, 10, &plain(&untagged), Some(prio)),
            Ok(untagged.clone())
        );
        // The tag still in the data.
        assert_eq!(
            relay_frame(Side::Trunk, 10, &plain(&tagged(10, 0x0806, b"arp")), None),
            Ok(untagged.clone())
        );
        assert_eq!(
            relay_frame(Side::Trunk, 10, &plain(&untagged), Some(Tag::new(11))),
            Err(Dropped::OtherVlan)
        );
        assert_eq!(
            relay_frame(Side::Trunk, 10, &plain(&tagged(11, 0x0806, b"arp")), None),
            Err(Dropped::OtherVlan)
        );
        assert_eq!(
            relay_frame(Side::Trunk, 10, &plain(&untagged), None),
            Err(Dropped::Untagged)
        );
        // An 802.1ad service tag is not ours.
        let service = Tag {
            tpid: 0x88a8,
            tci: 10,
        };
        assert_eq!(
            relay_frame(Side::Trunk, 10, &plain(&untagged), Some(service)),
            Err(Dropped::OtherVlan)
        );
    }

    #[test]
    fn from_the_segment_frames_get_the_tag() {
        let untagged = frame(0x0800, b"ip");
        assert_eq!(
            relay_frame(Side::Access, 10, &plain(&untagged), None),
            Ok(tagged(10, 0x0800, b"ip"))
        );
        assert_eq!(
            relay_frame(Side::Access, 10, &plain(&untagged), Some(Tag::new(10))),
            Err(Dropped::TaggedOnAccess)
        );
        assert_eq!(
            relay_frame(Side::Access, 10, &plain(&tagged(10, 0x0800, b"ip")), None),
            Err(Dropped::TaggedOnAccess)
        );
    }

    #[test]
    fn runts_and_segmentation_offload_packets_are_dropped() {
        assert_eq!(
            relay_frame(Side::Access, 10, &[0; 5], None),
            Err(Dropped::Runt)
        );
        assert_eq!(
            relay_frame(Side::Access, 10, &plain(&[0; 13]), None),
            Err(Dropped::Runt)
        );
        let mut gso = [0; VNET_HEADER_LEN];
        gso[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
        assert_eq!(
            relay_frame(Side::Access, 10, &packet(gso, &frame(0x0800, b"ip")), None),
            Err(Dropped::Segmented)
        );
    }

    /// An Ethernet/IPv4/UDP frame from 10.77.10.1:67 to 10.77.10.100:68 and where its UDP
    /// checksum field is.
    fn udp_frame(payload: &[u8]) -> (Vec<u8>, usize) {
        let udp_len = 8 + payload.len() as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&[10, 77, 10, 1, 10, 77, 10, 100]);
        let ip_checksum = !ones_complement_sum(&ip);
        ip[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
        let mut body = ip;
        body.extend_from_slice(&67u16.to_be_bytes());
        body.extend_from_slice(&68u16.to_be_bytes());
        body.extend_from_slice(&udp_len.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(payload);
        (frame(0x0800, &body), ETH_HEADER_LEN + 20 + 6)
    }

    /// The UDP checksum computed from scratch, pseudo-header included.
    fn udp_checksum(frame: &[u8]) -> u16 {
        let ip = &frame[ETH_HEADER_LEN..];
        let udp = &ip[20..];
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        let mut zeroed = udp.to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        pseudo.extend_from_slice(&zeroed);
        !ones_complement_sum(&pseudo)
    }

    /// What the kernel leaves in a `CHECKSUM_PARTIAL` UDP frame: the pseudo-header's sum in
    /// the checksum field, and the offsets in the VNET header.
    fn partial(frame: &[u8], field: usize) -> Vec<u8> {
        let ip = &frame[ETH_HEADER_LEN..];
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&((ip.len() - 20) as u16).to_be_bytes());
        let mut frame = frame.to_vec();
        frame[field..field + 2].copy_from_slice(&ones_complement_sum(&pseudo).to_be_bytes());
        let mut header = [0; VNET_HEADER_LEN];
        header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        header[6..8].copy_from_slice(&((ETH_HEADER_LEN + 20) as u16).to_ne_bytes());
        header[8..10].copy_from_slice(&6u16.to_ne_bytes());
        packet(header, &frame)
    }

    #[test]
    fn partial_checksums_are_completed_before_relaying() {
        for payload in [&b"dhcp offer"[..], b"odd length", b"odd lengths"] {
            let (frame, field) = udp_frame(payload);
            let want = udp_checksum(&frame);
            let out = relay_frame(Side::Access, 10, &partial(&frame, field), None).unwrap();
            // Tagged: everything after the MACs moved by 4 bytes.
            let got = u16::from_be_bytes([out[field + TAG_LEN], out[field + TAG_LEN + 1]]);
            assert_eq!(got, want, "payload {payload:?}");
            let (_, untagged) = remove_tag(&out).unwrap();
            assert_eq!(udp_checksum(&untagged), got);

            let back =
                relay_frame(Side::Trunk, 10, &partial(&frame, field), Some(Tag::new(10))).unwrap();
            assert_eq!(u16::from_be_bytes([back[field], back[field + 1]]), want);
        }
    }

    #[test]
    fn checksum_offsets_outside_the_frame_drop_it() {
        let (frame, _) = udp_frame(b"x");
        let mut header = [0; VNET_HEADER_LEN];
        header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        header[6..8].copy_from_slice(&(frame.len() as u16).to_ne_bytes());
        header[8..10].copy_from_slice(&6u16.to_ne_bytes());
        assert_eq!(
            relay_frame(Side::Access, 10, &packet(header, &frame), None),
            Err(Dropped::BadChecksumOffsets)
        );
    }

    #[test]
    fn a_checksum_of_zero_is_sent_as_all_ones() {
        // Data summing to 0xffff: the complement is 0, which UDP would read as "none".
        let mut data = vec![0xff, 0xff, 0, 0];
        complete_checksum(&mut data, 0, 2).unwrap();
        assert_eq!(data, [0xff, 0xff, 0xff, 0xff]);
    }

    /// An ARP request for `target` from `mac`/`sender`, tagged `vid`.
    fn arp_request(mac: [u8; 6], sender: [u8; 4], target: [u8; 4], vid: u16) -> Vec<u8> {
        let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        arp.extend_from_slice(&mac);
        arp.extend_from_slice(&sender);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&target);
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&0x0806u16.to_be_bytes());
        frame.extend_from_slice(&arp);
        frame.resize(60, 0);
        insert_tag(&frame, Tag::new(vid)).unwrap()
    }

    /// The whole path on the host, without a VM: a port on br0 sends a tagged ARP request for
    /// the segment's address and gets a tagged answer from the segment's bridge; a request on
    /// another VLAN stays on br0. Needs root (skipped without), like the VM tests.
    #[test]
    fn a_tagged_arp_request_on_br0_is_answered_from_the_segment() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        let mut network = crate::Network::new().unwrap();
        let vlan = network.add_vlan(10, 10).unwrap();
        let ip = |args: &[&str]| {
            let status = network.command("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}: {status}");
        };
        ip(&[
            "link", "add", "name", "probe", "type", "veth", "peer", "name", "probe-br",
        ]);
        ip(&["link", "set", "probe-br", "master", "br0"]);
        ip(&["link", "set", "probe-br", "up"]);
        ip(&["link", "set", "probe", "up"]);
        // This test's own thread: the rest of the test process stays where it is.
        crate::net::enter_namespace(&network.namespace().handle()).unwrap();
        let probe = PacketSocket::open("probe").unwrap();

        let mac = [0x02, 0, 0, 0, 0x10, 0x01];
        let (sender, target) = ([10, 77, 10, 50], [10, 77, 10, 1]);
        probe.send(&arp_request(mac, sender, target, 11)).unwrap();
        probe.send(&arp_request(mac, sender, target, 10)).unwrap();

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut buffer = vec![0; RECEIVE_BUFFER];
        let reply = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no ARP reply; relay: {:?}",
                vlan.counters()
            );
            let Some(received) = probe.receive(&mut buffer).unwrap() else {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            };
            let (_, frame) = split_vnet_header(&buffer[..received.len]).unwrap();
            // An ARP reply (operation 2) from the target's address.
            if !received.outgoing
                && ethertype(frame) == Some(0x0806)
                && frame[20..22] == [0, 2]
                && frame[28..32] == target
            {
                break (received.tag, frame.to_vec());
            }
        };
        assert_eq!(reply.0.map(Tag::vid), Some(10), "reply: {reply:?}");
        assert_eq!(reply.1[..6], mac, "reply to our MAC");
        // The relay counts a frame after sending it, so the reply can arrive before its count.
        let counted = |c: &RelayCounters| c.to_segment == 1 && c.to_trunk >= 1 && c.dropped >= 1;
        let mut counters = vlan.counters();
        while !counted(&counters) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            counters = vlan.counters();
        }
        assert!(counted(&counters), "{counters:?}");
    }
}
