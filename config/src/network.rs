//! The `[network]` section of the machine configuration: what netd accepts, as TOML.
//!
//! ```toml
//! naming = "mac"                 # kernel (eth0), mac (enx525400123456) or path (enp0s3)
//! unconfigured = "dhcp"          # links no [[links]] entry matches: dhcp or ignore
//! online = { timeout = "30s", require = "any" }
//! dns = { servers = ["10.0.0.53"], search = ["example.net"], from_dhcp = true }
//! ntp = { servers = ["ntp.example.net"], from_dhcp = true }
//!
//! [[links]]
//! match = { mac = "52:54:00:12:34:56" }   # and/or name (globs), path, driver
//! name = "lan0"                  # rename it
//! addresses = ["10.0.0.5/24"]    # static; dhcp defaults to true only without addresses
//! gateway = "10.0.0.1"
//! routes = [{ to = "10.1.0.0/16", via = "10.0.0.254" }]
//! mtu = 9000
//!
//! [[vlans]]
//! name = "vlan10"
//! link = "lan0"
//! id = 10
//! dhcp = true
//!
//! [[bonds]]
//! name = "bond0"
//! links = ["eth0", "eth1"]       # names after renaming
//! mode = "active-backup"         # or 802.3ad
//! miimon = "100ms"
//!
//! [[bridges]]
//! name = "br0"
//! links = ["eth2"]
//! ```
//!
//! An empty configuration is valid and means: DHCPv4 (and IPv6 router advertisements) on every
//! physical link that has a carrier. Unknown fields are rejected; TOML and type errors carry the
//! line and column, checks across fields name the field path (`vlans[0].id`).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole `[network]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub naming: Naming,
    pub unconfigured: Unconfigured,
    pub online: Online,
    pub dns: Dns,
    pub ntp: Ntp,
    pub links: Vec<LinkConfig>,
    pub vlans: Vec<VlanConfig>,
    pub bonds: Vec<BondConfig>,
    pub bridges: Vec<BridgeConfig>,
}

/// How physical links are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Naming {
    /// The kernel's names (`eth0`): fine for one NIC, unstable with several.
    #[default]
    Kernel,
    /// `enx` + the permanent MAC: stable while the NIC stays.
    Mac,
    /// `en` + the PCI bus path (`enp0s3`): stable while the slot stays (a swapped NIC keeps it).
    Path,
}

/// What happens to physical links that no `[[links]]` entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Unconfigured {
    #[default]
    Dhcp,
    Ignore,
}

/// When the node counts as online (the `network-online` readiness).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Online {
    /// Report online anyway after this long, so that boot never waits for ever.
    #[serde(with = "duration")]
    #[schemars(schema_with = "duration::schema")]
    pub timeout: Duration,
    pub require: Require,
}

impl Default for Online {
    fn default() -> Self {
        Online {
            timeout: Duration::from_secs(30),
            require: Require::Any,
        }
    }
}

/// Which links must be configured for the node to be online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Require {
    /// One link with an address and a default route (or a static address).
    #[default]
    Any,
    /// Every link marked `required_for_online` (all managed links by default).
    All,
}

/// Name servers and search domains.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
    /// Also use what DHCP leases offer (after the configured servers).
    pub from_dhcp: bool,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            search: Vec::new(),
            from_dhcp: true,
        }
    }
}

/// Time servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ntp {
    /// Host names or addresses.
    pub servers: Vec<String>,
    pub from_dhcp: bool,
}

impl Default for Ntp {
    fn default() -> Self {
        Ntp {
            servers: Vec::new(),
            from_dhcp: true,
        }
    }
}

/// How an interface gets addresses: shared by links, VLANs, bonds and bridges.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Addressing {
    /// DHCPv4; defaults to true when no static address is given.
    pub dhcp: Option<bool>,
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[schemars(range(min = 68))]
    pub mtu: Option<u16>,
    /// Counts for `online.require = "all"`; default true.
    pub required_for_online: Option<bool>,
}

impl Addressing {
    pub fn dhcp(&self) -> bool {
        self.dhcp.unwrap_or(self.addresses.is_empty())
    }

    pub fn required_for_online(&self) -> bool {
        self.required_for_online.unwrap_or(true)
    }
}

/// A physical link's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    #[serde(rename = "match")]
    pub matches: LinkMatch,
    /// A new name for it.
    pub name: Option<IfName>,
    /// Leave it alone entirely (no up, no DHCP).
    #[serde(default)]
    pub ignore: bool,
    #[serde(flatten)]
    pub addressing: Addressing,
    /// Applies to the first matching link only (the kernel command line's `ip=` without an
    /// interface means "the first link").
    #[serde(skip)]
    pub first_only: bool,
}

/// Which physical link a `[[links]]` entry is about; every given criterion must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkMatch {
    /// The kernel's name, `*` and `?` allowed.
    pub name: Option<String>,
    /// The permanent MAC address.
    pub mac: Option<Mac>,
    /// The bus path as in `/sys/class/net/X/device` (`0000:00:03.0`, `*` allowed).
    pub path: Option<String>,
    /// The kernel driver (`virtio_net`, `mlx5_core`).
    pub driver: Option<String>,
}

/// An 802.1Q VLAN on a link.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VlanConfig {
    pub name: IfName,
    /// The parent link's name.
    pub link: IfName,
    #[schemars(range(min = 1, max = 4094))]
    pub id: u16,
    #[serde(flatten)]
    pub addressing: Addressing,
}

/// A bond (link aggregation) of links.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BondConfig {
    pub name: IfName,
    pub links: Vec<IfName>,
    pub mode: BondMode,
    /// Link monitoring interval.
    #[serde(default = "default_miimon", with = "duration")]
    #[schemars(schema_with = "duration::schema")]
    pub miimon: Duration,
    /// active-backup: the link preferred while it is up.
    pub primary: Option<IfName>,
    /// 802.3ad: LACPDU rate.
    #[serde(default)]
    pub lacp_rate: LacpRate,
    /// 802.3ad and balance-xor: how flows are spread.
    #[serde(default)]
    pub xmit_hash_policy: HashPolicy,
    #[serde(flatten)]
    pub addressing: Addressing,
}

fn default_miimon() -> Duration {
    Duration::from_millis(100)
}

/// The bonding mode, as the kernel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    /// The kernel's number for it (IFLA_BOND_MODE).
    pub fn kernel_value(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

impl FromStr for BondMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "balance-rr" | "0" => BondMode::BalanceRr,
            "active-backup" | "1" => BondMode::ActiveBackup,
            "balance-xor" | "2" => BondMode::BalanceXor,
            "broadcast" | "3" => BondMode::Broadcast,
            "802.3ad" | "4" => BondMode::Lacp,
            "balance-tlb" | "5" => BondMode::BalanceTlb,
            "balance-alb" | "6" => BondMode::BalanceAlb,
            _ => {
                return Err(format!(
                    "unknown bond mode {s:?} (use balance-rr, active-backup, balance-xor, \
                     broadcast, 802.3ad, balance-tlb or balance-alb)"
                ));
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LacpRate {
    #[default]
    Slow,
    Fast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum HashPolicy {
    #[default]
    #[serde(rename = "layer2")]
    Layer2,
    #[serde(rename = "layer3+4")]
    Layer34,
    #[serde(rename = "layer2+3")]
    Layer23,
    #[serde(rename = "encap2+3")]
    Encap23,
    #[serde(rename = "encap3+4")]
    Encap34,
}

/// A bridge over links.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    pub name: IfName,
    #[serde(default)]
    pub links: Vec<IfName>,
    #[serde(default)]
    pub stp: bool,
    #[serde(flatten)]
    pub addressing: Addressing,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub to: Cidr,
    pub via: Option<IpAddr>,
    pub metric: Option<u32>,
}

/// An interface name the kernel accepts: 1 to 15 bytes, no `/`, `:` or whitespace, not `.`/`..`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend(
    "minLength" = 1,
    "maxLength" = 15,
    "pattern" = r"^[^/:\s]+$",
    "not" = { "enum": [".", ".."] },
))]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        if name.is_empty() || name.len() > 15 {
            return Err(format!(
                "interface name {name:?} must be 1 to 15 bytes long"
            ));
        }
        if name == "."
            || name == ".."
            || name.contains(['/', ':'])
            || name.contains(char::is_whitespace)
        {
            return Err(format!(
                "interface name {name:?} may not be . or .. nor contain '/', ':' or spaces"
            ));
        }
        Ok(IfName(name))
    }
}

impl FromStr for IfName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IfName::try_from(s.to_string())
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A MAC address written `52:54:00:12:34:56` (or with `-`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("pattern" = "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"))]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a MAC address (use 52:54:00:12:34:56)");
        let mut mac = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(mac))
    }
}

impl TryFrom<String> for Mac {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// An address with its prefix length, `10.0.0.5/24` or `2001:db8::5/64`; for a route, the
/// network (host bits zero).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend(
    "pattern" = "^[0-9A-Fa-f:.]+/[0-9]{1,3}$",
    "examples" = ["10.0.0.5/24", "2001:db8::5/64"],
))]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// The network this address is in (host bits cleared).
    pub fn network(&self) -> Cidr {
        let address = match self.address {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr {
            address,
            prefix_len: self.prefix_len,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} needs a prefix length (10.0.0.5/24)"))?;
        let address: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in {text:?} is not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix length {prefix:?} in {text:?} is not 0 to {max}"))?;
        Ok(Cidr {
            address,
            prefix_len,
        })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// `"30s"`-style durations in serde.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        shoal_units::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", value.as_millis()))
    }

    /// What `shoal_units::parse_duration` reads.
    pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A decimal number and a unit: us, ms, s, m or h (100ms, 1.5s, 2m).",
            "pattern": "^[0-9]+(\\.[0-9]+)?(us|ms|s|m|h)$",
        })
    }
}

/// A configuration that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {location}{reason}")]
pub struct ConfigError {
    /// The file or other source it came from.
    pub source_name: String,
    /// `line 3, column 7: ` or `vlans[0].id: ` (with the separator), or empty.
    pub location: String,
    pub reason: String,
}

impl NetworkConfig {
    /// Parses and checks a configuration; `source_name` names it in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<NetworkConfig, Vec<ConfigError>> {
        let config: NetworkConfig = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let start = error_offset(text, span.start, e.message()).unwrap_or(span.start);
                    let (line, column) = line_column(text, start);
                    format!("line {line}, column {column}: ")
                })
                .unwrap_or_default();
            vec![ConfigError {
                source_name: source_name.to_string(),
                location,
                reason: e.message().trim_end().to_string(),
            }]
        })?;
        let problems = config.check();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems
                .into_iter()
                .map(|(path, reason)| ConfigError {
                    source_name: source_name.to_string(),
                    location: format!("{path}: "),
                    reason,
                })
                .collect())
        }
    }

    /// Checks across fields; every problem as (field path, reason).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        let mut claim = |path: String, name: &IfName, problems: &mut Vec<(String, String)>| {
            if !names.insert(name.clone()) {
                problems.push((path, format!("interface name {name} is used twice")));
            }
        };
        for (i, link) in self.links.iter().enumerate() {
            let m = &link.matches;
            if m.name.is_none() && m.mac.is_none() && m.path.is_none() && m.driver.is_none() {
                problems.push((
                    format!("links[{i}].match"),
                    "give at least one of name, mac, path, driver".into(),
                ));
            }
            if let Some(name) = &link.name {
                claim(format!("links[{i}].name"), name, &mut problems);
            }
            check_addressing(&format!("links[{i}]"), &link.addressing, &mut problems);
        }
        for (i, vlan) in self.vlans.iter().enumerate() {
            claim(format!("vlans[{i}].name"), &vlan.name, &mut problems);
            if !(1..=4094).contains(&vlan.id) {
                problems.push((
                    format!("vlans[{i}].id"),
                    format!("VLAN id {} is not 1 to 4094", vlan.id),
                ));
            }
            check_addressing(&format!("vlans[{i}]"), &vlan.addressing, &mut problems);
        }
        let mut enslaved = BTreeSet::new();
        for (i, bond) in self.bonds.iter().enumerate() {
            claim(format!("bonds[{i}].name"), &bond.name, &mut problems);
            if bond.links.is_empty() {
                problems.push((
                    format!("bonds[{i}].links"),
                    "a bond needs at least one link".into(),
                ));
            }
            for link in &bond.links {
                if !enslaved.insert(link.clone()) {
                    problems.push((
                        format!("bonds[{i}].links"),
                        format!("{link} is already in another bond or bridge"),
                    ));
                }
            }
            if let Some(primary) = &bond.primary
                && !bond.links.contains(primary)
            {
                problems.push((
                    format!("bonds[{i}].primary"),
                    format!("{primary} is not one of the bond's links"),
                ));
            }
            if bond.miimon.is_zero() || bond.miimon > Duration::from_secs(60) {
                problems.push((
                    format!("bonds[{i}].miimon"),
                    "must be between 1ms and 60s".into(),
                ));
            }
            check_addressing(&format!("bonds[{i}]"), &bond.addressing, &mut problems);
        }
        for (i, bridge) in self.bridges.iter().enumerate() {
            claim(format!("bridges[{i}].name"), &bridge.name, &mut problems);
            for link in &bridge.links {
                if !enslaved.insert(link.clone()) {
                    problems.push((
                        format!("bridges[{i}].links"),
                        format!("{link} is already in another bond or bridge"),
                    ));
                }
            }
            check_addressing(&format!("bridges[{i}]"), &bridge.addressing, &mut problems);
        }
        if self.online.timeout > Duration::from_secs(3600) {
            problems.push(("online.timeout".into(), "must be at most 1h".into()));
        }
        for (i, domain) in self.dns.search.iter().enumerate() {
            if !is_domain(domain) {
                problems.push((
                    format!("dns.search[{i}]"),
                    format!("{domain:?} is not a domain name"),
                ));
            }
        }
        problems
    }
}

fn check_addressing(path: &str, a: &Addressing, problems: &mut Vec<(String, String)>) {
    if let Some(mtu) = a.mtu
        && !(68..=65535).contains(&mtu)
    {
        problems.push((format!("{path}.mtu"), format!("MTU {mtu} is below 68")));
    }
    if let Some(gw) = a.gateway {
        let same_family = a
            .addresses
            .iter()
            .any(|c| c.address.is_ipv4() == gw.is_ipv4());
        if !same_family && !a.dhcp() {
            problems.push((
                format!("{path}.gateway"),
                format!("gateway {gw} has no static address of its family to be reached from"),
            ));
        }
    }
    for (i, address) in a.addresses.iter().enumerate() {
        if address.address.is_unspecified() || address.address.is_multicast() {
            problems.push((
                format!("{path}.addresses[{i}]"),
                format!("{address} cannot be an interface address"),
            ));
        }
    }
    for (i, route) in a.routes.iter().enumerate() {
        if route.to.network() != route.to {
            problems.push((
                format!("{path}.routes[{i}].to"),
                format!(
                    "{} has host bits set; did you mean {}?",
                    route.to,
                    route.to.network()
                ),
            ));
        }
        if let Some(via) = route.via
            && via.is_ipv4() != route.to.address.is_ipv4()
        {
            problems.push((
                format!("{path}.routes[{i}].via"),
                format!("{via} is not of the same family as {}", route.to),
            ));
        }
    }
}

/// A DNS name: labels of 1 to 63 letters, digits and hyphens, 253 bytes at most.
pub fn is_domain(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Where the TOML reader's error really is. Inside tables that share fields (`[[links]]` and
/// the others flatten [`Addressing`] in), it can only point at the table; then an unknown key is
/// the first line from there that starts with it, and a bad value is the first quoted value the
/// message names that appears, quoted, from there on.
pub(crate) fn error_offset(text: &str, from: usize, message: &str) -> Option<usize> {
    let line_start = text.get(..from)?.rfind('\n').map_or(0, |i| i + 1);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next()?;
        let mut offset = line_start;
        for line in text.get(offset..)?.split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(after) = trimmed.strip_prefix(key)
                && after.trim_start().starts_with(['=', '.'])
            {
                return Some(offset + (line.len() - trimmed.len()));
            }
            offset += line.len();
        }
        return None;
    }
    // Quoted values in the message, in order: `"10.0.0.5" needs a prefix length ...`.
    message.split('"').skip(1).step_by(2).find_map(|value| {
        text.get(from..)?
            .find(&format!("\"{value}\""))
            .map(|i| from + i)
    })
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Whether `name` matches `pattern` with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        NetworkConfig::parse("network.toml", text)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn an_empty_config_means_dhcp_everywhere() {
        let c = NetworkConfig::parse("x", "").unwrap();
        assert_eq!(c, NetworkConfig::default());
        assert_eq!(c.unconfigured, Unconfigured::Dhcp);
        assert_eq!(c.online.timeout, Duration::from_secs(30));
        assert!(c.dns.from_dhcp);
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
naming = "mac"
unconfigured = "ignore"
online = { timeout = "10s", require = "all" }
dns = { servers = ["10.0.0.53", "2001:db8::53"], search = ["example.net"] }
ntp = { servers = ["ntp.example.net"], from_dhcp = false }

[[links]]
match = { mac = "52:54:00:12:34:56", name = "eth*" }
name = "lan0"
addresses = ["10.0.0.5/24"]
gateway = "10.0.0.1"
routes = [{ to = "10.1.0.0/16", via = "10.0.0.254", metric = 50 }]
mtu = 9000

[[vlans]]
name = "vlan10"
link = "lan0"
id = 10

[[bonds]]
name = "bond0"
links = ["eth1", "eth2"]
mode = "active-backup"
primary = "eth1"
miimon = "50ms"

[[bridges]]
name = "br0"
links = ["eth3"]
stp = true
dhcp = true
"#;
        let c = NetworkConfig::parse("x", text).unwrap();
        assert_eq!(c.naming, Naming::Mac);
        assert_eq!(c.online.require, Require::All);
        assert_eq!(
            c.links[0].matches.mac,
            Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert!(
            !c.links[0].addressing.dhcp(),
            "static addresses turn DHCP off"
        );
        assert_eq!(c.links[0].addressing.routes[0].metric, Some(50));
        assert!(c.vlans[0].addressing.dhcp(), "no addresses: DHCP");
        assert_eq!(c.bonds[0].mode, BondMode::ActiveBackup);
        assert_eq!(c.bonds[0].miimon, Duration::from_millis(50));
        assert_eq!(c.bonds[0].lacp_rate, LacpRate::Slow);
        assert!(c.bridges[0].stp);
        // What it serialises to parses back to the same.
        let again = toml::to_string(&c).unwrap();
        assert_eq!(NetworkConfig::parse("x", &again).unwrap(), c);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_position() {
        assert_eq!(
            errors("naming = \"mac\"\nnamin = 1\n"),
            [
                "network.toml: line 2, column 1: unknown field `namin`, expected one of `naming`, \
              `unconfigured`, `online`, `dns`, `ntp`, `links`, `vlans`, `bonds`, `bridges`"
            ]
        );
        let e = errors("[[links]]\nmatch = { name = \"eth0\" }\n  mtuu = 1500\n");
        assert!(
            e[0].starts_with("network.toml: line 3, column 3: unknown field `mtuu`"),
            "{e:?}"
        );
    }

    #[test]
    fn bad_values_name_the_value_and_the_fix() {
        let e = errors("[[links]]\nmatch = { mac = \"52:54:00:12:34\" }\n");
        assert!(e[0].starts_with("network.toml: line 2, column "), "{e:?}");
        assert!(
            e[0].ends_with("\"52:54:00:12:34\" is not a MAC address (use 52:54:00:12:34:56)"),
            "{e:?}"
        );
        let e = errors("[[links]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.0.5\"]\n");
        assert_eq!(
            e,
            ["network.toml: line 3, column 14: \"10.0.0.5\" needs a prefix length (10.0.0.5/24)"]
        );
        let e = errors("[[links]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.0.5/33\"]\n");
        assert_eq!(
            e,
            [
                "network.toml: line 3, column 14: prefix length \"33\" in \"10.0.0.5/33\" is not 0 to 32"
            ]
        );
        let e = errors("[[vlans]]\nname = \"a-very-long-interface\"\nlink = \"eth0\"\nid = 5\n");
        assert!(
            e[0].ends_with("interface name \"a-very-long-interface\" must be 1 to 15 bytes long"),
            "{e:?}"
        );
        let e =
            errors("[[bonds]]\nname = \"bond0\"\nlinks = [\"eth0\"]\nmode = \"active-standby\"\n");
        assert!(e[0].contains("unknown variant `active-standby`"), "{e:?}");
        let e = errors("online = { timeout = \"soon\" }\n");
        assert!(e[0].contains("\"soon\" is not a duration"), "{e:?}");
    }

    #[test]
    fn checks_across_fields_name_the_field_path() {
        let text = r#"
[[links]]
match = {}
mtu = 20
gateway = "10.0.0.1"
dhcp = false
routes = [{ to = "10.1.2.3/16" }, { to = "10.2.0.0/16", via = "2001:db8::1" }]
addresses = ["0.0.0.0/8"]
[[vlans]]
name = "vlan5"
link = "eth0"
id = 4095
[[bonds]]
name = "vlan5"
links = []
mode = "802.3ad"
primary = "eth9"
[[bridges]]
name = "br0"
links = ["eth1", "eth1"]
"#;
        assert_eq!(
            errors(text),
            [
                "network.toml: links[0].match: give at least one of name, mac, path, driver",
                "network.toml: links[0].mtu: MTU 20 is below 68",
                "network.toml: links[0].addresses[0]: 0.0.0.0/8 cannot be an interface address",
                "network.toml: links[0].routes[0].to: 10.1.2.3/16 has host bits set; did you mean 10.1.0.0/16?",
                "network.toml: links[0].routes[1].via: 2001:db8::1 is not of the same family as 10.2.0.0/16",
                "network.toml: vlans[0].id: VLAN id 4095 is not 1 to 4094",
                "network.toml: bonds[0].name: interface name vlan5 is used twice",
                "network.toml: bonds[0].links: a bond needs at least one link",
                "network.toml: bonds[0].primary: eth9 is not one of the bond's links",
                "network.toml: bridges[0].links: eth1 is already in another bond or bridge",
            ]
        );
        let e = errors(
            "[[links]]\nmatch = { name = \"eth0\" }\ngateway = \"10.0.0.1\"\naddresses = [\"2001:db8::5/64\"]\n",
        );
        assert_eq!(
            e,
            [
                "network.toml: links[0].gateway: gateway 10.0.0.1 has no static address of its family to be reached from"
            ]
        );
        let e = errors("dns = { search = [\"bad domain\"] }\nonline = { timeout = \"2h\" }\n");
        assert_eq!(
            e,
            [
                "network.toml: online.timeout: must be at most 1h",
                "network.toml: dns.search[0]: \"bad domain\" is not a domain name"
            ]
        );
    }

    #[test]
    fn values_parse_and_print() {
        assert_eq!(
            "52-54-00-AB-cd-01".parse::<Mac>().unwrap().to_string(),
            "52:54:00:ab:cd:01"
        );
        assert!("52:54:00:ab:cd:01:02".parse::<Mac>().is_err());
        assert!("5:54:00:ab:cd:01".parse::<Mac>().is_err());
        let c: Cidr = "10.1.2.3/16".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.1.0.0/16");
        assert_eq!(
            "2001:db8::1/64"
                .parse::<Cidr>()
                .unwrap()
                .network()
                .to_string(),
            "2001:db8::/64"
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().network().to_string(),
            "0.0.0.0/0"
        );
        assert!("eth0.10".parse::<IfName>().is_ok());
        assert!("eth 0".parse::<IfName>().is_err());
        assert!("..".parse::<IfName>().is_err());
        assert_eq!("802.3ad".parse::<BondMode>(), Ok(BondMode::Lacp));
        assert_eq!("1".parse::<BondMode>(), Ok(BondMode::ActiveBackup));
        assert_eq!(BondMode::Lacp.kernel_value(), 4);
        assert_eq!(BondMode::ActiveBackup.name(), "active-backup");
    }

    #[test]
    fn globs_match_names() {
        assert!(glob_match("eth*", "eth0"));
        assert!(!glob_match("en?s*", "enp0s3"));
        assert!(glob_match("enp?s*", "enp0s3"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("eth?", "eth10"));
        assert!(is_domain("example.net."));
        assert!(!is_domain("-bad.example"));
    }
}
