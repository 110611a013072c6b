//! The DHCP client's UDP socket on one link, and sd_notify.
//!
//! A plain UDP socket bound to port 68 and to the device (`SO_BINDTODEVICE`) can do the whole
//! client side: before the link has an address it sends from 0.0.0.0 to the broadcast address
//! and receives the server's broadcast replies (the client sets the broadcast flag); once bound
//! it renews by unicast from the leased address. No raw sockets, no BPF filter.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};

use crate::dhcp::packet::CLIENT_PORT;

/// A non-blocking UDP socket on `0.0.0.0:68`, bound to the link `ifname`.
pub fn dhcp_socket(ifname: &str) -> io::Result<UdpSocket> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // One socket per link on the same port: each bound to its own device.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Broadcast, &true)?;
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(ifname))?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)),
    )?;
    Ok(UdpSocket::from(fd))
}

/// Tells the supervisor (sd_notify protocol) something, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.send_to(state.as_bytes(), &path));
    if let Err(e) = result {
        tracing::warn!("cannot notify the supervisor ({state}): {e}");
    }
}
