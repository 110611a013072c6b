//! What a node knows about itself before it has a configuration (its MACs, SMBIOS UUID and
//! serial, hostname), the `${...}` placeholders of configuration URLs, and the configuration
//! one node ends up with after its `[[nodes]]` section is applied.

use std::collections::BTreeMap;

use crate::machine::{MachineConfig, NodeMatch, VoterHint};
use crate::network::{Mac, NetworkConfig};

/// Identity facts, read from sysfs and SMBIOS by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Permanent MACs of the physical NICs, in a stable order (the first is `${mac}`).
    pub macs: Vec<[u8; 6]>,
    /// SMBIOS system UUID, lowercase.
    pub uuid: Option<String>,
    /// SMBIOS system serial number.
    pub serial: Option<String>,
    pub hostname: Option<String>,
}

/// A placeholder a URL names that this node cannot fill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error("${{{0}}} is not a placeholder (use ${{mac}}, ${{uuid}}, ${{serial}}, ${{hostname}})")]
    Unknown(String),
    #[error("${{{0}}} is unknown on this node")]
    Missing(&'static str),
    #[error("a ${{ is not closed")]
    Unclosed,
}

/// Fills `${mac}` (`52-54-00-12-34-56`, as PXE servers name files), `${uuid}`, `${serial}` and
/// `${hostname}` in a configuration URL. Values are percent-encoded where a URL needs it.
pub fn expand_placeholders(url: &str, facts: &NodeFacts) -> Result<String, PlaceholderError> {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(PlaceholderError::Unclosed)?;
        let name = &after[..end];
        let value = match name {
            "mac" => facts
                .macs
                .first()
                .map(|m| {
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join("-")
                })
                .ok_or(PlaceholderError::Missing("mac"))?,
            "uuid" => facts
                .uuid
                .clone()
                .ok_or(PlaceholderError::Missing("uuid"))?,
            "serial" => facts
                .serial
                .clone()
                .ok_or(PlaceholderError::Missing("serial"))?,
            "hostname" => facts
                .hostname
                .clone()
                .ok_or(PlaceholderError::Missing("hostname"))?,
            other => return Err(PlaceholderError::Unknown(other.to_string())),
        };
        out.push_str(&percent_encode(&value));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Unreserved characters (RFC 3986) stay; everything else is %XX.
fn percent_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a `[[nodes]]` match fits this node: every given criterion must.
pub fn matches(m: &NodeMatch, facts: &NodeFacts) -> bool {
    m.mac.is_none_or(|Mac(mac)| facts.macs.contains(&mac))
        && m.uuid.as_ref().is_none_or(|u| {
            facts
                .uuid
                .as_ref()
                .is_some_and(|f| f.eq_ignore_ascii_case(u))
        })
        && m.serial
            .as_ref()
            .is_none_or(|s| facts.serial.as_deref() == Some(s.as_str()))
}

/// The configuration of one node: the cluster-wide sections with its `[[nodes]]` section
/// (the first that matches) applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub voter: VoterHint,
    pub network: NetworkConfig,
    /// Which `[[nodes]]` entry applied, if any.
    pub matched: Option<usize>,
}

pub fn for_node(config: &MachineConfig, facts: &NodeFacts) -> NodeConfig {
    let mut node = NodeConfig {
        hostname: config.node.hostname.clone(),
        labels: config.node.labels.clone(),
        voter: config.node.voter,
        network: config.network.clone(),
        matched: None,
    };
    if let Some((i, section)) = config
        .nodes
        .iter()
        .enumerate()
        .find(|(_, n)| matches(&n.matches, facts))
    {
        node.matched = Some(i);
        if section.hostname.is_some() {
            node.hostname = section.hostname.clone();
        }
        node.labels
            .extend(section.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(voter) = section.voter {
            node.voter = voter;
        }
        if let Some(network) = &section.network {
            node.network = network.clone();
        }
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            macs: vec![[0x52, 0x54, 0, 0x12, 0x34, 0x56], [0x52, 0x54, 0, 0, 0, 2]],
            uuid: Some("4c4c4544-0042-3510-8051-b4c04f384b32".into()),
            serial: Some("SN 42/A".into()),
            hostname: Some("node-1".into()),
        }
    }

    #[test]
    fn placeholders_are_filled_and_encoded() {
        assert_eq!(
            expand_placeholders(
                "http://10.0.0.1/cfg/${mac}/${uuid}.toml?s=${serial}&h=${hostname}",
                &facts()
            )
            .unwrap(),
            "http://10.0.0.1/cfg/52-54-00-12-34-56/4c4c4544-0042-3510-8051-b4c04f384b32.toml\
             ?s=SN%2042%2FA&h=node-1"
        );
        assert_eq!(
            expand_placeholders("http://x/plain", &NodeFacts::default()).unwrap(),
            "http://x/plain"
        );
    }

    #[test]
    fn bad_placeholders_say_which() {
        let none = NodeFacts::default();
        assert_eq!(
            expand_placeholders("http://x/${serial}", &none)
                .unwrap_err()
                .to_string(),
            "${serial} is unknown on this node"
        );
        assert_eq!(
            expand_placeholders("http://x/${ip}", &facts())
                .unwrap_err()
                .to_string(),
            "${ip} is not a placeholder (use ${mac}, ${uuid}, ${serial}, ${hostname})"
        );
        assert_eq!(
            expand_placeholders("http://x/${mac", &facts()).unwrap_err(),
            PlaceholderError::Unclosed
        );
    }

    fn config(text: &str) -> MachineConfig {
        MachineConfig::parse("test", text, None).unwrap()
    }

    #[test]
    fn the_first_matching_node_section_applies() {
        let c = config(
            r#"
[node]
labels = { rack = "r1", zone = "a" }
[network]
naming = "mac"
[[nodes]]
match = { serial = "nope" }
hostname = "wrong"
[[nodes]]
match = { mac = "52:54:00:00:00:02", uuid = "4C4C4544-0042-3510-8051-B4C04F384B32" }
hostname = "edge-7"
labels = { zone = "b", gpu = "true" }
voter = "never"
network = { naming = "path" }
[[nodes]]
match = { serial = "SN 42/A" }
hostname = "too-late"
"#,
        );
        let node = for_node(&c, &facts());
        assert_eq!(node.matched, Some(1));
        assert_eq!(node.hostname.as_deref(), Some("edge-7"));
        assert_eq!(
            node.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            ["gpu=true", "rack=r1", "zone=b"]
        );
        assert_eq!(node.voter, VoterHint::Never);
        assert_eq!(node.network.naming, crate::network::Naming::Path);
    }

    #[test]
    fn a_node_no_section_matches_gets_the_cluster_wide_values() {
        let c = config(
            "[node]\nhostname = \"h\"\n[[nodes]]\nmatch = { serial = \"other\" }\nvoter = \"prefer\"\n",
        );
        let node = for_node(&c, &facts());
        assert_eq!(node.matched, None);
        assert_eq!(node.hostname.as_deref(), Some("h"));
        assert_eq!(node.voter, VoterHint::Auto);
    }
}
