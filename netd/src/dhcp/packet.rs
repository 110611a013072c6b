//! DHCPv4 messages on the wire (RFC 2131, RFC 2132): [`Message::decode`] turns a UDP payload
//! into a [`Message`], [`Message::encode`] turns one back into bytes. Pure: no sockets, no
//! clocks.
//!
//! Our own codec rather than the `dhcproto` crate, which would pull a DNS library (and its
//! IDNA/ICU tables) into a small daemon. Only what a client on a cluster node needs is modelled;
//! the choices, and where they are strict or lenient:
//!
//! - **Ethernet only.** Hardware type 1 with a 6-byte address; anything else (InfiniBand's
//!   type 32, for one) is [`DecodeError::UnsupportedHardware`]. Bonds, bridges and VLANs are
//!   Ethernet too.
//! - **Header fields a client ignores are not kept**: `hops`, the flag bits other than
//!   broadcast (RFC 2131 says they are zero and to be ignored), the 10 unused bytes of `chaddr`,
//!   and `sname` and `file` as BOOTP boot-server names. Encoding writes them as zeros.
//! - **Options are gathered before they are read** (RFC 3396): every instance of a code is
//!   concatenated, in the order options field, `file`, `sname` (the last two only when option
//!   52, overload, names them; 52 itself counts only in the options field). Each field used
//!   must end with End (255), as RFC 2131 section 4.1 requires, or the message is
//!   [`DecodeError::MissingEnd`]. Pad (0) is skipped. Unknown options are skipped.
//! - **A malformed known option rejects the whole message**: a wrong length, an unknown
//!   message type, an MTU below 68, a bad name in 119 or route in 121. Such a message comes
//!   from a broken server or was damaged; acting on a lease we half understood is worse than
//!   waiting for the next one. Lengths are exact for fixed-size options; address lists must be
//!   a multiple of 4 (an empty one reads as no addresses).
//! - **Strings** (12, 15, 56) have trailing NULs trimmed (some servers count a C terminator)
//!   and bytes that are not UTF-8 replaced by U+FFFD (decoded lossily, not rejected): a server's
//!   odd host name should not cost a node its address, and the consumers check the syntax they
//!   need (a valid host name is much narrower than valid UTF-8) anyway.
//! - **Domain search (119, RFC 3397)** holds names in DNS wire form, with compression pointers
//!   relative to the start of the concatenated option. Names come out as dotted text without the
//!   trailing dot. Labels must be 1 to 63 octets of ASCII letters, digits, `-` and `_` (a name
//!   is written into resolv.conf, where spaces or `#` would change its meaning), names at most
//!   255 octets in wire form, and the root name is rejected (it searches nothing). A pointer
//!   must point before the start of the run of labels that contains it, and at most
//!   [`MAX_POINTERS_PER_NAME`] are followed per name, so loops are errors and decoding stays
//!   linear in the input.
//! - **Classless static routes (121, RFC 3442)**: a prefix length above 32 or a truncated
//!   entry is an error. Destination bits beyond the prefix length are **masked**, not rejected:
//!   only the significant octets are sent, so stray bits can only sit in the last one, the
//!   server plainly meant the masked network, and the kernel would refuse the route with them
//!   set. RFC 3442 also tells the client to ignore option 3 when 121 is present: that is the
//!   client's policy, both are decoded here.
//!
//! Encoding writes the header, the magic cookie, option 53 first and then the others in
//! ascending code order, End, and zeros up to the 300 bytes BOOTP relays expect. An option
//! longer than 255 bytes becomes several consecutive instances (RFC 3396). Empty lists are left
//! out; `Some` of an empty string or byte string is written with length 0. Encoding never uses
//! overload, so keeping a message within the peer's maximum message size (576 bytes unless it
//! announced more in option 57) is the caller's business. Values decoding would reject are
//! left out rather than written: search names that break the rules above, routes with a prefix
//! length above 32. (An MTU below 68 or a string ending in NUL is written as it is, and does not
//! decode back the same.) Everything a decoded message holds is written so that
//! `Message::decode(&m.encode()) == Ok(m)`.
//!
//! Decoding never panics and allocates at most a constant multiple of the input: only option
//! 119 can grow, a 2-byte pointer standing for a name of up to 253 characters.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;

/// The UDP port servers (and relays) listen on.
pub const SERVER_PORT: u16 = 67;
/// The UDP port clients listen on.
pub const CLIENT_PORT: u16 = 68;

/// [`Options::lease_time`] of a lease that never expires.
pub const INFINITE_LEASE: u32 = u32::MAX;

/// Compression pointers followed for one name in option 119 before it is rejected. A name has
/// at most 127 labels, so a sensible encoder needs far fewer; the limit keeps a chain of
/// pointers to pointers from making decoding quadratic.
pub const MAX_POINTERS_PER_NAME: usize = 128;

/// The fixed BOOTP header: op to file.
const HEADER_LEN: usize = 236;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The header and the magic cookie: the shortest message there can be.
const FIXED_LEN: usize = HEADER_LEN + MAGIC_COOKIE.len();
/// BOOTP's minimum message size (RFC 1542 section 2.1), which some relays still enforce.
const MIN_ENCODED_LEN: usize = 300;
const SNAME: Range<usize> = 44..108;
const FILE: Range<usize> = 108..236;
const HTYPE_ETHERNET: u8 = 1;
const HLEN_ETHERNET: u8 = 6;
const BROADCAST_FLAG: u16 = 0x8000;
/// The smallest MTU RFC 791 lets a link have.
const MIN_MTU: u16 = 68;
/// Longest DNS name in wire form, final zero included (RFC 1035 section 2.3.4).
const MAX_NAME_WIRE_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;
/// Compression pointers can only reach offsets below this (14 bits).
const MAX_POINTER_TARGET: usize = 0x3fff;

/// Option codes (RFC 2132 unless noted).
mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTERS: u8 = 3;
    pub const DNS_SERVERS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const NTP_SERVERS: u8 = 42;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    /// RFC 3397.
    pub const DOMAIN_SEARCH: u8 = 119;
    /// RFC 3442.
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// BOOTP's `op`: which way the message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Client to server (BOOTREQUEST).
    Request = 1,
    /// Server to client (BOOTREPLY).
    Reply = 2,
}

/// Option 53, the DHCP message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    /// The value on the wire.
    pub fn code(self) -> u8 {
        match self {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
        }
    }

    /// The type with this wire value, if it is one of RFC 2132's eight.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }
}

/// One route of option 121 (RFC 3442). `destination` has no bits set beyond `prefix_len` in a
/// decoded route; encoding masks them off. A gateway of 0.0.0.0 means the destination is on
/// the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClasslessRoute {
    pub destination: Ipv4Addr,
    /// 0 to 32.
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// The options this daemon reads or sends; the number after each is its code. Unknown options
/// are not kept. Lists are empty and the rest `None` when the option was absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// 53. `None` only in a plain BOOTP message.
    pub message_type: Option<MessageType>,
    /// 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// 3. Ignored by the client when `classless_routes` is not empty (RFC 3442).
    pub routers: Vec<Ipv4Addr>,
    /// 6.
    pub dns_servers: Vec<Ipv4Addr>,
    /// 12.
    pub host_name: Option<String>,
    /// 15.
    pub domain_name: Option<String>,
    /// 26, the interface MTU; at least 68 in a decoded message.
    pub mtu: Option<u16>,
    /// 28.
    pub broadcast: Option<Ipv4Addr>,
    /// 42.
    pub ntp_servers: Vec<Ipv4Addr>,
    /// 50, the address a client asks for.
    pub requested_ip: Option<Ipv4Addr>,
    /// 51, in seconds; [`INFINITE_LEASE`] never expires.
    pub lease_time: Option<u32>,
    /// 54.
    pub server_id: Option<Ipv4Addr>,
    /// 55, the option codes a client asks for.
    pub parameter_request_list: Vec<u8>,
    /// 56, an error text (in a NAK) or a client's reason (in a DECLINE).
    pub message: Option<String>,
    /// 57.
    pub max_message_size: Option<u16>,
    /// 58, T1 in seconds.
    pub renewal_time: Option<u32>,
    /// 59, T2 in seconds.
    pub rebinding_time: Option<u32>,
    /// 60.
    pub vendor_class: Option<Vec<u8>>,
    /// 61, the first byte a hardware type (RFC 2132) or 255 for a DUID (RFC 4361).
    pub client_id: Option<Vec<u8>>,
    /// 119 (RFC 3397), dotted names without the trailing dot.
    pub domain_search: Vec<String>,
    /// 121 (RFC 3442).
    pub classless_routes: Vec<ClasslessRoute>,
}

/// One DHCP message: the BOOTP header fields a client uses and the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: Op,
    /// Transaction id, chosen by the client and echoed by the server.
    pub xid: u32,
    /// Seconds since the client began acquiring or renewing.
    pub secs: u16,
    /// The flags' broadcast bit (15): the client cannot receive unicast before it is
    /// configured, so replies must be broadcast.
    pub broadcast: bool,
    /// The client's address when it already has one (renewing, rebinding, INFORM).
    pub ciaddr: Ipv4Addr,
    /// "Your" address: the one offered or leased.
    pub yiaddr: Ipv4Addr,
    /// The next server (TFTP) address; dnsmasq puts its own address here.
    pub siaddr: Ipv4Addr,
    /// The relay agent's address, 0.0.0.0 when no relay is involved.
    pub giaddr: Ipv4Addr,
    /// The client's Ethernet address.
    pub chaddr: [u8; 6],
    pub options: Options,
}

/// Why a message could not be decoded. Each names the field, option or offset at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "message of {len} bytes is shorter than the {FIXED_LEN} of a BOOTP header and magic cookie"
    )]
    TooShort { len: usize },
    #[error(
        "magic cookie is {}.{}.{}.{}, not 99.130.83.99 (a BOOTP message, or not DHCP at all)",
        found[0], found[1], found[2], found[3]
    )]
    BadMagicCookie { found: [u8; 4] },
    #[error("op {op} is neither 1 (request) nor 2 (reply)")]
    UnknownOp { op: u8 },
    #[error("hardware type {htype} with address length {hlen} is not Ethernet (type 1, length 6)")]
    UnsupportedHardware { htype: u8, hlen: u8 },
    #[error("option {code} in the {field} field runs past the end of the field")]
    OptionTruncated { code: u8, field: &'static str },
    #[error("option {code} has bad length {len} (wants {wants})")]
    BadOptionLength {
        code: u8,
        /// After concatenating every instance of the option.
        len: usize,
        wants: &'static str,
    },
    #[error("option 53 has message type {value}, not one of 1 to 8")]
    UnknownMessageType { value: u8 },
    #[error("option 52 (overload) has value {value}, not 1 (file), 2 (sname) or 3 (both)")]
    BadOverload { value: u8 },
    #[error("option 26 has interface MTU {mtu}, below the minimum of 68")]
    MtuTooSmall { mtu: u16 },
    #[error("bad DNS name in option 119 at offset {offset}: {reason}")]
    BadDomainSearch {
        /// Into the concatenated option data.
        offset: usize,
        reason: &'static str,
    },
    #[error("bad route in option 121 at offset {offset}: {reason}")]
    BadClasslessRoute {
        /// Into the concatenated option data.
        offset: usize,
        reason: &'static str,
    },
    #[error("the {field} field has no End option (255)")]
    MissingEnd { field: &'static str },
}

impl Message {
    /// Decodes one UDP payload. See the module documentation for what is accepted.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let (fixed, options_field) = bytes
            .split_first_chunk::<FIXED_LEN>()
            .ok_or(DecodeError::TooShort { len: bytes.len() })?;
        let cookie = octets(fixed, HEADER_LEN);
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadMagicCookie { found: cookie });
        }
        let op = match fixed[0] {
            1 => Op::Request,
            2 => Op::Reply,
            op => return Err(DecodeError::UnknownOp { op }),
        };
        let (htype, hlen) = (fixed[1], fixed[2]);
        if (htype, hlen) != (HTYPE_ETHERNET, HLEN_ETHERNET) {
            return Err(DecodeError::UnsupportedHardware { htype, hlen });
        }
        let flags = u16::from_be_bytes([fixed[10], fixed[11]]);
        let mut chaddr = [0; 6];
        chaddr.copy_from_slice(&fixed[28..34]);

        let mut raw = BTreeMap::new();
        gather(options_field, "options", &mut raw)?;
        let overload = match raw.remove(&code::OVERLOAD).as_deref() {
            None => 0,
            Some(&[value @ 1..=3]) => value,
            Some(&[value]) => return Err(DecodeError::BadOverload { value }),
            Some(data) => return Err(bad_length(code::OVERLOAD, data, "1")),
        };
        if overload & 1 != 0 {
            gather(&fixed[FILE], "file", &mut raw)?;
        }
        if overload & 2 != 0 {
            gather(&fixed[SNAME], "sname", &mut raw)?;
        }
        // Option 52 counts only in the options field (RFC 2131 section 4.1).
        raw.remove(&code::OVERLOAD);

        Ok(Message {
            op,
            xid: u32::from_be_bytes(octets(fixed, 4)),
            secs: u16::from_be_bytes([fixed[8], fixed[9]]),
            broadcast: flags & BROADCAST_FLAG != 0,
            ciaddr: Ipv4Addr::from(octets(fixed, 12)),
            yiaddr: Ipv4Addr::from(octets(fixed, 16)),
            siaddr: Ipv4Addr::from(octets(fixed, 20)),
            giaddr: Ipv4Addr::from(octets(fixed, 24)),
            chaddr,
            options: Options::from_raw(&raw)?,
        })
    }

    /// Encodes the message: at least 300 bytes, option 53 first, the rest in ascending code
    /// order, long options split (RFC 3396), End last. See the module documentation for what
    /// is left out.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_ENCODED_LEN);
        out.extend_from_slice(&[self.op as u8, HTYPE_ETHERNET, HLEN_ETHERNET, 0]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        let flags = if self.broadcast { BROADCAST_FLAG } else { 0 };
        out.extend_from_slice(&flags.to_be_bytes());
        for addr in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&addr.octets());
        }
        out.extend_from_slice(&self.chaddr);
        // The rest of chaddr, sname and file.
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&MAGIC_COOKIE);
        self.options.encode_into(&mut out);
        out.push(code::END);
        if out.len() < MIN_ENCODED_LEN {
            out.resize(MIN_ENCODED_LEN, 0);
        }
        out
    }
}

impl Options {
    /// Interprets the concatenated options.
    fn from_raw(raw: &BTreeMap<u8, Vec<u8>>) -> Result<Options, DecodeError> {
        let get = |code: u8| raw.get(&code).map(Vec::as_slice);
        let addr = |code| get(code).map(|data| read_addr(code, data)).transpose();
        let addrs = |code| get(code).map_or(Ok(Vec::new()), |data| read_addrs(code, data));
        let text = |code| get(code).map(read_text);
        let seconds = |code| {
            get(code)
                .map(|data| fixed::<4>(code, data).map(u32::from_be_bytes))
                .transpose()
        };
        let mtu = get(code::MTU)
            .map(|data| {
                let mtu = u16::from_be_bytes(fixed::<2>(code::MTU, data)?);
                if mtu < MIN_MTU {
                    return Err(DecodeError::MtuTooSmall { mtu });
                }
                Ok(mtu)
            })
            .transpose()?;
        let message_type = get(code::MESSAGE_TYPE)
            .map(|data| {
                let [value] = fixed::<1>(code::MESSAGE_TYPE, data)?;
                MessageType::from_code(value).ok_or(DecodeError::UnknownMessageType { value })
            })
            .transpose()?;
        Ok(Options {
            subnet_mask: addr(code::SUBNET_MASK)?,
            routers: addrs(code::ROUTERS)?,
            dns_servers: addrs(code::DNS_SERVERS)?,
            host_name: text(code::HOST_NAME),
            domain_name: text(code::DOMAIN_NAME),
            mtu,
            broadcast: addr(code::BROADCAST)?,
            ntp_servers: addrs(code::NTP_SERVERS)?,
            requested_ip: addr(code::REQUESTED_IP)?,
            lease_time: seconds(code::LEASE_TIME)?,
            message_type,
            server_id: addr(code::SERVER_ID)?,
            parameter_request_list: get(code::PARAMETER_REQUEST_LIST)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            message: text(code::MESSAGE),
            max_message_size: get(code::MAX_MESSAGE_SIZE)
                .map(|data| fixed::<2>(code::MAX_MESSAGE_SIZE, data).map(u16::from_be_bytes))
                .transpose()?,
            renewal_time: seconds(code::RENEWAL_TIME)?,
            rebinding_time: seconds(code::REBINDING_TIME)?,
            vendor_class: get(code::VENDOR_CLASS).map(<[u8]>::to_vec),
            client_id: get(code::CLIENT_ID).map(<[u8]>::to_vec),
            domain_search: get(code::DOMAIN_SEARCH).map_or(Ok(Vec::new()), decode_domain_search)?,
            classless_routes: get(code::CLASSLESS_ROUTES)
                .map_or(Ok(Vec::new()), decode_classless_routes)?,
        })
    }

    /// Appends every option that is set: 53 first, then ascending codes.
    fn encode_into(&self, out: &mut Vec<u8>) {
        if let Some(message_type) = self.message_type {
            put(out, code::MESSAGE_TYPE, &[message_type.code()]);
        }
        if let Some(mask) = self.subnet_mask {
            put(out, code::SUBNET_MASK, &mask.octets());
        }
        put_addrs(out, code::ROUTERS, &self.routers);
        put_addrs(out, code::DNS_SERVERS, &self.dns_servers);
        if let Some(name) = &self.host_name {
            put(out, code::HOST_NAME, name.as_bytes());
        }
        if let Some(name) = &self.domain_name {
            put(out, code::DOMAIN_NAME, name.as_bytes());
        }
        if let Some(mtu) = self.mtu {
            put(out, code::MTU, &mtu.to_be_bytes());
        }
        if let Some(broadcast) = self.broadcast {
            put(out, code::BROADCAST, &broadcast.octets());
        }
        put_addrs(out, code::NTP_SERVERS, &self.ntp_servers);
        if let Some(addr) = self.requested_ip {
            put(out, code::REQUESTED_IP, &addr.octets());
        }
        if let Some(seconds) = self.lease_time {
            put(out, code::LEASE_TIME, &seconds.to_be_bytes());
        }
        if let Some(addr) = self.server_id {
            put(out, code::SERVER_ID, &addr.octets());
        }
        if !self.parameter_request_list.is_empty() {
            put(
                out,
                code::PARAMETER_REQUEST_LIST,
                &self.parameter_request_list,
            );
        }
        if let Some(text) = &self.message {
            put(out, code::MESSAGE, text.as_bytes());
        }
        if let Some(size) = self.max_message_size {
            put(out, code::MAX_MESSAGE_SIZE, &size.to_be_bytes());
        }
        if let Some(seconds) = self.renewal_time {
            put(out, code::RENEWAL_TIME, &seconds.to_be_bytes());
        }
        if let Some(seconds) = self.rebinding_time {
            put(out, code::REBINDING_TIME, &seconds.to_be_bytes());
        }
        if let Some(class) = &self.vendor_class {
            put(out, code::VENDOR_CLASS, class);
        }
        if let Some(id) = &self.client_id {
            put(out, code::CLIENT_ID, id);
        }
        let search = encode_domain_search(&self.domain_search);
        if !search.is_empty() {
            put(out, code::DOMAIN_SEARCH, &search);
        }
        let routes = encode_classless_routes(&self.classless_routes);
        if !routes.is_empty() {
            put(out, code::CLASSLESS_ROUTES, &routes);
        }
    }
}

/// Four bytes of the fixed part from `at`. Every caller passes a constant within it.
fn octets(fixed: &[u8; FIXED_LEN], at: usize) -> [u8; 4] {
    [fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]
}

/// Reads the options of one field (options, file or sname) into `raw`, appending each to what
/// earlier instances of its code left there (RFC 3396). Stops at End, which must be there.
fn gather(
    field_bytes: &[u8],
    field: &'static str,
    raw: &mut BTreeMap<u8, Vec<u8>>,
) -> Result<(), DecodeError> {
    let mut rest = field_bytes;
    loop {
        let Some((&code, after_code)) = rest.split_first() else {
            return Err(DecodeError::MissingEnd { field });
        };
        match code {
            code::PAD => rest = after_code,
            code::END => return Ok(()),
            _ => {
                let truncated = DecodeError::OptionTruncated { code, field };
                let (&len, after_len) = after_code.split_first().ok_or(truncated.clone())?;
                let (data, after_data) = after_len
                    .split_at_checked(usize::from(len))
                    .ok_or(truncated)?;
                raw.entry(code).or_default().extend_from_slice(data);
                rest = after_data;
            }
        }
    }
}

fn bad_length(code: u8, data: &[u8], wants: &'static str) -> DecodeError {
    DecodeError::BadOptionLength {
        code,
        len: data.len(),
        wants,
    }
}

/// The data of a fixed-size option.
fn fixed<const N: usize>(code: u8, data: &[u8]) -> Result<[u8; N], DecodeError> {
    data.try_into().map_err(|_| {
        let wants = match N {
            1 => "1",
            2 => "2",
            _ => "4",
        };
        bad_length(code, data, wants)
    })
}

fn read_addr(code: u8, data: &[u8]) -> Result<Ipv4Addr, DecodeError> {
    fixed::<4>(code, data).map(Ipv4Addr::from)
}

fn read_addrs(code: u8, data: &[u8]) -> Result<Vec<Ipv4Addr>, DecodeError> {
    let (addrs, []) = data.as_chunks::<4>() else {
        return Err(bad_length(code, data, "a multiple of 4"));
    };
    Ok(addrs.iter().copied().map(Ipv4Addr::from).collect())
}

/// Lossy UTF-8 with trailing NULs trimmed.
fn read_text(data: &[u8]) -> String {
    let len = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    String::from_utf8_lossy(&data[..len]).into_owned()
}

/// Appends option `code` holding `data`, split into instances of at most 255 bytes; an empty
/// `data` is one instance of length 0.
fn put(out: &mut Vec<u8>, code: u8, data: &[u8]) {
    if data.is_empty() {
        out.extend_from_slice(&[code, 0]);
    }
    for chunk in data.chunks(usize::from(u8::MAX)) {
        // chunks() of 255 bytes at most.
        out.extend_from_slice(&[code, chunk.len() as u8]);
        out.extend_from_slice(chunk);
    }
}

fn put_addrs(out: &mut Vec<u8>, code: u8, addrs: &[Ipv4Addr]) {
    if !addrs.is_empty() {
        let data: Vec<u8> = addrs.iter().flat_map(|addr| addr.octets()).collect();
        put(out, code, &data);
    }
}

fn is_label_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// Whether decoding option 119 could produce `name`: the test encoding applies.
fn is_search_name(name: &str) -> bool {
    // One length octet per label plus the final zero: the dots and the ends.
    let wire_len = name.len() + 2;
    !name.is_empty()
        && wire_len <= MAX_NAME_WIRE_LEN
        && name.split('.').all(|label| {
            (1..=MAX_LABEL_LEN).contains(&label.len()) && label.bytes().all(is_label_byte)
        })
}

/// Decodes option 119: names one after another until the data ends (RFC 3397).
fn decode_domain_search(data: &[u8]) -> Result<Vec<String>, DecodeError> {
    let mut names = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (name, next) = read_name(data, at)?;
        names.push(name);
        at = next;
    }
    Ok(names)
}

/// Reads the name that starts at `start`; returns it and the offset after it in the data (after
/// its final zero, or after the first pointer it holds).
fn read_name(data: &[u8], start: usize) -> Result<(String, usize), DecodeError> {
    let bad = |offset, reason| DecodeError::BadDomainSearch { offset, reason };
    let mut name = String::new();
    // Wire octets of the name without compression, the final zero not yet counted.
    let mut wire_len = 0;
    let mut at = start;
    // Where the current run of labels began: a pointer must land before it, so every jump goes
    // strictly backward and a loop cannot form.
    let mut run_start = start;
    let mut pointers = 0;
    let mut next = None;
    loop {
        let &len = data
            .get(at)
            .ok_or(bad(at, "name runs past the end of the option"))?;
        match len {
            0 => break,
            1..=63 => {
                let len = usize::from(len);
                let label = data
                    .get(at + 1..at + 1 + len)
                    .ok_or(bad(at, "label runs past the end of the option"))?;
                wire_len += 1 + len;
                if wire_len + 1 > MAX_NAME_WIRE_LEN {
                    return Err(bad(start, "name longer than 255 octets"));
                }
                if !label.iter().copied().all(is_label_byte) {
                    return Err(bad(
                        at,
                        "label holds a character other than a letter, digit, '-' or '_'",
                    ));
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().copied().map(char::from));
                at += 1 + len;
            }
            0xc0..=0xff => {
                let &low = data.get(at + 1).ok_or(bad(
                    at,
                    "compression pointer runs past the end of the option",
                ))?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                if target >= run_start {
                    return Err(bad(
                        at,
                        "compression pointer does not point back before its own labels (a loop)",
                    ));
                }
                pointers += 1;
                if pointers > MAX_POINTERS_PER_NAME {
                    return Err(bad(start, "name follows too many compression pointers"));
                }
                next.get_or_insert(at + 2);
                run_start = target;
                at = target;
            }
            _ => return Err(bad(at, "label type 0x40 or 0x80 is reserved")),
        }
    }
    if name.is_empty() {
        return Err(bad(start, "the root name is not a search domain"));
    }
    Ok((name, next.unwrap_or(at + 1)))
}

/// Encodes option 119, replacing each suffix already written by a pointer to it. Names
/// decoding would reject are left out.
fn encode_domain_search(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    // Every suffix written so far and where it starts. Compared exactly, not
    // case-insensitively, so decoding gives back the same text.
    let mut written: HashMap<&str, usize> = HashMap::new();
    for name in names.iter().filter(|name| is_search_name(name)) {
        let mut rest = name.as_str();
        loop {
            if let Some(&offset) = written.get(rest) {
                // offset <= MAX_POINTER_TARGET, 14 bits.
                out.extend_from_slice(&[0xc0 | (offset >> 8) as u8, offset as u8]);
                break;
            }
            if out.len() <= MAX_POINTER_TARGET {
                written.insert(rest, out.len());
            }
            let (label, tail) = rest.split_once('.').unwrap_or((rest, ""));
            // is_search_name: 1 to 63 octets.
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
            if tail.is_empty() {
                out.push(0);
                break;
            }
            rest = tail;
        }
    }
    out
}

/// `addr` with the bits beyond `prefix_len` (at most 32) cleared.
fn mask(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let keep = u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix_len)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & keep)
}

/// Decodes option 121: (prefix length, significant octets of the destination, gateway) until
/// the data ends (RFC 3442).
fn decode_classless_routes(data: &[u8]) -> Result<Vec<ClasslessRoute>, DecodeError> {
    let mut routes = Vec::new();
    let mut rest = data;
    while let Some((&prefix_len, after_len)) = rest.split_first() {
        let offset = data.len() - rest.len();
        let bad = |reason| DecodeError::BadClasslessRoute { offset, reason };
        if prefix_len > 32 {
            return Err(bad("prefix length above 32"));
        }
        let significant = usize::from(prefix_len).div_ceil(8);
        let (destination, after_destination) = after_len
            .split_at_checked(significant)
            .ok_or(bad("destination runs past the end of the option"))?;
        let (gateway, after_gateway) = after_destination
            .split_first_chunk::<4>()
            .ok_or(bad("gateway runs past the end of the option"))?;
        let mut octets = [0; 4];
        octets[..significant].copy_from_slice(destination);
        routes.push(ClasslessRoute {
            destination: mask(Ipv4Addr::from(octets), prefix_len),
            prefix_len,
            gateway: Ipv4Addr::from(*gateway),
        });
        rest = after_gateway;
    }
    Ok(routes)
}

/// Encodes option 121, destinations masked to their prefix; routes with a prefix length above
/// 32 are left out.
fn encode_classless_routes(routes: &[ClasslessRoute]) -> Vec<u8> {
    let mut out = Vec::new();
    for route in routes.iter().filter(|route| route.prefix_len <= 32) {
        let significant = usize::from(route.prefix_len).div_ceil(8);
        out.push(route.prefix_len);
        out.extend_from_slice(&mask(route.destination, route.prefix_len).octets()[..significant]);
        out.extend_from_slice(&route.gateway.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    /// Concatenates the parts of a hand-built packet.
    fn packet(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A BOOTREPLY header (op 2, Ethernet) with the given addresses and client MAC; sname and
    /// file zero.
    fn reply_header(xid: u32, flags: u16, yiaddr: [u8; 4], siaddr: [u8; 4]) -> Vec<u8> {
        packet(&[
            &[0x02, 0x01, 0x06, 0x00],
            &xid.to_be_bytes(),
            &[0x00, 0x00],
            &flags.to_be_bytes(),
            &[0, 0, 0, 0],
            &yiaddr,
            &siaddr,
            &[0, 0, 0, 0],
            &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            &[0; 10],
            &[0; 64],
            &[0; 128],
        ])
    }

    const COOKIE: [u8; 4] = [0x63, 0x82, 0x53, 0x63];

    /// A message with just the options given (raw, End included by the caller) after a request
    /// header.
    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut bytes = reply_header(1, 0, [0; 4], [0; 4]);
        bytes[0] = 1;
        bytes.extend_from_slice(&COOKIE);
        bytes.extend_from_slice(options);
        bytes
    }

    fn decode_options(options: &[u8]) -> Result<Options, DecodeError> {
        Message::decode(&with_options(options)).map(|message| message.options)
    }

    /// A DHCPOFFER laid out the way dnsmasq writes one on a libvirt-style network
    /// (192.168.122.0/24, one-hour leases): built by hand per RFC 2131/2132, not captured.
    fn dnsmasq_offer() -> Vec<u8> {
        packet(&[
            &[
                0x02, 0x01, 0x06, 0x00, // op BOOTREPLY, htype Ethernet, hlen 6, hops 0
                0x39, 0x03, 0xf3, 0x26, // xid
                0x00, 0x00, // secs
                0x00, 0x00, // flags: unicast
                0x00, 0x00, 0x00, 0x00, // ciaddr
                0xc0, 0xa8, 0x7a, 0x39, // yiaddr 192.168.122.57
                0xc0, 0xa8, 0x7a, 0x01, // siaddr 192.168.122.1: dnsmasq names itself
                0x00, 0x00, 0x00, 0x00, // giaddr
                0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // chaddr
            ],
            &[0; 10],  // rest of chaddr
            &[0; 64],  // sname
            &[0; 128], // file
            &[
                0x63, 0x82, 0x53, 0x63, // magic cookie
                0x35, 0x01, 0x02, // 53 message type: OFFER
                0x36, 0x04, 0xc0, 0xa8, 0x7a, 0x01, // 54 server id
                0x33, 0x04, 0x00, 0x00, 0x0e, 0x10, // 51 lease time 3600
                0x3a, 0x04, 0x00, 0x00, 0x07, 0x08, // 58 T1 1800
                0x3b, 0x04, 0x00, 0x00, 0x0c, 0x4e, // 59 T2 3150
                0x01, 0x04, 0xff, 0xff, 0xff, 0x00, // 1 subnet mask
                0x1c, 0x04, 0xc0, 0xa8, 0x7a, 0xff, // 28 broadcast
                0x03, 0x04, 0xc0, 0xa8, 0x7a, 0x01, // 3 router
                0x06, 0x04, 0xc0, 0xa8, 0x7a, 0x01, // 6 DNS server
                0x0f, 0x09, b's', b'h', b'o', b'a', b'l', b'.', b'l', b'a', b'n', // 15
                0x0c, 0x05, b'n', b'o', b'd', b'e', b'1', // 12 host name
                0xff, // end
            ],
        ])
    }

    /// A DHCPACK as dnsmasq sends it with jumbo frames, NTP, a search list and classless routes
    /// configured (`dhcp-option=26,9000`, `42`, `119`, `121`), to a client that set the
    /// broadcast flag; then zero padding. Built by hand.
    fn dnsmasq_ack() -> Vec<u8> {
        packet(&[
            &reply_header(0xdead_beef, 0x8000, [10, 0, 0, 42], [10, 0, 0, 1]),
            &COOKIE,
            &[
                0x35, 0x01, 0x05, // 53 ACK
                0x36, 0x04, 0x0a, 0x00, 0x00, 0x01, // 54 server id 10.0.0.1
                0x33, 0x04, 0xff, 0xff, 0xff, 0xff, // 51 infinite lease
                0x01, 0x04, 0xff, 0xff, 0xff, 0x00, // 1 mask
                0x1c, 0x04, 0x0a, 0x00, 0x00, 0xff, // 28 broadcast
                0x1a, 0x02, 0x23, 0x28, // 26 MTU 9000
                0x2a, 0x08, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, // 42 NTP x2
                0x06, 0x08, 0x0a, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, // 6 DNS x2
                // 119: "c1.shoal.lan", "shoal.lan" (a pointer to offset 3)
                0x77, 0x10, 0x02, b'c', b'1', 0x05, b's', b'h', b'o', b'a', b'l', 0x03, b'l', b'a',
                b'n', 0x00, 0xc0, 0x03, //
                // 121: 0.0.0.0/0 via 10.0.0.1, 192.168.0.0/16 via 10.0.0.254
                0x79, 0x0c, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x10, 0xc0, 0xa8, 0x0a, 0x00, 0x00, 0xfe,
                0x03, 0x04, 0x0a, 0x00, 0x00, 0x01, // 3 router
                0x38, 0x03, b'o', b'k', 0x00, // 56 message, NUL-terminated
                0xff, // end
            ],
            &[0; 20],
        ])
    }

    #[test]
    fn decodes_a_dnsmasq_offer_field_by_field() {
        let message = Message::decode(&dnsmasq_offer()).unwrap();
        let Message {
            op,
            xid,
            secs,
            broadcast,
            ciaddr,
            yiaddr,
            siaddr,
            giaddr,
            chaddr,
            options,
        } = message.clone();
        assert_eq!(op, Op::Reply);
        assert_eq!(xid, 0x3903_f326);
        assert_eq!(secs, 0);
        assert!(!broadcast);
        assert_eq!(ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(yiaddr, ip(192, 168, 122, 57));
        assert_eq!(siaddr, ip(192, 168, 122, 1));
        assert_eq!(giaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(chaddr, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(
            options,
            Options {
                message_type: Some(MessageType::Offer),
                subnet_mask: Some(ip(255, 255, 255, 0)),
                routers: vec![ip(192, 168, 122, 1)],
                dns_servers: vec![ip(192, 168, 122, 1)],
                host_name: Some("node1".into()),
                domain_name: Some("shoal.lan".into()),
                broadcast: Some(ip(192, 168, 122, 255)),
                lease_time: Some(3600),
                server_id: Some(ip(192, 168, 122, 1)),
                renewal_time: Some(1800),
                rebinding_time: Some(3150),
                ..Options::default()
            }
        );
        assert_eq!(Message::decode(&message.encode()), Ok(message));
    }

    #[test]
    fn decodes_a_dnsmasq_ack_field_by_field() {
        let message = Message::decode(&dnsmasq_ack()).unwrap();
        let expected = Message {
            op: Op::Reply,
            xid: 0xdead_beef,
            secs: 0,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: ip(10, 0, 0, 42),
            siaddr: ip(10, 0, 0, 1),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            options: Options {
                message_type: Some(MessageType::Ack),
                subnet_mask: Some(ip(255, 255, 255, 0)),
                routers: vec![ip(10, 0, 0, 1)],
                dns_servers: vec![ip(10, 0, 0, 1), ip(1, 1, 1, 1)],
                mtu: Some(9000),
                broadcast: Some(ip(10, 0, 0, 255)),
                ntp_servers: vec![ip(10, 0, 0, 1), ip(10, 0, 0, 2)],
                lease_time: Some(INFINITE_LEASE),
                server_id: Some(ip(10, 0, 0, 1)),
                message: Some("ok".into()),
                domain_search: vec!["c1.shoal.lan".into(), "shoal.lan".into()],
                classless_routes: vec![
                    ClasslessRoute {
                        destination: Ipv4Addr::UNSPECIFIED,
                        prefix_len: 0,
                        gateway: ip(10, 0, 0, 1),
                    },
                    ClasslessRoute {
                        destination: ip(192, 168, 0, 0),
                        prefix_len: 16,
                        gateway: ip(10, 0, 0, 254),
                    },
                ],
                ..Options::default()
            },
        };
        assert_eq!(message, expected);
        assert_eq!(Message::decode(&message.encode()), Ok(message));
    }

    #[test]
    fn encodes_a_discover_byte_for_byte() {
        let discover = Message {
            op: Op::Request,
            xid: 0x0102_0304,
            secs: 3,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef],
            options: Options {
                message_type: Some(MessageType::Discover),
                parameter_request_list: vec![1, 3, 6, 15, 26, 42, 119, 121],
                max_message_size: Some(1500),
                client_id: Some(vec![1, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]),
                host_name: Some("node7".into()),
                ..Options::default()
            },
        };
        let expected = packet(&[
            &[
                0x01, 0x01, 0x06, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00, 0x03, 0x80, 0x00,
            ],
            &[0; 16],
            &[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef],
            &[0; 10 + 64 + 128],
            &COOKIE,
            &[
                0x35, 0x01, 0x01, // 53 first
                0x0c, 0x05, b'n', b'o', b'd', b'e', b'7', // 12
                0x37, 0x08, 1, 3, 6, 15, 26, 42, 119, 121, // 55
                0x39, 0x02, 0x05, 0xdc, // 57
                0x3d, 0x07, 1, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, // 61
                0xff,
            ],
            &[0; 300 - 240 - 34],
        ]);
        let encoded = discover.encode();
        assert_eq!(encoded, expected);
        assert_eq!(encoded.len(), 300);
        assert_eq!(Message::decode(&encoded), Ok(discover));
    }

    #[test]
    fn a_message_past_300_bytes_is_not_padded() {
        let mut message = Message::decode(&dnsmasq_offer()).unwrap();
        message.options.client_id = Some(vec![7; 100]);
        let encoded = message.encode();
        assert!(encoded.len() > 300);
        assert_eq!(encoded.last(), Some(&code::END));
    }

    // RFC 3442 section 3's examples: the destination as significant octets only.
    const RFC3442_EXAMPLES: [(&[u8], [u8; 4], u8); 6] = [
        (&[0], [0, 0, 0, 0], 0),
        (&[8, 10], [10, 0, 0, 0], 8),
        (&[16, 10, 17], [10, 17, 0, 0], 16),
        (&[24, 10, 27, 129], [10, 27, 129, 0], 24),
        (&[25, 10, 229, 0, 128], [10, 229, 0, 128], 25),
        (&[32, 10, 198, 122, 47], [10, 198, 122, 47], 32),
    ];

    #[test]
    fn classless_routes_match_the_rfc_3442_examples() {
        let gateway = [10, 0, 0, 1];
        for (encoded, destination, prefix_len) in RFC3442_EXAMPLES {
            let route = ClasslessRoute {
                destination: Ipv4Addr::from(destination),
                prefix_len,
                gateway: Ipv4Addr::from(gateway),
            };
            let wire = [encoded, &gateway[..]].concat();
            assert_eq!(encode_classless_routes(std::slice::from_ref(&route)), wire);
            assert_eq!(decode_classless_routes(&wire), Ok(vec![route]));
        }
        // All six in one option, as a server would send them.
        let all: Vec<u8> = RFC3442_EXAMPLES
            .iter()
            .flat_map(|(encoded, _, _)| [*encoded, &gateway[..]].concat())
            .collect();
        let routes = decode_options(&[&[121, all.len() as u8][..], &all, &[255]].concat())
            .unwrap()
            .classless_routes;
        assert_eq!(routes.len(), 6);
        assert_eq!(routes[4].destination, ip(10, 229, 0, 128));
        assert_eq!(routes[4].prefix_len, 25);
    }

    #[test]
    fn classless_route_host_bits_are_masked() {
        // 10.229.0.255/25: the last significant octet carries host bits.
        let routes = decode_classless_routes(&[25, 10, 229, 0, 255, 10, 0, 0, 1]).unwrap();
        assert_eq!(routes[0].destination, ip(10, 229, 0, 128));
        let unmasked = ClasslessRoute {
            destination: ip(10, 27, 129, 77),
            prefix_len: 20,
            gateway: ip(10, 0, 0, 1),
        };
        assert_eq!(
            encode_classless_routes(&[unmasked]),
            [20, 10, 27, 128, 10, 0, 0, 1]
        );
    }

    #[test]
    fn encoding_leaves_out_routes_with_a_prefix_above_32() {
        let bad = ClasslessRoute {
            destination: ip(10, 0, 0, 0),
            prefix_len: 33,
            gateway: ip(10, 0, 0, 1),
        };
        assert_eq!(encode_classless_routes(&[bad]), Vec::<u8>::new());
    }

    /// RFC 3397 section 3's example: "eng.apple.com." and "marketing.apple.com.", the second
    /// compressed to a pointer to "apple.com." at offset 4.
    const RFC3397_EXAMPLE: [u8; 27] = [
        3, b'e', b'n', b'g', 5, b'a', b'p', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 9, b'm',
        b'a', b'r', b'k', b'e', b't', b'i', b'n', b'g', 0xc0, 0x04,
    ];

    #[test]
    fn domain_search_matches_the_rfc_3397_example() {
        let names = vec!["eng.apple.com".to_owned(), "marketing.apple.com".to_owned()];
        let options = decode_options(&[&[119, 27][..], &RFC3397_EXAMPLE, &[255]].concat());
        assert_eq!(options.unwrap().domain_search, names);
        assert_eq!(encode_domain_search(&names), RFC3397_EXAMPLE);
    }

    #[test]
    fn domain_search_compression_is_exact_about_case() {
        let names = vec!["a.Example.com".to_owned(), "b.example.com".to_owned()];
        let encoded = encode_domain_search(&names);
        // Only "com" is shared: "Example.com" and "example.com" differ.
        assert_eq!(
            encoded,
            [
                &[1, b'a', 7][..],
                b"Example",
                &[3, b'c', b'o', b'm', 0, 1, b'b', 7],
                b"example",
                &[0xc0, 10]
            ]
            .concat()
        );
        assert_eq!(decode_domain_search(&encoded), Ok(names));
    }

    #[test]
    fn encoding_leaves_out_names_decoding_would_reject() {
        let names: Vec<String> = [
            "",
            "trailing.dot.",
            "two..dots",
            "has space.lan",
            &"x".repeat(64),
            &["y"; 128].join("."),
            "kept.lan",
        ]
        .iter()
        .map(|name| name.to_string())
        .collect();
        let encoded = encode_domain_search(&names);
        assert_eq!(decode_domain_search(&encoded), Ok(vec!["kept.lan".into()]));
        // The longest name that fits: 253 characters, 255 octets on the wire.
        let longest = [
            &"a".repeat(63)[..],
            &"b".repeat(63),
            &"c".repeat(63),
            &"d".repeat(61),
        ]
        .join(".");
        assert_eq!(longest.len(), 253);
        let encoded = encode_domain_search(std::slice::from_ref(&longest));
        assert_eq!(encoded.len(), 255);
        assert_eq!(decode_domain_search(&encoded), Ok(vec![longest]));
    }

    #[test]
    fn repeated_options_are_concatenated() {
        // Two DNS servers in two instances of option 6, and a host name in three pieces with
        // another option between them.
        let options = decode_options(&[
            6, 4, 10, 0, 0, 1, //
            12, 2, b'n', b'o', //
            6, 4, 10, 0, 0, 2, //
            12, 0, //
            12, 3, b'd', b'e', b'1', //
            255,
        ])
        .unwrap();
        assert_eq!(options.dns_servers, vec![ip(10, 0, 0, 1), ip(10, 0, 0, 2)]);
        assert_eq!(options.host_name.as_deref(), Some("node1"));
        // An address split across instances mid-way still reads.
        let options = decode_options(&[3, 2, 10, 0, 3, 2, 0, 1, 255]).unwrap();
        assert_eq!(options.routers, vec![ip(10, 0, 0, 1)]);
    }

    #[test]
    fn long_options_are_split_on_encoding() {
        let mut message = Message::decode(&dnsmasq_offer()).unwrap();
        let client_id: Vec<u8> = (0..=255u8).chain(0..44).collect();
        message.options.client_id = Some(client_id.clone());
        message.options.dns_servers = (0..70).map(|n| ip(10, 0, 0, n)).collect();
        let encoded = message.encode();
        let instances: Vec<usize> = option_instances(&encoded, code::CLIENT_ID);
        assert_eq!(instances, [255, 45]);
        assert_eq!(option_instances(&encoded, code::DNS_SERVERS), [255, 25]);
        assert_eq!(Message::decode(&encoded), Ok(message));
    }

    /// The lengths of each instance of `wanted` in an encoded message's options field.
    fn option_instances(encoded: &[u8], wanted: u8) -> Vec<usize> {
        let mut lengths = Vec::new();
        let mut rest = &encoded[FIXED_LEN..];
        while let [code, len, tail @ ..] = rest {
            if *code == code::END {
                break;
            }
            let len = usize::from(*len);
            if *code == wanted {
                lengths.push(len);
            }
            rest = &tail[len..];
        }
        lengths
    }

    /// A request with `options` in the options field, and `file` and `sname` filled from the
    /// start with the bytes given.
    fn overloaded(options: &[u8], file: &[u8], sname: &[u8]) -> Vec<u8> {
        let mut bytes = with_options(options);
        bytes[FILE.start..FILE.start + file.len()].copy_from_slice(file);
        bytes[SNAME.start..SNAME.start + sname.len()].copy_from_slice(sname);
        bytes
    }

    #[test]
    fn overload_reads_options_from_file_then_sname() {
        let bytes = overloaded(
            &[53, 1, 5, 52, 1, 3, 6, 4, 10, 0, 0, 1, 255],
            &[0, 0, 6, 4, 10, 0, 0, 2, 3, 4, 10, 0, 0, 254, 255],
            &[6, 4, 10, 0, 0, 3, 12, 2, b'h', b'i', 255],
        );
        let options = Message::decode(&bytes).unwrap().options;
        assert_eq!(options.message_type, Some(MessageType::Ack));
        // Concatenated in the order options, file, sname.
        assert_eq!(
            options.dns_servers,
            vec![ip(10, 0, 0, 1), ip(10, 0, 0, 2), ip(10, 0, 0, 3)]
        );
        assert_eq!(options.routers, vec![ip(10, 0, 0, 254)]);
        assert_eq!(options.host_name.as_deref(), Some("hi"));
    }

    #[test]
    fn overload_reads_only_the_fields_it_names() {
        let file = [3, 4, 10, 0, 0, 1, 255];
        let sname = [6, 4, 10, 0, 0, 2, 255];
        let only_file = overloaded(&[52, 1, 1, 255], &file, &sname);
        let options = Message::decode(&only_file).unwrap().options;
        assert_eq!(options.routers, vec![ip(10, 0, 0, 1)]);
        assert_eq!(options.dns_servers, Vec::<Ipv4Addr>::new());
        let only_sname = overloaded(&[52, 1, 2, 255], &file, &sname);
        let options = Message::decode(&only_sname).unwrap().options;
        assert_eq!(options.routers, Vec::<Ipv4Addr>::new());
        assert_eq!(options.dns_servers, vec![ip(10, 0, 0, 2)]);
        // Without option 52, file and sname are names, not options.
        let options = Message::decode(&overloaded(&[255], &file, &sname))
            .unwrap()
            .options;
        assert_eq!(options, Options::default());
    }

    #[test]
    fn overload_in_file_or_sname_is_ignored() {
        // A 52 inside file neither errs (it would be a second instance) nor opens sname.
        let bytes = overloaded(
            &[52, 1, 1, 255],
            &[52, 1, 2, 255],
            &[6, 4, 10, 0, 0, 2, 255],
        );
        assert_eq!(Message::decode(&bytes).unwrap().options, Options::default());
    }

    #[test]
    fn pad_unknown_options_and_bytes_after_end_are_skipped() {
        let options = decode_options(&[
            0, 0, 53, 1, 3, 0, // pads around message type
            224, 3, 1, 2, 3, // a site-specific option
            82, 0, // an empty relay agent option
            255, 6, 4, // garbage after End
        ])
        .unwrap();
        assert_eq!(
            options,
            Options {
                message_type: Some(MessageType::Request),
                ..Options::default()
            }
        );
    }

    #[test]
    fn strings_are_lossy_and_lose_trailing_nuls() {
        let options = decode_options(&[12, 5, b'a', 0xff, b'b', 0, 0, 15, 2, 0, 0, 255]).unwrap();
        assert_eq!(options.host_name.as_deref(), Some("a\u{fffd}b"));
        assert_eq!(options.domain_name.as_deref(), Some(""));
    }

    #[test]
    fn empty_options_read_as_empty_values() {
        let options = decode_options(&[3, 0, 55, 0, 60, 0, 61, 0, 119, 0, 121, 0, 255]).unwrap();
        assert_eq!(
            options,
            Options {
                vendor_class: Some(vec![]),
                client_id: Some(vec![]),
                ..Options::default()
            }
        );
    }

    #[test]
    fn every_message_type_round_trips_through_its_code() {
        for code in 1..=8 {
            let message_type = MessageType::from_code(code).unwrap();
            assert_eq!(message_type.code(), code);
            let options = decode_options(&[53, 1, code, 255]).unwrap();
            assert_eq!(options.message_type, Some(message_type));
        }
        assert_eq!(MessageType::from_code(0), None);
        assert_eq!(MessageType::from_code(9), None);
    }

    // One test per DecodeError variant.

    #[test]
    fn error_too_short() {
        let bytes = with_options(&[255]);
        assert_eq!(
            Message::decode(&bytes[..239]),
            Err(DecodeError::TooShort { len: 239 })
        );
        assert_eq!(Message::decode(&[]), Err(DecodeError::TooShort { len: 0 }));
    }

    #[test]
    fn error_bad_magic_cookie() {
        let mut bytes = with_options(&[255]);
        bytes[236..240].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::BadMagicCookie {
                found: [1, 2, 3, 4]
            })
        );
    }

    #[test]
    fn error_unknown_op() {
        let mut bytes = with_options(&[255]);
        bytes[0] = 3;
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::UnknownOp { op: 3 })
        );
    }

    #[test]
    fn error_unsupported_hardware() {
        // InfiniBand: type 32, chaddr unused (length 0).
        let mut bytes = with_options(&[255]);
        bytes[1] = 32;
        bytes[2] = 0;
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::UnsupportedHardware { htype: 32, hlen: 0 })
        );
        bytes[1] = 1;
        bytes[2] = 16;
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::UnsupportedHardware { htype: 1, hlen: 16 })
        );
    }

    #[test]
    fn error_option_truncated() {
        let truncated = |code, field| DecodeError::OptionTruncated { code, field };
        // The data runs past the end.
        assert_eq!(
            decode_options(&[6, 8, 10, 0, 0, 1]),
            Err(truncated(6, "options"))
        );
        // The length byte is missing.
        assert_eq!(
            decode_options(&[53, 1, 1, 12]),
            Err(truncated(12, "options"))
        );
        let in_file = overloaded(
            &[52, 1, 1, 255],
            &[0; 126].iter().chain(&[3, 4]).copied().collect::<Vec<_>>(),
            &[],
        );
        assert_eq!(Message::decode(&in_file), Err(truncated(3, "file")));
    }

    #[test]
    fn error_bad_option_length() {
        let bad = |code, len, wants| Err(DecodeError::BadOptionLength { code, len, wants });
        assert_eq!(decode_options(&[1, 3, 255, 255, 255, 255]), bad(1, 3, "4"));
        assert_eq!(
            decode_options(&[3, 6, 10, 0, 0, 1, 10, 0, 255]),
            bad(3, 6, "a multiple of 4")
        );
        assert_eq!(decode_options(&[26, 4, 0, 0, 5, 220, 255]), bad(26, 4, "2"));
        assert_eq!(decode_options(&[51, 2, 0, 1, 255]), bad(51, 2, "4"));
        assert_eq!(decode_options(&[52, 2, 1, 2, 255]), bad(52, 2, "1"));
        assert_eq!(decode_options(&[57, 1, 5, 255]), bad(57, 1, "2"));
        // Two instances of a one-byte option make two bytes.
        assert_eq!(decode_options(&[53, 1, 1, 53, 1, 1, 255]), bad(53, 2, "1"));
    }

    #[test]
    fn error_unknown_message_type() {
        assert_eq!(
            decode_options(&[53, 1, 9, 255]),
            Err(DecodeError::UnknownMessageType { value: 9 })
        );
    }

    #[test]
    fn error_bad_overload() {
        assert_eq!(
            decode_options(&[52, 1, 4, 255]),
            Err(DecodeError::BadOverload { value: 4 })
        );
    }

    #[test]
    fn error_mtu_too_small() {
        assert_eq!(
            decode_options(&[26, 2, 0, 67, 255]),
            Err(DecodeError::MtuTooSmall { mtu: 67 })
        );
        assert_eq!(decode_options(&[26, 2, 0, 68, 255]).unwrap().mtu, Some(68));
    }

    #[test]
    fn error_bad_domain_search() {
        let bad = |offset, reason| DecodeError::BadDomainSearch { offset, reason };
        let loop_reason = "compression pointer does not point back before its own labels (a loop)";
        // A pointer to itself.
        assert_eq!(
            decode_domain_search(&[0xc0, 0x00]),
            Err(bad(0, loop_reason))
        );
        // A pointer into its own name's labels.
        assert_eq!(
            decode_domain_search(&[1, b'a', 0xc0, 0x00]),
            Err(bad(2, loop_reason))
        );
        // Two names pointing at each other: the second points forward into the first's
        // labels, which point back.
        assert_eq!(
            decode_domain_search(&[1, b'a', 0xc0, 0x04, 1, b'b', 0xc0, 0x00]),
            Err(bad(2, loop_reason))
        );
        assert_eq!(
            decode_domain_search(&[1, b'a']),
            Err(bad(2, "name runs past the end of the option"))
        );
        assert_eq!(
            decode_domain_search(&[3, b'a', 0]),
            Err(bad(0, "label runs past the end of the option"))
        );
        assert_eq!(
            decode_domain_search(&[1, b'a', 0, 0xc0]),
            Err(bad(
                3,
                "compression pointer runs past the end of the option"
            ))
        );
        assert_eq!(
            decode_domain_search(&[0x40, 0]),
            Err(bad(0, "label type 0x40 or 0x80 is reserved"))
        );
        assert_eq!(
            decode_domain_search(&[3, b'a', b' ', b'b', 0]),
            Err(bad(
                0,
                "label holds a character other than a letter, digit, '-' or '_'"
            ))
        );
        assert_eq!(
            decode_domain_search(&[1, b'a', 0, 0]),
            Err(bad(3, "the root name is not a search domain"))
        );
        // 128 one-letter labels: 256 octets with the final zero.
        let long: Vec<u8> = [1, b'x'].repeat(128).into_iter().chain([0]).collect();
        assert_eq!(
            decode_domain_search(&long),
            Err(bad(0, "name longer than 255 octets"))
        );
        // A chain of pointers, each to the one before, longer than the limit.
        let mut chain = vec![1, b'a', 0];
        chain.extend_from_slice(&[0xc0, 0]);
        for n in 0..MAX_POINTERS_PER_NAME {
            let previous = 3 + 2 * n;
            chain.extend_from_slice(&[0xc0 | (previous >> 8) as u8, previous as u8]);
        }
        assert_eq!(
            decode_domain_search(&chain),
            Err(bad(
                chain.len() - 2,
                "name follows too many compression pointers"
            ))
        );
        chain.truncate(chain.len() - 2);
        assert_eq!(
            decode_domain_search(&chain).unwrap().len(),
            1 + MAX_POINTERS_PER_NAME
        );
        // Through decode: the offset is into the concatenated option.
        assert_eq!(
            decode_options(&[119, 2, 1, b'a', 119, 2, 0xc0, 0x02, 255]),
            Err(bad(2, loop_reason))
        );
    }

    #[test]
    fn error_bad_classless_route() {
        let bad = |offset, reason| DecodeError::BadClasslessRoute { offset, reason };
        assert_eq!(
            decode_classless_routes(&[0, 10, 0, 0, 1, 33, 10, 0, 0, 0, 0, 10, 0, 0, 1]),
            Err(bad(5, "prefix length above 32"))
        );
        assert_eq!(
            decode_classless_routes(&[24, 10, 0]),
            Err(bad(0, "destination runs past the end of the option"))
        );
        assert_eq!(
            decode_classless_routes(&[24, 10, 0, 0, 10, 0, 0]),
            Err(bad(0, "gateway runs past the end of the option"))
        );
        assert_eq!(
            decode_options(&[121, 3, 8, 10, 10, 255]),
            Err(bad(0, "gateway runs past the end of the option"))
        );
    }

    #[test]
    fn error_missing_end() {
        let missing = |field| DecodeError::MissingEnd { field };
        assert_eq!(decode_options(&[]), Err(missing("options")));
        assert_eq!(decode_options(&[53, 1, 1, 0, 0]), Err(missing("options")));
        // file filled with pads and no End.
        let bytes = overloaded(&[52, 1, 3, 255], &[], &[255]);
        assert_eq!(Message::decode(&bytes), Err(missing("file")));
        let bytes = overloaded(&[52, 1, 3, 255], &[255], &[]);
        assert_eq!(Message::decode(&bytes), Err(missing("sname")));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            DecodeError::BadOptionLength {
                code: 1,
                len: 3,
                wants: "4"
            }
            .to_string(),
            "option 1 has bad length 3 (wants 4)"
        );
        assert_eq!(
            DecodeError::BadMagicCookie {
                found: [1, 2, 3, 4]
            }
            .to_string(),
            "magic cookie is 1.2.3.4, not 99.130.83.99 (a BOOTP message, or not DHCP at all)"
        );
    }

    // Property tests.

    fn addr() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    fn addrs() -> impl Strategy<Value = Vec<Ipv4Addr>> {
        proptest::collection::vec(addr(), 0..80)
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    /// Text without NULs (a trailing one would be trimmed), sometimes longer than 255 bytes.
    fn text() -> impl Strategy<Value = String> {
        "[^\\x00]{0,300}"
    }

    /// Names from a few shared labels (so compression has work) and random ones.
    fn search_name() -> impl Strategy<Value = String> {
        let label = prop_oneof![
            prop::sample::select(vec!["lan", "shoal", "c1", "Shoal", "eng", "_tcp"])
                .prop_map(str::to_owned),
            "[a-zA-Z0-9_-]{1,63}",
        ];
        proptest::collection::vec(label, 1..4).prop_map(|labels| labels.join("."))
    }

    fn route() -> impl Strategy<Value = ClasslessRoute> {
        (addr(), 0..=32u8, addr()).prop_map(|(destination, prefix_len, gateway)| ClasslessRoute {
            destination: mask(destination, prefix_len),
            prefix_len,
            gateway,
        })
    }

    fn message_type() -> impl Strategy<Value = MessageType> {
        (1..=8u8).prop_map(|code| MessageType::from_code(code).unwrap_or(MessageType::Discover))
    }

    fn options() -> impl Strategy<Value = Options> {
        use proptest::option::of;
        (
            (
                of(message_type()),
                of(addr()),
                addrs(),
                addrs(),
                of(text()),
                of(text()),
                of(68..=u16::MAX),
                of(addr()),
                addrs(),
                of(addr()),
            ),
            (
                of(any::<u32>()),
                of(addr()),
                bytes(300),
                of(text()),
                of(any::<u16>()),
                of(any::<u32>()),
                of(any::<u32>()),
                of(bytes(300)),
                of(bytes(300)),
                proptest::collection::vec(search_name(), 0..20),
                proptest::collection::vec(route(), 0..60),
            ),
        )
            .prop_map(|(first, second)| {
                let (
                    message_type,
                    subnet_mask,
                    routers,
                    dns_servers,
                    host_name,
                    domain_name,
                    mtu,
                    broadcast,
                    ntp_servers,
                    requested_ip,
                ) = first;
                let (
                    lease_time,
                    server_id,
                    parameter_request_list,
                    message,
                    max_message_size,
                    renewal_time,
                    rebinding_time,
                    vendor_class,
                    client_id,
                    domain_search,
                    classless_routes,
                ) = second;
                Options {
                    message_type,
                    subnet_mask,
                    routers,
                    dns_servers,
                    host_name,
                    domain_name,
                    mtu,
                    broadcast,
                    ntp_servers,
                    requested_ip,
                    lease_time,
                    server_id,
                    parameter_request_list,
                    message,
                    max_message_size,
                    renewal_time,
                    rebinding_time,
                    vendor_class,
                    client_id,
                    domain_search,
                    classless_routes,
                }
            })
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            prop_oneof![Just(Op::Request), Just(Op::Reply)],
            any::<u32>(),
            any::<u16>(),
            any::<bool>(),
            [addr(), addr(), addr(), addr()],
            any::<[u8; 6]>(),
            options(),
        )
            .prop_map(
                |(op, xid, secs, broadcast, [ciaddr, yiaddr, siaddr, giaddr], chaddr, options)| {
                    Message {
                        op,
                        xid,
                        secs,
                        broadcast,
                        ciaddr,
                        yiaddr,
                        siaddr,
                        giaddr,
                        chaddr,
                        options,
                    }
                },
            )
    }

    /// Option 119 data that is often valid: names of a few labels, each ending in a zero or a
    /// pointer to a label written before it; sometimes with one byte changed.
    fn search_wire() -> impl Strategy<Value = Vec<u8>> {
        let name = (
            proptest::collection::vec("[a-c]{1,3}", 1..4),
            proptest::option::of(any::<prop::sample::Index>()),
        );
        (
            proptest::collection::vec(name, 0..6),
            proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        )
            .prop_map(|(names, change)| {
                let mut out: Vec<u8> = Vec::new();
                let mut label_starts = Vec::new();
                for (labels, pointer) in names {
                    let name_start = label_starts.len();
                    for label in labels {
                        label_starts.push(out.len());
                        out.push(label.len() as u8);
                        out.extend_from_slice(label.as_bytes());
                    }
                    match pointer {
                        Some(index) if name_start > 0 => {
                            let target = label_starts[index.index(name_start)];
                            out.extend_from_slice(&[0xc0 | (target >> 8) as u8, target as u8]);
                        }
                        _ => out.push(0),
                    }
                }
                if let Some((index, byte)) = change.filter(|_| !out.is_empty()) {
                    let at = index.index(out.len());
                    out[at] = byte;
                }
                out
            })
    }

    /// Option 121 data: routes with their prefix length's octets, sometimes a bad one.
    fn route_wire() -> impl Strategy<Value = Vec<u8>> {
        let route = (
            prop_oneof![9 => 0..=32u8, 1 => any::<u8>()],
            any::<[u8; 8]>(),
        )
            .prop_map(|(prefix_len, octets)| {
                let len = (usize::from(prefix_len).div_ceil(8) + 4).min(8);
                [&[prefix_len][..], &octets[..len]].concat()
            });
        proptest::collection::vec(route, 0..4).prop_map(|routes| routes.concat())
    }

    /// Data for option `code`: mostly of the shape the code wants (so decoding gets past the
    /// length checks), sometimes random.
    fn option_data(code: u8) -> BoxedStrategy<Vec<u8>> {
        let shaped = match code {
            1 | 28 | 50 | 51 | 54 | 58 | 59 => any::<[u8; 4]>().prop_map(Vec::from).boxed(),
            3 | 6 | 42 => proptest::collection::vec(any::<[u8; 4]>(), 0..4)
                .prop_map(|addrs| addrs.concat())
                .boxed(),
            26 | 57 => any::<[u8; 2]>().prop_map(Vec::from).boxed(),
            52 => (0..=4u8).prop_map(|value| vec![value]).boxed(),
            53 => (0..=9u8).prop_map(|value| vec![value]).boxed(),
            119 => search_wire().boxed(),
            121 => route_wire().boxed(),
            _ => bytes(24).boxed(),
        };
        prop_oneof![9 => shaped, 1 => bytes(24)].boxed()
    }

    /// One field's worth of options, close to valid: known codes (and some unknown) with data
    /// of about the right shape, usually ending with End.
    fn option_soup() -> impl Strategy<Value = Vec<u8>> {
        let code = prop_oneof![
            4 => prop::sample::select(vec![
                0u8, 1, 3, 6, 12, 15, 26, 28, 42, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
                119, 121,
            ]),
            1 => any::<u8>(),
        ];
        let option = code.prop_flat_map(|code| (Just(code), option_data(code)));
        (
            proptest::collection::vec(option, 0..10),
            prop_oneof![9 => Just(true), 1 => Just(false)],
        )
            .prop_map(|(options, end)| {
                let mut out = Vec::new();
                for (code, data) in options {
                    out.push(code);
                    if code != code::PAD && code != code::END {
                        out.push(data.len() as u8);
                        out.extend_from_slice(&data);
                    }
                }
                if end {
                    out.push(code::END);
                }
                out
            })
    }

    /// Bytes a decoder might be handed: random, or a plausible header with random options in
    /// each field.
    fn wire() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            1 => bytes(700),
            4 => (
                1..=2u8,
                bytes(233),
                option_soup(),
                option_soup(),
                option_soup(),
                prop_oneof![6 => Just(0u8), 3 => 1..=3u8, 1 => any::<u8>()],
            )
                .prop_map(|(op, header, options, file, sname, overload)| {
                    let mut out = with_options(&[]);
                    out[0] = op;
                    out[3..3 + header.len()].copy_from_slice(&header);
                    let file = &file[..file.len().min(FILE.len())];
                    out[FILE.start..FILE.start + file.len()].copy_from_slice(file);
                    let sname = &sname[..sname.len().min(SNAME.len())];
                    out[SNAME.start..SNAME.start + sname.len()].copy_from_slice(sname);
                    out.truncate(FIXED_LEN);
                    if overload != 0 {
                        out.extend_from_slice(&[code::OVERLOAD, 1, overload]);
                    }
                    out.extend_from_slice(&options);
                    out
                }),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(message in message()) {
            let encoded = message.encode();
            prop_assert!(encoded.len() >= MIN_ENCODED_LEN);
            prop_assert_eq!(Message::decode(&encoded), Ok(message));
        }

        #[test]
        fn decode_never_panics_and_what_it_accepts_round_trips(bytes in wire()) {
            if let Ok(message) = Message::decode(&bytes) {
                prop_assert_eq!(Message::decode(&message.encode()), Ok(message));
            }
        }

        #[test]
        fn domain_search_decoding_never_panics(data in search_wire()) {
            if let Ok(names) = decode_domain_search(&data) {
                prop_assert!(names.iter().all(|name| is_search_name(name)));
                prop_assert_eq!(decode_domain_search(&encode_domain_search(&names)), Ok(names));
            }
        }
    }
}
