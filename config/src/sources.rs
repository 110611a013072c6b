//! Where a node's configuration comes from and how the pieces combine.
//!
//! Sources, from lowest to highest precedence (a later one wins):
//!
//! | # | source | typical use |
//! |---|---|---|
//! | 1 | a file on the ESP (`shoal/machine.toml`) | flashed edge appliances |
//! | 2 | NoCloud: `user-data` on a disk labelled `CIDATA` | IaaS and local VMs |
//! | 3 | instance metadata (EC2-style IMDSv2 `user-data`) | clouds |
//! | 4 | `shoal.config=<URL>` on the kernel command line (PXE: in the iPXE script) | racks, PXE |
//! | 5 | inline `shoal.cluster.*` / `shoal.node.*` keys on the kernel command line | one-off tweaks |
//!
//! Documents are merged key by key: tables merge recursively, any other value (arrays
//! included, so `[[nodes]]` and `seeds` as a whole) is replaced. Each document is checked on
//! its own first, so an error names its source and position; then the merged result is
//! checked again for problems that only the combination has.

use crate::machine::{ConfigError, MachineConfig, ServiceCheck};

/// The kinds of sources, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKind {
    Esp,
    NoCloud,
    Imds,
    Url,
    Inline,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Esp => "esp",
            SourceKind::NoCloud => "nocloud",
            SourceKind::Imds => "imds",
            SourceKind::Url => "url",
            SourceKind::Inline => "kernel command line",
        }
    }
}

/// One fetched document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: SourceKind,
    /// Where exactly (a path or URL), for messages.
    pub origin: String,
    pub text: String,
}

/// Merges `over` into `base`: tables recursively, everything else replaced.
pub fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Checks every document, merges them in precedence order and checks the result.
pub fn resolve(
    documents: &[Document],
    check_service: Option<ServiceCheck<'_>>,
) -> Result<MachineConfig, Vec<ConfigError>> {
    let mut sorted: Vec<&Document> = documents.iter().collect();
    sorted.sort_by_key(|d| d.kind);
    let mut errors = Vec::new();
    let mut merged = toml::Table::new();
    for doc in &sorted {
        if let Err(es) = MachineConfig::parse(&doc.origin, &doc.text, check_service) {
            errors.extend(es);
            continue;
        }
        match doc.text.parse::<toml::Table>() {
            Ok(table) => merge_tables(&mut merged, table),
            Err(e) => errors.push(ConfigError {
                source: doc.origin.clone(),
                location: String::new(),
                reason: e.message().to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let text = toml::to_string(&merged).map_err(|e| {
        vec![ConfigError {
            source: "merged configuration".into(),
            location: String::new(),
            reason: e.to_string(),
        }]
    })?;
    MachineConfig::parse("merged configuration", &text, check_service)
}

/// The inline settings of a kernel command line as a document (empty when there are none):
///
/// | key | value |
/// |---|---|
/// | `shoal.cluster.name=` | the cluster name |
/// | `shoal.cluster.size=` | expected initial size |
/// | `shoal.cluster.voters=` | voter count |
/// | `shoal.cluster.seeds=` | comma-separated `host:port` |
/// | `shoal.node.voter=` | `auto`, `prefer`, `never` |
/// | `shoal.node.labels=` | comma-separated `key=value` |
///
/// The cluster secret is deliberately not among them: kernel command lines end up in boot
/// menus, DHCP server configurations and `/proc/cmdline`, readable by every process.
pub fn inline_settings(cmdline: &str) -> Result<Option<Document>, Vec<ConfigError>> {
    let mut cluster = toml::Table::new();
    let mut node = toml::Table::new();
    let mut errors = Vec::new();
    for word in cmdline.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let value = value.trim_matches('"');
        let mut bad = |reason: String| {
            errors.push(ConfigError {
                source: "kernel command line".into(),
                location: key.to_string(),
                reason,
            });
        };
        let number = |v: &str| v.parse::<i64>().map(toml::Value::Integer);
        match key {
            "shoal.cluster.name" => {
                cluster.insert("name".into(), value.into());
            }
            "shoal.cluster.size" => match number(value) {
                Ok(v) => {
                    cluster.insert("expected_size".into(), v);
                }
                Err(_) => bad(format!("{value:?} is not a number")),
            },
            "shoal.cluster.voters" => match number(value) {
                Ok(v) => {
                    cluster.insert("voters".into(), v);
                }
                Err(_) => bad(format!("{value:?} is not a number")),
            },
            "shoal.cluster.seeds" => {
                let seeds: Vec<toml::Value> = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.into())
                    .collect();
                cluster.insert("seeds".into(), toml::Value::Array(seeds));
            }
            "shoal.cluster.secret" => bad(
                "the cluster secret is not accepted on the kernel command line (every process can \
                 read it there); put it in the configuration file"
                    .into(),
            ),
            "shoal.node.voter" => {
                node.insert("voter".into(), value.into());
            }
            "shoal.node.labels" => {
                let mut labels = toml::Table::new();
                for pair in value.split(',').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some((k, v)) => {
                            labels.insert(k.into(), v.into());
                        }
                        None => bad(format!("{pair:?} is not key=value")),
                    }
                }
                node.insert("labels".into(), toml::Value::Table(labels));
            }
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if cluster.is_empty() && node.is_empty() {
        return Ok(None);
    }
    let mut doc = toml::Table::new();
    if !cluster.is_empty() {
        doc.insert("cluster".into(), toml::Value::Table(cluster));
    }
    if !node.is_empty() {
        doc.insert("node".into(), toml::Value::Table(node));
    }
    Ok(Some(Document {
        kind: SourceKind::Inline,
        origin: "kernel command line".into(),
        text: toml::to_string(&doc).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kind: SourceKind, text: &str) -> Document {
        Document {
            kind,
            origin: format!("{}.toml", kind.name()),
            text: text.into(),
        }
    }

    #[test]
    fn later_sources_win_key_by_key_and_arrays_are_replaced() {
        let docs = [
            doc(
                SourceKind::Url,
                "[cluster]\nname = \"from-url\"\nseeds = [\"10.0.0.2:7700\"]\n",
            ),
            doc(
                SourceKind::Esp,
                "[cluster]\nname = \"from-esp\"\nexpected_size = 5\nvoters = 5\nseeds = [\"10.0.0.1:7700\", \"10.0.0.9:7700\"]\n[node]\nlabels = { site = \"esp\" }\n",
            ),
        ];
        let c = resolve(&docs, None).unwrap();
        assert_eq!(c.cluster.name, "from-url");
        assert_eq!(c.cluster.expected_size, 5, "kept from the ESP");
        assert_eq!(c.cluster.seeds, ["10.0.0.2:7700"], "replaced, not appended");
        assert_eq!(c.node.labels["site"], "esp");
    }

    #[test]
    fn inline_keys_come_last() {
        let inline = inline_settings(
            "console=ttyS0 shoal.cluster.name=lab shoal.cluster.size=1 shoal.cluster.voters=1 \
             shoal.cluster.seeds=a.lab:7700,10.0.0.3:7700 shoal.node.voter=never \
             shoal.node.labels=rack=r2,gpu=true",
        )
        .unwrap()
        .unwrap();
        let docs = [doc(SourceKind::Url, "[cluster]\nname = \"url\"\n"), inline];
        let c = resolve(&docs, None).unwrap();
        assert_eq!(c.cluster.name, "lab");
        assert_eq!((c.cluster.expected_size, c.cluster.voters), (1, 1));
        assert_eq!(c.cluster.seeds, ["a.lab:7700", "10.0.0.3:7700"]);
        assert_eq!(c.node.voter, crate::machine::VoterHint::Never);
        assert_eq!(c.node.labels.len(), 2);
        assert_eq!(inline_settings("console=ttyS0 quiet").unwrap(), None);
    }

    #[test]
    fn inline_errors_name_the_key_and_the_secret_is_refused() {
        let e = inline_settings("shoal.cluster.size=many shoal.cluster.secret=abc").unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            text[0],
            "kernel command line: shoal.cluster.size: \"many\" is not a number"
        );
        assert!(
            text[1].contains("not accepted on the kernel command line"),
            "{text:?}"
        );
        assert!(!text[1].contains("abc"));
    }

    #[test]
    fn each_source_is_checked_on_its_own_with_positions() {
        let docs = [
            doc(SourceKind::Esp, "[cluster]\nvoters = 4\n"),
            doc(SourceKind::Url, "[cluster]\nnmae = \"x\"\n"),
        ];
        let e: Vec<String> = resolve(&docs, None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            "esp.toml: cluster.voters: 4 voters cannot keep a majority well; use 1, 3, 5 or 7"
        );
        assert!(
            e[1].starts_with("url.toml: line 2, column 1: unknown field `nmae`"),
            "{e:?}"
        );
    }

    #[test]
    fn problems_only_the_combination_has_are_found() {
        let docs = [
            doc(SourceKind::Esp, "[cluster]\nport = 8000\n"),
            doc(SourceKind::Url, "[api]\nport = 8000\n"),
        ];
        let e: Vec<String> = resolve(&docs, None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            e,
            ["merged configuration: api.port: 8000 is already cluster.port"]
        );
    }

    #[test]
    fn tables_merge_recursively() {
        let mut base: toml::Table = "a = 1\n[t]\nx = 1\ny = [1]\n".parse().unwrap();
        merge_tables(
            &mut base,
            "b = 2\n[t]\ny = [2, 3]\nz = 3\n".parse().unwrap(),
        );
        assert_eq!(
            base.to_string(),
            "a = 1\nb = 2\n\n[t]\nx = 1\ny = [2, 3]\nz = 3\n"
        );
    }
}
