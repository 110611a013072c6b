//! A DHCPv4 lease: what an ACK granted, when it must be renewed, rebound and dropped, and the
//! form it is remembered in between runs (for INIT-REBOOT).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::packet::{ClasslessRoute, Message};

/// A lease time of `0xffffffff` seconds: the address never expires.
pub const INFINITE: u32 = u32::MAX;

/// Everything an ACK granted, with the moment it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The server that granted it (option 54, else the packet's `siaddr`).
    pub server: Ipv4Addr,
    /// The default gateway: the first router, unless classless static routes were given
    /// (RFC 3442: then the router option is ignored and routes carry any default route).
    pub routers: Vec<Ipv4Addr>,
    pub routes: Vec<Route>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
    pub domain_search: Vec<String>,
    pub host_name: Option<String>,
    pub mtu: Option<u16>,
    pub ntp_servers: Vec<Ipv4Addr>,
    /// Lease time in seconds ([`INFINITE`] for ever).
    pub lease_time: u32,
    /// Renewal (T1) and rebinding (T2) times in seconds from `acquired`.
    pub t1: u32,
    pub t2: u32,
    /// When the ACK arrived (monotonic).
    pub acquired: Instant,
}

/// A route a lease asks for (option 121, or the router option as a default route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// `0.0.0.0` for an on-link route.
    pub gateway: Ipv4Addr,
}

/// Why an ACK cannot become a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("the ACK offers no address (yiaddr is 0.0.0.0)")]
    NoAddress,
    #[error("the ACK has no lease time (option 51)")]
    NoLeaseTime,
    #[error("subnet mask {0} is not contiguous")]
    BadMask(Ipv4Addr),
}

impl Lease {
    /// The lease an ACK grants, acquired at `now`. T1 and T2 default to 1/2 and 7/8 of the
    /// lease (RFC 2131 4.4.5); values out of order are corrected to those defaults.
    pub fn from_ack(ack: &Message, now: Instant) -> Result<Lease, LeaseError> {
        let o = &ack.options;
        if ack.yiaddr.is_unspecified() {
            return Err(LeaseError::NoAddress);
        }
        let lease_time = o.lease_time.ok_or(LeaseError::NoLeaseTime)?;
        let prefix_len = match o.subnet_mask {
            Some(mask) => mask_to_prefix(mask).ok_or(LeaseError::BadMask(mask))?,
            None => classful_prefix(ack.yiaddr),
        };
        let (t1, t2) = timers(lease_time, o.renewal_time, o.rebinding_time);
        let routes: Vec<Route> = if o.classless_routes.is_empty() {
            o.routers
                .first()
                .map(|gw| Route {
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix_len: 0,
                    gateway: *gw,
                })
                .into_iter()
                .collect()
        } else {
            o.classless_routes.iter().map(Route::from).collect()
        };
        Ok(Lease {
            address: ack.yiaddr,
            prefix_len,
            server: o.server_id.unwrap_or(ack.siaddr),
            routers: o.routers.clone(),
            routes,
            dns_servers: o.dns_servers.clone(),
            domain_name: o.domain_name.clone(),
            domain_search: o.domain_search.clone(),
            host_name: o.host_name.clone(),
            mtu: o.mtu,
            ntp_servers: o.ntp_servers.clone(),
            lease_time,
            t1,
            t2,
            acquired: now,
        })
    }

    pub fn is_infinite(&self) -> bool {
        self.lease_time == INFINITE
    }

    /// When renewing starts (T1), rebinding starts (T2) and the lease ends; `None` for an
    /// infinite lease.
    pub fn renew_at(&self) -> Option<Instant> {
        self.at(self.t1)
    }

    pub fn rebind_at(&self) -> Option<Instant> {
        self.at(self.t2)
    }

    pub fn expires_at(&self) -> Option<Instant> {
        self.at(self.lease_time)
    }

    fn at(&self, secs: u32) -> Option<Instant> {
        if self.is_infinite() {
            None
        } else {
            Some(self.acquired + Duration::from_secs(u64::from(secs)))
        }
    }

    /// Seconds of validity left at `now` (`u32::MAX` for ever), for the address lifetime the
    /// kernel keeps: if netd dies, the kernel still removes the address when the lease ends.
    pub fn remaining(&self, now: Instant) -> u32 {
        match self.expires_at() {
            None => INFINITE,
            Some(end) => {
                u32::try_from(end.saturating_duration_since(now).as_secs()).unwrap_or(INFINITE - 1)
            }
        }
    }

    /// The default gateway, if the lease gives one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .find(|r| r.prefix_len == 0)
            .map(|r| r.gateway)
    }

    /// The form kept on disk (wall-clock times, since the monotonic clock restarts at boot).
    pub fn remember(&self, now: Instant, wall_now: SystemTime) -> Remembered {
        let age = now.saturating_duration_since(self.acquired);
        let acquired = wall_now.checked_sub(age).unwrap_or(wall_now);
        Remembered {
            address: self.address,
            prefix_len: self.prefix_len,
            server: self.server,
            lease_time: self.lease_time,
            acquired_unix: acquired
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

impl From<&ClasslessRoute> for Route {
    fn from(r: &ClasslessRoute) -> Route {
        Route {
            destination: r.destination,
            prefix_len: r.prefix_len,
            gateway: r.gateway,
        }
    }
}

/// What a node remembers of its last lease on a link: enough to ask for the same address again
/// (INIT-REBOOT) without a full discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remembered {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub server: Ipv4Addr,
    pub lease_time: u32,
    /// When it was granted, in seconds since the Unix epoch.
    pub acquired_unix: u64,
}

impl Remembered {
    /// Whether the lease is still valid at `wall_now`. A clock that went backwards counts as
    /// expired: the server will decide.
    pub fn is_valid(&self, wall_now: SystemTime) -> bool {
        if self.lease_time == INFINITE {
            return true;
        }
        let now = wall_now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        now >= self.acquired_unix && now < self.acquired_unix + u64::from(self.lease_time)
    }
}

/// T1 and T2 from the lease time and the server's values (RFC 2131 4.4.5): defaults 0.5 and
/// 0.875 of the lease; a server's T1 ≥ T2 or T2 ≥ lease is ignored.
fn timers(lease: u32, t1: Option<u32>, t2: Option<u32>) -> (u32, u32) {
    if lease == INFINITE {
        return (INFINITE, INFINITE);
    }
    let default_t1 = lease / 2;
    let default_t2 = u32::try_from(u64::from(lease) * 7 / 8).unwrap_or(lease);
    let t2 = t2.filter(|&t| t < lease).unwrap_or(default_t2);
    let t1 = t1.filter(|&t| t < t2).unwrap_or(default_t1.min(t2));
    (t1, t2)
}

/// The prefix length of a contiguous netmask.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The classful default for a server that sends no subnet mask (RFC 2131 leaves it open; this
/// is what clients have always done).
fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::packet::{MessageType, Op, Options};

    fn ack(options: Options) -> Message {
        Message {
            op: Op::Reply,
            xid: 1,
            secs: 0,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 77, 0, 150),
            siaddr: Ipv4Addr::new(10, 77, 0, 1),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0x52, 0x54, 0, 0, 0, 1],
            options,
        }
    }

    fn full_options() -> Options {
        Options {
            message_type: Some(MessageType::Ack),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            routers: vec![Ipv4Addr::new(10, 77, 0, 1)],
            dns_servers: vec![Ipv4Addr::new(10, 77, 0, 53)],
            lease_time: Some(3600),
            server_id: Some(Ipv4Addr::new(10, 77, 0, 2)),
            ..Options::default()
        }
    }

    #[test]
    fn an_ack_becomes_a_lease_with_default_timers() {
        let now = Instant::now();
        let lease = Lease::from_ack(&ack(full_options()), now).unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 77, 0, 150));
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.server, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!((lease.t1, lease.t2), (1800, 3150));
        assert_eq!(lease.renew_at(), Some(now + Duration::from_secs(1800)));
        assert_eq!(lease.expires_at(), Some(now + Duration::from_secs(3600)));
        assert_eq!(lease.gateway(), Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(lease.remaining(now + Duration::from_secs(600)), 3000);
    }

    #[test]
    fn classless_routes_override_the_router_option() {
        let mut o = full_options();
        o.classless_routes = vec![
            ClasslessRoute {
                destination: Ipv4Addr::new(10, 0, 0, 0),
                prefix_len: 8,
                gateway: Ipv4Addr::new(10, 77, 0, 254),
            },
            ClasslessRoute {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Ipv4Addr::new(10, 77, 0, 9),
            },
        ];
        let lease = Lease::from_ack(&ack(o), Instant::now()).unwrap();
        assert_eq!(lease.routes.len(), 2);
        assert_eq!(lease.gateway(), Some(Ipv4Addr::new(10, 77, 0, 9)));
    }

    #[test]
    fn server_timers_are_used_when_consistent_and_ignored_otherwise() {
        assert_eq!(timers(120, Some(5), Some(10)), (5, 10));
        assert_eq!(timers(120, Some(50), Some(10)), (10, 10));
        assert_eq!(timers(120, None, Some(200)), (60, 105));
        assert_eq!(timers(INFINITE, Some(5), None), (INFINITE, INFINITE));
    }

    #[test]
    fn infinite_leases_have_no_deadlines() {
        let mut o = full_options();
        o.lease_time = Some(INFINITE);
        let lease = Lease::from_ack(&ack(o), Instant::now()).unwrap();
        assert!(lease.is_infinite());
        assert_eq!(lease.renew_at(), None);
        assert_eq!(lease.expires_at(), None);
        assert_eq!(lease.remaining(Instant::now()), INFINITE);
    }

    #[test]
    fn unusable_acks_are_rejected_with_the_reason() {
        let mut o = full_options();
        o.lease_time = None;
        assert_eq!(
            Lease::from_ack(&ack(o), Instant::now()),
            Err(LeaseError::NoLeaseTime)
        );
        let mut o = full_options();
        o.subnet_mask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert_eq!(
            Lease::from_ack(&ack(o), Instant::now())
                .unwrap_err()
                .to_string(),
            "subnet mask 255.0.255.0 is not contiguous"
        );
        let mut m = ack(full_options());
        m.yiaddr = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            Lease::from_ack(&m, Instant::now()),
            Err(LeaseError::NoAddress)
        );
    }

    #[test]
    fn missing_masks_fall_back_to_the_address_class() {
        let mut o = full_options();
        o.subnet_mask = None;
        assert_eq!(
            Lease::from_ack(&ack(o), Instant::now()).unwrap().prefix_len,
            8
        );
        assert_eq!(classful_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 0, 1)), 24);
    }

    #[test]
    fn masks_convert_to_prefixes() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 128, 0)), Some(17));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    #[test]
    fn remembered_leases_round_trip_and_know_their_validity() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lease = Lease::from_ack(&ack(full_options()), now).unwrap();
        let r = lease.remember(now + Duration::from_secs(100), wall);
        assert_eq!(r.acquired_unix, 1_000_000 - 100);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Remembered>(&json).unwrap(), r);
        assert!(r.is_valid(wall));
        assert!(!r.is_valid(wall + Duration::from_secs(3500)));
        assert!(!r.is_valid(SystemTime::UNIX_EPOCH));
    }
}
