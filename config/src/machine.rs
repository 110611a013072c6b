//! The machine configuration: one versioned TOML file for a whole cluster, with per-node
//! sections matched by MAC, SMBIOS UUID or serial number.
//!
//! ```toml
//! version = 1
//!
//! [cluster]
//! name = "lab"
//! secret = "…base64, 32 bytes or more…"   # shoalctl gen config makes one
//! expected_size = 3                       # nodes that form the cluster together
//! voters = 3                              # 1, 3, 5 or 7 voting members at most
//! seeds = ["10.0.0.10:7700"]              # optional: nodes find each other without them
//!
//! [node]                                  # every node
//! labels = { rack = "r1" }
//! voter = "auto"                          # auto, prefer or never
//!
//! [network]                               # netd's schema (see netd/README.md)
//! naming = "mac"
//!
//! [services.metrics]                      # extra supervisor services, by name
//! command = ["/opt/metrics/agent"]
//!
//! [update]
//! trusted_keys = ["ed25519:…base64…"]
//! policy = "manual"
//!
//! [api]
//! port = 7443
//!
//! [[nodes]]                               # one node: what it sets wins
//! match = { mac = "52:54:00:12:34:56" }
//! hostname = "edge-7"
//! labels = { gpu = "true" }
//! ```
//!
//! An empty file is valid: a node then takes DHCP on every link and waits for a cluster secret
//! before it forms or joins anything.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::network::{Mac, NetworkConfig};
use crate::secret::Secret;

/// The schema version this Shoal reads and writes.
pub const VERSION: u32 = 1;
/// The cluster's peer and API port when none is given.
pub const DEFAULT_PORT: u16 = 7700;

/// One versioned file for a whole cluster, with per-node sections; every section is optional.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Shoal machine configuration")]
pub struct MachineConfig {
    /// The schema version; this Shoal reads version 1.
    #[serde(default = "version")]
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    #[serde(default)]
    pub cluster: Cluster,
    #[serde(default)]
    pub node: Node,
    #[serde(default)]
    pub network: NetworkConfig,
    /// Extra services for the supervisor: `[services.NAME]` holds what
    /// `/etc/shoal/services/NAME.toml` would.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "services_schema")]
    pub services: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub update: Update,
    #[serde(default)]
    pub api: Api,
    /// Per-node sections; the first whose `match` fits a node applies to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeOverride>,
}

fn version() -> u32 {
    VERSION
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            version: VERSION,
            cluster: Cluster::default(),
            node: Node::default(),
            network: NetworkConfig::default(),
            services: BTreeMap::new(),
            update: Update::default(),
            api: Api::default(),
            nodes: Vec::new(),
        }
    }
}

/// The cluster every node of this file forms or joins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// A DNS label: `[a-z0-9-]{1,63}`.
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Authenticates nodes to each other and derives client credentials. Without one a node
    /// does not form or join a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// How many nodes must announce themselves before the cluster is formed.
    #[schemars(range(min = 1))]
    pub expected_size: u32,
    /// The most voting members (1, 3, 5 or 7); other members follow without voting.
    #[schemars(extend("enum" = [1, 3, 5, 7]))]
    pub voters: u32,
    /// `host:port` of nodes to contact first (optional on a LAN).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(r"^.+:[0-9]{1,5}$")))]
    pub seeds: Vec<String>,
    /// The TCP port nodes speak to each other on.
    #[schemars(range(min = 1))]
    pub port: u16,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            name: "shoal".into(),
            secret: None,
            expected_size: 3,
            voters: 3,
            seeds: Vec::new(),
            port: DEFAULT_PORT,
        }
    }
}

/// Settings for every node (a `[[nodes]]` section overrides them for one).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    /// Otherwise `ip=`, a lease, or one derived from the machine id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `key = "value"` pairs that describe the node (scheduling, inventory).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "labels_schema")]
    pub labels: BTreeMap<String, String>,
    pub voter: VoterHint,
}

/// Whether a node should vote in the cluster's consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VoterHint {
    /// Voters are picked among healthy nodes.
    #[default]
    Auto,
    /// Picked before `auto` nodes.
    Prefer,
    /// Never a voter (edge nodes on poor links).
    Never,
}

/// A per-node section: what it gives replaces the cluster-wide value (labels are merged).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeOverride {
    #[serde(rename = "match")]
    pub matches: NodeMatch,
    /// This node's host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Added to the cluster-wide labels (a key given in both: this value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "labels_schema")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voter: Option<VoterHint>,
    /// Replaces the whole `[network]` section for this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
}

/// How a per-node section finds its node; every criterion given must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct NodeMatch {
    /// Any of the node's permanent MAC addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// The SMBIOS system UUID (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(
        r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    ))]
    pub uuid: Option<String>,
    /// The SMBIOS system serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// Which update bundles nodes accept, and when they install them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Update {
    /// `ed25519:<base64 of the 32-byte public key>`; bundles must be signed by one of them
    /// (the image's own keys always count too).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(r"^ed25519:[A-Za-z0-9+/]{43}=$")))]
    pub trusted_keys: Vec<String>,
    pub policy: UpdatePolicy,
    /// Boots a new slot gets to become healthy before the bootloader goes back to the old
    /// one (systemd-boot's boot counting), 1 to 10.
    #[schemars(range(min = 1, max = 10))]
    pub tries: u32,
    /// How long a boot of a new slot may take to become healthy (back in its cluster) before
    /// PID 1 reboots it, spending a try; 10s to 24h.
    #[serde(with = "crate::network::duration")]
    #[schemars(schema_with = "crate::network::duration::schema")]
    pub trial_timeout: std::time::Duration,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            trusted_keys: Vec::new(),
            policy: UpdatePolicy::Manual,
            tries: 3,
            trial_timeout: std::time::Duration::from_secs(300),
        }
    }
}

/// When nodes install an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdatePolicy {
    /// Only `shoalctl update apply`.
    #[default]
    Manual,
    /// Nodes update one at a time when a newer bundle is offered.
    Rolling,
}

/// The cluster API that shoalctl speaks to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// The cluster API's TCP port on every node.
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Issued client tokens, by name: `sha256:<hex>` of the token (the token itself is only
    /// ever shown to whoever generated it).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "tokens_schema")]
    pub tokens: BTreeMap<String, String>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            port: 7443,
            tokens: BTreeMap::new(),
        }
    }
}

/// `[services.NAME]`: free-form here, the supervisor's parser checks each definition.
fn services_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "propertyNames": { "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$" },
        "additionalProperties": {
            "type": "object",
            "description": "A service definition, as /etc/shoal/services/NAME.toml holds it \
                            (see the supervisor's README): command, requires, restart, ...",
        },
    })
}

fn labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "propertyNames": { "pattern": "^[A-Za-z0-9._/-]{1,63}$" },
        "additionalProperties": { "type": "string", "maxLength": 63 },
    })
}

fn tokens_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "type": "string",
            "description": "sha256:<64 hex digits>: the token's hash, never the token.",
            "pattern": "^sha256:[0-9a-fA-F]{64}$",
        },
    })
}

/// A configuration that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, URL or other source it came from.
    pub source: String,
    /// `line 3, column 7` or a field path like `cluster.voters`; empty for the whole document.
    pub location: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.source, self.location, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks the supervisor's definition of one extra service; returns (field path, reason) per
/// problem. The caller passes the supervisor's own parser, so this crate does not need it.
pub type ServiceCheck<'a> = &'a dyn Fn(&str, &str) -> Vec<(String, String)>;

impl MachineConfig {
    /// Parses and checks a configuration. `source` names it in errors; `check_service`
    /// validates `[services.*]` tables (`None`: only that they are tables).
    pub fn parse(
        source: &str,
        text: &str,
        check_service: Option<ServiceCheck<'_>>,
    ) -> Result<MachineConfig, Vec<ConfigError>> {
        let config: MachineConfig = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let start = crate::network::error_offset(text, span.start, e.message())
                        .unwrap_or(span.start);
                    let (line, column) = crate::network::line_column(text, start);
                    format!("line {line}, column {column}")
                })
                .unwrap_or_default();
            vec![ConfigError {
                source: source.to_string(),
                location,
                reason: e.message().trim_end().to_string(),
            }]
        })?;
        let problems = config.check(check_service);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems
                .into_iter()
                .map(|(location, reason)| ConfigError {
                    source: source.to_string(),
                    location,
                    reason,
                })
                .collect())
        }
    }

    /// Checks across fields: every problem as (field path, reason).
    pub fn check(&self, check_service: Option<ServiceCheck<'_>>) -> Vec<(String, String)> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut problem = |path: &str, reason: String| problems.push((path.to_string(), reason));
        if self.version != VERSION {
            problem(
                "version",
                if self.version > VERSION {
                    format!(
                        "version {} is newer than this Shoal understands (it reads version {VERSION})",
                        self.version
                    )
                } else {
                    format!(
                        "version {} is not a configuration version (use {VERSION})",
                        self.version
                    )
                },
            );
        }
        let c = &self.cluster;
        if !is_dns_label(&c.name) {
            problem(
                "cluster.name",
                format!(
                    "{:?} is not a DNS label (1 to 63 of a-z, 0-9, '-', not starting or ending with '-')",
                    c.name
                ),
            );
        }
        if c.expected_size == 0 {
            problem("cluster.expected_size", "must be at least 1".into());
        }
        if ![1, 3, 5, 7].contains(&c.voters) {
            problem(
                "cluster.voters",
                format!(
                    "{} voters cannot keep a majority well; use 1, 3, 5 or 7",
                    c.voters
                ),
            );
        }
        for (i, seed) in c.seeds.iter().enumerate() {
            if let Err(reason) = check_seed(seed) {
                problem(&format!("cluster.seeds[{i}]"), reason);
            }
        }
        if c.port == 0 {
            problem("cluster.port", "must not be 0".into());
        }
        check_node_fields(
            "node",
            self.node.hostname.as_deref(),
            &self.node.labels,
            &mut problem,
        );
        for (path, reason) in self.network.check() {
            problem(&format!("network.{path}"), reason);
        }
        for (name, table) in &self.services {
            let path = format!("services.{name}");
            if !is_service_name(name) {
                problem(
                    &path,
                    format!("{name:?} is not a service name (1 to 64 of a-z, 0-9, '.', '_', '-')"),
                );
                continue;
            }
            if let Some(check) = check_service {
                let text = toml::to_string(table).unwrap_or_default();
                for (field, reason) in check(name, &text) {
                    let at = if field.is_empty() {
                        path.clone()
                    } else {
                        format!("{path}.{field}")
                    };
                    problem(&at, reason);
                }
            }
        }
        for (i, key) in self.update.trusted_keys.iter().enumerate() {
            if let Err(reason) = check_public_key(key) {
                problem(&format!("update.trusted_keys[{i}]"), reason);
            }
        }
        if !(1..=10).contains(&self.update.tries) {
            problem(
                "update.tries",
                format!("{} boots: use 1 to 10", self.update.tries),
            );
        }
        let trial = self.update.trial_timeout;
        if trial < std::time::Duration::from_secs(10)
            || trial > std::time::Duration::from_secs(86_400)
        {
            problem(
                "update.trial_timeout",
                format!("{trial:?}: use 10s to 24h (a whole number of seconds is kept)"),
            );
        }
        if self.api.port == 0 {
            problem("api.port", "must not be 0".into());
        } else if self.api.port == c.port {
            problem("api.port", format!("{} is already cluster.port", c.port));
        }
        for (name, hash) in &self.api.tokens {
            let ok = hash
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                problem(
                    &format!("api.tokens.{name}"),
                    "must be sha256:<64 hex digits> (the hash, never the token)".into(),
                );
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let path = format!("nodes[{i}]");
            let m = &node.matches;
            if m.mac.is_none() && m.uuid.is_none() && m.serial.is_none() {
                problem(
                    &format!("{path}.match"),
                    "give at least one of mac, uuid, serial".into(),
                );
            }
            if let Some(uuid) = &m.uuid
                && !is_uuid(uuid)
            {
                problem(
                    &format!("{path}.match.uuid"),
                    format!("{uuid:?} is not a UUID"),
                );
            }
            check_node_fields(&path, node.hostname.as_deref(), &node.labels, &mut problem);
            if let Some(network) = &node.network {
                for (p, reason) in network.check() {
                    problem(&format!("{path}.network.{p}"), reason);
                }
            }
            // Two sections for the same node: the second would never apply.
            if let Some(j) = self.nodes[..i]
                .iter()
                .position(|other| other.matches == node.matches)
            {
                problem(
                    &format!("{path}.match"),
                    format!("the same match as nodes[{j}]"),
                );
            }
        }
        problems
    }
}

fn check_node_fields(
    path: &str,
    hostname: Option<&str>,
    labels: &BTreeMap<String, String>,
    problem: &mut impl FnMut(&str, String),
) {
    if let Some(hostname) = hostname
        && !crate::network::is_domain(hostname)
    {
        problem(
            &format!("{path}.hostname"),
            format!("{hostname:?} is not a host name"),
        );
    }
    for (key, value) in labels {
        if !is_label_key(key) {
            problem(
                &format!("{path}.labels"),
                format!(
                    "{key:?} is not a label key (1 to 63 of a-z, A-Z, 0-9, '-', '_', '.', '/')"
                ),
            );
        }
        if value.len() > 63 || value.chars().any(|c| c.is_control()) {
            problem(
                &format!("{path}.labels.{key}"),
                "a label value is at most 63 printable characters".into(),
            );
        }
    }
}

/// `address:port` or `name:port`, an IPv6 address in brackets (`[fd00::1]:7700`). clusterd
/// resolves names with shoal-dns, whose rules these are.
fn check_seed(seed: &str) -> Result<(), String> {
    let (host, port) = seed
        .rsplit_once(':')
        .ok_or_else(|| format!("{seed:?} needs a port (host:port)"))?;
    if port.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
        return Err(format!("{seed:?}: {port:?} is not a port"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner
            .strip_suffix(']')
            .map(str::parse::<std::net::Ipv6Addr>)
        {
            Some(Ok(_)) => Ok(()),
            _ => Err(format!(
                "{seed:?}: {host:?} is not an IPv6 address in brackets ([fd00::1]:7700)"
            )),
        };
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!(
            "{seed:?}: an IPv6 address takes brackets before its port: \"[{host}]:{port}\""
        ));
    }
    // A name whose last label is a number is a mistyped IPv4 address (`10.0.0.300`).
    let last_label = host
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or(host);
    if !crate::network::is_domain(host) || last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{seed:?}: {host:?} is neither an address nor a host name"
        ));
    }
    Ok(())
}

fn check_public_key(key: &str) -> Result<(), String> {
    use base64::Engine as _;
    let b64 = key
        .strip_prefix("ed25519:")
        .ok_or_else(|| format!("{key:?} must start with ed25519:"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| format!("{key:?} is not ed25519:<base64>"))?;
    if bytes.len() != 32 {
        return Err(format!(
            "an ed25519 public key has 32 bytes, this one {}",
            bytes.len()
        ));
    }
    Ok(())
}

pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_service_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn is_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

pub fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        MachineConfig::parse("machine.toml", text, None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const SECRET: &str = "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";

    #[test]
    fn an_empty_file_is_a_valid_dhcp_lan_configuration() {
        let c = MachineConfig::parse("machine.toml", "", None).unwrap();
        assert_eq!(c, MachineConfig::default());
        assert_eq!(c.version, VERSION);
        assert_eq!(c.cluster.name, "shoal");
        assert_eq!((c.cluster.expected_size, c.cluster.voters), (3, 3));
        assert!(c.cluster.secret.is_none());
        assert_eq!(c.network, NetworkConfig::default());
    }

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let text = format!(
            r#"
version = 1
[cluster]
name = "lab"
secret = "{SECRET}"
expected_size = 3
voters = 5
seeds = ["10.0.0.10:7700", "node1.lab:7700", "[fd00::1]:7700"]
[node]
labels = {{ rack = "r1", "example.com/tier" = "gold" }}
voter = "prefer"
[network]
naming = "mac"
[services.metrics]
command = ["/opt/metrics/agent"]
[update]
trusted_keys = ["ed25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
policy = "rolling"
[api]
port = 7443
tokens = {{ admin = "sha256:{hash}" }}
[[nodes]]
match = {{ mac = "52:54:00:12:34:56" }}
hostname = "edge-7"
labels = {{ gpu = "true" }}
"#,
            hash = "ab".repeat(32)
        );
        let c = MachineConfig::parse("machine.toml", &text, None).unwrap();
        assert_eq!(c.cluster.voters, 5);
        assert_eq!(
            c.cluster.secret.as_ref().unwrap().expose(),
            b"shoal-test-secret-that-is-long-enough"
        );
        assert_eq!(c.node.voter, VoterHint::Prefer);
        assert_eq!(c.update.policy, UpdatePolicy::Rolling);
        assert!(c.services.contains_key("metrics"));
        assert_eq!(c.nodes[0].hostname.as_deref(), Some("edge-7"));
        let again = toml::to_string(&c).unwrap();
        assert_eq!(MachineConfig::parse("again", &again, None).unwrap(), c);
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let c = MachineConfig::parse("m", &format!("[cluster]\nsecret = \"{SECRET}\"\n"), None)
            .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(SECRET) && shown.contains("<redacted, 37 bytes"),
            "{shown}"
        );
        // And a bad secret's error does not echo it.
        let e = errors("[cluster]\nsecret = \"dG9vIHNob3J0\"\n");
        assert_eq!(
            e,
            ["machine.toml: line 2, column 10: a secret needs at least 32 bytes, this one has 9"]
        );
    }

    #[test]
    fn syntax_unknown_fields_and_types_are_reported_with_positions() {
        assert_eq!(
            errors("[cluster]\nname = \"lab\"\nsize = 3\n"),
            [
                "machine.toml: line 3, column 1: unknown field `size`, expected one of `name`, \
              `secret`, `expected_size`, `voters`, `seeds`, `port`"
            ]
        );
        assert_eq!(
            errors("[clusters]\n"),
            [
                "machine.toml: line 1, column 2: unknown field `clusters`, expected one of \
              `version`, `cluster`, `node`, `network`, `services`, `update`, `api`, `nodes`"
            ]
        );
        let e = errors("[cluster]\nvoters = \"three\"\n");
        assert!(
            e[0].starts_with("machine.toml: line 2, column 10: invalid type"),
            "{e:?}"
        );
        let e = errors("[cluster\n");
        assert!(e[0].starts_with("machine.toml: line 1, column "), "{e:?}");
        let e = errors("[node]\nvoter = \"always\"\n");
        assert!(e[0].contains("unknown variant `always`"), "{e:?}");
    }

    #[test]
    fn seeds_are_addresses_or_host_names_with_a_port() {
        let seeds = [
            "10.0.0.1:7700",
            "[fd00::1]:7700",
            "cp1:7700",
            "cp-1.lab.example:7701",
            "cp1.lab.:7700",
            "node_1.lab:65535",
        ];
        let text = format!(
            "[cluster]\nseeds = [{}]\n",
            seeds.map(|s| format!("{s:?}")).join(", ")
        );
        let c = MachineConfig::parse("machine.toml", &text, None).unwrap();
        assert_eq!(c.cluster.seeds, seeds);
    }

    #[test]
    fn each_rejected_value_says_why() {
        let cases: &[(&str, &str)] = &[
            (
                "version = 2\n",
                "machine.toml: version: version 2 is newer than this Shoal understands (it reads version 1)",
            ),
            (
                "version = 0\n",
                "machine.toml: version: version 0 is not a configuration version (use 1)",
            ),
            (
                "[cluster]\nname = \"Lab_1\"\n",
                "machine.toml: cluster.name: \"Lab_1\" is not a DNS label (1 to 63 of a-z, 0-9, '-', not starting or ending with '-')",
            ),
            (
                "[cluster]\nexpected_size = 0\n",
                "machine.toml: cluster.expected_size: must be at least 1",
            ),
            (
                "[cluster]\nvoters = 4\n",
                "machine.toml: cluster.voters: 4 voters cannot keep a majority well; use 1, 3, 5 or 7",
            ),
            (
                "[cluster]\nseeds = [\"10.0.0.1\"]\n",
                "machine.toml: cluster.seeds[0]: \"10.0.0.1\" needs a port (host:port)",
            ),
            (
                "[cluster]\nseeds = [\"10.0.0.1:http\"]\n",
                "machine.toml: cluster.seeds[0]: \"10.0.0.1:http\": \"http\" is not a port",
            ),
            (
                "[cluster]\nseeds = [\"bad host:7700\"]\n",
                "machine.toml: cluster.seeds[0]: \"bad host:7700\": \"bad host\" is neither an address nor a host name",
            ),
            (
                "[cluster]\nseeds = [\"node1.lab:7700\", \"10.0.0.300:7700\"]\n",
                "machine.toml: cluster.seeds[1]: \"10.0.0.300:7700\": \"10.0.0.300\" is neither an address nor a host name",
            ),
            (
                "[cluster]\nseeds = [\":7700\"]\n",
                "machine.toml: cluster.seeds[0]: \":7700\": \"\" is neither an address nor a host name",
            ),
            (
                "[cluster]\nseeds = [\"fd00::1:7700\"]\n",
                "machine.toml: cluster.seeds[0]: \"fd00::1:7700\": an IPv6 address takes brackets before its port: \"[fd00::1]:7700\"",
            ),
            (
                "[cluster]\nseeds = [\"[fd00::1:7700\"]\n",
                "machine.toml: cluster.seeds[0]: \"[fd00::1:7700\": \"[fd00::1\" is not an IPv6 address in brackets ([fd00::1]:7700)",
            ),
            (
                "[cluster]\nseeds = [\"[10.0.0.1]:7700\"]\n",
                "machine.toml: cluster.seeds[0]: \"[10.0.0.1]:7700\": \"[10.0.0.1]\" is not an IPv6 address in brackets ([fd00::1]:7700)",
            ),
            (
                "[cluster]\nport = 0\n",
                "machine.toml: cluster.port: must not be 0",
            ),
            (
                "[node]\nhostname = \"-x-\"\n",
                "machine.toml: node.hostname: \"-x-\" is not a host name",
            ),
            (
                "[node]\nlabels = { \"bad key\" = \"v\" }\n",
                "machine.toml: node.labels: \"bad key\" is not a label key (1 to 63 of a-z, A-Z, 0-9, '-', '_', '.', '/')",
            ),
            (
                "[node]\nlabels = { k = \"line\\nbreak\" }\n",
                "machine.toml: node.labels.k: a label value is at most 63 printable characters",
            ),
            (
                "[network.online]\ntimeout = \"2h\"\n",
                "machine.toml: network.online.timeout: must be at most 1h",
            ),
            (
                "[services.Bad]\ncommand = [\"/x\"]\n",
                "machine.toml: services.Bad: \"Bad\" is not a service name (1 to 64 of a-z, 0-9, '.', '_', '-')",
            ),
            (
                "[update]\ntries = 0\n",
                "machine.toml: update.tries: 0 boots: use 1 to 10",
            ),
            (
                "[update]\ntrial_timeout = \"5s\"\n",
                "machine.toml: update.trial_timeout: 5s: use 10s to 24h (a whole number of seconds is kept)",
            ),
            (
                "[update]\ntrusted_keys = [\"rsa:AAAA\"]\n",
                "machine.toml: update.trusted_keys[0]: \"rsa:AAAA\" must start with ed25519:",
            ),
            (
                "[update]\ntrusted_keys = [\"ed25519:AAAA\"]\n",
                "machine.toml: update.trusted_keys[0]: an ed25519 public key has 32 bytes, this one 3",
            ),
            (
                "[update]\ntrusted_keys = [\"ed25519:@@\"]\n",
                "machine.toml: update.trusted_keys[0]: \"ed25519:@@\" is not ed25519:<base64>",
            ),
            ("[api]\nport = 0\n", "machine.toml: api.port: must not be 0"),
            (
                "[api]\nport = 7700\n",
                "machine.toml: api.port: 7700 is already cluster.port",
            ),
            (
                "[api]\ntokens = { admin = \"secret-token\" }\n",
                "machine.toml: api.tokens.admin: must be sha256:<64 hex digits> (the hash, never the token)",
            ),
            (
                "[[nodes]]\nmatch = {}\n",
                "machine.toml: nodes[0].match: give at least one of mac, uuid, serial",
            ),
            (
                "[[nodes]]\nmatch = { uuid = \"1234\" }\n",
                "machine.toml: nodes[0].match.uuid: \"1234\" is not a UUID",
            ),
            (
                "[[nodes]]\nmatch = { serial = \"s\" }\nnetwork = { online = { timeout = \"2h\" } }\n",
                "machine.toml: nodes[0].network.online.timeout: must be at most 1h",
            ),
            (
                "[[nodes]]\nmatch = { serial = \"s\" }\n[[nodes]]\nmatch = { serial = \"s\" }\n",
                "machine.toml: nodes[1].match: the same match as nodes[0]",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(errors(text), [*want], "for {text:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors("[cluster]\nvoters = 2\nexpected_size = 0\n[api]\nport = 0\n");
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn extra_services_are_checked_by_the_given_parser_with_their_path() {
        let check = |name: &str, text: &str| -> Vec<(String, String)> {
            assert_eq!(name, "metrics");
            if text.contains("restart") {
                vec![("restart.delay".into(), "\"soon\" is not a duration".into())]
            } else {
                Vec::new()
            }
        };
        let text = "[services.metrics]\ncommand = [\"/x\"]\nrestart = { delay = \"soon\" }\n";
        let e: Vec<String> = MachineConfig::parse("machine.toml", text, Some(&check))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            e,
            ["machine.toml: services.metrics.restart.delay: \"soon\" is not a duration"]
        );
        assert!(
            MachineConfig::parse(
                "m",
                "[services.metrics]\ncommand = [\"/x\"]\n",
                Some(&check)
            )
            .is_ok()
        );
    }
}
