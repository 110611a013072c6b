//! A stub resolver for the node's daemons: configuration URLs
//! (`shoal.config=https://config.example/...`) and cluster seeds (`cp1.example:7700`).
//!
//! The node's binaries are static glibc executables, where `getaddrinfo` cannot load NSS and
//! so cannot resolve names; this crate asks the nameservers of `/etc/resolv.conf` (on the node
//! a link to `/run/shoal/resolv.conf`, written by netd) itself.
//!
//! The protocol is sans-IO: [`Query`] encodes a question and checks a reply (id, QR, RCODE,
//! TC, question, CNAME chain, compression pointers with bounds and loop limits);
//! [`parse_resolv_conf`] and [`candidates`] decide what to ask whom; [`combine`] decides what one
//! server's A and AAAA replies amount to. [`resolve`] and [`resolve_with`] are the thin UDP
//! adapter (with a TCP retry for truncated replies).
//!
//! What it does, as glibc does: up to [`MAX_NAMESERVERS`] servers, tried in order; `search` (or
//! `domain`) and `options ndots:N` from resolv.conf: a name with fewer than `ndots` dots is tried
//! with each search domain first and then as it is, other names as they are first, a name with a
//! trailing dot only as it is. A and AAAA are asked together; the addresses come back IPv4
//! first (a boot network is far more often IPv4-only than broken IPv4). An NXDOMAIN or an empty
//! answer is final for that name (the next search candidate is tried); a timeout, SERVFAIL,
//! REFUSED or garbage moves on to the next server. What it does not do: caching, EDNS0, DNSSEC,
//! `options` other than `ndots`, interface names as IPv6 zones (`fe80::1%eth0`; numeric zones
//! work), `/etc/hosts`.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream, UdpSocket,
};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::debug;

/// The port of every `nameserver` in resolv.conf.
pub const DNS_PORT: u16 = 53;
/// glibc reads at most three `nameserver` lines; so do we.
pub const MAX_NAMESERVERS: usize = 3;
/// glibc's limit on `search` domains.
pub const MAX_SEARCH: usize = 6;
/// glibc's cap on `options ndots:`.
const MAX_NDOTS: u8 = 15;
/// A name on the wire, length bytes and the final zero included.
const MAX_WIRE_NAME: usize = 255;
/// A name as text, without a trailing dot.
const MAX_TEXT_NAME: usize = 253;
const MAX_LABEL: usize = 63;
/// A reply naming more CNAMEs in a row than this is refused (real chains have one or two).
const MAX_CNAME_HOPS: usize = 8;
/// Compression pointers followed while reading one name (each label is at least two bytes of a
/// 255-byte name, so a legitimate name needs far fewer).
const MAX_POINTER_JUMPS: usize = 64;
/// A server is given at least this long (or what is left of the whole timeout, if less).
const MIN_TRY: Duration = Duration::from_millis(500);
/// Once one of A and AAAA has addresses, how much longer the other is waited for: some
/// middleboxes drop AAAA questions, and addresses of one family are enough.
const GRACE: Duration = Duration::from_millis(250);

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;

/// Why a name could not be resolved; every message names the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{name:?} is not a valid host name: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("name {name}: cannot read {path}: {error}")]
    ResolvConf {
        name: String,
        path: String,
        error: String,
    },
    #[error("name {name}: no nameserver in {origin}")]
    NoNameserver { name: String, origin: String },
    #[error(
        "name {name}: no such name (NXDOMAIN from {server}){}",
        also_tried(tried)
    )]
    NoSuchName {
        name: String,
        server: IpAddr,
        /// The search-list candidates asked, when there was more than the name itself.
        tried: Vec<String>,
    },
    #[error(
        "name {name}: {server} knows the name but it has no A or AAAA record{}",
        also_tried(tried)
    )]
    NoAddress {
        name: String,
        server: IpAddr,
        tried: Vec<String>,
    },
    #[error("name {name}: no nameserver answered: {}", list_failures(failures))]
    NoAnswer {
        name: String,
        /// Each server asked, and what went wrong with it.
        failures: Vec<(SocketAddr, String)>,
    },
}

fn also_tried(tried: &[String]) -> String {
    if tried.len() > 1 {
        format!("; tried {}", tried.join(", "))
    } else {
        String::new()
    }
}

fn list_failures(failures: &[(SocketAddr, String)]) -> String {
    if failures.is_empty() {
        return "out of time before asking any".into();
    }
    let mut text = String::new();
    for (i, (server, why)) in failures.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let _ = write!(text, "{server}: {why}");
    }
    text
}

/// What is wrong with one reply (the sans-IO half; the adapter adds the name and the server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not the reply to this query (a late reply to an earlier one, or a spoofing attempt):
    /// ignored while waiting.
    #[error("reply id {got:#06x} is not the query's {want:#06x}")]
    WrongId { got: u16, want: u16 },
    #[error("a query, not a reply (QR is clear)")]
    NotAReply,
    /// Also ignored while waiting: the id matched by chance or by guess.
    #[error("the reply is about another question")]
    WrongQuestion,
    #[error("the reply is truncated (TC)")]
    Truncated,
    #[error("no such name (NXDOMAIN)")]
    NoSuchName,
    #[error("server failure (SERVFAIL)")]
    ServerFailure,
    #[error("the server refused the query (REFUSED)")]
    Refused,
    #[error("error code {0}")]
    Rcode(u8),
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
}

/// The address family asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    A,
    Aaaa,
}

impl RecordType {
    fn code(self) -> u16 {
        match self {
            RecordType::A => TYPE_A,
            RecordType::Aaaa => TYPE_AAAA,
        }
    }
}

/// Checks a host name: dot-separated labels of letters, digits, `-` (not first or last) and
/// `_`, each at most 63 characters, at most 253 in all; one trailing dot is allowed. A name
/// whose last label is all digits is refused: it is a mistyped IPv4 address, not a name.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_TEXT_NAME {
        return Err("longer than 253 characters");
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err("an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > MAX_LABEL {
            return Err("a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("characters other than letters, digits, '-' and '_'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label that starts or ends with '-'");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the last label is a number (and the whole is not an IP address)");
    }
    Ok(())
}

/// The wire form of a checked name, lowercased (names compare case-insensitively).
fn wire_name(name: &str) -> Vec<u8> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut wire = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        // check_name bounds each label to 63 bytes.
        wire.push(label.len() as u8);
        wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    wire.push(0);
    wire
}

/// One question (A or AAAA for a name) with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub rtype: RecordType,
    /// The name asked, in wire form, lowercased.
    qname: Vec<u8>,
}

impl Query {
    pub fn new(id: u16, name: &str, rtype: RecordType) -> Result<Query, DnsError> {
        check_name(name).map_err(|reason| DnsError::BadName {
            name: name.to_string(),
            reason,
        })?;
        Ok(Query {
            id,
            rtype,
            qname: wire_name(name),
        })
    }

    /// The query message: a standard query with recursion desired, one question, class IN.
    pub fn encode(&self) -> Vec<u8> {
        let mut message = Vec::with_capacity(12 + self.qname.len() + 4);
        message.extend_from_slice(&self.id.to_be_bytes());
        message.extend_from_slice(&FLAG_RD.to_be_bytes());
        message.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        message.extend_from_slice(&self.qname);
        message.extend_from_slice(&self.rtype.code().to_be_bytes());
        message.extend_from_slice(&CLASS_IN.to_be_bytes());
        message
    }

    /// The addresses a reply gives for the name, following CNAMEs within the answer section.
    /// `Ok` with no address: the name exists without records of this type (NODATA).
    pub fn parse_reply(&self, message: &[u8]) -> Result<Vec<IpAddr>, ReplyError> {
        let mut reader = Reader { message, pos: 0 };
        let id = reader.u16()?;
        if id != self.id {
            return Err(ReplyError::WrongId {
                got: id,
                want: self.id,
            });
        }
        let flags = reader.u16()?;
        if flags & FLAG_QR == 0 {
            return Err(ReplyError::NotAReply);
        }
        if (flags >> 11) & 0xF != 0 {
            return Err(ReplyError::Malformed("not the reply to a standard query"));
        }
        if flags & FLAG_TC != 0 {
            return Err(ReplyError::Truncated);
        }
        let questions = reader.u16()?;
        let answers = reader.u16()?;
        reader.skip(4)?; // authority and additional counts: those sections are not read
        if questions > 1 {
            return Err(ReplyError::Malformed("more than one question"));
        }
        if questions == 1 {
            let qname = reader.name()?;
            let (qtype, qclass) = (reader.u16()?, reader.u16()?);
            if qname != self.qname || qtype != self.rtype.code() || qclass != CLASS_IN {
                return Err(ReplyError::WrongQuestion);
            }
        }
        match flags & 0xF {
            0 => {}
            2 => return Err(ReplyError::ServerFailure),
            3 => return Err(ReplyError::NoSuchName),
            5 => return Err(ReplyError::Refused),
            code => return Err(ReplyError::Rcode(code as u8)),
        }
        if questions == 0 {
            return Err(ReplyError::Malformed("no question in the reply"));
        }
        let mut records = Vec::new();
        for _ in 0..answers {
            let owner = reader.name()?;
            let rtype = reader.u16()?;
            let class = reader.u16()?;
            reader.skip(4)?; // TTL: nothing is cached
            let length = usize::from(reader.u16()?);
            let start = reader.pos;
            let data = reader.take(length)?;
            if class == CLASS_IN {
                records.push(Record {
                    owner,
                    rtype,
                    start,
                    data,
                });
            }
        }
        let mut current = self.qname.clone();
        for _ in 0..=MAX_CNAME_HOPS {
            let mut addresses = Vec::new();
            for record in records
                .iter()
                .filter(|r| r.rtype == self.rtype.code() && r.owner == current)
            {
                addresses.push(match self.rtype {
                    RecordType::A => IpAddr::V4(Ipv4Addr::from(
                        <[u8; 4]>::try_from(record.data)
                            .map_err(|_| ReplyError::Malformed("an A record not 4 bytes long"))?,
                    )),
                    RecordType::Aaaa => {
                        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(record.data).map_err(
                            |_| ReplyError::Malformed("an AAAA record not 16 bytes long"),
                        )?))
                    }
                });
            }
            if !addresses.is_empty() {
                return Ok(addresses);
            }
            let Some(alias) = records
                .iter()
                .find(|r| r.rtype == TYPE_CNAME && r.owner == current)
            else {
                return Ok(Vec::new());
            };
            let mut target = Reader {
                message,
                pos: alias.start,
            };
            current = target.name()?;
            if target.pos != alias.start + alias.data.len() {
                return Err(ReplyError::Malformed(
                    "a CNAME's target does not fill its record",
                ));
            }
        }
        Err(ReplyError::Malformed("a CNAME chain longer than 8"))
    }
}

/// A record of the answer section, class IN.
struct Record<'a> {
    owner: Vec<u8>,
    rtype: u16,
    /// Where its data starts in the message (a CNAME's target may point back into it).
    start: usize,
    data: &'a [u8],
}

/// A cursor over a message that never reads past its end.
struct Reader<'a> {
    message: &'a [u8],
    pos: usize,
}

const SHORT: ReplyError = ReplyError::Malformed("the reply ends too early");

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ReplyError> {
        let end = self.pos.checked_add(n).ok_or(SHORT)?;
        let bytes = self.message.get(self.pos..end).ok_or(SHORT)?;
        self.pos = end;
        Ok(bytes)
    }

    fn skip(&mut self, n: usize) -> Result<(), ReplyError> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, ReplyError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ReplyError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A name in wire form, lowercased, with compression pointers followed; the cursor ends
    /// after the name where it is written (after the first pointer, if any).
    fn name(&mut self) -> Result<Vec<u8>, ReplyError> {
        let mut name = Vec::new();
        let mut at = Reader {
            message: self.message,
            pos: self.pos,
        };
        let mut resume = None;
        let mut jumps = 0;
        loop {
            let length = at.u8()?;
            match length & 0xC0 {
                0x00 if length == 0 => {
                    name.push(0);
                    if name.len() > MAX_WIRE_NAME {
                        return Err(ReplyError::Malformed("a name longer than 255 bytes"));
                    }
                    self.pos = resume.unwrap_or(at.pos);
                    return Ok(name);
                }
                0x00 => {
                    let label = at.take(usize::from(length))?;
                    name.push(length);
                    name.extend(label.iter().map(u8::to_ascii_lowercase));
                    if name.len() > MAX_WIRE_NAME {
                        return Err(ReplyError::Malformed("a name longer than 255 bytes"));
                    }
                }
                0xC0 => {
                    let low = at.u8()?;
                    resume.get_or_insert(at.pos);
                    jumps += 1;
                    if jumps > MAX_POINTER_JUMPS {
                        return Err(ReplyError::Malformed("a loop of compression pointers"));
                    }
                    at.pos = usize::from(length & 0x3F) << 8 | usize::from(low);
                }
                _ => return Err(ReplyError::Malformed("an unknown label type")),
            }
        }
    }
}

/// What became of one query to one server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum QueryOutcome {
    /// Nothing (acceptable) arrived in time.
    NoReply,
    Reply(Result<Vec<IpAddr>, ReplyError>),
    /// The socket failed (e.g. ICMP port unreachable: no DNS server there).
    Failed(String),
}

/// What one server said about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerAnswer {
    Addresses(Vec<IpAddr>),
    NoSuchName,
    /// The name exists, without A or AAAA records.
    NoData,
    /// Ask the next server.
    Failed(String),
}

/// One server's A and AAAA outcomes together. Any address wins (A first); then NXDOMAIN (the
/// name does not exist, whatever the other query says); then two empty answers are NODATA;
/// anything else is a failure of this server, described.
fn combine(a: &QueryOutcome, aaaa: &QueryOutcome, waited: Duration) -> ServerAnswer {
    let outcomes = [a, aaaa];
    let addresses: Vec<IpAddr> = outcomes
        .iter()
        .filter_map(|o| match o {
            QueryOutcome::Reply(Ok(addresses)) => Some(addresses.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    if !addresses.is_empty() {
        return ServerAnswer::Addresses(addresses);
    }
    if outcomes
        .iter()
        .any(|o| matches!(o, QueryOutcome::Reply(Err(ReplyError::NoSuchName))))
    {
        return ServerAnswer::NoSuchName;
    }
    if outcomes
        .iter()
        .all(|o| matches!(o, QueryOutcome::Reply(Ok(_))))
    {
        return ServerAnswer::NoData;
    }
    let describe = |o: &QueryOutcome| match o {
        QueryOutcome::NoReply => format!("no reply within {} ms", waited.as_millis()),
        QueryOutcome::Reply(Ok(_)) => "no record".to_string(),
        QueryOutcome::Reply(Err(e)) => e.to_string(),
        QueryOutcome::Failed(e) => e.clone(),
    };
    let (a, aaaa) = (describe(a), describe(aaaa));
    ServerAnswer::Failed(if a == aaaa {
        a
    } else {
        format!("A: {a}, AAAA: {aaaa}")
    })
}

/// What resolv.conf says (the parts this resolver uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: u8,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
        }
    }
}

/// Reads resolv.conf text: `nameserver` (IPv4, IPv6, IPv6 with a numeric zone), `search` and
/// `domain` (the last of them wins, as in glibc), `options ndots:N`. Everything else, and
/// anything unreadable, is skipped.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let keyword = words.next().unwrap_or_default();
        match keyword {
            "nameserver" => {
                let Some(server) = words.next().and_then(nameserver_address) else {
                    debug!(line, "resolv.conf: skipped an unreadable nameserver line");
                    continue;
                };
                if conf.nameservers.len() < MAX_NAMESERVERS && !conf.nameservers.contains(&server) {
                    conf.nameservers.push(server);
                }
            }
            "search" | "domain" => {
                conf.search = words
                    .map(|d| d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase())
                    .filter(|d| check_name(d).is_ok())
                    .take(MAX_SEARCH)
                    .collect();
            }
            "options" => {
                for option in words {
                    if let Some(n) = option.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        conf.ndots = MAX_NDOTS.min(n);
                    }
                }
            }
            _ => {}
        }
    }
    conf
}

fn nameserver_address(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let (ip, zone) = text.split_once('%')?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        ip.parse().ok()?,
        DNS_PORT,
        0,
        zone.parse().ok()?,
    )))
}

/// The names to ask for `name`, in order (see the module's description of search domains).
pub fn candidates(name: &str, conf: &ResolvConf) -> Result<Vec<String>, DnsError> {
    check_name(name).map_err(|reason| DnsError::BadName {
        name: name.to_string(),
        reason,
    })?;
    if let Some(absolute) = name.strip_suffix('.') {
        return Ok(vec![absolute.to_string()]);
    }
    let searched = conf
        .search
        .iter()
        .map(|domain| format!("{name}.{domain}"))
        .filter(|n| check_name(n).is_ok());
    let mut names = Vec::new();
    if name.matches('.').count() >= usize::from(conf.ndots) {
        names.push(name.to_string());
        names.extend(searched);
    } else {
        names.extend(searched);
        names.push(name.to_string());
    }
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    Ok(unique)
}

/// The addresses of `host` from the nameservers in the resolv.conf at `resolv_conf`, all within
/// `timeout`. An IP address is returned as it is, without reading anything.
pub fn resolve(host: &str, resolv_conf: &Path, timeout: Duration) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let text = std::fs::read_to_string(resolv_conf).map_err(|e| DnsError::ResolvConf {
        name: host.to_string(),
        path: resolv_conf.display().to_string(),
        error: e.to_string(),
    })?;
    let conf = parse_resolv_conf(&text);
    if conf.nameservers.is_empty() {
        return Err(DnsError::NoNameserver {
            name: host.to_string(),
            origin: resolv_conf.display().to_string(),
        });
    }
    resolve_conf(host, &conf, timeout)
}

/// The addresses of `host` from these servers (any port: tests run a fake server), without
/// search domains.
pub fn resolve_with(
    host: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if servers.is_empty() {
        return Err(DnsError::NoNameserver {
            name: host.to_string(),
            origin: "the nameserver list given".into(),
        });
    }
    let conf = ResolvConf {
        nameservers: servers.to_vec(),
        ..ResolvConf::default()
    };
    resolve_conf(host, &conf, timeout)
}

/// The addresses of `host` with these settings, all within `timeout`. Each server gets an equal
/// share of the time left (at least [`MIN_TRY`]), so a dead first server leaves time for the
/// others.
pub fn resolve_conf(
    host: &str,
    conf: &ResolvConf,
    timeout: Duration,
) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let deadline = Instant::now() + timeout;
    let names = candidates(host, conf)?;
    let tried = if names.len() > 1 {
        names.clone()
    } else {
        Vec::new()
    };
    let mut negative = None;
    for name in &names {
        let mut failures = Vec::new();
        let mut answered = false;
        for (i, server) in conf.nameservers.iter().enumerate() {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                break;
            }
            let servers_left = u32::try_from(conf.nameservers.len() - i).unwrap_or(u32::MAX);
            let share = (left / servers_left).max(MIN_TRY.min(left));
            match ask(*server, name, now + share) {
                ServerAnswer::Addresses(addresses) => {
                    debug!(host, name, %server, ?addresses, "resolved");
                    return Ok(addresses);
                }
                ServerAnswer::NoSuchName => {
                    negative = Some((true, server.ip()));
                    answered = true;
                    break;
                }
                ServerAnswer::NoData => {
                    negative = Some((false, server.ip()));
                    answered = true;
                    break;
                }
                ServerAnswer::Failed(why) => {
                    debug!(host, name, %server, why, "nameserver failed");
                    failures.push((*server, why));
                }
            }
        }
        if !answered {
            return Err(DnsError::NoAnswer {
                name: host.to_string(),
                failures,
            });
        }
    }
    let name = host.to_string();
    Err(match negative {
        Some((true, server)) => DnsError::NoSuchName {
            name,
            server,
            tried,
        },
        Some((false, server)) => DnsError::NoAddress {
            name,
            server,
            tried,
        },
        None => DnsError::NoAnswer {
            name,
            failures: Vec::new(),
        },
    })
}

/// Random query ids: an off-path attacker must guess them (and the source port, which the
/// kernel picks at random) to forge a reply.
fn random_ids() -> Result<(u16, u16), String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no random numbers from the kernel".to_string())?;
    let a = u16::from_be_bytes([bytes[0], bytes[1]]);
    let mut aaaa = u16::from_be_bytes([bytes[2], bytes[3]]);
    if aaaa == a {
        aaaa ^= 1;
    }
    Ok((a, aaaa))
}

/// Asks one server for the A and AAAA records of `name` (already checked), until `deadline`.
fn ask(server: SocketAddr, name: &str, deadline: Instant) -> ServerAnswer {
    let started = Instant::now();
    let queries = match random_ids().and_then(|(a, aaaa)| {
        Ok([
            Query::new(a, name, RecordType::A).map_err(|e| e.to_string())?,
            Query::new(aaaa, name, RecordType::Aaaa).map_err(|e| e.to_string())?,
        ])
    }) {
        Ok(queries) => queries,
        Err(e) => return ServerAnswer::Failed(e),
    };
    debug!(%server, name, "asking for A and AAAA");
    let mut outcomes = [QueryOutcome::NoReply, QueryOutcome::NoReply];
    if let Err(e) = exchange_udp(server, &queries, &mut outcomes, deadline) {
        for outcome in outcomes.iter_mut() {
            if *outcome == QueryOutcome::NoReply {
                *outcome = QueryOutcome::Failed(e.to_string());
            }
        }
    }
    combine(&outcomes[0], &outcomes[1], started.elapsed())
}

/// Sends both queries and fills in `outcomes` as replies arrive; a truncated reply is asked
/// again over TCP.
fn exchange_udp(
    server: SocketAddr,
    queries: &[Query; 2],
    outcomes: &mut [QueryOutcome; 2],
    deadline: Instant,
) -> io::Result<()> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    // Connected: the kernel drops datagrams from elsewhere, and reports ICMP errors at once.
    socket.connect(server)?;
    for query in queries {
        socket.send(&query.encode())?;
    }
    let mut buffer = [0u8; 4096];
    let mut grace_until: Option<Instant> = None;
    while outcomes.contains(&QueryOutcome::NoReply) {
        let until = grace_until.map_or(deadline, |g| g.min(deadline));
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        socket.set_read_timeout(Some(left))?;
        let (n, from) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if from != server {
            debug!(%server, %from, "ignored a datagram from another address");
            continue;
        }
        let message = &buffer[..n];
        for (query, outcome) in queries.iter().zip(outcomes.iter_mut()) {
            if *outcome != QueryOutcome::NoReply {
                continue;
            }
            match query.parse_reply(message) {
                Err(ReplyError::WrongId { .. } | ReplyError::WrongQuestion) => continue,
                Err(ReplyError::Truncated) => {
                    debug!(%server, "truncated reply; asking over TCP");
                    *outcome = exchange_tcp(server, query, deadline);
                }
                result => *outcome = QueryOutcome::Reply(result),
            }
            if matches!(outcome, QueryOutcome::Reply(Ok(a)) if !a.is_empty()) {
                grace_until.get_or_insert(Instant::now() + GRACE);
            }
            break;
        }
    }
    Ok(())
}

/// One query over TCP (after a truncated UDP reply), until `deadline`.
fn exchange_tcp(server: SocketAddr, query: &Query, deadline: Instant) -> QueryOutcome {
    let attempt = || -> io::Result<Vec<u8>> {
        let left = |now: Instant| {
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                Err(io::Error::from(io::ErrorKind::TimedOut))
            } else {
                Ok(left)
            }
        };
        let mut stream = TcpStream::connect_timeout(&server, left(Instant::now())?)?;
        stream.set_write_timeout(Some(left(Instant::now())?))?;
        let message = query.encode();
        // A query is at most 12 + 255 + 4 bytes.
        let mut framed = (message.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&message);
        stream.write_all(&framed)?;
        stream.set_read_timeout(Some(left(Instant::now())?))?;
        let mut length = [0u8; 2];
        stream.read_exact(&mut length)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.set_read_timeout(Some(left(Instant::now())?))?;
        stream.read_exact(&mut reply)?;
        Ok(reply)
    };
    match attempt() {
        Ok(reply) => QueryOutcome::Reply(query.parse_reply(&reply)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            QueryOutcome::Failed("truncated over UDP, and no reply over TCP in time".into())
        }
        Err(e) => QueryOutcome::Failed(format!("truncated over UDP, and over TCP: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::TcpListener;

    /// A reply to `query`'s message with these flags and answer records (each given as
    /// owner bytes, type, data bytes), the question copied.
    fn reply(query: &[u8], flags: u16, answers: &[(&[u8], u16, &[u8])]) -> Vec<u8> {
        let mut message = query[..2].to_vec();
        message.extend_from_slice(&flags.to_be_bytes());
        message.extend_from_slice(&[0, 1]);
        message.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        message.extend_from_slice(&[0, 0, 0, 0]);
        message.extend_from_slice(&query[12..]);
        for (owner, rtype, data) in answers {
            message.extend_from_slice(owner);
            message.extend_from_slice(&rtype.to_be_bytes());
            message.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            message.extend_from_slice(&(data.len() as u16).to_be_bytes());
            message.extend_from_slice(data);
        }
        message
    }

    /// A pointer to the question's name (offset 12).
    const AT_QNAME: &[u8] = &[0xC0, 12];

    fn a_query() -> Query {
        Query::new(0x1234, "Config.Example.", RecordType::A).unwrap()
    }

    #[test]
    fn queries_are_standard_recursive_questions() {
        assert_eq!(
            a_query().encode(),
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
              \x06config\x07example\x00\x00\x01\x00\x01"
        );
        let aaaa = Query::new(7, "a.b", RecordType::Aaaa).unwrap().encode();
        assert_eq!(&aaaa[aaaa.len() - 4..], &[0, 28, 0, 1]);
    }

    #[test]
    fn names_are_checked() {
        for good in [
            "a",
            "config.example",
            "x-1.example.",
            "_srv.example",
            "a1.b2",
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghi"; 26].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "-a.example",
            "a-.example",
            "a b",
            "a/b",
            "é.example",
            "10.0.0",
            "1.2.3.4.5",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Query::new(1, "a..b", RecordType::A)
                .unwrap_err()
                .to_string(),
            "\"a..b\" is not a valid host name: an empty label (two dots in a row, or a leading dot)"
        );
    }

    #[test]
    fn addresses_of_an_answer() {
        let query = a_query();
        let message = reply(
            &query.encode(),
            0x8180,
            &[
                (AT_QNAME, TYPE_A, &[10, 0, 0, 1]),
                (AT_QNAME, TYPE_A, &[10, 0, 0, 2]),
                // Another type and another name are not ours.
                (AT_QNAME, TYPE_AAAA, &[0; 16]),
                (b"\x05other\x00", TYPE_A, &[10, 9, 9, 9]),
            ],
        );
        assert_eq!(
            query.parse_reply(&message),
            Ok(vec![
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            ])
        );
        let aaaa = Query::new(9, "config.example", RecordType::Aaaa).unwrap();
        let v6: Ipv6Addr = "fd00::53".parse().unwrap();
        let message = reply(
            &aaaa.encode(),
            0x8180,
            &[(AT_QNAME, TYPE_AAAA, &v6.octets())],
        );
        assert_eq!(aaaa.parse_reply(&message), Ok(vec![IpAddr::V6(v6)]));
    }

    #[test]
    fn cname_chains_are_followed_with_compressed_names() {
        let query = a_query();
        let encoded = query.encode();
        // config.example -> www.cdn.example -> edge.cdn.example -> 192.0.2.7, the targets
        // written with pointers into earlier names.
        let mut message = reply(&encoded, 0x8180, &[]);
        let header_and_question = message.len();
        message[7] = 3; // ANCOUNT
        // Record 1: owner = qname (ptr 12), CNAME www.cdn + ptr to "example" (offset 12+7).
        let www_offset = header_and_question + 12;
        message.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60]);
        let target1: &[u8] = b"\x03www\x03cdn\xC0\x13";
        message.extend_from_slice(&(target1.len() as u16).to_be_bytes());
        message.extend_from_slice(target1);
        // Record 2: owner = www.cdn.example (pointer), CNAME edge + ptr to "cdn.example".
        message.extend_from_slice(&[0xC0, www_offset as u8]);
        message.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 60]);
        let cdn_offset = www_offset + 4;
        let edge_offset = message.len() + 2;
        let target2 = [&b"\x04edge"[..], &[0xC0, cdn_offset as u8]].concat();
        message.extend_from_slice(&(target2.len() as u16).to_be_bytes());
        message.extend_from_slice(&target2);
        // Record 3: owner edge.cdn.example (pointer), A.
        message.extend_from_slice(&[0xC0, edge_offset as u8]);
        message.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        assert_eq!(
            query.parse_reply(&message),
            Ok(vec!["192.0.2.7".parse().unwrap()])
        );
        // The chain cut short (no A for the last name): NODATA, not an error.
        let cut = reply(&encoded, 0x8180, &[(AT_QNAME, TYPE_CNAME, b"\x01x\x00")]);
        assert_eq!(query.parse_reply(&cut), Ok(vec![]));
        // A CNAME loop ends.
        let looped = reply(&encoded, 0x8180, &[(AT_QNAME, TYPE_CNAME, AT_QNAME)]);
        assert_eq!(
            query.parse_reply(&looped),
            Err(ReplyError::Malformed("a CNAME chain longer than 8"))
        );
    }

    #[test]
    fn error_codes_and_flags() {
        let query = a_query();
        let encoded = query.encode();
        for (flags, error) in [
            (0x8183, ReplyError::NoSuchName),
            (0x8182, ReplyError::ServerFailure),
            (0x8185, ReplyError::Refused),
            (0x8184, ReplyError::Rcode(4)),
            (0x8380, ReplyError::Truncated),
            (0x0100, ReplyError::NotAReply),
        ] {
            assert_eq!(
                query.parse_reply(&reply(&encoded, flags, &[])),
                Err(error),
                "{flags:#x}"
            );
        }
        assert_eq!(
            ReplyError::NoSuchName.to_string(),
            "no such name (NXDOMAIN)"
        );
        // NXDOMAIN without the question copied is still NXDOMAIN.
        let mut bare = encoded[..12].to_vec();
        bare[2..4].copy_from_slice(&0x8183u16.to_be_bytes());
        bare[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(query.parse_reply(&bare), Err(ReplyError::NoSuchName));
    }

    #[test]
    fn replies_to_something_else_are_told_apart() {
        let query = a_query();
        let mut message = reply(
            &query.encode(),
            0x8180,
            &[(AT_QNAME, TYPE_A, &[1, 2, 3, 4])],
        );
        message[1] ^= 1;
        assert_eq!(
            query.parse_reply(&message),
            Err(ReplyError::WrongId {
                got: 0x1235,
                want: 0x1234
            })
        );
        let other = Query::new(0x1234, "other.example", RecordType::A).unwrap();
        let message = reply(
            &other.encode(),
            0x8180,
            &[(AT_QNAME, TYPE_A, &[1, 2, 3, 4])],
        );
        assert_eq!(query.parse_reply(&message), Err(ReplyError::WrongQuestion));
        let aaaa = Query::new(0x1234, "config.example", RecordType::Aaaa).unwrap();
        let message = reply(&aaaa.encode(), 0x8180, &[]);
        assert_eq!(query.parse_reply(&message), Err(ReplyError::WrongQuestion));
    }

    #[test]
    fn garbage_is_an_error() {
        let query = a_query();
        let encoded = query.encode();
        assert_eq!(query.parse_reply(&[]), Err(SHORT));
        assert_eq!(query.parse_reply(&[0x12, 0x34, 0x81]), Err(SHORT));
        // Cut anywhere: an error, never a panic or a wrong answer.
        let good = reply(&encoded, 0x8180, &[(AT_QNAME, TYPE_A, &[1, 2, 3, 4])]);
        for end in 0..good.len() {
            assert!(query.parse_reply(&good[..end]).is_err(), "cut at {end}");
        }
        // A record of the wrong size.
        let bad = reply(&encoded, 0x8180, &[(AT_QNAME, TYPE_A, &[1, 2, 3])]);
        assert_eq!(
            query.parse_reply(&bad),
            Err(ReplyError::Malformed("an A record not 4 bytes long"))
        );
        // A pointer to itself, a pointer past the end, an unknown label type.
        for owner in [&[0xC0u8, 0xFF][..], &[0xFF, 0xFF], &[0x40, 0]] {
            let message = reply(&encoded, 0x8180, &[(owner, TYPE_A, &[1, 2, 3, 4])]);
            assert!(query.parse_reply(&message).is_err(), "{owner:?}");
        }
        let mut self_pointer = reply(&encoded, 0x8180, &[]);
        let at = self_pointer.len();
        self_pointer[7] = 1;
        self_pointer.extend_from_slice(&[0xC0, at as u8]);
        self_pointer.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(
            query.parse_reply(&self_pointer),
            Err(ReplyError::Malformed("a loop of compression pointers"))
        );
        // A name made longer than 255 bytes with pointers back into itself.
        let mut long = reply(&encoded, 0x8180, &[]);
        long[7] = 1;
        let start = long.len();
        long.extend_from_slice(b"\x3f");
        long.extend_from_slice(&[b'a'; 63]);
        long.extend_from_slice(&[0xC0, start as u8]);
        long.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert!(query.parse_reply(&long).is_err());
    }

    #[test]
    fn one_servers_answer_from_its_two_replies() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let ok = |a: Vec<IpAddr>| QueryOutcome::Reply(Ok(a));
        let err = |e| QueryOutcome::Reply(Err(e));
        let waited = Duration::from_millis(1500);
        assert_eq!(
            combine(&ok(vec![v4]), &ok(vec![v6]), waited),
            ServerAnswer::Addresses(vec![v4, v6])
        );
        assert_eq!(
            combine(&ok(vec![v4]), &QueryOutcome::NoReply, waited),
            ServerAnswer::Addresses(vec![v4])
        );
        assert_eq!(
            combine(&err(ReplyError::NoSuchName), &QueryOutcome::NoReply, waited),
            ServerAnswer::NoSuchName
        );
        assert_eq!(
            combine(&ok(vec![]), &ok(vec![]), waited),
            ServerAnswer::NoData
        );
        assert_eq!(
            combine(&QueryOutcome::NoReply, &QueryOutcome::NoReply, waited),
            ServerAnswer::Failed("no reply within 1500 ms".into())
        );
        assert_eq!(
            combine(&ok(vec![]), &err(ReplyError::ServerFailure), waited),
            ServerAnswer::Failed("A: no record, AAAA: server failure (SERVFAIL)".into())
        );
    }

    #[test]
    fn resolv_conf_servers_search_and_ndots() {
        let conf = parse_resolv_conf(
            "# Written by shoal-netd\n\
             nameserver 10.0.0.53\n\
             nameserver fd00::53\n\
             nameserver fe80::1%2\n\
             nameserver fe80::1%eth0\n\
             nameserver bogus\n\
             nameserver 10.0.0.53\n\
             nameserver 10.0.0.54\n\
             nameserver 10.0.0.55\n\
             domain ignored.example\n\
             search Lab.Example. corp.example bad..name\n\
             options rotate ndots:2 timeout:1\n",
        );
        assert_eq!(
            conf,
            ResolvConf {
                nameservers: vec![
                    "10.0.0.53:53".parse().unwrap(),
                    "[fd00::53]:53".parse().unwrap(),
                    SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
                ],
                search: vec!["lab.example".into(), "corp.example".into()],
                ndots: 2,
            }
        );
        assert_eq!(parse_resolv_conf("options ndots:99").ndots, 15);
        assert_eq!(parse_resolv_conf(""), ResolvConf::default());
    }

    #[test]
    fn search_domains_apply_as_in_glibc() {
        let conf = ResolvConf {
            search: vec!["lab.example".into(), "example".into()],
            ..ResolvConf::default()
        };
        assert_eq!(
            candidates("config", &conf).unwrap(),
            ["config.lab.example", "config.example", "config"]
        );
        assert_eq!(
            candidates("config.lab", &conf).unwrap(),
            ["config.lab", "config.lab.lab.example", "config.lab.example"]
        );
        assert_eq!(candidates("config.lab.", &conf).unwrap(), ["config.lab"]);
        let ndots = ResolvConf { ndots: 2, ..conf };
        assert_eq!(
            candidates("config.lab", &ndots).unwrap()[0],
            "config.lab.lab.example"
        );
        assert!(candidates("a..b", &ResolvConf::default()).is_err());
        let repeated = ResolvConf {
            search: vec!["a.example".into(), "b.example".into(), "a.example".into()],
            ..ResolvConf::default()
        };
        assert_eq!(
            candidates("c", &repeated).unwrap(),
            ["c.a.example", "c.b.example", "c"]
        );
    }

    #[test]
    fn error_messages_say_what_and_who() {
        assert_eq!(
            DnsError::NoSuchName {
                name: "config.example".into(),
                server: "10.0.0.53".parse().unwrap(),
                tried: vec![],
            }
            .to_string(),
            "name config.example: no such name (NXDOMAIN from 10.0.0.53)"
        );
        assert_eq!(
            DnsError::NoSuchName {
                name: "config".into(),
                server: "10.0.0.53".parse().unwrap(),
                tried: vec!["config.lab.example".into(), "config".into()],
            }
            .to_string(),
            "name config: no such name (NXDOMAIN from 10.0.0.53); tried config.lab.example, config"
        );
        assert_eq!(
            DnsError::NoAnswer {
                name: "c.example".into(),
                failures: vec![
                    (
                        "10.0.0.53:53".parse().unwrap(),
                        "no reply within 2500 ms".into()
                    ),
                    (
                        "10.0.0.54:53".parse().unwrap(),
                        "server failure (SERVFAIL)".into()
                    ),
                ],
            }
            .to_string(),
            "name c.example: no nameserver answered: 10.0.0.53:53: no reply within 2500 ms; \
             10.0.0.54:53: server failure (SERVFAIL)"
        );
    }

    #[test]
    fn resolv_conf_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "# no servers yet\nsearch lab.example\n").unwrap();
        let timeout = Duration::from_secs(1);
        assert_eq!(
            resolve("c.example", &path, timeout)
                .unwrap_err()
                .to_string(),
            format!("name c.example: no nameserver in {}", path.display())
        );
        let missing = dir.path().join("missing");
        assert!(matches!(
            resolve("c.example", &missing, timeout),
            Err(DnsError::ResolvConf { .. })
        ));
        // IP addresses never need a server.
        assert_eq!(
            resolve("10.1.2.3", &missing, timeout),
            Ok(vec!["10.1.2.3".parse().unwrap()])
        );
        assert_eq!(
            resolve_with("fd00::1", &[], timeout),
            Ok(vec!["fd00::1".parse().unwrap()])
        );
    }

    /// A fake server on 127.0.0.1: answers each query with the datagrams `answer(query)`.
    fn fake_server(answer: impl Fn(&[u8]) -> Vec<Vec<u8>> + Send + 'static) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let address = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            // Bounded: ends when no query comes for 5 s.
            while let Ok((n, from)) = socket.recv_from(&mut buffer) {
                for datagram in answer(&buffer[..n]) {
                    socket.send_to(&datagram, from).unwrap();
                }
            }
        });
        address
    }

    fn qtype(query: &[u8]) -> u16 {
        u16::from_be_bytes([query[query.len() - 4], query[query.len() - 3]])
    }

    #[test]
    fn resolving_against_a_fake_server() {
        let server = fake_server(|q| {
            let is = |name: &[u8]| q[12..].starts_with(name);
            if is(b"\x04gone") {
                vec![reply(q, 0x8183, &[])]
            } else if is(b"\x04only") && qtype(q) == TYPE_AAAA {
                vec![reply(q, 0x8180, &[(AT_QNAME, TYPE_AAAA, &[0xfd; 16])])]
            } else if is(b"\x04only") || is(b"\x04none") || qtype(q) == TYPE_AAAA {
                vec![reply(q, 0x8180, &[])]
            } else {
                // A forged reply first (wrong id), then the real one.
                let mut forged = reply(q, 0x8180, &[(AT_QNAME, TYPE_A, &[6, 6, 6, 6])]);
                forged[0] ^= 0xff;
                vec![
                    forged,
                    reply(q, 0x8180, &[(AT_QNAME, TYPE_A, &[127, 0, 0, 9])]),
                ]
            }
        });
        let timeout = Duration::from_secs(3);
        assert_eq!(
            resolve_with("config.test", &[server], timeout),
            Ok(vec!["127.0.0.9".parse().unwrap()])
        );
        assert_eq!(
            resolve_with("only.test", &[server], timeout),
            Ok(vec![
                "fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd".parse().unwrap()
            ])
        );
        assert_eq!(
            resolve_with("gone.test", &[server], timeout)
                .unwrap_err()
                .to_string(),
            "name gone.test: no such name (NXDOMAIN from 127.0.0.1)"
        );
        assert_eq!(
            resolve_with("none.test", &[server], timeout)
                .unwrap_err()
                .to_string(),
            "name none.test: 127.0.0.1 knows the name but it has no A or AAAA record"
        );
    }

    #[test]
    fn a_silent_server_is_passed_over_for_the_next() {
        let silent = fake_server(|_| Vec::new());
        let good = fake_server(|q| {
            let v6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
            vec![match qtype(q) {
                TYPE_A => reply(q, 0x8180, &[(AT_QNAME, TYPE_A, &[10, 0, 0, 7])]),
                _ => reply(q, 0x8180, &[(AT_QNAME, TYPE_AAAA, &v6)]),
            }]
        });
        let started = Instant::now();
        assert_eq!(
            resolve_with("c.test", &[silent, good], Duration::from_secs(4)),
            Ok(vec![
                "10.0.0.7".parse().unwrap(),
                "fd00::7".parse().unwrap()
            ])
        );
        // The silent server had its half of the time, not all of it.
        assert!(started.elapsed() < Duration::from_millis(3500));
        let error = resolve_with("c.test", &[silent], Duration::from_millis(600)).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "name c.test: no nameserver answered: {silent}: no reply within"
            )),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_reply_is_asked_again_over_tcp() {
        // The same port for UDP and TCP, as a real server has.
        let (socket, listener) = loop {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(listener) = TcpListener::bind(socket.local_addr().unwrap()) {
                break (socket, listener);
            }
        };
        let server = socket.local_addr().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buffer) {
                socket
                    .send_to(&reply(&buffer[..n], 0x8380, &[]), from)
                    .unwrap();
            }
        });
        std::thread::spawn(move || {
            // One connection per family asked.
            for stream in listener.incoming().take(2) {
                let mut stream = stream.unwrap();
                let mut length = [0u8; 2];
                stream.read_exact(&mut length).unwrap();
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
                stream.read_exact(&mut query).unwrap();
                let answer = if qtype(&query) == TYPE_A {
                    reply(&query, 0x8180, &[(AT_QNAME, TYPE_A, &[10, 0, 0, 8])])
                } else {
                    reply(&query, 0x8180, &[])
                };
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend(answer);
                stream.write_all(&framed).unwrap();
            }
        });
        assert_eq!(
            resolve_with("big.test", &[server], Duration::from_secs(3)),
            Ok(vec!["10.0.0.8".parse().unwrap()])
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = a_query().parse_reply(&bytes);
        }

        #[test]
        fn parsing_a_damaged_reply_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let query = a_query();
            let mut message = reply(
                &query.encode(),
                0x8180,
                &[(AT_QNAME, TYPE_CNAME, b"\x01x\xC0\x0c"), (b"\x01x\xC0\x0c", TYPE_A, &[1, 2, 3, 4])],
            );
            // Keep the id so the parser gets past the header more often.
            for (at, byte) in edits {
                let i = 2 + at.index(message.len() - 2);
                message[i] = byte;
            }
            let end = cut.index(message.len() + 1);
            let _ = query.parse_reply(&message[..end]);
        }
    }
}
