//! The thin adapter between netd's decisions and the kernel: rtnetlink requests (links,
//! addresses, routes, VLANs, bonds, bridges) and the link/address/route event stream, plus the
//! sysfs facts netlink does not carry (driver, bus path, whether a link is a physical device).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use futures_channel::mpsc::UnboundedReceiver;
use futures_util::stream::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{
    BondMode as NlBondMode, BridgeStpState, InfoKind, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::{Handle, LinkBond, LinkBridge, LinkUnspec, LinkVlan, RouteMessageBuilder};

use crate::config::{BondConfig, BondMode};

/// A netlink request that failed: what was being done and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct NetlinkError {
    pub what: String,
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The kernel's errno, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(e) => e.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError { what, source }
}

/// What netd knows about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// The permanent (burnt-in) MAC, which stays when a bond borrows the link.
    pub permanent_mac: Option<[u8; 6]>,
    /// `vlan`, `bond`, `bridge`, `veth`... `None` for plain devices.
    pub kind: Option<String>,
    pub up: bool,
    pub carrier: bool,
    pub master: Option<u32>,
    pub mtu: u32,
    pub loopback: bool,
}

impl Link {
    /// The MAC that identifies the device: the permanent one when the kernel knows it.
    pub fn identity_mac(&self) -> Option<[u8; 6]> {
        self.permanent_mac.or(self.mac)
    }
}

/// sysfs facts about a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// A physical device (sysfs `device` link exists).
    pub physical: bool,
    /// The bus address (`0000:00:03.0`; `virtio0` for a virtio device, whose PCI address is its
    /// parent's).
    pub bus_path: Option<String>,
    pub driver: Option<String>,
}

/// Reads `<sys>/class/net/<name>/device` and its driver.
pub fn device_info(sys: &Path, name: &str) -> DeviceInfo {
    let device = sys.join("class/net").join(name).join("device");
    let Ok(target) = std::fs::canonicalize(&device) else {
        return DeviceInfo::default();
    };
    let driver = std::fs::read_link(device.join("driver"))
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    // virtio devices sit below their PCI function: name the PCI address, which is stable.
    let bus = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let bus_path = match bus(&target) {
        Some(n) if n.starts_with("virtio") => target.parent().and_then(bus).or(Some(n)),
        other => other,
    };
    DeviceInfo {
        physical: true,
        bus_path,
        driver,
    }
}

/// A change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Link(Link),
    LinkRemoved(u32),
    /// Addresses or routes changed (netd re-reads them when it needs them).
    AddressOrRoute,
    /// Events were lost (socket buffer overrun): re-read everything.
    Overrun,
}

pub type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// An address as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
    /// Seconds; `u32::MAX` for forever.
    pub valid_lifetime: u32,
}

/// A route of the main table as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub index: Option<u32>,
    pub metric: u32,
    pub protocol: String,
}

/// A route netd asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// `None`: on-link.
    pub gateway: Option<Ipv4Addr>,
    pub index: u32,
    pub metric: u32,
    /// The preferred source address.
    pub source: Option<Ipv4Addr>,
    pub origin: RouteOrigin,
}

/// Who asked for a route; the kernel keeps it as the route's protocol (`proto dhcp`/`static`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    Static,
    Dhcp,
}

/// Netlink, as netd uses it.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

/// Route protocol numbers (`proto dhcp`, `proto static` in `ip route`).
const PROTO_DHCP: u8 = 16;
const PROTO_STATIC: u8 = 4;

impl Netlink {
    /// Opens a connection subscribed to link, address and route events, and spawns its driver
    /// on the current tokio runtime.
    pub fn connect() -> std::io::Result<(Netlink, Messages)> {
        let (mut connection, handle, messages) = rtnetlink::new_connection()?;
        let groups = libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV6_ROUTE;
        let socket = connection.socket_mut().socket_mut();
        socket.bind(&SocketAddr::new(0, groups as u32))?;
        // A burst of events (many VLANs at once) should not overrun the default 208 KiB.
        let _ = socket.set_rx_buf_sz(4 << 20);
        tokio::spawn(connection);
        Ok((Netlink { handle }, messages))
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| link_from(&m))
            .try_collect()
            .await
            .map_err(failed("list links"))
    }

    pub async fn addresses(&self) -> Result<Vec<Address>> {
        self.handle
            .address()
            .get()
            .execute()
            .map_ok(|m| address_from(&m))
            .try_filter_map(|a| async move { Ok(a) })
            .try_collect()
            .await
            .map_err(failed("list addresses"))
    }

    pub async fn routes(&self) -> Result<Vec<Route>> {
        let mut all = Vec::new();
        for message in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<Route> = self
                .handle
                .route()
                .get(message)
                .execute()
                .map_ok(|m| route_from(&m))
                .try_filter_map(|r| async move { Ok(r) })
                .try_collect()
                .await
                .map_err(failed("list routes"))?;
            all.extend(routes);
        }
        Ok(all)
    }

    pub async fn set_up(&self, index: u32, up: bool) -> Result<()> {
        let builder = LinkUnspec::new_with_index(index);
        let message = if up { builder.up() } else { builder.down() }.build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(failed(format!(
                "set link {index} {}",
                if up { "up" } else { "down" }
            )))
    }

    /// Renames a link (it must be down).
    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        let message = LinkUnspec::new_with_index(index)
            .name(name.to_string())
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(failed(format!("rename link {index} to {name}")))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(failed(format!("set the MTU of link {index} to {mtu}")))
    }

    /// Makes `index` a port of `master` (a bond's ports must be down).
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(index).controller(master).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(failed(format!("attach link {index} to {master}")))
    }

    pub async fn add_vlan(&self, name: &str, parent: u32, id: u16) -> Result<()> {
        let message = LinkVlan::new(name, parent, id).build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(failed(format!("create VLAN {name} (id {id})")))
    }

    pub async fn add_bond(&self, bond: &BondConfig) -> Result<()> {
        let mode = match bond.mode {
            BondMode::BalanceRr => NlBondMode::BalanceRr,
            BondMode::ActiveBackup => NlBondMode::ActiveBackup,
            BondMode::BalanceXor => NlBondMode::BalanceXor,
            BondMode::Broadcast => NlBondMode::Broadcast,
            BondMode::Lacp => NlBondMode::Ieee8023Ad,
            BondMode::BalanceTlb => NlBondMode::BalanceTlb,
            BondMode::BalanceAlb => NlBondMode::BalanceAlb,
        };
        let miimon = u32::try_from(bond.miimon.as_millis()).unwrap_or(u32::MAX);
        let mut builder = LinkBond::new(bond.name.as_str()).mode(mode).miimon(miimon);
        if bond.mode == BondMode::Lacp {
            builder = builder.ad_lacp_rate(match bond.lacp_rate {
                crate::config::LacpRate::Slow => netlink_packet_route::link::BondLacpRate::Slow,
                crate::config::LacpRate::Fast => netlink_packet_route::link::BondLacpRate::Fast,
            });
        }
        if matches!(
            bond.mode,
            BondMode::Lacp | BondMode::BalanceXor | BondMode::BalanceTlb
        ) {
            use crate::config::HashPolicy;
            use netlink_packet_route::link::BondXmitHashPolicy as P;
            builder = builder.xmit_hash_policy(match bond.xmit_hash_policy {
                HashPolicy::Layer2 => P::Layer2,
                HashPolicy::Layer34 => P::Layer34,
                HashPolicy::Layer23 => P::Layer23,
                HashPolicy::Encap23 => P::Encap23,
                HashPolicy::Encap34 => P::Encap34,
            });
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(failed(format!("create bond {}", bond.name)))
    }

    /// Sets a bond's primary port (after it has been attached).
    pub async fn set_bond_primary(&self, bond: &str, primary: u32) -> Result<()> {
        let message = LinkBond::new(bond).primary(primary).build();
        self.handle
            .link()
            .change(message)
            .execute()
            .await
            .map_err(failed(format!("set the primary port of {bond}")))
    }

    pub async fn add_bridge(&self, name: &str, stp: bool) -> Result<()> {
        let state = if stp {
            BridgeStpState::KernelStp
        } else {
            BridgeStpState::Disabled
        };
        // No STP: forward at once (the kernel's default 15 s forward delay would hold DHCP up).
        let mut builder = LinkBridge::new(name).stp_state(state);
        if !stp {
            builder = builder.forward_delay(0);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(failed(format!("create bridge {name}")))
    }

    /// Adds (or updates the lifetimes of) an address. Lifetimes in seconds, `u32::MAX` forever;
    /// the kernel removes the address when the valid lifetime runs out.
    pub async fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
        lifetime: u32,
    ) -> Result<()> {
        let mut request = self
            .handle
            .address()
            .add(index, address, prefix_len)
            .replace();
        if lifetime != u32::MAX {
            let mut info = CacheInfo::default();
            info.ifa_preferred = lifetime;
            info.ifa_valid = lifetime;
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::CacheInfo(info));
        }
        request.execute().await.map_err(failed(format!(
            "add {address}/{prefix_len} to link {index}"
        )))
    }

    pub async fn del_address(&self, index: u32, address: IpAddr, prefix_len: u8) -> Result<()> {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.prefix_len = prefix_len;
        message.header.family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        message.attributes.push(AddressAttribute::Local(address));
        message.attributes.push(AddressAttribute::Address(address));
        self.handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(failed(format!(
                "remove {address}/{prefix_len} from link {index}"
            )))
    }

    pub async fn add_route(&self, route: &RouteSpec) -> Result<()> {
        self.handle
            .route()
            .add(route_message(route))
            .replace()
            .execute()
            .await
            .map_err(failed(format!("add route {}", describe(route))))
    }

    pub async fn del_route(&self, route: &RouteSpec) -> Result<()> {
        self.handle
            .route()
            .del(route_message(route))
            .execute()
            .await
            .map_err(failed(format!("remove route {}", describe(route))))
    }
}

fn describe(r: &RouteSpec) -> String {
    match r.gateway {
        Some(gw) => format!(
            "{}/{} via {gw} (link {})",
            r.destination, r.prefix_len, r.index
        ),
        None => format!("{}/{} on link {}", r.destination, r.prefix_len, r.index),
    }
}

fn route_message(route: &RouteSpec) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.destination, route.prefix_len)
        .output_interface(route.index)
        .priority(route.metric)
        .protocol(RouteProtocol::from(match route.origin {
            RouteOrigin::Dhcp => PROTO_DHCP,
            RouteOrigin::Static => PROTO_STATIC,
        }));
    if let Some(source) = route.source {
        builder = builder.pref_source(source);
    }
    match route.gateway {
        Some(gw) => builder = builder.gateway(gw),
        None => builder = builder.scope(RouteScope::Link),
    }
    builder.build()
}

/// Turns the unsolicited message stream's items into events.
pub fn event_from(message: NetlinkMessage<RouteNetlinkMessage>) -> Option<Event> {
    match message.payload {
        NetlinkPayload::Overrun(_) => Some(Event::Overrun),
        NetlinkPayload::InnerMessage(inner) => match inner {
            RouteNetlinkMessage::NewLink(m) => Some(Event::Link(link_from(&m))),
            RouteNetlinkMessage::DelLink(m) => Some(Event::LinkRemoved(m.header.index)),
            RouteNetlinkMessage::NewAddress(_)
            | RouteNetlinkMessage::DelAddress(_)
            | RouteNetlinkMessage::NewRoute(_)
            | RouteNetlinkMessage::DelRoute(_) => Some(Event::AddressOrRoute),
            _ => None,
        },
        _ => None,
    }
}

/// Waits for the next event; `None` when the connection is gone.
pub async fn next_event(messages: &mut Messages) -> Option<Event> {
    loop {
        let (message, _) = messages.next().await?;
        if let Some(event) = event_from(message) {
            return Some(event);
        }
    }
}

fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    <[u8; 6]>::try_from(bytes).ok().filter(|m| m != &[0; 6])
}

fn link_from(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        permanent_mac: None,
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
        master: None,
        mtu: 0,
        loopback: m.header.flags.contains(LinkFlags::Loopback),
    };
    for attribute in &m.attributes {
        match attribute {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = mac6(a),
            LinkAttribute::PermAddress(a) => link.permanent_mac = mac6(a),
            LinkAttribute::Controller(c) => link.master = Some(*c),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind_name(kind));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Bond => "bond".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Dummy => "dummy".into(),
        InfoKind::Tun => "tun".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn address_from(m: &AddressMessage) -> Option<Address> {
    let mut address = None;
    let mut local = None;
    let mut valid_lifetime = u32::MAX;
    for attribute in &m.attributes {
        match attribute {
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::CacheInfo(c) => valid_lifetime = c.ifa_valid,
            _ => {}
        }
    }
    Some(Address {
        index: m.header.index,
        address: local.or(address)?,
        prefix_len: m.header.prefix_len,
        valid_lifetime,
    })
}

fn route_from(m: &RouteMessage) -> Option<Route> {
    if m.header.table != RouteMessage::default().header.table
        && m.header.table != netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
    {
        return None;
    }
    let v4 = m.header.address_family == AddressFamily::Inet;
    let mut route = Route {
        destination: if v4 {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        },
        prefix_len: m.header.destination_prefix_length,
        gateway: None,
        index: None,
        metric: 0,
        protocol: format!("{:?}", m.header.protocol).to_lowercase(),
    };
    let mut table_main = m.header.table == netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
    for attribute in &m.attributes {
        match attribute {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_address(d) {
                    route.destination = ip;
                }
            }
            RouteAttribute::Gateway(g) => route.gateway = route_address(g),
            RouteAttribute::Oif(i) => route.index = Some(*i),
            RouteAttribute::Priority(p) => route.metric = *p,
            RouteAttribute::Table(t) => table_main = *t == 254,
            _ => {}
        }
    }
    table_main.then_some(route)
}

fn route_address(a: &netlink_packet_route::route::RouteAddress) -> Option<IpAddr> {
    use netlink_packet_route::route::RouteAddress;
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Where the daemon's sysfs is (a parameter so tests can use a fixture tree).
pub fn sys_root() -> PathBuf {
    PathBuf::from("/sys")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkHeader;

    #[test]
    fn an_overrun_asks_for_a_full_reread_and_link_messages_become_links() {
        let overrun =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Overrun(vec![]));
        assert_eq!(event_from(overrun), Some(Event::Overrun));

        let mut m = LinkMessage::default();
        m.header.index = 3;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("eth1".into()),
            LinkAttribute::Address(vec![0x52, 0x54, 0, 0, 0, 7]),
            LinkAttribute::PermAddress(vec![0x52, 0x54, 0, 0, 0, 8]),
            LinkAttribute::Mtu(9000),
            LinkAttribute::Controller(5),
        ];
        let new = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m.clone())),
        );
        let Some(Event::Link(link)) = event_from(new) else {
            panic!("not a link event")
        };
        assert_eq!(link.name, "eth1");
        assert!(link.up && link.carrier && !link.loopback);
        assert_eq!(link.mtu, 9000);
        assert_eq!(link.master, Some(5));
        assert_eq!(
            link.identity_mac(),
            Some([0x52, 0x54, 0, 0, 0, 8]),
            "the permanent MAC"
        );
        let del = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)),
        );
        assert_eq!(event_from(del), Some(Event::LinkRemoved(3)));
    }

    #[test]
    fn device_info_reads_driver_and_bus_path_from_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        let pci = sys.join("devices/pci0000:00/0000:00:03.0");
        let virtio = pci.join("virtio0");
        std::fs::create_dir_all(virtio.join("net/eth0")).unwrap();
        std::fs::create_dir_all(sys.join("bus/virtio/drivers/virtio_net")).unwrap();
        std::os::unix::fs::symlink(
            sys.join("bus/virtio/drivers/virtio_net"),
            virtio.join("driver"),
        )
        .unwrap();
        std::fs::create_dir_all(sys.join("class/net/eth0")).unwrap();
        std::os::unix::fs::symlink(&virtio, sys.join("class/net/eth0/device")).unwrap();
        std::fs::create_dir_all(sys.join("class/net/bond0")).unwrap();

        assert_eq!(
            device_info(sys, "eth0"),
            DeviceInfo {
                physical: true,
                bus_path: Some("0000:00:03.0".into()),
                driver: Some("virtio_net".into()),
            }
        );
        assert_eq!(device_info(sys, "bond0"), DeviceInfo::default());
        assert_eq!(device_info(sys, "missing"), DeviceInfo::default());
    }
}
