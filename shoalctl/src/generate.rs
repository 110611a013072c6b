//! `shoalctl gen config`: a new cluster's machine configuration, with a fresh cluster secret and
//! admin token, and the client file that holds that token.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sha2::{Digest as _, Sha256};
use shoal_cluster_api::identity::Identity;
use shoal_config::{MachineConfig, Secret};

#[derive(Debug, Args)]
pub struct GenArgs {
    #[command(subcommand)]
    command: GenCommand,
}

#[derive(Debug, Subcommand)]
enum GenCommand {
    /// Write DIR/machine.toml for a new cluster (a fresh cluster secret, an admin token's hash)
    /// and DIR/shoalctl.toml (that token), both mode 0600.
    Config(GenConfig),
}

#[derive(Debug, Args)]
struct GenConfig {
    /// The cluster's name, a DNS label (a-z, 0-9, '-').
    #[arg(long)]
    name: String,
    /// How many nodes form the cluster together.
    #[arg(long, default_value_t = 3)]
    size: u32,
    /// Voting members: 1, 3, 5 or 7 [default: 3, or 1 below 3 nodes].
    #[arg(long)]
    voters: Option<u32>,
    /// Where to write the two files (made if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Replace files that are there (their secrets are lost).
    #[arg(long)]
    force: bool,
}

pub const MACHINE_FILE: &str = "machine.toml";
pub const CLIENT_FILE: &str = "shoalctl.toml";

pub fn run(args: GenArgs) -> Result<()> {
    let GenCommand::Config(args) = args.command;
    let voters = args.voters.unwrap_or(if args.size >= 3 { 3 } else { 1 });
    let secret = Secret::generate().context("cannot read random bytes for the cluster secret")?;
    // A token is as much a secret as the cluster's: the same source of randomness.
    let token = hex(Secret::generate()
        .context("cannot read random bytes for the admin token")?
        .expose());
    let machine = machine_toml(&args.name, args.size, voters, &secret, &token_hash(&token));
    check_generated(&machine)?;
    let client = client_toml(&args.name, &token, &Identity::derive(&secret).server_key());

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot make {}", args.out.display()))?;
    let machine_path = args.out.join(MACHINE_FILE);
    let client_path = args.out.join(CLIENT_FILE);
    if !args.force {
        let existing: Vec<String> = [&machine_path, &client_path]
            .into_iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        match existing.as_slice() {
            [] => {}
            [one] => bail!(
                "{one} is there already; nothing written (--force replaces it, and the secret it \
                 holds is lost)"
            ),
            [first, second] => bail!(
                "{first} and {second} are there already; nothing written (--force replaces them, \
                 and the secrets they hold are lost)"
            ),
            _ => unreachable!("two files are checked"),
        }
    }
    write_private(&machine_path, &machine)?;
    write_private(&client_path, &client)?;
    println!(
        "wrote {}: cluster {:?}, {} nodes, {voters} voters, a new cluster secret, the admin \
         token's hash",
        machine_path.display(),
        args.name,
        args.size
    );
    println!(
        "wrote {}: the admin token for {:?}; list node addresses in endpoints",
        client_path.display(),
        args.name
    );
    eprintln!(
        "shoalctl: warning: both files hold secrets (the cluster secret, the admin token): they are mode \
         0600; keep them out of version control and hand {MACHINE_FILE} only to the nodes"
    );
    Ok(())
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `[api.tokens]` holds for a token: `sha256:` and the hex SHA-256 of the token's text.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", hex(&Sha256::digest(token.as_bytes())))
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::from(text).to_string()
}

/// The generated file must pass the same checks as any other; a flag's bad value is named by
/// its flag.
fn check_generated(text: &str) -> Result<()> {
    let Err(errors) = MachineConfig::parse(MACHINE_FILE, text, None) else {
        return Ok(());
    };
    let lines: Vec<String> = errors
        .iter()
        .map(|e| {
            let flag = match e.location.as_str() {
                "cluster.name" => "--name",
                "cluster.expected_size" => "--size",
                "cluster.voters" => "--voters",
                other => other,
            };
            format!("{flag}: {}", e.reason)
        })
        .collect();
    bail!("nothing written:\n  {}", lines.join("\n  "))
}

/// The machine configuration, every section explained, the optional ones as comments.
pub fn machine_toml(
    name: &str,
    size: u32,
    voters: u32,
    secret: &Secret,
    token_hash: &str,
) -> String {
    MACHINE_TEMPLATE
        .replace("@NAME@", &quoted(name))
        .replace("@SECRET@", &quoted(&secret.to_base64()))
        .replace("@SIZE@", &size.to_string())
        .replace("@VOTERS@", &voters.to_string())
        .replace("@TOKEN_HASH@", &quoted(token_hash))
}

/// shoalctl's side: which cluster, its admin token, the API key its nodes serve with
/// (`ed25519:<hex>`, derived from the cluster secret), where to reach it.
pub fn client_toml(name: &str, token: &str, server_key: &str) -> String {
    CLIENT_TEMPLATE
        .replace("@NAME@", &quoted(name))
        .replace("@TOKEN@", &quoted(token))
        .replace("@SERVER_KEY@", &quoted(server_key))
}

const MACHINE_TEMPLATE: &str = r#"# Shoal machine configuration, written by `shoalctl gen config`.
#
# Every node of the cluster boots with this file: from the ESP (shoal/config.toml), NoCloud
# user-data, instance metadata, or a URL given as shoal.config=<URL> on the kernel command line.
# Check it after each edit with `shoalctl config validate machine.toml`; editors complete and
# check it as you type with docs/machine-config.schema.json.
#
# It holds the cluster secret: keep it mode 0600, out of version control, and give it to the
# nodes only.

version = 1

[cluster]
# The cluster's name: a DNS label (a-z, 0-9, '-').
name = @NAME@
# Authenticates the nodes to each other; every node of the cluster needs the same one.
# Without a secret a node neither forms nor joins a cluster.
secret = @SECRET@
# The cluster is formed once this many nodes have announced themselves.
expected_size = @SIZE@
# Voting members: 1, 3, 5 or 7; the other nodes follow without voting.
voters = @VOTERS@
# Nodes to contact first, as host:port; not needed when the nodes share a LAN.
# seeds = ["10.0.0.10:7700"]
# The port the nodes speak to each other on.
port = 7700

[node]
# What every node gets; a [[nodes]] section below overrides it for one node.
# labels = { rack = "r1" }
# Whether nodes may vote: auto, prefer (picked first) or never.
voter = "auto"

[network]
# As it is: DHCP on every physical link that has a carrier. Links, static addresses, VLANs,
# bonds and bridges are described in netd's README; for example:
# naming = "mac"                      # links named enx<MAC>: stable across boots
# dns = { servers = ["10.0.0.53"] }
#
# [[network.links]]
# match = { mac = "52:54:00:12:34:56" }
# addresses = ["10.0.0.5/24"]
# gateway = "10.0.0.1"

# Extra services for the supervisor, one table each, holding what
# /etc/shoal/services/NAME.toml would:
# [services.metrics]
# command = ["/opt/metrics/agent"]
# restart = { delay = "1s" }

[update]
# Keys update bundles may be signed with, besides the image's own: "ed25519:<base64>".
# trusted_keys = ["ed25519:..."]
# manual (only `shoalctl update apply`) or rolling (one node at a time, when a newer bundle
# is offered).
policy = "manual"

[api]
# The cluster API's port on every node; shoalctl connects to it.
port = 7443

[api.tokens]
# Client tokens by name, each as the SHA-256 of the token, never the token itself. The admin
# token is in shoalctl.toml, written beside this file.
admin = @TOKEN_HASH@

# One section per node that needs settings of its own; the first whose match fits applies.
# match takes mac, uuid (SMBIOS) and serial; every one given must fit.
# [[nodes]]
# match = { mac = "52:54:00:12:34:56" }
# hostname = "edge-7"
# labels = { gpu = "true" }
# voter = "never"
"#;

const CLIENT_TEMPLATE: &str = r#"# shoalctl's credentials for a Shoal cluster, written by `shoalctl gen config`.
#
# The token is the cluster's admin token: whoever has it controls the cluster. Keep this file
# mode 0600 and out of version control; machine.toml holds only the token's hash
# ([api.tokens] admin).

cluster = @NAME@
token = @TOKEN@
# The key every node serves the cluster API with, derived from the cluster secret: shoalctl
# talks only to a server that holds it. Not a secret.
server_key = @SERVER_KEY@
# The cluster API on the nodes, as "host:port" (api.port, 7443 unless changed); shoalctl tries
# them in turn.
endpoints = []
"#;

/// Writes `text` to `path`, mode 0600 from the start: into a new file beside it, then renamed
/// over, so a reader never sees half a file and a replaced file's mode does not carry over.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        // The umask may only have taken bits away; say exactly what is meant.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA=="
            .parse()
            .unwrap()
    }

    #[test]
    fn the_generated_configuration_parses_to_what_was_asked() {
        let hash = token_hash("t0ken");
        let text = machine_toml("lab", 5, 3, &secret(), &hash);
        let c = match MachineConfig::parse(MACHINE_FILE, &text, None) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}\n{text}"),
        };
        assert_eq!(c.cluster.name, "lab");
        assert_eq!((c.cluster.expected_size, c.cluster.voters), (5, 3));
        assert_eq!(c.cluster.secret, Some(secret()));
        assert_eq!(c.api.tokens["admin"], hash);
        // Everything else as an empty file would have it: the comments only explain.
        let defaults = MachineConfig {
            cluster: c.cluster.clone(),
            api: c.api.clone(),
            ..MachineConfig::default()
        };
        assert_eq!(c, defaults);
    }

    #[test]
    fn every_section_is_explained() {
        let text = machine_toml("lab", 3, 3, &secret(), &token_hash("t"));
        for section in [
            "[cluster]",
            "[node]",
            "[network]",
            "[services.",
            "[update]",
            "[api]",
            "[[nodes]]",
        ] {
            let at = text
                .find(section)
                .unwrap_or_else(|| panic!("{section} missing"));
            let next = &text[at..].lines().nth(1).unwrap_or("");
            assert!(
                next.starts_with('#'),
                "{section} has no comment under it: {next:?}"
            );
        }
        let comments = text.lines().filter(|l| l.starts_with('#')).count();
        assert!(comments > 40, "{comments} comment lines");
    }

    #[test]
    fn the_token_hash_is_sha256_of_the_token_text() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            token_hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_client_file_names_the_cluster_and_holds_the_token_and_server_key() {
        let server_key = Identity::derive(&secret()).server_key();
        let text = client_toml("lab", "00ff", &server_key);
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["cluster"].as_str(), Some("lab"));
        assert_eq!(table["token"].as_str(), Some("00ff"));
        assert_eq!(table["server_key"].as_str(), Some(server_key.as_str()));
        assert_eq!(table["endpoints"].as_array().map(Vec::len), Some(0));
        assert_eq!(table.len(), 4, "{text}");
        // The key the nodes derive from the secret, in the form shoalctl reads back.
        assert!(server_key.starts_with("ed25519:"), "{server_key}");
        assert_eq!(
            shoal_cluster_api::identity::parse_server_key(table["server_key"].as_str().unwrap()),
            Ok(Identity::derive(&secret()).public_key)
        );
        assert!(text.contains(&format!("\nserver_key = \"{server_key}\"\n")));
        // It is explained by the comment above it.
        let at = text.find("\nserver_key = ").unwrap();
        assert!(text[..at].lines().last().unwrap().starts_with('#'));
    }

    #[test]
    fn a_bad_flag_is_named_and_nothing_is_accepted() {
        let text = machine_toml("Lab_1", 0, 4, &secret(), &token_hash("t"));
        let e = check_generated(&text).unwrap_err().to_string();
        assert_eq!(
            e,
            "nothing written:\n  \
             --name: \"Lab_1\" is not a DNS label (1 to 63 of a-z, 0-9, '-', not starting or ending with '-')\n  \
             --size: must be at least 1\n  \
             --voters: 4 voters cannot keep a majority well; use 1, 3, 5 or 7"
        );
        // A name that would break out of its string stays inside it.
        let text = machine_toml("x\"\nversion = 2", 3, 3, &secret(), &token_hash("t"));
        let e = check_generated(&text).unwrap_err().to_string();
        assert!(e.starts_with("nothing written:\n  --name: "), "{e}");
    }
}
