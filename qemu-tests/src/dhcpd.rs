//! A small DHCPv4 server for what dnsmasq will not do: leases shorter than its two-minute
//! minimum, so a test can watch a lease run out in seconds. It gives each client MAC one
//! address from a range and answers DISCOVER with OFFER and REQUEST (selecting, renewing or
//! rebinding) with ACK; every request it hears is logged with the address it was sent to, so a
//! test can tell a unicast renewal from a broadcast rebind. It can be made deaf: it keeps
//! logging and answers nothing, as a server that went away.
//!
//! It encodes with netd's own codec (`shoal_netd::dhcp::packet`). Interoperability with a real
//! server is what the dnsmasq tests show; this one is about timing.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt,
    sockopt::{BindToDevice, Broadcast, Ipv4PacketInfo, ReuseAddr},
};
use shoal_netd::dhcp::packet::{CLIENT_PORT, Message, MessageType, Op, Options, SERVER_PORT};

use crate::net::{HOST_ADDR, Namespace};
use crate::{Error, Result};

/// What the server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The bridge it serves.
    pub interface: String,
    /// Its own address (option 54), which must be on `interface`.
    pub server: Ipv4Addr,
    /// The first address handed out; each new client MAC gets the next one.
    pub first: Ipv4Addr,
    /// Option 51, 58 and 59, in seconds.
    pub lease_secs: u32,
    pub renewal_secs: u32,
    pub rebinding_secs: u32,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
}

impl LeaseConfig {
    /// Short leases on the harness bridge: `lease_secs`, renewed at a quarter and rebound at
    /// half of it, the harness host as router and server.
    pub fn short(lease_secs: u32) -> LeaseConfig {
        let [a, b, c, _] = HOST_ADDR.octets();
        LeaseConfig {
            interface: "br0".into(),
            server: HOST_ADDR,
            first: Ipv4Addr::new(a, b, c, 100),
            lease_secs,
            renewal_secs: lease_secs / 4,
            rebinding_secs: lease_secs / 2,
            router: Some(HOST_ADDR),
            dns: Vec::new(),
        }
    }
}

/// One request the server heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// When, on the host's monotonic clock.
    pub at: Instant,
    pub kind: MessageType,
    pub chaddr: [u8; 6],
    /// The client's address field (set when renewing or rebinding).
    pub ciaddr: Ipv4Addr,
    /// Where the datagram was sent: the server's address (unicast) or 255.255.255.255.
    pub to: Ipv4Addr,
    /// Whether the server answered it.
    pub answered: bool,
}

/// A running server; stops on drop.
#[derive(Debug)]
pub struct DhcpServer {
    stop: Arc<AtomicBool>,
    deaf: Arc<AtomicBool>,
    heard: Arc<Mutex<Vec<Heard>>>,
    thread: Option<JoinHandle<()>>,
}

impl DhcpServer {
    pub(crate) fn start(namespace: &Namespace, config: LeaseConfig) -> Result<DhcpServer> {
        let handle = namespace.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let deaf = Arc::new(AtomicBool::new(false));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (s, d, h) = (stop.clone(), deaf.clone(), heard.clone());
        let thread = std::thread::Builder::new()
            .name("shoal-dhcpd".into())
            .spawn(move || {
                let socket = match crate::net::enter_namespace(&handle)
                    .and_then(|()| bind(&config.interface))
                {
                    Ok(socket) => {
                        let _ = ready_tx.send(Ok(()));
                        socket
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(&socket, &config, &s, &d, &h);
            })
            .map_err(Error::io("spawn the DHCP server thread"))?;
        ready_rx.recv().map_err(|_| Error::Io {
            what: "start the DHCP server".into(),
            source: std::io::Error::other("its thread ended"),
        })??;
        Ok(DhcpServer {
            stop,
            deaf,
            heard,
            thread: Some(thread),
        })
    }

    /// Stops answering (it still logs what it hears): the server has gone away.
    pub fn go_deaf(&self) {
        self.deaf.store(true, Ordering::Relaxed);
    }

    /// Every request heard so far, oldest first.
    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket on port 67 of `interface` that may broadcast and reports each datagram's
/// destination address.
fn bind(interface: &str) -> Result<UdpSocket> {
    let socket = reusable_socket()?;
    let sockopt = |what: &str, r: nix::Result<()>| {
        r.map_err(|e| Error::Io {
            what: format!("{what} on the DHCP server's socket"),
            source: e.into(),
        })
    };
    sockopt(
        "SO_BINDTODEVICE",
        setsockopt(&socket, BindToDevice, &interface.into()),
    )?;
    sockopt("SO_BROADCAST", setsockopt(&socket, Broadcast, &true))?;
    sockopt("IP_PKTINFO", setsockopt(&socket, Ipv4PacketInfo, &true))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(Error::io("set the DHCP server's read timeout"))?;
    Ok(socket)
}

/// Binds 0.0.0.0:67 with SO_REUSEADDR set first (a dnsmasq stopped moments ago may leave the
/// port in use for an instant).
fn reusable_socket() -> Result<UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::Io {
        what: "create the DHCP server's socket".into(),
        source: e.into(),
    })?;
    setsockopt(&fd, ReuseAddr, &true).map_err(|e| Error::Io {
        what: "SO_REUSEADDR on the DHCP server's socket".into(),
        source: e.into(),
    })?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT));
    nix::sys::socket::bind(fd.as_raw_fd(), &addr).map_err(|e| Error::Io {
        what: format!("bind the DHCP server to port {SERVER_PORT}"),
        source: e.into(),
    })?;
    Ok(UdpSocket::from(fd))
}

fn serve(
    socket: &UdpSocket,
    config: &LeaseConfig,
    stop: &AtomicBool,
    deaf: &AtomicBool,
    heard: &Mutex<Vec<Heard>>,
) {
    let mut leases: BTreeMap<[u8; 6], Ipv4Addr> = BTreeMap::new();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Some((len, to)) = receive(socket, &mut buf) else {
            continue;
        };
        let Ok(request) = Message::decode(&buf[..len]) else {
            continue;
        };
        let Some(kind) = request.options.message_type else {
            continue;
        };
        if request.op != Op::Request {
            continue;
        }
        let next = u32::from(config.first) + u32::try_from(leases.len()).unwrap_or(u32::MAX);
        let address = *leases
            .entry(request.chaddr)
            .or_insert_with(|| Ipv4Addr::from(next));
        let reply = if deaf.load(Ordering::Relaxed) {
            None
        } else {
            answer(&request, kind, address, config)
        };
        if let Ok(mut heard) = heard.lock() {
            heard.push(Heard {
                at: Instant::now(),
                kind,
                chaddr: request.chaddr,
                ciaddr: request.ciaddr,
                to,
                answered: reply.is_some(),
            });
        }
        if let Some(reply) = reply {
            // RFC 2131 4.1: to a configured client at its address, else broadcast.
            let dest = if request.ciaddr.is_unspecified() {
                Ipv4Addr::BROADCAST
            } else {
                request.ciaddr
            };
            let _ = socket.send_to(&reply.encode(), SocketAddrV4::new(dest, CLIENT_PORT));
        }
    }
}

/// One datagram and the address it was sent to; `None` on a timeout or an error.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, Ipv4Addr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::in_pktinfo);
    let message = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut to = Ipv4Addr::UNSPECIFIED;
    for cmsg in message.cmsgs().ok()? {
        if let ControlMessageOwned::Ipv4PacketInfo(info) = cmsg {
            to = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
        }
    }
    Some((message.bytes, to))
}

/// The OFFER or ACK for `request`, or `None` for what this server ignores (a REQUEST for
/// another server or another address, RELEASE, DECLINE, INFORM).
fn answer(
    request: &Message,
    kind: MessageType,
    address: Ipv4Addr,
    config: &LeaseConfig,
) -> Option<Message> {
    let reply_type = match kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            if request
                .options
                .server_id
                .is_some_and(|id| id != config.server)
            {
                return None;
            }
            let wanted = request.options.requested_ip.unwrap_or(request.ciaddr);
            if wanted != address {
                return None;
            }
            MessageType::Ack
        }
        _ => return None,
    };
    Some(Message {
        op: Op::Reply,
        xid: request.xid,
        secs: 0,
        broadcast: request.broadcast,
        ciaddr: request.ciaddr,
        yiaddr: address,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: request.giaddr,
        chaddr: request.chaddr,
        options: Options {
            message_type: Some(reply_type),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            routers: config.router.into_iter().collect(),
            dns_servers: config.dns.clone(),
            lease_time: Some(config.lease_secs),
            renewal_time: Some(config.renewal_secs),
            rebinding_time: Some(config.rebinding_secs),
            server_id: Some(config.server),
            ..Options::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: MessageType) -> Message {
        Message {
            op: Op::Request,
            xid: 7,
            secs: 0,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0x52, 0x54, 0, 1, 2, 3],
            options: Options {
                message_type: Some(kind),
                ..Options::default()
            },
        }
    }

    #[test]
    fn offers_then_acknowledges_with_the_configured_times() {
        let config = LeaseConfig::short(20);
        let address = Ipv4Addr::new(10, 77, 0, 100);
        let offer = answer(
            &request(MessageType::Discover),
            MessageType::Discover,
            address,
            &config,
        )
        .expect("an offer");
        assert_eq!(offer.options.message_type, Some(MessageType::Offer));
        assert_eq!(offer.yiaddr, address);
        assert_eq!(offer.xid, 7);
        assert_eq!(
            (
                offer.options.lease_time,
                offer.options.renewal_time,
                offer.options.rebinding_time
            ),
            (Some(20), Some(5), Some(10))
        );
        let mut select = request(MessageType::Request);
        select.options.requested_ip = Some(address);
        select.options.server_id = Some(config.server);
        let ack = answer(&select, MessageType::Request, address, &config).expect("an ack");
        assert_eq!(ack.options.message_type, Some(MessageType::Ack));
        // The decoded reply is what a client reads.
        assert_eq!(Message::decode(&ack.encode()).as_ref(), Ok(&ack));
    }

    #[test]
    fn renewals_and_rebinds_are_acknowledged_but_not_other_servers_or_addresses() {
        let config = LeaseConfig::short(20);
        let address = Ipv4Addr::new(10, 77, 0, 100);
        let mut renew = request(MessageType::Request);
        renew.ciaddr = address;
        renew.broadcast = false;
        assert!(answer(&renew, MessageType::Request, address, &config).is_some());
        let mut elsewhere = renew.clone();
        elsewhere.options.server_id = Some(Ipv4Addr::new(10, 77, 0, 2));
        assert!(answer(&elsewhere, MessageType::Request, address, &config).is_none());
        let mut other = renew.clone();
        other.ciaddr = Ipv4Addr::new(10, 77, 0, 150);
        assert!(answer(&other, MessageType::Request, address, &config).is_none());
        assert!(answer(&renew, MessageType::Release, address, &config).is_none());
    }
}
