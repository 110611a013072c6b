//! `shoalctl config`: check a machine configuration before any node reads it, print the JSON
//! Schema editors use to check it as it is written, and give one to a node in maintenance
//! (which has none it can use) with the one-time token its console shows.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use shoal_config::MachineConfig;

use crate::table::render;
use crate::{Output, Reported};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and check a machine configuration, its [services.*] with the supervisor's own
    /// parser; prints a summary, or every problem (exit status 1).
    Validate {
        /// The file (`-`: standard input).
        file: PathBuf,
        /// A summary for people, or JSON or YAML for scripts.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print the machine configuration's JSON Schema (docs/machine-config.schema.json).
    Schema,
    /// Give a node in maintenance its machine configuration. It is checked here first, then
    /// by the node; the node boots on with it and keeps it for the next boots.
    Push {
        /// The node: HOST or HOST:PORT (the maintenance API's port is 7443).
        #[arg(long)]
        node: String,
        /// The one-time token the node's console shows.
        #[arg(long)]
        token: String,
        /// The configuration (`-`: standard input).
        file: PathBuf,
    },
    /// Ask a node in maintenance why it is there, and what it knows about itself (the MAC,
    /// UUID and serial its `[[nodes]]` section can match).
    Maintenance {
        #[arg(long)]
        node: String,
        #[arg(long)]
        token: String,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

pub async fn run(args: ConfigArgs) -> Result<()> {
    match args.command {
        ConfigCommand::Validate { file, output } => validate(&file, output),
        ConfigCommand::Schema => {
            print!("{}", shoal_config::schema::schema_text());
            Ok(())
        }
        ConfigCommand::Push { node, token, file } => push(&node, &token, &file).await,
        ConfigCommand::Maintenance {
            node,
            token,
            output,
        } => {
            let status = maintenance_client(&node, &token)?
                .maintenance_status()
                .await
                .with_context(|| format!("{node}: maintenance status"))?;
            crate::show(output, &status, |s| {
                let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                render(&[
                    vec!["reason".into(), s.reason.clone()],
                    vec!["mac".into(), field(&s.mac)],
                    vec!["uuid".into(), field(&s.uuid)],
                    vec!["serial".into(), field(&s.serial)],
                ])
            })
        }
    }
}

/// `HOST` gets the maintenance API's port; `HOST:PORT` and `[V6]:PORT` are kept.
fn maintenance_endpoint(node: &str) -> String {
    let has_port = match node.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => node.matches(':').count() == 1,
    };
    if has_port {
        node.to_string()
    } else if node.contains(':') && !node.starts_with('[') {
        format!("[{node}]:7443")
    } else {
        format!("{node}:7443")
    }
}

fn maintenance_client(node: &str, token: &str) -> Result<shoal_cluster_api::client::Client> {
    let token = shoal_cluster_api::identity::MaintenanceToken::parse(token)
        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    Ok(shoal_cluster_api::client::Client::maintenance(
        maintenance_endpoint(node),
        &token,
    )?)
}

async fn push(node: &str, token: &str, file: &Path) -> Result<()> {
    let (source, text) = read_source(file)?;
    // Checked here first, so the errors come with this file's name and lines.
    if let Err(errors) = MachineConfig::parse(&source, &text, Some(&check_service)) {
        for e in &errors {
            eprintln!("{e}");
        }
        return Err(Reported.into());
    }
    let accepted = maintenance_client(node, token)?
        .push_config(&text)
        .await
        .with_context(|| format!("{node}: pushing {source}"))?;
    println!(
        "{node} accepted {source}{}; it boots on with it{}",
        accepted
            .hostname
            .map(|h| format!(" as {h}"))
            .unwrap_or_default(),
        if accepted.kept {
            " and keeps it for the next boots"
        } else {
            " (diskless: push it again, or serve it, after a reboot)"
        }
    );
    Ok(())
}

fn read_source(file: &Path) -> Result<(String, String)> {
    if file == Path::new("-") {
        let text = std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?;
        Ok(("stdin".to_string(), text))
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok((file.display().to_string(), text))
    }
}

fn validate(file: &Path, output: Output) -> Result<()> {
    let (source, text) = read_source(file)?;
    match MachineConfig::parse(&source, &text, Some(&check_service)) {
        Ok(config) => {
            match output {
                Output::Table => print!("{}", summary(&source, &config)),
                _ => crate::print_data(output, &summary_json(&source, &config))?,
            }
            Ok(())
        }
        Err(errors) => {
            match output {
                Output::Table => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                }
                _ => {
                    let errors: Vec<serde_json::Value> = errors
                        .iter()
                        .map(|e| serde_json::json!({ "location": e.location, "reason": e.reason }))
                        .collect();
                    let report =
                        serde_json::json!({ "source": source, "valid": false, "errors": errors });
                    crate::print_data(output, &report)?;
                }
            }
            Err(Reported.into())
        }
    }
}

/// `[services.NAME]` through the supervisor's parser, as if it were
/// `/etc/shoal/services/NAME.toml`: (field path, reason) per problem.
pub(crate) fn check_service(name: &str, text: &str) -> Vec<(String, String)> {
    let source = format!("services.{name}");
    match shoal_supervisor::config::parse_service_all(name, Path::new(&source), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| (e.field.unwrap_or_default(), e.reason))
            .collect(),
    }
}

/// `1 link`, `2 links`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

/// What a valid configuration sets up, in a few lines; the secret only as present or not.
fn summary(source: &str, c: &MachineConfig) -> String {
    let n = &c.network;
    let own_network = c.nodes.iter().filter(|node| node.network.is_some()).count();
    let mut node_sections = c.nodes.len().to_string();
    if own_network > 0 {
        node_sections.push_str(&format!(" ({own_network} with its own [network])"));
    }
    let rows = [
        ("cluster", c.cluster.name.clone()),
        (
            "expected size",
            count(c.cluster.expected_size as usize, "node", "nodes"),
        ),
        ("voters", c.cluster.voters.to_string()),
        (
            "secret",
            match &c.cluster.secret {
                Some(secret) => format!("present {secret}"),
                None => "absent: nodes will not form or join a cluster".into(),
            },
        ),
        ("node sections", node_sections),
        ("services", names(c.services.keys())),
        (
            "network",
            [
                count(n.links.len(), "link", "links"),
                count(n.vlans.len(), "VLAN", "VLANs"),
                count(n.bonds.len(), "bond", "bonds"),
                count(n.bridges.len(), "bridge", "bridges"),
            ]
            .join(", "),
        ),
        ("api tokens", names(c.api.tokens.keys())),
    ];
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(key, value)| vec![format!("{key}:"), value])
        .collect();
    format!("{source}: valid\n{}", render(&rows))
}

fn summary_json(source: &str, c: &MachineConfig) -> serde_json::Value {
    let n = &c.network;
    serde_json::json!({
        "source": source,
        "valid": true,
        "cluster": {
            "name": c.cluster.name,
            "expected_size": c.cluster.expected_size,
            "voters": c.cluster.voters,
            "secret": c.cluster.secret.is_some(),
        },
        "node_sections": c.nodes.len(),
        "services": c.services.keys().collect::<Vec<_>>(),
        "network": {
            "links": n.links.len(),
            "vlans": n.vlans.len(),
            "bonds": n.bonds.len(),
            "bridges": n.bridges.len(),
        },
        "api_tokens": c.api.tokens.keys().collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";

    fn config(text: &str) -> MachineConfig {
        match MachineConfig::parse("m", text, Some(&check_service)) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn maintenance_endpoints_get_the_port_when_they_have_none() {
        assert_eq!(maintenance_endpoint("10.0.0.7"), "10.0.0.7:7443");
        assert_eq!(maintenance_endpoint("10.0.0.7:8443"), "10.0.0.7:8443");
        assert_eq!(maintenance_endpoint("edge-7"), "edge-7:7443");
        assert_eq!(maintenance_endpoint("fd77::7"), "[fd77::7]:7443");
        assert_eq!(maintenance_endpoint("[fd77::7]:9"), "[fd77::7]:9");
        assert_eq!(maintenance_endpoint("[fd77::7]"), "[fd77::7]:7443");
    }

    #[test]
    fn the_summary_counts_sections_and_never_shows_the_secret() {
        let c = config(&format!(
            r#"
[cluster]
name = "lab"
secret = "{SECRET}"
expected_size = 5
voters = 5
[services.metrics]
command = ["/opt/metrics/agent"]
[services.backup]
command = ["/opt/backup"]
[[network.links]]
match = {{ name = "eth0" }}
[[network.bonds]]
name = "bond0"
links = ["eth1", "eth2"]
mode = "802.3ad"
[[nodes]]
match = {{ serial = "a" }}
network = {{ naming = "mac" }}
[[nodes]]
match = {{ serial = "b" }}
"#
        ));
        let out = summary("machine.toml", &c);
        assert!(!out.contains(SECRET), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "machine.toml: valid",
                "cluster:        lab",
                "expected size:  5 nodes",
                "voters:         5",
                &format!(
                    "secret:         present {}",
                    c.cluster.secret.as_ref().unwrap()
                ),
                "node sections:  2 (1 with its own [network])",
                "services:       backup, metrics",
                "network:        1 link, 0 VLANs, 1 bond, 0 bridges",
                "api tokens:     -",
            ]
        );
        assert!(lines[4].starts_with("secret:         present <redacted, 37 bytes, #"));

        let json = summary_json("machine.toml", &c);
        assert_eq!(json["cluster"]["secret"], true);
        assert_eq!(json["services"], serde_json::json!(["backup", "metrics"]));
        assert_eq!(json["network"]["bonds"], 1);
        assert_eq!(json["node_sections"], 2);
        assert!(!json.to_string().contains(SECRET));
    }

    #[test]
    fn an_empty_file_summarises_as_the_defaults() {
        let out = summary("m", &config(""));
        assert!(out.contains("secret:         absent: nodes will not form or join a cluster\n"));
        assert!(out.contains("node sections:  0\n"), "{out}");
        assert!(out.contains("services:       -\n"), "{out}");
    }

    #[test]
    fn services_are_checked_by_the_supervisors_parser() {
        assert_eq!(check_service("metrics", "command = [\"/x\"]\n"), []);
        let problems = check_service(
            "metrics",
            "command = [\"/x\"]\n[restart]\ndelay = \"soon\"\n",
        );
        assert_eq!(
            problems,
            [(
                "restart.delay".to_string(),
                "\"soon\" is not a duration (use 100ms, 5s, 2m, 1h)".to_string()
            )]
        );
    }
}
