//! The network keys of the kernel command line, in the syntax of dracut (`man dracut.cmdline`,
//! "Network") and of the kernel itself (`Documentation/admin-guide/nfs/nfsroot.rst`, `ip=`).
//!
//! [`parse`] reads the whole command line as `/proc/cmdline` shows it: words separated by
//! spaces, double quotes grouping spaces into a word (`ip="eth0:dhcp"` and `"ip=eth0:dhcp"` both
//! work). Words that are not network keys are skipped. A network key with a value that cannot be
//! used stops the parse with a [`CmdlineError`] naming the key, the exact value and the reason,
//! for example `ip=10.0.0.5:::255.0.255.0::eth0:none: netmask 255.0.255.0 is not contiguous`.
//!
//! # Supported syntax
//!
//! Fields are separated by `:`; `[...]` stands for an optional part; `<method>` is one of the
//! autoconfiguration methods in the table below. IPv6 addresses are written in square brackets
//! (`[2001:db8::1]`) wherever a field is separated by colons.
//!
//! ```text
//! ip=<method>                                            every link
//! ip=<interface>:<method>[:[<mtu>][:<macaddr>]]          one link
//! ip=<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<client_hostname>:<interface>:<method>[:[<mtu>][:<macaddr>]]
//! ip=<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<client_hostname>:<interface>:<method>[:[<dns1>][:<dns2>][:<ntp0>]]
//! nfsaddrs=...                                           the kernel's old name for ip=
//! nameserver=<IP>                                        repeatable; IPv6 with or without brackets
//! rd.peerdns=0                                           ignore DNS servers offered by DHCP
//! ifname=<interface>:<MAC>                               name the link that has this MAC
//! vlan=<vlanname>:<phydevice>                            vlan0005, vlan5, eth0.0005 or eth0.5
//! bond[=<bondname>[:<slaves>[:<options>[:<mtu>]]]]       bare `bond`: bond0:eth0,eth1:mode=balance-rr
//! bridge[=<bridgename>:<ethnames>]                       bare `bridge`: br0:eth0
//! rd.route=<net>[/<netmask>]:[<gateway>][:<interface>]   IPv6: rd.route=[2001:db8:3::/48]:[2001:db8:2::1]:eth0
//! ```
//!
//! | `<method>`              | meaning                                                      |
//! |-------------------------|--------------------------------------------------------------|
//! | `dhcp`, `on`, `any`     | DHCPv4                                                       |
//! | `single-dhcp`           | the same as `dhcp`; accepted only alone, as `ip=single-dhcp` |
//! | `dhcp6`                 | DHCPv6                                                       |
//! | `auto6`                 | IPv6 stateless autoconfiguration (router advertisements)     |
//! | `either6`               | `auto6`, and `dhcp6` if that fails                           |
//! | `link6`                 | IPv6 link-local address only                                 |
//! | `ibft`                  | the iSCSI Boot Firmware Table (not with an interface form)   |
//! | `none`, `off`           | no autoconfiguration: static addresses only                  |
//!
//! The interface form also takes `none`/`off` (`ip=eth0:none:9000`: bring the link up with this
//! MTU, no addresses), which dracut does not document. In the static form a method other than
//! `none`/`off` runs next to the static address, as systemd's network generator does (dracut's
//! network-legacy module refuses the combination).
//!
//! Details of each field:
//! - `<netmask>` is a contiguous dotted IPv4 netmask (`255.255.255.0`) or a prefix length (0 to
//!   32 for IPv4, 0 to 128 for IPv6). It is required when a client IP is given, unless the peer
//!   carries one as `<peer>/<prefix>` (dracut's point-to-point notation).
//! - `<client_hostname>` is an RFC 1123 host name of at most 64 characters; it also becomes the
//!   machine's hostname ([`CmdlineNetwork::hostname`]). Two `ip=` with different hostnames are
//!   an error.
//! - An empty `<interface>` in the static form means the first (or only) link.
//! - `<mtu>` is 68 to 65535. `<macaddr>` is six hex pairs separated by `:` (or by `-`); it is the
//!   address to **set** on the link, while `ifname=` **matches** a link by its address.
//! - After `<method>`, the fields are read as `<dns1>:<dns2>:<ntp0>` when the first non-empty one
//!   is an IP address (contains a `.` or is in brackets) and as `<mtu>:<macaddr>` otherwise, as
//!   dracut does. `...:none:1500` sets the MTU, `...:none:10.0.0.53` a DNS server,
//!   `...:none::52:54:00:12:34:56` a MAC address. DNS and NTP servers may be IPv4 or IPv6.
//! - The kernel's short static forms stop after the netmask, hostname or interface
//!   (`ip=10.0.0.5::10.0.0.1:255.255.255.0`); a missing or empty `<method>` then means `none`.
//! - An empty `<client-IP>` with a hostname (`ip=::::node7:eth0:dhcp`) only sets the hostname
//!   next to `ip=eth0:dhcp`; peer, gateway, netmask and DNS servers need a client IP.
//! - `0.0.0.0` (or `[::]`) as peer, gateway, DNS or NTP server means "none", as in the kernel.
//! - `bond=<bondname>` alone takes the slaves `eth0,eth1` and the driver's default options;
//!   options are `<name>=<value>` pairs separated by `,`, with `;` between the values of a
//!   multi-valued option (`arp_ip_target=10.0.0.1;10.0.0.2`). `bridge=` needs both fields.
//! - `rd.route=` without `/<netmask>` is a route to one host; bits of `<net>` past the prefix are
//!   cleared (dracut's own example `[2001:DB8:3::/8]` means `2000::/8`). The `<gateway>` may be
//!   empty when an `<interface>` is given.
//! - Repeated keys add up, in order; for `rd.peerdns` the last one counts. A bare `rd.peerdns`
//!   means 1; `0`/`no`/`off`/`false` and `1`/`yes`/`on`/`true` are accepted.
//!
//! Not supported, and rejected with a message that says so:
//! - The kernel's `bootp`, `rarp` and `both` methods (netd only speaks DHCP; use `dhcp`), and its
//!   DHCP client identifier suffix `ip=dhcp,<type>,<value>`.
//! - The anaconda short form `ip=<address>` with separate `netmask=`, `gateway=` keys.
//! - InfiniBand's 20-byte hardware addresses in `ifname=`.
//! - VLAN id 0 and names from which no id can be read (dracut's four name styles only).
//!
//! Other dracut keys (`bootdev=`, `BOOTIF=`, `rd.neednet=`, `rd.bootif=`, `biosdevname=`,
//! `team=`) are not network settings netd uses and are skipped like any other word. Words after
//! `--` are read too, as Shoal's PID 1 reads them, although the kernel hands those to init.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer};

/// Every network setting found on the command line, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmdlineNetwork {
    /// Every `ip=` (and `nfsaddrs=`), in order.
    pub ip: Vec<IpArg>,
    /// `nameserver=`, in order. DNS servers inside `ip=` stay in [`IpArg::Static`].
    pub nameservers: Vec<IpAddr>,
    /// False after `rd.peerdns=0`: DNS servers offered by DHCP are not used. Defaults to true.
    pub peerdns: bool,
    /// `ifname=<name>:<MAC>`.
    pub ifnames: Vec<IfName>,
    /// `vlan=<vlanname>:<phydevice>`.
    pub vlans: Vec<VlanArg>,
    /// `bond[=...]`.
    pub bonds: Vec<BondArg>,
    /// `bridge[=...]`.
    pub bridges: Vec<BridgeArg>,
    /// `rd.route=`.
    pub routes: Vec<RouteArg>,
    /// The `<client_hostname>` field of the static `ip=` form (every `ip=` that gives one must
    /// give the same).
    pub hostname: Option<String>,
}

impl Default for CmdlineNetwork {
    fn default() -> Self {
        Self {
            ip: Vec::new(),
            nameservers: Vec::new(),
            peerdns: true,
            ifnames: Vec::new(),
            vlans: Vec::new(),
            bonds: Vec::new(),
            bridges: Vec::new(),
            routes: Vec::new(),
            hostname: None,
        }
    }
}

/// How a link gets its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoMethod {
    /// `dhcp`, `on`, `any` (and `single-dhcp` in the all-links form).
    Dhcp,
    /// `dhcp6`.
    Dhcp6,
    /// `auto6`: IPv6 stateless autoconfiguration.
    Auto6,
    /// `either6`: `auto6`, then `dhcp6` if that fails.
    Either6,
    /// `link6`: only the IPv6 link-local address.
    Link6,
    /// `none` or `off`: no autoconfiguration.
    Off,
    /// `ibft`: the iSCSI Boot Firmware Table.
    Ibft,
}

impl AutoMethod {
    /// The canonical keyword (`Off` is written `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dhcp => "dhcp",
            Self::Dhcp6 => "dhcp6",
            Self::Auto6 => "auto6",
            Self::Either6 => "either6",
            Self::Link6 => "link6",
            Self::Off => "none",
            Self::Ibft => "ibft",
        }
    }

    fn parse(word: &str) -> Result<Self, String> {
        Ok(match word {
            "dhcp" | "on" | "any" => Self::Dhcp,
            "dhcp6" => Self::Dhcp6,
            "auto6" => Self::Auto6,
            "either6" => Self::Either6,
            "link6" => Self::Link6,
            "none" | "off" => Self::Off,
            "ibft" => Self::Ibft,
            "bootp" | "rarp" | "both" => {
                return Err(format!(
                    "method {word} is a kernel-only autoconfiguration protocol netd does not \
                     support; use dhcp"
                ));
            }
            _ if word.starts_with("dhcp,") => {
                return Err(
                    "DHCP client identifiers (dhcp,<type>,<value>) are not supported".into(),
                );
            }
            "" => return Err("the autoconfiguration method is empty".into()),
            _ => {
                return Err(format!(
                    "unknown autoconfiguration method '{word}' (expected dhcp, on, any, dhcp6, \
                     auto6, either6, link6, ibft, none or off)"
                ));
            }
        })
    }
}

impl fmt::Display for AutoMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `ip=` argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum IpArg {
    /// `ip=dhcp|on|any|single-dhcp|dhcp6|auto6|either6|link6|ibft|off|none`: every link.
    Auto { method: AutoMethod },
    /// `ip=<interface>:<method>[:[<mtu>][:<macaddr>]]`. `method` is never `Ibft`.
    Interface {
        interface: String,
        method: AutoMethod,
        mtu: Option<u16>,
        /// The address to set on the link.
        #[serde(serialize_with = "serialize_opt_mac")]
        mac: Option<[u8; 6]>,
    },
    /// `ip=<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<client_hostname>:<interface>:<method>`
    /// followed by `[:[<mtu>][:<macaddr>]]` or `[:[<dns1>][:<dns2>][:<ntp0>]]`.
    ///
    /// `peer` and `gateway` have the family of `address`. From [`parse`], either `mtu`/`mac` or
    /// `dns`/`ntp` are set, never both, and there are at most two DNS and one NTP server.
    Static {
        address: IpAddr,
        prefix_len: u8,
        peer: Option<IpAddr>,
        gateway: Option<IpAddr>,
        hostname: Option<String>,
        /// `None`: the first (or only) link.
        interface: Option<String>,
        method: AutoMethod,
        mtu: Option<u16>,
        #[serde(serialize_with = "serialize_opt_mac")]
        mac: Option<[u8; 6]>,
        dns: Vec<IpAddr>,
        ntp: Vec<IpAddr>,
    },
}

/// Writes the canonical `ip=` value (without `ip=`): methods by their first keyword, netmasks
/// as prefix lengths, IPv6 addresses in brackets, MACs in lower case. [`parse`] reads it back to
/// the same value. A `Static` with both an MTU/MAC and DNS/NTP servers, which no syntax can
/// carry, is written with the MTU/MAC only; DNS servers past the second and NTP servers past
/// the first are left out.
impl fmt::Display for IpArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto { method } => write!(f, "{method}"),
            Self::Interface {
                interface,
                method,
                mtu,
                mac,
            } => {
                write!(f, "{interface}:{method}")?;
                write_mtu_mac(f, *mtu, *mac)
            }
            Self::Static {
                address,
                prefix_len,
                peer,
                gateway,
                hostname,
                interface,
                method,
                mtu,
                mac,
                dns,
                ntp,
            } => {
                write!(
                    f,
                    "{}:{}:{}:{prefix_len}:{}:{}:{method}",
                    Host(address),
                    OptHost(peer.as_ref()),
                    OptHost(gateway.as_ref()),
                    hostname.as_deref().unwrap_or(""),
                    interface.as_deref().unwrap_or(""),
                )?;
                if mtu.is_some() || mac.is_some() {
                    write_mtu_mac(f, *mtu, *mac)
                } else if !dns.is_empty() || !ntp.is_empty() {
                    write!(f, ":{}", OptHost(dns.first()))?;
                    if dns.len() > 1 || !ntp.is_empty() {
                        write!(f, ":{}", OptHost(dns.get(1)))?;
                    }
                    if let Some(ntp) = ntp.first() {
                        write!(f, ":{}", Host(ntp))?;
                    }
                    Ok(())
                } else {
                    Ok(())
                }
            }
        }
    }
}

fn write_mtu_mac(
    f: &mut fmt::Formatter<'_>,
    mtu: Option<u16>,
    mac: Option<[u8; 6]>,
) -> fmt::Result {
    if mtu.is_none() && mac.is_none() {
        return Ok(());
    }
    f.write_str(":")?;
    if let Some(mtu) = mtu {
        write!(f, "{mtu}")?;
    }
    if let Some(mac) = &mac {
        write!(f, ":{}", Mac(mac))?;
    }
    Ok(())
}

/// `ifname=<name>:<MAC>`: the link with this MAC address gets this name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IfName {
    pub name: String,
    #[serde(serialize_with = "serialize_mac")]
    pub mac: [u8; 6],
}

/// `vlan=<vlanname>:<phydevice>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VlanArg {
    pub name: String,
    /// 1 to 4094, read from the name.
    pub id: u16,
    /// The link the VLAN sits on.
    pub parent: String,
}

/// `bond=<bondname>[:<slaves>[:<options>[:<mtu>]]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BondArg {
    pub name: String,
    /// At least one; `eth0`, `eth1` when only the name is given.
    pub slaves: Vec<String>,
    /// Bonding driver options (`modinfo bonding`) in the order given, such as `("mode",
    /// "active-backup")`. Multi-valued options keep dracut's `;` separator
    /// (`("arp_ip_target", "10.0.0.1;10.0.0.2")`).
    pub options: Vec<(String, String)>,
    /// Set on the bond itself.
    pub mtu: Option<u16>,
}

impl BondArg {
    /// What a bare `bond` means: `bond=bond0:eth0,eth1:mode=balance-rr`.
    pub fn dracut_default() -> Self {
        Self {
            name: "bond0".into(),
            slaves: vec!["eth0".into(), "eth1".into()],
            options: vec![("mode".into(), "balance-rr".into())],
            mtu: None,
        }
    }
}

/// `bridge=<bridgename>:<ethnames>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeArg {
    pub name: String,
    /// At least one.
    pub ports: Vec<String>,
}

impl BridgeArg {
    /// What a bare `bridge` means: `bridge=br0:eth0`.
    pub fn dracut_default() -> Self {
        Self {
            name: "br0".into(),
            ports: vec!["eth0".into()],
        }
    }
}

/// `rd.route=<net>[/<netmask>]:[<gateway>][:<interface>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteArg {
    /// The network, with the bits past `prefix_len` cleared (as the kernel requires of a route).
    pub destination: IpAddr,
    /// 32 (or 128) when no netmask is given: a route to one host.
    pub prefix_len: u8,
    /// Same family as `destination`. `None`: the destination is on the link.
    pub gateway: Option<IpAddr>,
    /// At least one of `gateway` and `interface` is set.
    pub interface: Option<String>,
}

/// A network key whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}{}: {reason}", .value.as_deref().map(|v| format!("={v}")).unwrap_or_default())]
pub struct CmdlineError {
    /// The key as written (`ip`, `nfsaddrs`, `rd.route`, ...).
    pub key: String,
    /// The value exactly as given (quotes removed); `None` for a bare key.
    pub value: Option<String>,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

/// Parses the whole kernel command line (as in /proc/cmdline: space-separated words, double
/// quotes allowed around values) and returns every network setting found. Words that are not
/// network keys are ignored.
pub fn parse(cmdline: &str) -> Result<CmdlineNetwork, CmdlineError> {
    let mut network = CmdlineNetwork::default();
    for word in split_words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (word.as_str(), None),
        };
        let Some(known) = Key::from_name(key) else {
            continue;
        };
        apply(&mut network, known, value).map_err(|reason| CmdlineError {
            key: key.to_string(),
            value: value.map(str::to_string),
            reason,
        })?;
    }
    Ok(network)
}

#[derive(Debug, Clone, Copy)]
enum Key {
    Ip,
    Nameserver,
    PeerDns,
    IfName,
    Vlan,
    Bond,
    Bridge,
    Route,
}

impl Key {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ip" | "nfsaddrs" => Self::Ip,
            "nameserver" => Self::Nameserver,
            "rd.peerdns" => Self::PeerDns,
            "ifname" => Self::IfName,
            "vlan" => Self::Vlan,
            "bond" => Self::Bond,
            "bridge" => Self::Bridge,
            "rd.route" => Self::Route,
            _ => return None,
        })
    }
}

fn apply(network: &mut CmdlineNetwork, key: Key, value: Option<&str>) -> Result<(), String> {
    match key {
        Key::Ip => {
            let value = required(value, "ip=dhcp, ip=<interface>:dhcp or ip=<client-IP>:...")?;
            let (arg, hostname) = parse_ip(value)?;
            if let Some(hostname) = hostname {
                match &network.hostname {
                    Some(earlier) if *earlier != hostname => {
                        return Err(format!(
                            "hostname {hostname} conflicts with hostname {earlier} from an \
                             earlier ip="
                        ));
                    }
                    _ => network.hostname = Some(hostname),
                }
            }
            network.ip.push(arg);
        }
        Key::Nameserver => {
            let value = required(value, "nameserver=<IP>")?;
            network.nameservers.push(parse_nameserver(value)?);
        }
        Key::PeerDns => network.peerdns = parse_bool(value)?,
        Key::IfName => {
            let value = required(value, "ifname=<interface>:<MAC>")?;
            network.ifnames.push(parse_ifname(value)?);
        }
        Key::Vlan => {
            let value = required(value, "vlan=<vlanname>:<phydevice>")?;
            network.vlans.push(parse_vlan(value)?);
        }
        Key::Bond => network.bonds.push(match value {
            None => BondArg::dracut_default(),
            Some(value) => parse_bond(value)?,
        }),
        Key::Bridge => network.bridges.push(match value {
            None => BridgeArg::dracut_default(),
            Some(value) => parse_bridge(value)?,
        }),
        Key::Route => {
            let value = required(value, "rd.route=<net>/<netmask>:<gateway>[:<interface>]")?;
            network.routes.push(parse_route(value)?);
        }
    }
    Ok(())
}

fn required<'a>(value: Option<&'a str>, usage: &str) -> Result<&'a str, String> {
    match value {
        None => Err(format!("needs a value, as in {usage}")),
        Some("") => Err(format!("empty value; expected {usage}")),
        Some(value) => Ok(value),
    }
}

/// Splits a command line into words the way the kernel does: white space separates words,
/// double quotes group white space into a word and are removed.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut in_word = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                in_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// One colon-separated field; `bracketed` when it was written `[...]` (the brackets removed).
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    text: &'a str,
    bracketed: bool,
}

impl<'a> Field<'a> {
    fn is_empty(&self) -> bool {
        self.text.is_empty() && !self.bracketed
    }

    /// The text of a field that must not be bracketed.
    fn plain(&self) -> Result<&'a str, String> {
        if self.bracketed {
            Err(format!(
                "[{}]: brackets are only for IPv6 addresses",
                self.text
            ))
        } else {
            Ok(self.text)
        }
    }
}

/// Splits at `:`, except inside `[...]`: a field that starts with `[` ends at the next `]`,
/// which must be followed by `:` or the end of the value.
fn split_fields(value: &str) -> Result<Vec<Field<'_>>, String> {
    let mut fields = Vec::new();
    let mut rest = value;
    loop {
        if let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else {
                return Err(format!("'[' without a closing ']' in {rest}"));
            };
            fields.push(Field {
                text: &inner[..close],
                bracketed: true,
            });
            let after = &inner[close + 1..];
            if after.is_empty() {
                return Ok(fields);
            }
            let Some(next) = after.strip_prefix(':') else {
                return Err(format!("expected ':' after ']' but found {after}"));
            };
            rest = next;
        } else {
            match rest.split_once(':') {
                Some((field, next)) => {
                    fields.push(Field {
                        text: field,
                        bracketed: false,
                    });
                    rest = next;
                }
                None => {
                    fields.push(Field {
                        text: rest,
                        bracketed: false,
                    });
                    return Ok(fields);
                }
            }
        }
    }
}

/// Digits and dots, with at least one of each: meant as an IPv4 address even if it is not a
/// valid one, never as an interface name.
fn looks_like_ipv4(text: &str) -> bool {
    text.contains('.')
        && text.bytes().any(|b| b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// One to four hex digits: the first group of an IPv6 address written without brackets.
fn looks_like_ipv6_group(text: &str) -> bool {
    (1..=4).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses an `ip=` value; the hostname comes back separately because it also applies to the
/// machine.
fn parse_ip(value: &str) -> Result<(IpArg, Option<String>), String> {
    let fields = split_fields(value)?;
    let first = fields[0];
    if fields.len() == 1 {
        if first.bracketed || looks_like_ipv4(first.text) {
            return Err(format!(
                "a bare address is not supported; write the static form \
                 {value}::<gateway-IP>:<netmask>:<client_hostname>:<interface>:none"
            ));
        }
        if first.text == "single-dhcp" {
            return Ok((
                IpArg::Auto {
                    method: AutoMethod::Dhcp,
                },
                None,
            ));
        }
        let method = AutoMethod::parse(first.text)?;
        return Ok((IpArg::Auto { method }, None));
    }
    if first.bracketed || first.text.is_empty() || looks_like_ipv4(first.text) {
        return parse_ip_static(&fields);
    }
    let second = fields[1];
    let second_is_hex = second.text.is_empty() || looks_like_ipv6_group(second.text);
    if !second.bracketed && looks_like_ipv6_group(first.text) && second_is_hex {
        return Err(format!(
            "'{}' looks like part of an IPv6 address; IPv6 addresses go in brackets, as in \
             [2001:db8::1]",
            first.text
        ));
    }
    parse_ip_interface(&fields).map(|arg| (arg, None))
}

/// `<interface>:<method>[:[<mtu>][:<macaddr>]]`
fn parse_ip_interface(fields: &[Field<'_>]) -> Result<IpArg, String> {
    let interface = interface_name(fields[0].text)?;
    let method = AutoMethod::parse(fields[1].plain()?)?;
    if method == AutoMethod::Ibft {
        return Err(
            "ibft takes the whole configuration from the firmware; write ip=ibft without an \
             interface"
                .into(),
        );
    }
    let tail = parse_tail(&fields[2..], false)?;
    Ok(IpArg::Interface {
        interface,
        method,
        mtu: tail.mtu,
        mac: tail.mac,
    })
}

/// `<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<client_hostname>:<interface>:<method>[:...]`
fn parse_ip_static(fields: &[Field<'_>]) -> Result<(IpArg, Option<String>), String> {
    let empty = Field {
        text: "",
        bracketed: false,
    };
    let field = |i: usize| fields.get(i).copied().unwrap_or(empty);

    let address = optional_address(field(0), "client IP")?;
    if let Some(address) = address
        && (address.is_unspecified() || address.is_multicast())
    {
        return Err(format!(
            "client IP {address} cannot be a link's address (leave the field empty for \
             autoconfiguration)"
        ));
    }
    let (peer_field, peer_prefix) = split_prefix(field(1));
    let peer = optional_address(peer_field, "peer")?.filter(|peer| !peer.is_unspecified());
    let gateway = optional_address(field(2), "gateway")?.filter(|gw| !gw.is_unspecified());
    let netmask = field(3).plain()?;
    let hostname = match field(4).plain()? {
        "" => None,
        name => {
            check_hostname(name)?;
            Some(name.to_string())
        }
    };
    let interface = match field(5).plain()? {
        "" => None,
        name => Some(interface_name(name)?),
    };
    let method = match field(6).plain()? {
        "" if address.is_some() => AutoMethod::Off,
        "" => {
            return Err(
                "the autoconfiguration method (7th field) is missing; without a client IP it \
                 is required"
                    .into(),
            );
        }
        word => AutoMethod::parse(word)?,
    };
    let tail = parse_tail(fields.get(7..).unwrap_or_default(), true)?;

    let Some(address) = address else {
        if peer.is_some() || gateway.is_some() || !netmask.is_empty() || peer_prefix.is_some() {
            return Err(
                "peer, gateway and netmask need a client IP (the first field is empty)".into(),
            );
        }
        if !tail.dns.is_empty() || !tail.ntp.is_empty() {
            return Err(
                "DNS and NTP servers in ip= need a client IP; use nameserver= instead".into(),
            );
        }
        let arg = match interface {
            Some(interface) if method == AutoMethod::Ibft => {
                return Err(format!(
                    "ibft takes the whole configuration from the firmware; it cannot apply to \
                     interface {interface} alone"
                ));
            }
            Some(interface) => IpArg::Interface {
                interface,
                method,
                mtu: tail.mtu,
                mac: tail.mac,
            },
            None if tail.mtu.is_some() || tail.mac.is_some() => {
                return Err("an MTU or MAC address needs an interface (6th field)".into());
            }
            None => IpArg::Auto { method },
        };
        return Ok((arg, hostname));
    };

    for (what, other) in [("peer", peer), ("gateway", gateway)] {
        if let Some(other) = other
            && other.is_ipv4() != address.is_ipv4()
        {
            return Err(format!(
                "{what} {other} and client IP {address} are of different IP families"
            ));
        }
    }
    let prefix_from_peer = match peer_prefix {
        Some(prefix) => Some(prefix_length(prefix, address.is_ipv6())?),
        None => None,
    };
    let prefix_len = match (netmask, prefix_from_peer) {
        ("", Some(prefix)) => prefix,
        ("", None) => {
            return Err(
                "the netmask (4th field) is missing; give a dotted netmask or a prefix length"
                    .into(),
            );
        }
        (netmask, peer_prefix) => {
            let prefix = prefix_length(netmask, address.is_ipv6())?;
            if let Some(peer_prefix) = peer_prefix
                && peer_prefix != prefix
            {
                return Err(format!(
                    "the peer's prefix length /{peer_prefix} disagrees with netmask {netmask}"
                ));
            }
            prefix
        }
    };
    let arg = IpArg::Static {
        address,
        prefix_len,
        peer,
        gateway,
        hostname: hostname.clone(),
        interface,
        method,
        mtu: tail.mtu,
        mac: tail.mac,
        dns: tail.dns,
        ntp: tail.ntp,
    };
    Ok((arg, hostname))
}

/// Splits dracut's `<peer>/<prefix>` (inside the brackets for IPv6).
fn split_prefix(field: Field<'_>) -> (Field<'_>, Option<&str>) {
    match field.text.split_once('/') {
        Some((address, prefix)) => (
            Field {
                text: address,
                bracketed: field.bracketed,
            },
            Some(prefix),
        ),
        None => (field, None),
    }
}

/// What follows the method.
#[derive(Debug, Default)]
struct Tail {
    mtu: Option<u16>,
    mac: Option<[u8; 6]>,
    dns: Vec<IpAddr>,
    ntp: Vec<IpAddr>,
}

/// Reads `[<mtu>][:<macaddr>]` or (with `dns_allowed`) `[<dns1>][:<dns2>][:<ntp0>]`, choosing
/// by the first non-empty field as dracut does: an IP address has a dot or brackets, an MTU or
/// a MAC address group has neither.
fn parse_tail(fields: &[Field<'_>], dns_allowed: bool) -> Result<Tail, String> {
    let Some(first) = fields.iter().find(|field| !field.is_empty()) else {
        return Ok(Tail::default());
    };
    let is_address = first.bracketed || first.text.contains('.');
    if is_address && !dns_allowed {
        return Err(format!(
            "'{}' is not an MTU; DNS servers can only follow the static form \
             <client-IP>:...:<method>",
            first.text
        ));
    }
    if is_address {
        if fields.len() > 3 {
            return Err(format!(
                "at most three servers follow the method (<dns1>:<dns2>:<ntp0>), found {}",
                fields.len()
            ));
        }
        let mut tail = Tail::default();
        for (i, field) in fields.iter().enumerate() {
            let what = if i < 2 { "DNS server" } else { "NTP server" };
            let Some(address) = optional_address(*field, what)? else {
                continue;
            };
            if address.is_unspecified() {
                continue;
            }
            if i < 2 {
                tail.dns.push(address);
            } else {
                tail.ntp.push(address);
            }
        }
        return Ok(tail);
    }

    let Some((mtu, mac)) = fields.split_first() else {
        return Ok(Tail::default());
    };
    let mtu = match mtu.plain()? {
        "" => None,
        text => Some(parse_mtu(text)?),
    };
    let mac = match mac {
        [] => None,
        [field] if field.is_empty() => None,
        [field] => Some(parse_mac(field.plain()?)?),
        groups if groups.len() == 6 => {
            let texts = groups
                .iter()
                .map(Field::plain)
                .collect::<Result<Vec<_>, _>>()?;
            Some(parse_mac(&texts.join(":"))?)
        }
        groups => {
            return Err(format!(
                "expected [<mtu>][:<macaddr>] with the MAC address as six hex pairs \
                 (52:54:00:12:34:56), found {} fields after the MTU",
                groups.len()
            ));
        }
    };
    Ok(Tail {
        mtu,
        mac,
        ..Tail::default()
    })
}

/// An address field of a colon-separated value: IPv4 as is, IPv6 in brackets, empty for none.
fn optional_address(field: Field<'_>, what: &str) -> Result<Option<IpAddr>, String> {
    if field.bracketed {
        return match field.text.parse::<Ipv6Addr>() {
            Ok(address) => Ok(Some(IpAddr::V6(address))),
            Err(_) => Err(format!(
                "{what} [{}] is not an IPv6 address (brackets are only for IPv6)",
                field.text
            )),
        };
    }
    if field.text.is_empty() {
        return Ok(None);
    }
    match field.text.parse::<Ipv4Addr>() {
        Ok(address) => Ok(Some(IpAddr::V4(address))),
        Err(_) => Err(format!(
            "{what} '{}' is not an IPv4 address (IPv6 addresses go in brackets, as in \
             [2001:db8::1])",
            field.text
        )),
    }
}

/// A netmask field: a prefix length, or a contiguous dotted netmask for IPv4.
fn prefix_length(text: &str, ipv6: bool) -> Result<u8, String> {
    let max: u8 = if ipv6 { 128 } else { 32 };
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u8>() {
            Ok(prefix) if prefix <= max => Ok(prefix),
            _ => Err(format!(
                "prefix length {text} is out of range for {family} (0 to {max})"
            )),
        };
    }
    if !ipv6 && let Ok(mask) = text.parse::<Ipv4Addr>() {
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(format!("netmask {text} is not contiguous"));
        }
        // At most 32, so the conversion cannot fail.
        return Ok(u8::try_from(bits.leading_ones()).unwrap_or(32));
    }
    if ipv6 {
        Err(format!(
            "netmask '{text}' is not a prefix length (IPv6 takes 0 to 128, not a dotted netmask)"
        ))
    } else {
        Err(format!(
            "netmask '{text}' is neither a dotted netmask nor a prefix length (0 to 32)"
        ))
    }
}

fn parse_mtu(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("MTU '{text}' is not a number"));
    }
    match text.parse::<u16>() {
        Ok(mtu) if mtu >= 68 => Ok(mtu),
        _ => Err(format!("MTU {text} is out of range (68 to 65535)")),
    }
}

/// Six hex pairs separated by `:` or `-`; a link's own address, so neither zero nor multicast.
fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let malformed = || {
        format!("MAC address '{text}' is not six hex pairs separated by ':' (52:54:00:12:34:56)")
    };
    let separator = if text.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut groups = text.split(separator);
    for byte in &mut mac {
        let group = groups.next().ok_or_else(malformed)?;
        if group.len() != 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        *byte = u8::from_str_radix(group, 16).map_err(|_| malformed())?;
    }
    if groups.next().is_some() {
        return Err(malformed());
    }
    if mac == [0; 6] {
        return Err(format!("MAC address {text} is all zeros"));
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "MAC address {text} is a multicast address, which no link can have"
        ));
    }
    Ok(mac)
}

/// A Linux interface name: 1 to 15 bytes of printable ASCII without `/`, `:`, `,`, `=`, `"`,
/// brackets, not `.` or `..`, and not something that reads as an IPv4 address.
fn interface_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "interface name {name} is longer than 15 characters"
        ));
    }
    if name == "." || name == ".." || looks_like_ipv4(name) {
        return Err(format!("'{name}' cannot be an interface name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | ',' | '=' | '"' | '[' | ']'))
    {
        return Err(format!(
            "interface name '{name}' contains {bad:?}, which is not allowed"
        ));
    }
    Ok(name.to_string())
}

/// An RFC 1123 host name, at most 64 characters as the kernel allows.
fn check_hostname(name: &str) -> Result<(), String> {
    if name.len() > 64 {
        return Err(format!("hostname {name} is longer than 64 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "hostname {name}: each dot-separated label has 1 to 63 characters"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "hostname {name}: a label cannot start or end with '-'"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "hostname {name}: only letters, digits, '-' and '.' are allowed"
            ));
        }
    }
    Ok(())
}

/// `nameserver=`: the whole value is one address, so IPv6 needs no brackets but may have them.
fn parse_nameserver(value: &str) -> Result<IpAddr, String> {
    let text = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    match text.parse::<IpAddr>() {
        Ok(address) if address.is_unspecified() || address.is_multicast() => {
            Err(format!("{address} cannot be a name server"))
        }
        Ok(address) => Ok(address),
        Err(_) => Err(format!("'{value}' is not an IP address")),
    }
}

/// dracut's `getargbool`: a bare key is true.
fn parse_bool(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("1" | "yes" | "on" | "true") => Ok(true),
        Some("0" | "no" | "off" | "false") => Ok(false),
        Some(other) => Err(format!("'{other}' is not a boolean (expected 0 or 1)")),
    }
}

/// `<name>:<MAC>`: the MAC is the six colon-separated groups after the name.
fn parse_ifname(value: &str) -> Result<IfName, String> {
    let Some((name, mac)) = value.split_once(':') else {
        return Err("expected <interface>:<MAC>, as in bootnet:52:54:00:12:34:56".into());
    };
    let name = interface_name(name)?;
    if mac.split(':').count() == 20 {
        return Err(
            "20-byte (InfiniBand) hardware addresses are not supported; only 6-byte MAC \
             addresses"
                .into(),
        );
    }
    let mac = parse_mac(mac)?;
    Ok(IfName { name, mac })
}

fn parse_vlan(value: &str) -> Result<VlanArg, String> {
    let fields: Vec<&str> = value.split(':').collect();
    let [name, parent] = fields.as_slice() else {
        return Err(format!(
            "expected <vlanname>:<phydevice>, found {} fields",
            fields.len()
        ));
    };
    let name = interface_name(name)?;
    let parent = interface_name(parent)?;
    let id = vlan_id(&name)?;
    Ok(VlanArg { name, id, parent })
}

/// The id in dracut's four VLAN name styles: vlan0005, vlan5, eth0.0005, eth0.5.
fn vlan_id(name: &str) -> Result<u16, String> {
    let digits = match name.strip_prefix("vlan") {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits,
        _ => match name.rsplit_once('.') {
            Some((device, digits))
                if !device.is_empty()
                    && !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                digits
            }
            _ => {
                return Err(format!(
                    "cannot read a VLAN id from the name {name}; name it vlan<id> (vlan5, \
                     vlan0005) or <device>.<id> (eth0.5, eth0.0005)"
                ));
            }
        },
    };
    match digits.parse::<u16>() {
        Ok(id) if (1..=4094).contains(&id) => Ok(id),
        _ => Err(format!(
            "VLAN id {digits} in {name} is out of range (1 to 4094)"
        )),
    }
}

fn parse_bond(value: &str) -> Result<BondArg, String> {
    if value.is_empty() {
        return Err(
            "empty value; write bond alone for bond0:eth0,eth1:mode=balance-rr, or \
             bond=<bondname>[:<slaves>[:<options>[:<mtu>]]]"
                .into(),
        );
    }
    let fields: Vec<&str> = value.split(':').collect();
    if fields.len() > 4 {
        return Err(format!(
            "expected <bondname>[:<slaves>[:<options>[:<mtu>]]], found {} fields",
            fields.len()
        ));
    }
    let name = interface_name(fields[0])?;
    let slaves = match fields.get(1) {
        None => vec!["eth0".to_string(), "eth1".to_string()],
        Some(list) => name_list(list, "slave")?,
    };
    let options = match fields.get(2) {
        None | Some(&"") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(bond_option)
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mtu = match fields.get(3) {
        None | Some(&"") => None,
        Some(text) => Some(parse_mtu(text)?),
    };
    Ok(BondArg {
        name,
        slaves,
        options,
        mtu,
    })
}

fn bond_option(option: &str) -> Result<(String, String), String> {
    match option.split_once('=') {
        Some((key, value))
            if !key.is_empty()
                && !value.is_empty()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!(
            "bond option '{option}' is not <name>=<value> (as in mode=active-backup)"
        )),
    }
}

fn parse_bridge(value: &str) -> Result<BridgeArg, String> {
    let fields: Vec<&str> = value.split(':').collect();
    let [name, ports] = fields.as_slice() else {
        return Err(format!(
            "expected <bridgename>:<ethnames> (or bridge alone for br0:eth0), found {} fields",
            fields.len()
        ));
    };
    Ok(BridgeArg {
        name: interface_name(name)?,
        ports: name_list(ports, "port")?,
    })
}

/// A comma-separated list of at least one interface name.
fn name_list(list: &str, what: &str) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!("the {what} list is empty"));
    }
    list.split(',')
        .map(|name| match name {
            "" => Err(format!("empty name in the {what} list {list}")),
            name => interface_name(name),
        })
        .collect()
}

fn parse_route(value: &str) -> Result<RouteArg, String> {
    let fields = split_fields(value)?;
    if fields.len() > 3 && !fields[0].bracketed && looks_like_ipv6_group(fields[0].text) {
        return Err(
            "IPv6 addresses go in brackets, as in rd.route=[2001:db8:3::/48]:[2001:db8:2::1]:eth0"
                .into(),
        );
    }
    let (destination, gateway, interface) = match fields.as_slice() {
        [destination, gateway] => (*destination, *gateway, None),
        [destination, gateway, interface] => (*destination, *gateway, Some(*interface)),
        _ => {
            return Err(format!(
                "expected <net>/<netmask>:<gateway>[:<interface>], found {} fields",
                fields.len()
            ));
        }
    };
    let (network, prefix) = split_prefix(destination);
    let Some(network) = optional_address(network, "destination")? else {
        return Err("the destination network is empty".into());
    };
    let prefix_len = match prefix {
        None => {
            if network.is_ipv6() {
                128
            } else {
                32
            }
        }
        Some(prefix) => prefix_length(prefix, network.is_ipv6())?,
    };
    let gateway = optional_address(gateway, "gateway")?.filter(|gw| !gw.is_unspecified());
    if let Some(gateway) = gateway
        && gateway.is_ipv4() != network.is_ipv4()
    {
        return Err(format!(
            "gateway {gateway} and destination {network} are of different IP families"
        ));
    }
    let interface = match interface {
        None => None,
        Some(field) => match field.plain()? {
            "" => None,
            name => Some(interface_name(name)?),
        },
    };
    if gateway.is_none() && interface.is_none() {
        return Err("a route needs a gateway, an interface or both".into());
    }
    Ok(RouteArg {
        destination: mask(network, prefix_len),
        prefix_len,
        gateway,
        interface,
    })
}

/// Clears the bits past the prefix.
fn mask(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// An address as a colon-separated field: IPv6 in brackets.
struct Host<'a>(&'a IpAddr);

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "[{v6}]"),
        }
    }
}

/// An optional address field: empty for none.
struct OptHost<'a>(Option<&'a IpAddr>);

impl fmt::Display for OptHost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(address) => Host(address).fmt(f),
            None => Ok(()),
        }
    }
}

/// A MAC address as `52:54:00:12:34:56`, in text and in serialized form.
struct Mac<'a>(&'a [u8; 6]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for Mac<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn serialize_mac<S: Serializer>(mac: &[u8; 6], serializer: S) -> Result<S::Ok, S::Error> {
    Mac(mac).serialize(serializer)
}

fn serialize_opt_mac<S: Serializer>(
    mac: &Option<[u8; 6]>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    mac.as_ref().map(Mac).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The single `ip=` of `ip=<value>`.
    fn ip(value: &str) -> IpArg {
        let network = parse(&format!("ip={value}")).unwrap();
        assert_eq!(network.ip.len(), 1, "{network:?}");
        network.ip.into_iter().next().unwrap()
    }

    fn err(cmdline: &str) -> String {
        parse(cmdline).unwrap_err().to_string()
    }

    /// A static `ip=` written field by field; unset fields are empty, the method is `none`.
    #[derive(Default)]
    struct Expected {
        address: &'static str,
        prefix_len: u8,
        peer: Option<&'static str>,
        gateway: Option<&'static str>,
        hostname: Option<&'static str>,
        interface: Option<&'static str>,
        method: Option<AutoMethod>,
        mtu: Option<u16>,
        mac: Option<[u8; 6]>,
        dns: Vec<&'static str>,
        ntp: Vec<&'static str>,
    }

    impl Expected {
        fn arg(&self) -> IpArg {
            IpArg::Static {
                address: addr(self.address),
                prefix_len: self.prefix_len,
                peer: self.peer.map(addr),
                gateway: self.gateway.map(addr),
                hostname: self.hostname.map(str::to_string),
                interface: self.interface.map(str::to_string),
                method: self.method.unwrap_or(AutoMethod::Off),
                mtu: self.mtu,
                mac: self.mac,
                dns: self.dns.iter().map(|a| addr(a)).collect(),
                ntp: self.ntp.iter().map(|a| addr(a)).collect(),
            }
        }
    }

    fn interface(name: &str, method: AutoMethod, mtu: Option<u16>, mac: Option<[u8; 6]>) -> IpArg {
        IpArg::Interface {
            interface: name.into(),
            method,
            mtu,
            mac,
        }
    }

    #[test]
    fn nothing_network_related_gives_the_defaults() {
        let network = parse(
            "BOOT_IMAGE=/vmlinuz root=/dev/nfs console=ttyS0,115200 quiet shoal.log=debug \
             bootdev=eth0 BOOTIF=01-52-54-00-12-34-56 rd.neednet=1 team=team0:eth0,eth1 \
             virtio_net.napi_tx=1 ipv6.disable=1 iphone=1 -- ip=junk",
        );
        // `--` is not special (as in PID 1's parser): the `ip=` after it is read, and rejected.
        assert_eq!(
            network.unwrap_err().to_string(),
            "ip=junk: unknown autoconfiguration method 'junk' (expected dhcp, on, any, dhcp6, \
             auto6, either6, link6, ibft, none or off)"
        );
        let network = parse(
            "BOOT_IMAGE=/vmlinuz root=/dev/nfs console=ttyS0,115200 quiet shoal.log=debug \
             bootdev=eth0 BOOTIF=01-52-54-00-12-34-56 rd.neednet=1 team=team0:eth0,eth1 \
             virtio_net.napi_tx=1 ipv6.disable=1 iphone=1\n",
        )
        .unwrap();
        assert_eq!(network, CmdlineNetwork::default());
        assert!(network.peerdns);
        assert_eq!(parse("").unwrap(), CmdlineNetwork::default());
    }

    // dracut: ip={dhcp|on|any|dhcp6|auto6|either6|link6|single-dhcp}, plus ibft and the
    // kernel's off/none.
    #[test]
    fn all_links_form() {
        for (word, method) in [
            ("dhcp", AutoMethod::Dhcp),
            ("on", AutoMethod::Dhcp),
            ("any", AutoMethod::Dhcp),
            ("single-dhcp", AutoMethod::Dhcp),
            ("dhcp6", AutoMethod::Dhcp6),
            ("auto6", AutoMethod::Auto6),
            ("either6", AutoMethod::Either6),
            ("link6", AutoMethod::Link6),
            ("ibft", AutoMethod::Ibft),
            ("off", AutoMethod::Off),
            ("none", AutoMethod::Off),
        ] {
            assert_eq!(ip(word), IpArg::Auto { method }, "ip={word}");
        }
    }

    // dracut: ip=<interface>:{dhcp|on|any|dhcp6|auto6|link6}[:[<mtu>][:<macaddr>]]
    #[test]
    fn interface_form() {
        use AutoMethod::*;
        assert_eq!(ip("eth0:dhcp"), interface("eth0", Dhcp, None, None));
        assert_eq!(ip("eth0:on"), interface("eth0", Dhcp, None, None));
        assert_eq!(ip("eth0:any"), interface("eth0", Dhcp, None, None));
        assert_eq!(ip("ens3:dhcp6"), interface("ens3", Dhcp6, None, None));
        assert_eq!(ip("ens3:auto6"), interface("ens3", Auto6, None, None));
        assert_eq!(ip("ens3:either6"), interface("ens3", Either6, None, None));
        assert_eq!(ip("ens3:link6"), interface("ens3", Link6, None, None));
        assert_eq!(ip("enp1s0:off"), interface("enp1s0", Off, None, None));
        assert_eq!(
            ip("eth0:dhcp:9000"),
            interface("eth0", Dhcp, Some(9000), None)
        );
        assert_eq!(
            ip("eth0:dhcp::52:54:00:12:34:56"),
            interface("eth0", Dhcp, None, Some(MAC))
        );
        assert_eq!(
            ip("eth0:dhcp:9000:52:54:00:12:34:56"),
            interface("eth0", Dhcp, Some(9000), Some(MAC))
        );
        assert_eq!(
            ip("eth0:dhcp:1500:52-54-00-12-34-56"),
            interface("eth0", Dhcp, Some(1500), Some(MAC))
        );
        assert_eq!(
            ip("eth0:dhcp:1500:52:54:00:12:34:56"),
            ip("eth0:dhcp:1500:52:54:00:12:34:56")
        );
        // Upper-case hex; empty trailing fields are allowed where the syntax has `[...]`.
        assert_eq!(
            ip("bootnet:dhcp::52:54:00:AB:CD:EF"),
            interface(
                "bootnet",
                Dhcp,
                None,
                Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
            )
        );
        assert_eq!(ip("eth0:dhcp:"), interface("eth0", Dhcp, None, None));
        assert_eq!(ip("eth0:dhcp::"), interface("eth0", Dhcp, None, None));
        // Names that look like a method or have dots are still names.
        assert_eq!(ip("dhcp:dhcp"), interface("dhcp", Dhcp, None, None));
        assert_eq!(ip("eth0.100:dhcp"), interface("eth0.100", Dhcp, None, None));
    }

    // dracut: ip=<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<client_hostname>:<interface>:
    //         {none|off|dhcp|on|any|dhcp6|auto6|ibft}[:[<mtu>][:<macaddr>]]
    #[test]
    fn static_form_with_mtu_and_mac() {
        let base = || Expected {
            address: "192.168.1.10",
            prefix_len: 24,
            gateway: Some("192.168.1.1"),
            hostname: Some("node1"),
            interface: Some("eth0"),
            ..Expected::default()
        };
        assert_eq!(
            ip("192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none"),
            base().arg()
        );
        assert_eq!(
            ip("192.168.1.10::192.168.1.1:24:node1:eth0:off"),
            base().arg()
        );
        for (word, method) in [
            ("dhcp", AutoMethod::Dhcp),
            ("on", AutoMethod::Dhcp),
            ("any", AutoMethod::Dhcp),
            ("dhcp6", AutoMethod::Dhcp6),
            ("auto6", AutoMethod::Auto6),
            ("ibft", AutoMethod::Ibft),
        ] {
            let expected = Expected {
                method: Some(method),
                ..base()
            };
            assert_eq!(
                ip(&format!(
                    "192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:{word}"
                )),
                expected.arg()
            );
        }
        assert_eq!(
            ip("192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none:9000"),
            Expected {
                mtu: Some(9000),
                ..base()
            }
            .arg()
        );
        assert_eq!(
            ip("192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none::52:54:00:12:34:56"),
            Expected {
                mac: Some(MAC),
                ..base()
            }
            .arg()
        );
        assert_eq!(
            ip("192.168.1.10::192.168.1.1:255.255.255.0:node1:eth0:none:9000:52:54:00:12:34:56"),
            Expected {
                mtu: Some(9000),
                mac: Some(MAC),
                ..base()
            }
            .arg()
        );
    }

    // dracut: ...:<method>[:[<dns1>][:<dns2>]]
    #[test]
    fn static_form_with_dns() {
        let base = || Expected {
            address: "10.0.0.5",
            prefix_len: 16,
            gateway: Some("10.0.0.1"),
            interface: Some("eth0"),
            ..Expected::default()
        };
        assert_eq!(
            ip("10.0.0.5::10.0.0.1:255.255.0.0::eth0:none:10.0.0.53"),
            Expected {
                dns: vec!["10.0.0.53"],
                ..base()
            }
            .arg()
        );
        assert_eq!(
            ip("10.0.0.5::10.0.0.1:255.255.0.0::eth0:none:10.0.0.53:10.0.0.54"),
            Expected {
                dns: vec!["10.0.0.53", "10.0.0.54"],
                ..base()
            }
            .arg()
        );
        // An empty <dns1>: dracut would take the second field for a MAC address here.
        assert_eq!(
            ip("10.0.0.5::10.0.0.1:255.255.0.0::eth0:none::10.0.0.54"),
            Expected {
                dns: vec!["10.0.0.54"],
                ..base()
            }
            .arg()
        );
        assert_eq!(
            ip("10.0.0.5::10.0.0.1:255.255.0.0::eth0:none:[2001:db8::53]:10.0.0.54"),
            Expected {
                dns: vec!["2001:db8::53", "10.0.0.54"],
                ..base()
            }
            .arg()
        );
    }

    /// The tail after the method is told apart by its content, as dracut does.
    #[test]
    fn mtu_mac_and_dns_tails_are_told_apart() {
        let tail = |tail: &str| {
            let IpArg::Static {
                mtu, mac, dns, ntp, ..
            } = ip(&format!("10.0.0.5:::8:::none{tail}"))
            else {
                panic!("not static")
            };
            (mtu, mac, dns, ntp)
        };
        assert_eq!(tail(""), (None, None, vec![], vec![]));
        assert_eq!(tail(":"), (None, None, vec![], vec![]));
        assert_eq!(tail("::"), (None, None, vec![], vec![]));
        assert_eq!(tail(":1500"), (Some(1500), None, vec![], vec![]));
        assert_eq!(tail(":1500:"), (Some(1500), None, vec![], vec![]));
        assert_eq!(
            tail("::52:54:00:12:34:56"),
            (None, Some(MAC), vec![], vec![])
        );
        assert_eq!(
            tail(":1500:52-54-00-12-34-56"),
            (Some(1500), Some(MAC), vec![], vec![])
        );
        assert_eq!(
            tail(":1.1.1.1"),
            (None, None, vec![addr("1.1.1.1")], vec![])
        );
        assert_eq!(
            tail(":[2001:db8::53]"),
            (None, None, vec![addr("2001:db8::53")], vec![])
        );
        assert_eq!(
            tail("::[2001:db8::53]"),
            (None, None, vec![addr("2001:db8::53")], vec![])
        );
        assert_eq!(
            tail(":::10.0.0.123"),
            (None, None, vec![], vec![addr("10.0.0.123")])
        );
        // 0.0.0.0 means "none", as in the kernel.
        assert_eq!(
            tail(":0.0.0.0:8.8.8.8"),
            (None, None, vec![addr("8.8.8.8")], vec![])
        );
    }

    // nfsroot.rst: ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:
    //              <dns0-ip>:<dns1-ip>:<ntp0-ip>
    #[test]
    fn kernel_forms() {
        assert_eq!(
            ip(
                "192.168.0.10:192.168.0.1:192.168.0.1:255.255.255.0:myhost:eth0:off:192.168.0.1:8.8.8.8:192.168.0.123"
            ),
            Expected {
                address: "192.168.0.10",
                prefix_len: 24,
                peer: Some("192.168.0.1"),
                gateway: Some("192.168.0.1"),
                hostname: Some("myhost"),
                interface: Some("eth0"),
                dns: vec!["192.168.0.1", "8.8.8.8"],
                ntp: vec!["192.168.0.123"],
                ..Expected::default()
            }
            .arg()
        );
        // <autoconf> alone, and the old name nfsaddrs=.
        assert_eq!(
            ip("on"),
            IpArg::Auto {
                method: AutoMethod::Dhcp
            }
        );
        assert_eq!(
            ip("any"),
            IpArg::Auto {
                method: AutoMethod::Dhcp
            }
        );
        assert_eq!(
            ip("off"),
            IpArg::Auto {
                method: AutoMethod::Off
            }
        );
        assert_eq!(
            parse("nfsaddrs=dhcp").unwrap().ip,
            vec![IpArg::Auto {
                method: AutoMethod::Dhcp
            }]
        );
        // The kernel lets the value stop after any field; a missing method means none.
        let short = Expected {
            address: "10.0.0.5",
            prefix_len: 24,
            gateway: Some("10.0.0.1"),
            ..Expected::default()
        };
        assert_eq!(ip("10.0.0.5::10.0.0.1:255.255.255.0"), short.arg());
        assert_eq!(
            ip("10.0.0.5::10.0.0.1:255.255.255.0:myhost"),
            Expected {
                hostname: Some("myhost"),
                ..short
            }
            .arg()
        );
        let short = Expected {
            address: "10.0.0.5",
            prefix_len: 24,
            gateway: Some("10.0.0.1"),
            interface: Some("eth1"),
            ..Expected::default()
        };
        assert_eq!(ip("10.0.0.5::10.0.0.1:255.255.255.0::eth1"), short.arg());
        assert_eq!(ip("10.0.0.5::10.0.0.1:255.255.255.0::eth1:"), short.arg());
        // A hostname with a dot stays whole (the kernel would split off a NIS domain).
        let IpArg::Static { hostname, .. } = ip("10.0.0.5:::24:node1.cluster.example:eth0:none")
        else {
            panic!("not static")
        };
        assert_eq!(hostname.as_deref(), Some("node1.cluster.example"));
    }

    #[test]
    fn bracketed_ipv6() {
        assert_eq!(
            ip("[2001:db8::5]::[2001:db8::1]:64:node1:eth0:none"),
            Expected {
                address: "2001:db8::5",
                prefix_len: 64,
                gateway: Some("2001:db8::1"),
                hostname: Some("node1"),
                interface: Some("eth0"),
                ..Expected::default()
            }
            .arg()
        );
        // The dracut man page's own spelling, upper case.
        assert_eq!(
            ip("[2001:DB8::1]:[2001:DB8::2]::128::ppp0:none:1280"),
            Expected {
                address: "2001:db8::1",
                prefix_len: 128,
                peer: Some("2001:db8::2"),
                interface: Some("ppp0"),
                mtu: Some(1280),
                ..Expected::default()
            }
            .arg()
        );
        assert_eq!(
            ip("[fd00::10]:::48::eth0:dhcp6:[fd00::53]:[fd00::54]:[fd00::123]"),
            Expected {
                address: "fd00::10",
                prefix_len: 48,
                interface: Some("eth0"),
                method: Some(AutoMethod::Dhcp6),
                dns: vec!["fd00::53", "fd00::54"],
                ntp: vec!["fd00::123"],
                ..Expected::default()
            }
            .arg()
        );
        assert_eq!(
            ip("[::ffff:10.0.0.5]:::96:::none"),
            Expected {
                address: "::ffff:10.0.0.5",
                prefix_len: 96,
                ..Expected::default()
            }
            .arg()
        );
    }

    #[test]
    fn netmasks_and_prefix_lengths() {
        let prefix = |value: &str| match ip(value) {
            IpArg::Static { prefix_len, .. } => prefix_len,
            other => panic!("{other:?}"),
        };
        assert_eq!(prefix("10.0.0.5:::0:::none"), 0);
        assert_eq!(prefix("10.0.0.5:::0.0.0.0:::none"), 0);
        assert_eq!(prefix("10.0.0.5:::128.0.0.0:::none"), 1);
        assert_eq!(prefix("10.0.0.5:::255.255.252.0:::none"), 22);
        assert_eq!(prefix("10.0.0.5:::255.255.255.254:::none"), 31);
        assert_eq!(prefix("10.0.0.5:::255.255.255.255:::none"), 32);
        assert_eq!(prefix("10.0.0.5:::32:::none"), 32);
        assert_eq!(prefix("10.0.0.5:::024:::none"), 24);
        assert_eq!(prefix("[2001:db8::5]:::0:::none"), 0);
        assert_eq!(prefix("[2001:db8::5]:::128:::none"), 128);
        // dracut's <peer>/<prefix> for point-to-point links.
        assert_eq!(prefix("10.0.0.1:10.0.0.2/30::::ppp0:none"), 30);
        assert_eq!(prefix("10.0.0.1:10.0.0.2/30::30::ppp0:none"), 30);
        assert_eq!(
            prefix("10.0.0.1:10.0.0.2/30::255.255.255.252::ppp0:none"),
            30
        );
        assert_eq!(prefix("[fd00::1]:[fd00::2/127]::::ppp0:none"), 127);
    }

    #[test]
    fn empty_client_ip_only_names_the_host() {
        let network = parse("ip=::::node7:eth0:dhcp").unwrap();
        assert_eq!(
            network.ip,
            vec![interface("eth0", AutoMethod::Dhcp, None, None)]
        );
        assert_eq!(network.hostname.as_deref(), Some("node7"));
        let network = parse("ip=::::node7::dhcp").unwrap();
        assert_eq!(
            network.ip,
            vec![IpArg::Auto {
                method: AutoMethod::Dhcp
            }]
        );
        assert_eq!(network.hostname.as_deref(), Some("node7"));
        let network = parse("ip=:::::eth0:dhcp:9000").unwrap();
        assert_eq!(
            network.ip,
            vec![interface("eth0", AutoMethod::Dhcp, Some(9000), None)]
        );
        assert_eq!(network.hostname, None);
    }

    #[test]
    fn hostname_comes_from_the_static_form() {
        let network = parse(
            "ip=10.0.0.5::10.0.0.1:24:node1:eth0:none ip=10.1.0.5:::24:node1:eth1:none \
             ip=eth2:dhcp",
        )
        .unwrap();
        assert_eq!(network.hostname.as_deref(), Some("node1"));
        assert_eq!(network.ip.len(), 3);
        assert_eq!(parse("ip=10.0.0.5:::24::eth0:none").unwrap().hostname, None);
    }

    #[test]
    fn every_ip_in_order() {
        let network = parse("ip=eth0:dhcp ip=eth1:auto6 nfsaddrs=off ip=dhcp6").unwrap();
        assert_eq!(
            network.ip,
            vec![
                interface("eth0", AutoMethod::Dhcp, None, None),
                interface("eth1", AutoMethod::Auto6, None, None),
                IpArg::Auto {
                    method: AutoMethod::Off
                },
                IpArg::Auto {
                    method: AutoMethod::Dhcp6
                },
            ]
        );
    }

    #[test]
    fn quotes_are_removed() {
        for cmdline in [
            r#"ip="eth0:dhcp""#,
            r#""ip=eth0:dhcp""#,
            r#"quiet "ip=eth0:dhcp" splash"#,
        ] {
            assert_eq!(
                parse(cmdline).unwrap().ip,
                vec![interface("eth0", AutoMethod::Dhcp, None, None)],
                "{cmdline}"
            );
        }
        // A quoted value with a space is one word, reported whole.
        assert_eq!(
            err(r#"ip="eth0:dhcp 6""#),
            "ip=eth0:dhcp 6: unknown autoconfiguration method 'dhcp 6' (expected dhcp, on, any, \
             dhcp6, auto6, either6, link6, ibft, none or off)"
        );
    }

    #[test]
    fn nameservers_and_peerdns() {
        let network = parse(
            "nameserver=10.0.0.53 nameserver=2001:db8::53 nameserver=[2001:db8::54] rd.peerdns=0",
        )
        .unwrap();
        assert_eq!(
            network.nameservers,
            vec![
                addr("10.0.0.53"),
                addr("2001:db8::53"),
                addr("2001:db8::54")
            ]
        );
        assert!(!network.peerdns);
        assert!(parse("rd.peerdns=1").unwrap().peerdns);
        assert!(parse("rd.peerdns").unwrap().peerdns);
        assert!(!parse("rd.peerdns=no").unwrap().peerdns);
        assert!(parse("rd.peerdns=0 rd.peerdns=1").unwrap().peerdns);
    }

    #[test]
    fn ifname() {
        let network =
            parse("ifname=bootnet:52:54:00:12:34:56 ifname=data0:02:AA:bb:cc:DD:ee").unwrap();
        assert_eq!(
            network.ifnames,
            vec![
                IfName {
                    name: "bootnet".into(),
                    mac: MAC
                },
                IfName {
                    name: "data0".into(),
                    mac: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]
                },
            ]
        );
    }

    // dracut: VLAN_PLUS_VID (vlan0005), VLAN_PLUS_VID_NO_PAD (vlan5), DEV_PLUS_VID (eth0.0005),
    // DEV_PLUS_VID_NO_PAD (eth0.5)
    #[test]
    fn vlan_name_styles() {
        let network = parse(
            "vlan=vlan0005:eth0 vlan=vlan5:eth0 vlan=eth0.0005:eth0 vlan=eth0.5:eth0 \
                   vlan=bond0.4094:bond0",
        )
        .unwrap();
        let ids: Vec<(&str, u16, &str)> = network
            .vlans
            .iter()
            .map(|v| (v.name.as_str(), v.id, v.parent.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("vlan0005", 5, "eth0"),
                ("vlan5", 5, "eth0"),
                ("eth0.0005", 5, "eth0"),
                ("eth0.5", 5, "eth0"),
                ("bond0.4094", 4094, "bond0"),
            ]
        );
    }

    #[test]
    fn bonds() {
        let network = parse(
            "bond bond=bond1 bond=bond2:eth2,eth3 \
             bond=bond3:eth4,eth5:mode=active-backup,miimon=100,primary=eth4 \
             bond=bond4:eth6:mode=active-backup,arp_interval=100,arp_ip_target=10.0.0.1;10.0.0.2:9000 \
             bond=bond5:eth7,eth8::1500",
        )
        .unwrap();
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let options = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            network.bonds,
            vec![
                BondArg {
                    name: "bond0".into(),
                    slaves: owned(&["eth0", "eth1"]),
                    options: options(&[("mode", "balance-rr")]),
                    mtu: None,
                },
                BondArg {
                    name: "bond1".into(),
                    slaves: owned(&["eth0", "eth1"]),
                    options: vec![],
                    mtu: None,
                },
                BondArg {
                    name: "bond2".into(),
                    slaves: owned(&["eth2", "eth3"]),
                    options: vec![],
                    mtu: None,
                },
                BondArg {
                    name: "bond3".into(),
                    slaves: owned(&["eth4", "eth5"]),
                    options: options(&[
                        ("mode", "active-backup"),
                        ("miimon", "100"),
                        ("primary", "eth4")
                    ]),
                    mtu: None,
                },
                BondArg {
                    name: "bond4".into(),
                    slaves: owned(&["eth6"]),
                    options: options(&[
                        ("mode", "active-backup"),
                        ("arp_interval", "100"),
                        ("arp_ip_target", "10.0.0.1;10.0.0.2")
                    ]),
                    mtu: Some(9000),
                },
                BondArg {
                    name: "bond5".into(),
                    slaves: owned(&["eth7", "eth8"]),
                    options: vec![],
                    mtu: Some(1500),
                },
            ]
        );
        assert_eq!(network.bonds[0], BondArg::dracut_default());
    }

    #[test]
    fn bridges() {
        let network = parse("bridge bridge=br1:eth1,eth2 bridge=br2:bond0").unwrap();
        assert_eq!(
            network.bridges,
            vec![
                BridgeArg::dracut_default(),
                BridgeArg {
                    name: "br1".into(),
                    ports: vec!["eth1".into(), "eth2".into()]
                },
                BridgeArg {
                    name: "br2".into(),
                    ports: vec!["bond0".into()]
                },
            ]
        );
        assert_eq!(
            BridgeArg::dracut_default(),
            BridgeArg {
                name: "br0".into(),
                ports: vec!["eth0".into()]
            }
        );
    }

    // The dracut man page's rd.route examples, and the forms around them.
    #[test]
    fn routes() {
        let route =
            |destination: &str, prefix_len, gateway: Option<&str>, iface: Option<&str>| RouteArg {
                destination: addr(destination),
                prefix_len,
                gateway: gateway.map(addr),
                interface: iface.map(str::to_string),
            };
        let network = parse(
            "rd.route=192.168.200.0/24:192.168.100.222:ens10 \
             rd.route=192.168.200.0/24:192.168.100.222 \
             rd.route=192.168.200.0/24::ens10 \
             rd.route=[2001:DB8:3::/8]:[2001:DB8:2::1]:ens10 \
             rd.route=10.1.0.0/255.255.0.0:10.0.0.1 \
             rd.route=10.9.9.9:10.0.0.1 \
             rd.route=[2001:db8:5::1]::eth0 \
             rd.route=0.0.0.0/0:10.0.0.1:eth0 \
             rd.route=10.2.3.4/16:10.0.0.1",
        )
        .unwrap();
        assert_eq!(
            network.routes,
            vec![
                route("192.168.200.0", 24, Some("192.168.100.222"), Some("ens10")),
                route("192.168.200.0", 24, Some("192.168.100.222"), None),
                route("192.168.200.0", 24, None, Some("ens10")),
                // 2001:db8:3:: has bits set past /8; the kernel wants the network: 2000::/8.
                route("2000::", 8, Some("2001:db8:2::1"), Some("ens10")),
                route("10.1.0.0", 16, Some("10.0.0.1"), None),
                route("10.9.9.9", 32, Some("10.0.0.1"), None),
                route("2001:db8:5::1", 128, None, Some("eth0")),
                route("0.0.0.0", 0, Some("10.0.0.1"), Some("eth0")),
                route("10.2.0.0", 16, Some("10.0.0.1"), None),
            ]
        );
    }

    #[test]
    fn a_whole_cluster_node_cmdline() {
        let network = parse(
            "BOOT_IMAGE=/shoal/vmlinuz console=ttyS0 ifname=boot0:52:54:00:12:34:56 \
             bond=bond0:boot0,eth1:mode=802.3ad,miimon=100:9000 vlan=bond0.42:bond0 \
             ip=10.42.0.17::10.42.0.1:255.255.255.0:node17:bond0.42:none \
             ip=eth2:dhcp rd.route=10.100.0.0/16:10.42.0.254:bond0.42 \
             nameserver=10.42.0.2 rd.peerdns=0 shoal.hostname=ignored",
        )
        .unwrap();
        assert_eq!(network.ifnames.len(), 1);
        assert_eq!(network.bonds[0].mtu, Some(9000));
        assert_eq!(network.vlans[0].id, 42);
        assert_eq!(network.ip.len(), 2);
        assert_eq!(network.routes.len(), 1);
        assert_eq!(network.nameservers, vec![addr("10.42.0.2")]);
        assert!(!network.peerdns);
        assert_eq!(network.hostname.as_deref(), Some("node17"));
    }

    #[test]
    fn display_is_canonical() {
        let canonical = |value: &str| ip(value).to_string();
        assert_eq!(canonical("on"), "dhcp");
        assert_eq!(canonical("off"), "none");
        assert_eq!(canonical("single-dhcp"), "dhcp");
        assert_eq!(canonical("eth0:any"), "eth0:dhcp");
        assert_eq!(
            canonical("eth0:dhcp::52:54:00:AB:CD:EF"),
            "eth0:dhcp::52:54:00:ab:cd:ef"
        );
        assert_eq!(
            canonical("eth0:dhcp:9000:52-54-00-12-34-56"),
            "eth0:dhcp:9000:52:54:00:12:34:56"
        );
        assert_eq!(
            canonical("10.0.0.5::10.0.0.1:255.255.255.0"),
            "10.0.0.5::10.0.0.1:24:::none"
        );
        assert_eq!(
            canonical("10.0.0.1:10.0.0.2/30::::ppp0:off"),
            "10.0.0.1:10.0.0.2::30::ppp0:none"
        );
        assert_eq!(
            canonical("[2001:DB8::5]::[2001:DB8::1]:64:n1:eth0:none:[2001:DB8::53]"),
            "[2001:db8::5]::[2001:db8::1]:64:n1:eth0:none:[2001:db8::53]"
        );
        assert_eq!(
            canonical("10.0.0.5:::24:::none:::10.0.0.123"),
            "10.0.0.5:::24:::none:::10.0.0.123"
        );
        assert_eq!(
            canonical("10.0.0.5:::24:::none:0.0.0.0:8.8.8.8"),
            "10.0.0.5:::24:::none:8.8.8.8"
        );
    }

    #[test]
    fn serializes_for_boot_events() {
        let network = parse("ifname=b0:52:54:00:12:34:56 ip=b0:dhcp::52:54:00:12:34:56").unwrap();
        let json = serde_json::to_value(&network).unwrap();
        assert_eq!(json["ifnames"][0]["mac"], "52:54:00:12:34:56");
        assert_eq!(json["ip"][0]["form"], "interface");
        assert_eq!(json["ip"][0]["method"], "dhcp");
        assert_eq!(json["ip"][0]["mac"], "52:54:00:12:34:56");
        assert_eq!(json["peerdns"], true);
    }

    /// Every rejected value, with the message an operator sees.
    #[test]
    fn errors_name_key_value_and_reason() {
        let cases: &[(&str, &str)] = &[
            // ip=: values and methods
            (
                "ip",
                "ip: needs a value, as in ip=dhcp, ip=<interface>:dhcp or ip=<client-IP>:...",
            ),
            (
                "ip=",
                "ip=: empty value; expected ip=dhcp, ip=<interface>:dhcp or ip=<client-IP>:...",
            ),
            (
                "ip=dhcp4",
                "ip=dhcp4: unknown autoconfiguration method 'dhcp4' (expected dhcp, on, any, dhcp6, auto6, either6, link6, ibft, none or off)",
            ),
            (
                "ip=bootp",
                "ip=bootp: method bootp is a kernel-only autoconfiguration protocol netd does not support; use dhcp",
            ),
            (
                "ip=rarp",
                "ip=rarp: method rarp is a kernel-only autoconfiguration protocol netd does not support; use dhcp",
            ),
            (
                "ip=both",
                "ip=both: method both is a kernel-only autoconfiguration protocol netd does not support; use dhcp",
            ),
            (
                "ip=dhcp,1,node7",
                "ip=dhcp,1,node7: DHCP client identifiers (dhcp,<type>,<value>) are not supported",
            ),
            (
                "ip=10.0.0.5",
                "ip=10.0.0.5: a bare address is not supported; write the static form 10.0.0.5::<gateway-IP>:<netmask>:<client_hostname>:<interface>:none",
            ),
            (
                "ip=[2001:db8::5]",
                "ip=[2001:db8::5]: a bare address is not supported; write the static form [2001:db8::5]::<gateway-IP>:<netmask>:<client_hostname>:<interface>:none",
            ),
            (
                "ip=eth0:",
                "ip=eth0:: the autoconfiguration method is empty",
            ),
            (
                "ip=eth0:dhcpp",
                "ip=eth0:dhcpp: unknown autoconfiguration method 'dhcpp' (expected dhcp, on, any, dhcp6, auto6, either6, link6, ibft, none or off)",
            ),
            (
                "ip=10.0.0.5:::24::eth0:bootp",
                "ip=10.0.0.5:::24::eth0:bootp: method bootp is a kernel-only autoconfiguration protocol netd does not support; use dhcp",
            ),
            (
                "ip=:dhcp",
                "ip=:dhcp: peer 'dhcp' is not an IPv4 address (IPv6 addresses go in brackets, as in [2001:db8::1])",
            ),
            (
                "ip=eth0:ibft",
                "ip=eth0:ibft: ibft takes the whole configuration from the firmware; write ip=ibft without an interface",
            ),
            (
                "ip=:::::eth0:ibft",
                "ip=:::::eth0:ibft: ibft takes the whole configuration from the firmware; it cannot apply to interface eth0 alone",
            ),
            // ip=: addresses
            (
                "ip=10.0.0.256:::24::eth0:none",
                "ip=10.0.0.256:::24::eth0:none: client IP '10.0.0.256' is not an IPv4 address (IPv6 addresses go in brackets, as in [2001:db8::1])",
            ),
            (
                "ip=2001:db8::5:::64::eth0:none",
                "ip=2001:db8::5:::64::eth0:none: '2001' looks like part of an IPv6 address; IPv6 addresses go in brackets, as in [2001:db8::1]",
            ),
            (
                "ip=[10.0.0.5]:::24::eth0:none",
                "ip=[10.0.0.5]:::24::eth0:none: client IP [10.0.0.5] is not an IPv6 address (brackets are only for IPv6)",
            ),
            (
                "ip=[2001:db8::5:::64::eth0:none",
                "ip=[2001:db8::5:::64::eth0:none: '[' without a closing ']' in [2001:db8::5:::64::eth0:none",
            ),
            (
                "ip=[2001:db8::5]/64:::64::eth0:none",
                "ip=[2001:db8::5]/64:::64::eth0:none: expected ':' after ']' but found /64:::64::eth0:none",
            ),
            (
                "ip=0.0.0.0:::24::eth0:none",
                "ip=0.0.0.0:::24::eth0:none: client IP 0.0.0.0 cannot be a link's address (leave the field empty for autoconfiguration)",
            ),
            (
                "ip=224.0.0.1:::24::eth0:none",
                "ip=224.0.0.1:::24::eth0:none: client IP 224.0.0.1 cannot be a link's address (leave the field empty for autoconfiguration)",
            ),
            (
                "ip=10.0.0.5::[2001:db8::1]:24::eth0:none",
                "ip=10.0.0.5::[2001:db8::1]:24::eth0:none: gateway 2001:db8::1 and client IP 10.0.0.5 are of different IP families",
            ),
            (
                "ip=[2001:db8::5]:10.0.0.1::64::eth0:none",
                "ip=[2001:db8::5]:10.0.0.1::64::eth0:none: peer 10.0.0.1 and client IP 2001:db8::5 are of different IP families",
            ),
            (
                "ip=10.0.0.5::gw:24::eth0:none",
                "ip=10.0.0.5::gw:24::eth0:none: gateway 'gw' is not an IPv4 address (IPv6 addresses go in brackets, as in [2001:db8::1])",
            ),
            // ip=: netmasks
            (
                "ip=10.0.0.5:::255.0.255.0::eth0:none",
                "ip=10.0.0.5:::255.0.255.0::eth0:none: netmask 255.0.255.0 is not contiguous",
            ),
            (
                "ip=10.0.0.5:::0.255.255.255::eth0:none",
                "ip=10.0.0.5:::0.255.255.255::eth0:none: netmask 0.255.255.255 is not contiguous",
            ),
            (
                "ip=10.0.0.5:::33::eth0:none",
                "ip=10.0.0.5:::33::eth0:none: prefix length 33 is out of range for IPv4 (0 to 32)",
            ),
            (
                "ip=10.0.0.5:::300::eth0:none",
                "ip=10.0.0.5:::300::eth0:none: prefix length 300 is out of range for IPv4 (0 to 32)",
            ),
            (
                "ip=[2001:db8::5]:::129::eth0:none",
                "ip=[2001:db8::5]:::129::eth0:none: prefix length 129 is out of range for IPv6 (0 to 128)",
            ),
            (
                "ip=[2001:db8::5]:::255.255.255.0::eth0:none",
                "ip=[2001:db8::5]:::255.255.255.0::eth0:none: netmask '255.255.255.0' is not a prefix length (IPv6 takes 0 to 128, not a dotted netmask)",
            ),
            (
                "ip=10.0.0.5:::/24::eth0:none",
                "ip=10.0.0.5:::/24::eth0:none: netmask '/24' is neither a dotted netmask nor a prefix length (0 to 32)",
            ),
            (
                "ip=10.0.0.5:::::eth0:none",
                "ip=10.0.0.5:::::eth0:none: the netmask (4th field) is missing; give a dotted netmask or a prefix length",
            ),
            (
                "ip=10.0.0.5::10.0.0.1",
                "ip=10.0.0.5::10.0.0.1: the netmask (4th field) is missing; give a dotted netmask or a prefix length",
            ),
            (
                "ip=10.0.0.1:10.0.0.2/30::24::ppp0:none",
                "ip=10.0.0.1:10.0.0.2/30::24::ppp0:none: the peer's prefix length /30 disagrees with netmask 24",
            ),
            (
                "ip=10.0.0.1:10.0.0.2/33::::ppp0:none",
                "ip=10.0.0.1:10.0.0.2/33::::ppp0:none: prefix length 33 is out of range for IPv4 (0 to 32)",
            ),
            // ip=: hostname and interface
            (
                "ip=10.0.0.5:::24:node_1:eth0:none",
                "ip=10.0.0.5:::24:node_1:eth0:none: hostname node_1: only letters, digits, '-' and '.' are allowed",
            ),
            (
                "ip=10.0.0.5:::24:-node:eth0:none",
                "ip=10.0.0.5:::24:-node:eth0:none: hostname -node: a label cannot start or end with '-'",
            ),
            (
                "ip=10.0.0.5:::24:a..b:eth0:none",
                "ip=10.0.0.5:::24:a..b:eth0:none: hostname a..b: each dot-separated label has 1 to 63 characters",
            ),
            (
                "ip=10.0.0.5:::24::averyveryverylongname:none",
                "ip=10.0.0.5:::24::averyveryverylongname:none: interface name averyveryverylongname is longer than 15 characters",
            ),
            (
                "ip=averyveryverylongname:dhcp",
                "ip=averyveryverylongname:dhcp: interface name averyveryverylongname is longer than 15 characters",
            ),
            (
                "ip=10.0.0.5:::24::[eth0]:none",
                "ip=10.0.0.5:::24::[eth0]:none: [eth0]: brackets are only for IPv6 addresses",
            ),
            (
                "ip=10.0.0.5:::24::et/h0:none",
                "ip=10.0.0.5:::24::et/h0:none: interface name 'et/h0' contains '/', which is not allowed",
            ),
            ("ip=..:dhcp", "ip=..:dhcp: '..' cannot be an interface name"),
            (
                "ip=10.0.0.5::10.0.0.1:24:a:eth0:none ip=10.0.0.6:::24:b:eth1:none",
                "ip=10.0.0.6:::24:b:eth1:none: hostname b conflicts with hostname a from an earlier ip=",
            ),
            // ip=: empty client IP
            (
                "ip=::10.0.0.1::node7:eth0:dhcp",
                "ip=::10.0.0.1::node7:eth0:dhcp: peer, gateway and netmask need a client IP (the first field is empty)",
            ),
            (
                "ip=:::24:node7:eth0:dhcp",
                "ip=:::24:node7:eth0:dhcp: peer, gateway and netmask need a client IP (the first field is empty)",
            ),
            (
                "ip=:::::eth0:dhcp:10.0.0.53",
                "ip=:::::eth0:dhcp:10.0.0.53: DNS and NTP servers in ip= need a client IP; use nameserver= instead",
            ),
            (
                "ip=::::node7::dhcp:9000",
                "ip=::::node7::dhcp:9000: an MTU or MAC address needs an interface (6th field)",
            ),
            (
                "ip=::::node7:eth0",
                "ip=::::node7:eth0: the autoconfiguration method (7th field) is missing; without a client IP it is required",
            ),
            // ip=: MTU, MAC and DNS tails
            (
                "ip=eth0:dhcp:67",
                "ip=eth0:dhcp:67: MTU 67 is out of range (68 to 65535)",
            ),
            (
                "ip=eth0:dhcp:65536",
                "ip=eth0:dhcp:65536: MTU 65536 is out of range (68 to 65535)",
            ),
            (
                "ip=eth0:dhcp:jumbo",
                "ip=eth0:dhcp:jumbo: MTU 'jumbo' is not a number",
            ),
            (
                "ip=eth0:dhcp::52:54:00:12:34",
                "ip=eth0:dhcp::52:54:00:12:34: expected [<mtu>][:<macaddr>] with the MAC address as six hex pairs (52:54:00:12:34:56), found 5 fields after the MTU",
            ),
            (
                "ip=eth0:dhcp::52:54:00:12:34:5g",
                "ip=eth0:dhcp::52:54:00:12:34:5g: MAC address '52:54:00:12:34:5g' is not six hex pairs separated by ':' (52:54:00:12:34:56)",
            ),
            (
                "ip=eth0:dhcp::525400123456",
                "ip=eth0:dhcp::525400123456: MAC address '525400123456' is not six hex pairs separated by ':' (52:54:00:12:34:56)",
            ),
            (
                "ip=eth0:dhcp::01:00:5e:00:00:01",
                "ip=eth0:dhcp::01:00:5e:00:00:01: MAC address 01:00:5e:00:00:01 is a multicast address, which no link can have",
            ),
            (
                "ip=eth0:dhcp::00:00:00:00:00:00",
                "ip=eth0:dhcp::00:00:00:00:00:00: MAC address 00:00:00:00:00:00 is all zeros",
            ),
            (
                "ip=eth0:dhcp:10.0.0.53",
                "ip=eth0:dhcp:10.0.0.53: '10.0.0.53' is not an MTU; DNS servers can only follow the static form <client-IP>:...:<method>",
            ),
            (
                "ip=10.0.0.5:::24::eth0:none:10.0.0.53:1500",
                "ip=10.0.0.5:::24::eth0:none:10.0.0.53:1500: DNS server '1500' is not an IPv4 address (IPv6 addresses go in brackets, as in [2001:db8::1])",
            ),
            (
                "ip=10.0.0.5:::24::eth0:none:1.1.1.1:8.8.8.8:10.0.0.1:10.0.0.2",
                "ip=10.0.0.5:::24::eth0:none:1.1.1.1:8.8.8.8:10.0.0.1:10.0.0.2: at most three servers follow the method (<dns1>:<dns2>:<ntp0>), found 4",
            ),
            (
                "ip=10.0.0.5:::24::eth0:none:1.1.1.1:8.8.8.8:ntp",
                "ip=10.0.0.5:::24::eth0:none:1.1.1.1:8.8.8.8:ntp: NTP server 'ntp' is not an IPv4 address (IPv6 addresses go in brackets, as in [2001:db8::1])",
            ),
            (
                "ip=10.0.0.5:::24::eth0:none:[1500]",
                "ip=10.0.0.5:::24::eth0:none:[1500]: DNS server [1500] is not an IPv6 address (brackets are only for IPv6)",
            ),
            // nameserver= and rd.peerdns=
            (
                "nameserver",
                "nameserver: needs a value, as in nameserver=<IP>",
            ),
            (
                "nameserver=",
                "nameserver=: empty value; expected nameserver=<IP>",
            ),
            (
                "nameserver=dns.example",
                "nameserver=dns.example: 'dns.example' is not an IP address",
            ),
            (
                "nameserver=0.0.0.0",
                "nameserver=0.0.0.0: 0.0.0.0 cannot be a name server",
            ),
            (
                "rd.peerdns=maybe",
                "rd.peerdns=maybe: 'maybe' is not a boolean (expected 0 or 1)",
            ),
            // ifname=
            (
                "ifname",
                "ifname: needs a value, as in ifname=<interface>:<MAC>",
            ),
            (
                "ifname=bootnet",
                "ifname=bootnet: expected <interface>:<MAC>, as in bootnet:52:54:00:12:34:56",
            ),
            (
                "ifname=bootnet:52:54:00:12:34",
                "ifname=bootnet:52:54:00:12:34: MAC address '52:54:00:12:34' is not six hex pairs separated by ':' (52:54:00:12:34:56)",
            ),
            (
                "ifname=ib0:80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:00:00:01",
                "ifname=ib0:80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:00:00:01: 20-byte (InfiniBand) hardware addresses are not supported; only 6-byte MAC addresses",
            ),
            (
                "ifname=:52:54:00:12:34:56",
                "ifname=:52:54:00:12:34:56: the interface name is empty",
            ),
            // vlan=
            (
                "vlan",
                "vlan: needs a value, as in vlan=<vlanname>:<phydevice>",
            ),
            (
                "vlan=vlan5",
                "vlan=vlan5: expected <vlanname>:<phydevice>, found 1 fields",
            ),
            (
                "vlan=vlan5:eth0:eth1",
                "vlan=vlan5:eth0:eth1: expected <vlanname>:<phydevice>, found 3 fields",
            ),
            (
                "vlan=storage:eth0",
                "vlan=storage:eth0: cannot read a VLAN id from the name storage; name it vlan<id> (vlan5, vlan0005) or <device>.<id> (eth0.5, eth0.0005)",
            ),
            (
                "vlan=eth0:eth1",
                "vlan=eth0:eth1: cannot read a VLAN id from the name eth0; name it vlan<id> (vlan5, vlan0005) or <device>.<id> (eth0.5, eth0.0005)",
            ),
            (
                "vlan=vlan0:eth0",
                "vlan=vlan0:eth0: VLAN id 0 in vlan0 is out of range (1 to 4094)",
            ),
            (
                "vlan=eth0.4095:eth0",
                "vlan=eth0.4095:eth0: VLAN id 4095 in eth0.4095 is out of range (1 to 4094)",
            ),
            (
                "vlan=eth0.99999:eth0",
                "vlan=eth0.99999:eth0: VLAN id 99999 in eth0.99999 is out of range (1 to 4094)",
            ),
            ("vlan=vlan5:", "vlan=vlan5:: the interface name is empty"),
            // bond=
            (
                "bond=",
                "bond=: empty value; write bond alone for bond0:eth0,eth1:mode=balance-rr, or bond=<bondname>[:<slaves>[:<options>[:<mtu>]]]",
            ),
            (
                "bond=bond0:eth0:mode=x:9000:extra",
                "bond=bond0:eth0:mode=x:9000:extra: expected <bondname>[:<slaves>[:<options>[:<mtu>]]], found 5 fields",
            ),
            ("bond=bond0:", "bond=bond0:: the slave list is empty"),
            (
                "bond=bond0:eth0,,eth1",
                "bond=bond0:eth0,,eth1: empty name in the slave list eth0,,eth1",
            ),
            (
                "bond=bond0:eth0:active-backup",
                "bond=bond0:eth0:active-backup: bond option 'active-backup' is not <name>=<value> (as in mode=active-backup)",
            ),
            (
                "bond=bond0:eth0:mode=",
                "bond=bond0:eth0:mode=: bond option 'mode=' is not <name>=<value> (as in mode=active-backup)",
            ),
            (
                "bond=bond0:eth0:mode=802.3ad:big",
                "bond=bond0:eth0:mode=802.3ad:big: MTU 'big' is not a number",
            ),
            // bridge=
            (
                "bridge=br0",
                "bridge=br0: expected <bridgename>:<ethnames> (or bridge alone for br0:eth0), found 1 fields",
            ),
            ("bridge=br0:", "bridge=br0:: the port list is empty"),
            (
                "bridge=br0:eth0:eth1",
                "bridge=br0:eth0:eth1: expected <bridgename>:<ethnames> (or bridge alone for br0:eth0), found 3 fields",
            ),
            // rd.route=
            (
                "rd.route",
                "rd.route: needs a value, as in rd.route=<net>/<netmask>:<gateway>[:<interface>]",
            ),
            (
                "rd.route=10.0.0.0/8",
                "rd.route=10.0.0.0/8: expected <net>/<netmask>:<gateway>[:<interface>], found 1 fields",
            ),
            (
                "rd.route=10.0.0.0/8:10.0.0.1:eth0:extra",
                "rd.route=10.0.0.0/8:10.0.0.1:eth0:extra: expected <net>/<netmask>:<gateway>[:<interface>], found 4 fields",
            ),
            (
                "rd.route=10.0.0.0/8:",
                "rd.route=10.0.0.0/8:: a route needs a gateway, an interface or both",
            ),
            (
                "rd.route=10.0.0.0/8::",
                "rd.route=10.0.0.0/8::: a route needs a gateway, an interface or both",
            ),
            (
                "rd.route=:10.0.0.1",
                "rd.route=:10.0.0.1: the destination network is empty",
            ),
            (
                "rd.route=10.0.0.0/33:10.0.0.1",
                "rd.route=10.0.0.0/33:10.0.0.1: prefix length 33 is out of range for IPv4 (0 to 32)",
            ),
            (
                "rd.route=10.0.0.0/255.0.255.0:10.0.0.1",
                "rd.route=10.0.0.0/255.0.255.0:10.0.0.1: netmask 255.0.255.0 is not contiguous",
            ),
            (
                "rd.route=[2001:db8::/64]:10.0.0.1",
                "rd.route=[2001:db8::/64]:10.0.0.1: gateway 10.0.0.1 and destination 2001:db8:: are of different IP families",
            ),
            (
                "rd.route=2001:db8::/64:[2001:db8::1]",
                "rd.route=2001:db8::/64:[2001:db8::1]: IPv6 addresses go in brackets, as in rd.route=[2001:db8:3::/48]:[2001:db8:2::1]:eth0",
            ),
        ];
        for (cmdline, message) in cases {
            assert_eq!(err(cmdline), *message, "for {cmdline}");
        }
    }

    #[test]
    fn error_carries_key_and_exact_value() {
        let error = parse(r#"quiet ip="10.0.0.5:::255.0.255.0::eth0:none" ip=dhcp"#).unwrap_err();
        assert_eq!(
            error,
            CmdlineError {
                key: "ip".into(),
                value: Some("10.0.0.5:::255.0.255.0::eth0:none".into()),
                reason: "netmask 255.0.255.0 is not contiguous".into(),
            }
        );
        let error = parse("nfsaddrs=bootp").unwrap_err();
        assert_eq!(error.key, "nfsaddrs");
    }

    fn method() -> impl Strategy<Value = AutoMethod> {
        prop_oneof![
            Just(AutoMethod::Dhcp),
            Just(AutoMethod::Dhcp6),
            Just(AutoMethod::Auto6),
            Just(AutoMethod::Either6),
            Just(AutoMethod::Link6),
            Just(AutoMethod::Off),
            Just(AutoMethod::Ibft),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9._-]{0,14}"
    }

    fn hostname() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}"
    }

    fn mac() -> impl Strategy<Value = [u8; 6]> {
        any::<[u8; 6]>()
            .prop_map(|mut mac| {
                mac[0] &= 0xfe;
                mac
            })
            .prop_filter("a link's address is not zero", |mac| *mac != [0; 6])
    }

    fn mtu() -> impl Strategy<Value = u16> {
        68..=u16::MAX
    }

    /// A usable address of the family (not unspecified, for client IPs not multicast either).
    fn address(ipv6: bool) -> impl Strategy<Value = IpAddr> {
        let v4 = any::<u32>().prop_map(|bits| IpAddr::V4(Ipv4Addr::from(bits)));
        let v6 = any::<u128>().prop_map(|bits| IpAddr::V6(Ipv6Addr::from(bits)));
        let strategy = if ipv6 { v6.boxed() } else { v4.boxed() };
        strategy.prop_filter("usable", |a| !a.is_unspecified() && !a.is_multicast())
    }

    fn any_address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![address(false), address(true)]
    }

    fn static_arg() -> impl Strategy<Value = IpArg> {
        any::<bool>().prop_flat_map(|ipv6| {
            let tail = prop_oneof![
                (proptest::option::of(mtu()), proptest::option::of(mac()))
                    .prop_map(|(mtu, mac)| (mtu, mac, vec![], vec![])),
                (
                    proptest::collection::vec(any_address(), 0..=2),
                    proptest::collection::vec(any_address(), 0..=1)
                )
                    .prop_map(|(dns, ntp)| (None, None, dns, ntp)),
            ];
            (
                address(ipv6),
                0..=if ipv6 { 128u8 } else { 32 },
                proptest::option::of(address(ipv6)),
                proptest::option::of(address(ipv6)),
                proptest::option::of(hostname()),
                proptest::option::of(name()),
                method(),
                tail,
            )
                .prop_map(
                    |(address, prefix_len, peer, gateway, hostname, interface, method, tail)| {
                        let (mtu, mac, dns, ntp) = tail;
                        IpArg::Static {
                            address,
                            prefix_len,
                            peer,
                            gateway,
                            hostname,
                            interface,
                            method,
                            mtu,
                            mac,
                            dns,
                            ntp,
                        }
                    },
                )
        })
    }

    fn ip_arg() -> impl Strategy<Value = IpArg> {
        prop_oneof![
            method().prop_map(|method| IpArg::Auto { method }),
            (
                name(),
                method().prop_filter("ibft is for all links", |m| *m != AutoMethod::Ibft),
                proptest::option::of(mtu()),
                proptest::option::of(mac()),
            )
                .prop_map(|(interface, method, mtu, mac)| IpArg::Interface {
                    interface,
                    method,
                    mtu,
                    mac
                }),
            static_arg(),
        ]
    }

    proptest! {
        #[test]
        fn display_round_trips(arg in ip_arg()) {
            let text = format!("ip={arg}");
            let parsed = parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.ip, vec![arg], "{}", text);
        }

        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_near_misses(
            words in proptest::collection::vec(
                "(ip|nfsaddrs|nameserver|rd.peerdns|ifname|vlan|bond|bridge|rd.route)(=[0-9a-fA-F.:/\\[\\],=;a-z\" -]{0,40})?",
                1..6,
            )
        ) {
            let _ = parse(&words.join(" "));
        }
    }
}
