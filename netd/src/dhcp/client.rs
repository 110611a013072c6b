//! The DHCPv4 client of one link as a sans-IO state machine (RFC 2131 section 4.4): packets
//! and the clock go in, packets to send and lease changes come out. The daemon owns the
//! socket, the timers and netlink.
//!
//! ```text
//!            start (no lease)                start (remembered address)
//!                  │                                 │
//!                  ▼      no answer (2 tries)        ▼
//!   ┌──────► SELECTING ◄──────────────────────── INIT-REBOOT
//!   │              │ OFFER: REQUEST it                │ ACK
//!   │              ▼                                  │
//!   │ NAK/    REQUESTING ── ACK ──► BOUND ◄───────────┘
//!   │ expiry/ (4 tries)               │ T1: REQUEST to the server (unicast)
//!   │ 4 tries      │                  ▼
//!   ├──────────────┘              RENEWING ── ACK ──► BOUND
//!   │                                 │ T2: REQUEST to anyone (broadcast)
//!   │                                 ▼
//!   └────────── lease expired ──── REBINDING ── ACK ──► BOUND
//! ```
//!
//! Choices beyond the RFC, made for fast boots:
//! - No random 1–10 s wait before the first DISCOVER (RFC 2131 4.4.1 allows skipping it).
//! - The first OFFER is taken at once rather than collecting offers for a while.
//! - Retransmissions start at 1 s and double up to 32 s (the RFC suggests 4 s up to 64 s), with
//!   up to 250 ms of jitter so that nodes booted together do not stay in lock step.
//! - While renewing or rebinding, a request is repeated after half the time left in that phase,
//!   but at least every 60 s (RFC 2131 4.4.5), never past the phase's end.
//! - The broadcast flag is set until the address is configured: the daemon's socket cannot
//!   receive unicast to an address the link does not have yet.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::lease::{Lease, LeaseError};
use super::packet::{Message, MessageType, Op, Options};

/// Options asked for in every DISCOVER and REQUEST.
pub const REQUESTED_OPTIONS: &[u8] = &[1, 3, 6, 12, 15, 26, 28, 42, 51, 54, 58, 59, 119, 121];
/// The largest reply this client accepts (a standard Ethernet MTU's worth of UDP payload).
pub const MAX_MESSAGE_SIZE: u16 = 1472;
const FIRST_RETRANSMIT: Duration = Duration::from_secs(1);
const MAX_RETRANSMIT: Duration = Duration::from_secs(32);
const JITTER_MS: u64 = 250;
const REQUEST_TRIES: u32 = 4;
const REBOOT_TRIES: u32 = 2;
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(60);

/// Who identifies this client to servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The link's hardware address (chaddr).
    pub mac: [u8; 6],
    /// Sent as option 12 so that servers can register the name.
    pub hostname: Option<String>,
    /// Option 61; defaults to hardware type 1 followed by the MAC.
    pub client_id: Option<Vec<u8>>,
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 from 0.0.0.0 (or from the leased address while rebinding).
    Broadcast,
    /// The leasing server, from the leased address.
    Server(Ipv4Addr),
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        message: Message,
        to: Destination,
    },
    /// A new lease: configure the address, routes, DNS and the rest.
    Bound(Lease),
    /// The same address again with new deadlines (and possibly new parameters).
    Renewed(Lease),
    /// The lease is gone: remove what it configured.
    Lost {
        lease: Lease,
        reason: LostReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// Nobody renewed it in time.
    Expired,
    /// A server refused it, with its message (option 56) if any.
    Nak(Option<String>),
    /// Given back on purpose (shutdown).
    Released,
    /// An ACK for a renewal handed out a different address.
    Replaced,
}

/// The RFC 2131 states (plus `Stopped`: link down or released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Stopped,
    Selecting,
    Requesting,
    InitReboot,
    Bound,
    Renewing,
    Rebinding,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Selecting => "selecting",
            State::Requesting => "requesting",
            State::InitReboot => "init-reboot",
            State::Bound => "bound",
            State::Renewing => "renewing",
            State::Rebinding => "rebinding",
        }
    }
}

/// One exchange (a run of retransmissions under one transaction id).
#[derive(Debug, Clone)]
struct Exchange {
    xid: u32,
    started: Instant,
    attempt: u32,
    next: Instant,
    /// The address and server of the OFFER being requested, or the address asked for again.
    address: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
}

/// The client of one link.
#[derive(Debug, Clone)]
pub struct Client {
    config: ClientConfig,
    state: State,
    rng: u64,
    exchange: Option<Exchange>,
    lease: Option<Lease>,
    /// The address to ask for in the next DISCOVER (a remembered or lost lease's).
    preferred: Option<Ipv4Addr>,
}

impl Client {
    /// A client that waits for [`Client::start`]. `seed` feeds the transaction ids and the
    /// jitter (the daemon passes random bytes; tests pass constants).
    pub fn new(config: ClientConfig, seed: u64) -> Client {
        Client {
            config,
            state: State::Stopped,
            rng: seed | 1,
            exchange: None,
            lease: None,
            preferred: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// When [`Client::on_timeout`] must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        let retransmit = self.exchange.as_ref().map(|e| e.next);
        let lease = self.lease.as_ref().and_then(|l| match self.state {
            State::Bound => l.renew_at(),
            State::Renewing => l.rebind_at(),
            _ => l.expires_at(),
        });
        match (retransmit, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts (or restarts, after the link came back) acquiring. With a lease in hand or a
    /// remembered address, it first asks for that address again (INIT-REBOOT).
    pub fn start(&mut self, now: Instant, remembered: Option<Ipv4Addr>) -> Vec<Action> {
        let address = self.lease.as_ref().map(|l| l.address).or(remembered);
        match address {
            Some(address) => {
                self.preferred = Some(address);
                self.begin(now, State::InitReboot, Some(address), None)
            }
            None => self.begin(now, State::Selecting, None, None),
        }
    }

    /// The link lost its carrier: stop sending, but keep the lease (and its expiry) until the
    /// link comes back and [`Client::start`] confirms it.
    pub fn pause(&mut self) {
        self.state = State::Stopped;
        self.exchange = None;
    }

    /// Gives the lease back (clean shutdown) and stops.
    pub fn release(&mut self, _now: Instant) -> Vec<Action> {
        self.state = State::Stopped;
        self.exchange = None;
        let Some(lease) = self.lease.take() else {
            return Vec::new();
        };
        let xid = self.next_random() as u32;
        let mut message = self.message(xid, 0, MessageType::Release);
        message.ciaddr = lease.address;
        message.broadcast = false;
        message.options.server_id = Some(lease.server);
        message.options.parameter_request_list.clear();
        message.options.max_message_size = None;
        message.options.host_name = None;
        vec![
            Action::Send {
                message,
                to: Destination::Server(lease.server),
            },
            Action::Lost {
                lease,
                reason: LostReason::Released,
            },
        ]
    }

    /// A packet arrived on the link's DHCP socket. Packets for other clients or transactions,
    /// and packets that make no sense in the current state, are ignored.
    pub fn receive(&mut self, now: Instant, message: &Message) -> Vec<Action> {
        let Some(exchange) = &self.exchange else {
            return Vec::new();
        };
        if message.op != Op::Reply
            || message.xid != exchange.xid
            || message.chaddr != self.config.mac
        {
            return Vec::new();
        }
        match (self.state, message.options.message_type) {
            (State::Selecting, Some(MessageType::Offer)) => self.on_offer(now, message),
            (
                State::Requesting | State::InitReboot | State::Renewing | State::Rebinding,
                Some(MessageType::Ack),
            ) => self.on_ack(now, message),
            (
                State::Requesting | State::InitReboot | State::Renewing | State::Rebinding,
                Some(MessageType::Nak),
            ) => self.on_nak(now, message),
            _ => Vec::new(),
        }
    }

    /// Time passed: retransmit, move to RENEWING/REBINDING, or drop an expired lease.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(expiry) = self.lease.as_ref().and_then(Lease::expires_at)
            && now >= expiry
            && let Some(lease) = self.lease.take()
        {
            self.preferred = Some(lease.address);
            actions.push(Action::Lost {
                lease,
                reason: LostReason::Expired,
            });
            if self.state == State::Stopped {
                return actions;
            }
            let preferred = self.preferred;
            actions.extend(self.begin(now, State::Selecting, preferred, None));
            return actions;
        }
        match self.state {
            State::Bound => {
                if self
                    .lease
                    .as_ref()
                    .and_then(Lease::renew_at)
                    .is_some_and(|t| now >= t)
                {
                    let server = self.lease.as_ref().map(|l| l.server);
                    actions.extend(self.begin(now, State::Renewing, None, server));
                }
            }
            State::Renewing
                if self
                    .lease
                    .as_ref()
                    .and_then(Lease::rebind_at)
                    .is_some_and(|t| now >= t) =>
            {
                actions.extend(self.begin(now, State::Rebinding, None, None));
            }
            _ => {
                if self.exchange.as_ref().is_some_and(|e| now >= e.next) {
                    actions.extend(self.retransmit(now));
                }
            }
        }
        actions
    }

    fn on_offer(&mut self, now: Instant, offer: &Message) -> Vec<Action> {
        if offer.yiaddr.is_unspecified() {
            return Vec::new();
        }
        let server = offer.options.server_id.unwrap_or(offer.siaddr);
        // The REQUEST continues the DISCOVER's transaction: same xid, same `secs` origin.
        let (xid, started) = match &self.exchange {
            Some(e) => (e.xid, e.started),
            None => (self.next_random() as u32, now),
        };
        self.state = State::Requesting;
        self.exchange = Some(Exchange {
            xid,
            started,
            attempt: 0,
            next: now,
            address: Some(offer.yiaddr),
            server: Some(server),
        });
        self.send(now)
    }

    fn on_ack(&mut self, now: Instant, ack: &Message) -> Vec<Action> {
        let lease = match Lease::from_ack(ack, now) {
            Ok(lease) => lease,
            Err(e) => return self.unusable_ack(now, e),
        };
        self.state = State::Bound;
        self.exchange = None;
        self.preferred = Some(lease.address);
        let mut actions = Vec::new();
        match self.lease.replace(lease.clone()) {
            Some(old) if old.address == lease.address && old.prefix_len == lease.prefix_len => {
                actions.push(Action::Renewed(lease));
            }
            Some(old) => {
                actions.push(Action::Lost {
                    lease: old,
                    reason: LostReason::Replaced,
                });
                actions.push(Action::Bound(lease));
            }
            None => actions.push(Action::Bound(lease)),
        }
        actions
    }

    /// An ACK we cannot use (no lease time, bad mask): like a NAK without a server to blame;
    /// ignore it and let retransmission or the timers go on.
    fn unusable_ack(&mut self, _now: Instant, error: LeaseError) -> Vec<Action> {
        tracing::warn!("ignoring an unusable DHCPACK: {error}");
        Vec::new()
    }

    fn on_nak(&mut self, now: Instant, nak: &Message) -> Vec<Action> {
        // In REQUESTING only the chosen server may refuse; elsewhere any server may.
        if self.state == State::Requesting
            && let (Some(chosen), Some(from)) = (
                self.exchange.as_ref().and_then(|e| e.server),
                nak.options.server_id,
            )
            && chosen != from
        {
            return Vec::new();
        }
        let mut actions = Vec::new();
        self.preferred = None;
        if let Some(lease) = self.lease.take() {
            actions.push(Action::Lost {
                lease,
                reason: LostReason::Nak(nak.options.message.clone()),
            });
        }
        actions.extend(self.begin(now, State::Selecting, None, None));
        actions
    }

    /// Enters `state` with a fresh exchange and sends its first packet.
    fn begin(
        &mut self,
        now: Instant,
        state: State,
        address: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
    ) -> Vec<Action> {
        self.state = state;
        let xid = self.next_random() as u32;
        self.exchange = Some(Exchange {
            xid,
            started: now,
            attempt: 0,
            next: now,
            address: address.or(if state == State::Selecting {
                self.preferred
            } else {
                None
            }),
            server,
        });
        self.send(now)
    }

    fn retransmit(&mut self, now: Instant) -> Vec<Action> {
        let tries = self.exchange.as_ref().map_or(0, |e| e.attempt);
        match self.state {
            State::Requesting if tries >= REQUEST_TRIES => {
                self.begin(now, State::Selecting, None, None)
            }
            State::InitReboot if tries >= REBOOT_TRIES => {
                let preferred = self.preferred;
                self.begin(now, State::Selecting, preferred, None)
            }
            _ => self.send(now),
        }
    }

    /// Sends the current state's packet and schedules the next try.
    fn send(&mut self, now: Instant) -> Vec<Action> {
        let jitter = Duration::from_millis(self.next_random() % JITTER_MS);
        let state = self.state;
        let lease = self.lease.clone();
        let Some(exchange) = self.exchange.clone() else {
            return Vec::new();
        };
        let secs = u16::try_from(now.saturating_duration_since(exchange.started).as_secs())
            .unwrap_or(u16::MAX);
        let (message_type, to) = match state {
            State::Selecting => (MessageType::Discover, Destination::Broadcast),
            State::Requesting | State::InitReboot | State::Rebinding => {
                (MessageType::Request, Destination::Broadcast)
            }
            State::Renewing => (
                MessageType::Request,
                Destination::Server(exchange.server.unwrap_or(Ipv4Addr::BROADCAST)),
            ),
            State::Bound | State::Stopped => return Vec::new(),
        };
        let mut message = self.message(exchange.xid, secs, message_type);
        match state {
            State::Selecting => message.options.requested_ip = exchange.address,
            State::Requesting => {
                message.options.requested_ip = exchange.address;
                message.options.server_id = exchange.server;
            }
            State::InitReboot => message.options.requested_ip = exchange.address,
            State::Renewing | State::Rebinding => {
                if let Some(lease) = &lease {
                    message.ciaddr = lease.address;
                }
                message.broadcast = false;
            }
            State::Bound | State::Stopped => {}
        }
        let next = match state {
            State::Renewing | State::Rebinding => {
                let end = lease.as_ref().and_then(|l| {
                    if state == State::Renewing {
                        l.rebind_at()
                    } else {
                        l.expires_at()
                    }
                });
                match end {
                    Some(end) => {
                        let half = end.saturating_duration_since(now) / 2;
                        (now + half.max(MIN_RENEW_INTERVAL)).min(end)
                    }
                    None => now + MIN_RENEW_INTERVAL,
                }
            }
            _ => {
                let backoff = FIRST_RETRANSMIT
                    .saturating_mul(1 << exchange.attempt.min(5))
                    .min(MAX_RETRANSMIT);
                now + backoff + jitter
            }
        };
        if let Some(e) = self.exchange.as_mut() {
            e.attempt += 1;
            e.next = next;
        }
        vec![Action::Send { message, to }]
    }

    fn message(&self, xid: u32, secs: u16, message_type: MessageType) -> Message {
        let mut client_id = vec![1];
        client_id.extend_from_slice(&self.config.mac);
        Message {
            op: Op::Request,
            xid,
            secs,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: self.config.mac,
            options: Options {
                message_type: Some(message_type),
                parameter_request_list: REQUESTED_OPTIONS.to_vec(),
                max_message_size: Some(MAX_MESSAGE_SIZE),
                client_id: Some(self.config.client_id.clone().unwrap_or(client_id)),
                host_name: self.config.hostname.clone(),
                ..Options::default()
            },
        }
    }

    /// xorshift64: transaction ids and jitter need variety, not secrecy.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 150);

    fn client() -> Client {
        Client::new(
            ClientConfig {
                mac: MAC,
                hostname: Some("node0".into()),
                client_id: None,
            },
            42,
        )
    }

    fn sent(actions: &[Action]) -> Vec<(&Message, Destination)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { message, to } => Some((message, *to)),
                _ => None,
            })
            .collect()
    }

    fn only_sent(actions: &[Action]) -> (Message, Destination) {
        let s = sent(actions);
        assert_eq!(s.len(), 1, "{actions:?}");
        (s[0].0.clone(), s[0].1)
    }

    /// A server's reply to `request`.
    fn reply(request: &Message, kind: MessageType, lease_secs: u32) -> Message {
        Message {
            op: Op::Reply,
            xid: request.xid,
            secs: 0,
            broadcast: request.broadcast,
            ciaddr: request.ciaddr,
            yiaddr: if kind == MessageType::Nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                ADDR
            },
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: request.chaddr,
            options: Options {
                message_type: Some(kind),
                server_id: Some(SERVER),
                subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                routers: vec![SERVER],
                lease_time: (kind != MessageType::Nak).then_some(lease_secs),
                renewal_time: Some(lease_secs / 2),
                rebinding_time: Some(lease_secs / 8 * 7),
                ..Options::default()
            },
        }
    }

    /// Discover → offer → request → ack; returns the client bound at `t0`.
    fn bound(t0: Instant, lease_secs: u32) -> Client {
        let mut c = client();
        let (discover, _) = only_sent(&c.start(t0, None));
        let (request, _) =
            only_sent(&c.receive(t0, &reply(&discover, MessageType::Offer, lease_secs)));
        let actions = c.receive(t0, &reply(&request, MessageType::Ack, lease_secs));
        assert!(matches!(actions[..], [Action::Bound(_)]), "{actions:?}");
        c
    }

    #[test]
    fn discovers_requests_and_binds_without_delay() {
        let t0 = Instant::now();
        let mut c = client();
        let (discover, to) = only_sent(&c.start(t0, None));
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(discover.options.message_type, Some(MessageType::Discover));
        assert!(discover.broadcast);
        assert_eq!(discover.chaddr, MAC);
        assert_eq!(
            discover.options.client_id.as_deref(),
            Some(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56][..])
        );
        assert_eq!(discover.options.host_name.as_deref(), Some("node0"));
        assert!(discover.options.parameter_request_list.contains(&121));
        assert_eq!(c.state(), State::Selecting);

        let (request, to) = only_sent(&c.receive(t0, &reply(&discover, MessageType::Offer, 3600)));
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(request.options.message_type, Some(MessageType::Request));
        assert_eq!(request.options.requested_ip, Some(ADDR));
        assert_eq!(request.options.server_id, Some(SERVER));
        assert_eq!(request.xid, discover.xid, "the same transaction");
        assert_eq!(c.state(), State::Requesting);

        let actions = c.receive(t0, &reply(&request, MessageType::Ack, 3600));
        let [Action::Bound(lease)] = &actions[..] else {
            panic!("{actions:?}")
        };
        assert_eq!(lease.address, ADDR);
        assert_eq!(lease.gateway(), Some(SERVER));
        assert_eq!(c.state(), State::Bound);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(1800)));
    }

    #[test]
    fn retransmits_with_doubling_delays_and_jitter() {
        let t0 = Instant::now();
        let mut c = client();
        let (first, _) = only_sent(&c.start(t0, None));
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            let next = c.deadline().unwrap();
            delays.push(next - now);
            now = next;
            let (again, _) = only_sent(&c.on_timeout(now));
            assert_eq!(again.xid, first.xid);
            assert_eq!(
                u64::from(again.secs),
                (now - t0).as_secs(),
                "secs counts from the start"
            );
        }
        let expected = [1, 2, 4, 8, 16, 32, 32, 32];
        for (delay, base) in delays.iter().zip(expected) {
            let base = Duration::from_secs(base);
            assert!(
                *delay >= base && *delay < base + Duration::from_millis(JITTER_MS),
                "{delays:?}"
            );
        }
    }

    #[test]
    fn a_silent_server_after_an_offer_sends_the_client_back_to_discovery() {
        let t0 = Instant::now();
        let mut c = client();
        let (discover, _) = only_sent(&c.start(t0, None));
        c.receive(t0, &reply(&discover, MessageType::Offer, 3600));
        let mut kinds = Vec::new();
        for _ in 0..REQUEST_TRIES {
            let now = c.deadline().unwrap();
            let (m, _) = only_sent(&c.on_timeout(now));
            kinds.push(m.options.message_type.unwrap());
        }
        assert_eq!(
            kinds,
            [
                MessageType::Request,
                MessageType::Request,
                MessageType::Request,
                MessageType::Discover
            ]
        );
        assert_eq!(c.state(), State::Selecting);
    }

    #[test]
    fn replies_for_other_transactions_or_clients_are_ignored() {
        let t0 = Instant::now();
        let mut c = client();
        let (discover, _) = only_sent(&c.start(t0, None));
        let mut other_xid = reply(&discover, MessageType::Offer, 3600);
        other_xid.xid ^= 1;
        assert!(c.receive(t0, &other_xid).is_empty());
        let mut other_mac = reply(&discover, MessageType::Offer, 3600);
        other_mac.chaddr[5] ^= 1;
        assert!(c.receive(t0, &other_mac).is_empty());
        let mut request_op = reply(&discover, MessageType::Offer, 3600);
        request_op.op = Op::Request;
        assert!(c.receive(t0, &request_op).is_empty());
        // An ACK while selecting makes no sense either.
        assert!(
            c.receive(t0, &reply(&discover, MessageType::Ack, 3600))
                .is_empty()
        );
        assert_eq!(c.state(), State::Selecting);
    }

    #[test]
    fn renews_at_t1_by_unicast_and_keeps_the_address() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120);
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(c.deadline(), Some(t1));
        let (request, to) = only_sent(&c.on_timeout(t1));
        assert_eq!(to, Destination::Server(SERVER));
        assert_eq!(request.ciaddr, ADDR);
        assert!(!request.broadcast);
        assert_eq!(request.options.requested_ip, None, "RFC 2131 table 5");
        assert_eq!(request.options.server_id, None);
        assert_eq!(c.state(), State::Renewing);
        // The retry comes no later than T2 (105 s).
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(105)));

        let actions = c.receive(t1, &reply(&request, MessageType::Ack, 120));
        let [Action::Renewed(lease)] = &actions[..] else {
            panic!("{actions:?}")
        };
        assert_eq!(lease.acquired, t1);
        assert_eq!(c.state(), State::Bound);
        assert_eq!(c.deadline(), Some(t1 + Duration::from_secs(60)));
    }

    #[test]
    fn rebinds_at_t2_by_broadcast_then_loses_the_lease_at_expiry() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120);
        c.on_timeout(t0 + Duration::from_secs(60));
        let t2 = c.deadline().unwrap();
        assert_eq!(t2, t0 + Duration::from_secs(105));
        let (request, to) = only_sent(&c.on_timeout(t2));
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(request.ciaddr, ADDR);
        assert_eq!(c.state(), State::Rebinding);
        let expiry = c.deadline().unwrap();
        assert_eq!(expiry, t0 + Duration::from_secs(120));

        let actions = c.on_timeout(expiry);
        assert!(
            matches!(&actions[0], Action::Lost { reason: LostReason::Expired, lease } if lease.address == ADDR),
            "{actions:?}"
        );
        let (discover, _) = only_sent(&actions);
        assert_eq!(discover.options.message_type, Some(MessageType::Discover));
        assert_eq!(
            discover.options.requested_ip,
            Some(ADDR),
            "asks for the old address again"
        );
        assert_eq!(c.state(), State::Selecting);
        assert!(c.lease().is_none());
    }

    #[test]
    fn a_nak_on_renewal_drops_the_lease_and_starts_over() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120);
        let (request, _) = only_sent(&c.on_timeout(t0 + Duration::from_secs(60)));
        let mut nak = reply(&request, MessageType::Nak, 0);
        nak.options.message = Some("wrong network".into());
        let actions = c.receive(t0 + Duration::from_secs(60), &nak);
        assert!(matches!(
            &actions[0],
            Action::Lost { reason: LostReason::Nak(Some(m)), .. } if m == "wrong network"
        ));
        let (discover, _) = only_sent(&actions);
        assert_eq!(discover.options.requested_ip, None);
        assert_eq!(c.state(), State::Selecting);
    }

    #[test]
    fn a_nak_from_another_server_while_requesting_is_ignored() {
        let t0 = Instant::now();
        let mut c = client();
        let (discover, _) = only_sent(&c.start(t0, None));
        let (request, _) = only_sent(&c.receive(t0, &reply(&discover, MessageType::Offer, 60)));
        let mut nak = reply(&request, MessageType::Nak, 0);
        nak.options.server_id = Some(Ipv4Addr::new(10, 77, 0, 2));
        assert!(c.receive(t0, &nak).is_empty());
        assert_eq!(c.state(), State::Requesting);
    }

    #[test]
    fn init_reboot_asks_for_the_remembered_address_then_falls_back() {
        let t0 = Instant::now();
        let mut c = client();
        let (request, to) = only_sent(&c.start(t0, Some(ADDR)));
        assert_eq!(c.state(), State::InitReboot);
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(request.options.message_type, Some(MessageType::Request));
        assert_eq!(request.options.requested_ip, Some(ADDR));
        assert_eq!(request.options.server_id, None, "RFC 2131 table 5");
        assert_eq!(request.ciaddr, Ipv4Addr::UNSPECIFIED);

        // Confirmed: bound with no discovery.
        let mut confirmed = c.clone();
        let actions = confirmed.receive(t0, &reply(&request, MessageType::Ack, 3600));
        assert!(matches!(actions[..], [Action::Bound(_)]));

        // Unanswered: one more try, then discovery asking for the same address.
        let now = c.deadline().unwrap();
        let (again, _) = only_sent(&c.on_timeout(now));
        assert_eq!(again.options.message_type, Some(MessageType::Request));
        let now = c.deadline().unwrap();
        let (discover, _) = only_sent(&c.on_timeout(now));
        assert_eq!(discover.options.message_type, Some(MessageType::Discover));
        assert_eq!(discover.options.requested_ip, Some(ADDR));
        assert!(now - t0 < Duration::from_secs(4), "fallback after ~3 s");
    }

    #[test]
    fn pausing_keeps_the_lease_until_it_expires() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120);
        c.pause();
        assert_eq!(c.state(), State::Stopped);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(120)));
        assert!(c.on_timeout(t0 + Duration::from_secs(60)).is_empty());
        let actions = c.on_timeout(t0 + Duration::from_secs(120));
        assert!(matches!(
            actions[..],
            [Action::Lost {
                reason: LostReason::Expired,
                ..
            }]
        ));
        assert_eq!(
            c.state(),
            State::Stopped,
            "no sending while the link is down"
        );
    }

    #[test]
    fn link_back_up_confirms_the_lease_with_init_reboot() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120);
        c.pause();
        let now = t0 + Duration::from_secs(10);
        let (request, _) = only_sent(&c.start(now, None));
        assert_eq!(c.state(), State::InitReboot);
        assert_eq!(request.options.requested_ip, Some(ADDR));
        let actions = c.receive(now, &reply(&request, MessageType::Ack, 120));
        assert!(matches!(actions[..], [Action::Renewed(_)]), "{actions:?}");
    }

    #[test]
    fn release_gives_the_address_back_to_its_server() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120);
        let actions = c.release(t0);
        let (release, to) = only_sent(&actions);
        assert_eq!(to, Destination::Server(SERVER));
        assert_eq!(release.options.message_type, Some(MessageType::Release));
        assert_eq!(release.ciaddr, ADDR);
        assert_eq!(release.options.server_id, Some(SERVER));
        assert!(matches!(
            actions[1],
            Action::Lost {
                reason: LostReason::Released,
                ..
            }
        ));
        assert_eq!(c.deadline(), None);
        assert!(client().release(t0).is_empty(), "nothing to release");
    }

    #[test]
    fn a_different_address_on_renewal_replaces_the_lease() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120);
        let (request, _) = only_sent(&c.on_timeout(t0 + Duration::from_secs(60)));
        let mut ack = reply(&request, MessageType::Ack, 120);
        ack.yiaddr = Ipv4Addr::new(10, 77, 0, 151);
        let actions = c.receive(t0 + Duration::from_secs(60), &ack);
        assert!(matches!(
            &actions[..],
            [Action::Lost { reason: LostReason::Replaced, .. }, Action::Bound(l)] if l.address == ack.yiaddr
        ));
    }

    #[derive(Debug, Clone)]
    enum Input {
        Reply(MessageType, bool),
        Wait(u16),
        Pause,
        Start,
        Release,
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (
                prop_oneof![
                    Just(MessageType::Offer),
                    Just(MessageType::Ack),
                    Just(MessageType::Nak)
                ],
                any::<bool>()
            )
                .prop_map(|(k, ok)| Input::Reply(k, ok)),
            (0u16..200).prop_map(Input::Wait),
            Just(Input::Pause),
            Just(Input::Start),
            Just(Input::Release),
        ]
    }

    proptest! {
        /// Whatever happens, lease events alternate properly (no Lost without a lease, no
        /// Bound over a lease without a Lost first), and the lease the client holds is the one
        /// last announced.
        #[test]
        fn lease_events_stay_consistent(inputs in proptest::collection::vec(input(), 1..60)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut c = client();
            let mut last: Option<Message> = None;
            let mut held: Option<Ipv4Addr> = None;
            for input in inputs {
                let actions = match input {
                    Input::Reply(kind, ok) => match &last {
                        Some(req) => {
                            let mut r = reply(req, kind, 120);
                            if !ok { r.xid ^= 0xffff; }
                            c.receive(now, &r)
                        }
                        None => Vec::new(),
                    },
                    Input::Wait(s) => {
                        now += Duration::from_secs(u64::from(s));
                        let mut all = Vec::new();
                        while let Some(d) = c.deadline() {
                            if d > now { break; }
                            all.extend(c.on_timeout(d.max(t0)));
                        }
                        all
                    }
                    Input::Pause => { c.pause(); Vec::new() }
                    Input::Start => c.start(now, None),
                    Input::Release => c.release(now),
                };
                for a in &actions {
                    match a {
                        Action::Send { message, .. } => last = Some(message.clone()),
                        Action::Bound(l) => { prop_assert!(held.is_none()); held = Some(l.address); }
                        Action::Renewed(l) => prop_assert_eq!(held, Some(l.address)),
                        Action::Lost { lease, .. } => { prop_assert_eq!(held, Some(lease.address)); held = None; }
                    }
                }
                prop_assert_eq!(c.lease().map(|l| l.address), held);
                if let Some(d) = c.deadline() {
                    prop_assert!(d + Duration::from_secs(3600) > now, "deadlines move forward");
                }
            }
        }
    }
}
