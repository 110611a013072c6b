//! The cluster commands: `status`, `nodes`, `node`, `members`, `kv` and `watch`, over the
//! cluster API every node serves (`shoal-cluster-api`: HTTPS, TLS 1.3, the cluster's Ed25519
//! key pinned).
//!
//! Where to connect comes from shoalctl.toml (`cluster`, `token`, `server_key`, `endpoints`;
//! `shoalctl gen config` writes it) or, with `--machine-config`, from a machine configuration's
//! cluster secret, from which the admin credential and the server key are derived; `--endpoint`
//! replaces the endpoints either lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use shoal_cluster_api::client::{CasOutcome, Client, ClientError};
use shoal_cluster_api::identity::{Identity, admin_credential, parse_server_key};
use shoal_cluster_api::types::{KeyValue, Members, NodeView, Status, UpdateStatus, Watch, Written};
use shoal_config::MachineConfig;

use crate::table::{or_dash, render};
use crate::{Output, Reported, show};

/// The client file's name, here and under `~/.config/shoal/`.
const CLIENT_FILE: &str = "shoalctl.toml";
/// How long one watch call waits for a change.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// How long a watch waits before asking again after the cluster could not answer.
const WATCH_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The cluster as the answering node sees it: role, leader, term, voters, quorum,
    /// revision.
    Status(Connection),
    /// Every node: id, hostname, address, role, health, heartbeat age, image version, boot
    /// slot (and whether it is on trial after an update), labels.
    Nodes(NodesArgs),
    /// One node, by id (16 hex digits) or hostname.
    Node(NodeArgs),
    /// Consensus membership: voters and learners with their addresses, the leader marked.
    Members(Connection),
    /// A node's hardware inventory (system, CPUs, NUMA, memory and DIMMs, disks, NICs, PCI
    /// devices, accelerators, labels) as it published it to the cluster; without a node,
    /// collected on this machine.
    Inventory(InventoryArgs),
    /// The cluster's key-value space.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Print changes to the key-value space as they happen, until Ctrl-C.
    Watch(WatchArgs),
    /// A/B updates of the node an endpoint reaches: `apply` a signed bundle to its other slot,
    /// `status` of both slots, `rollback` to the other slot.
    #[command(subcommand)]
    Update(UpdateCommand),
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Send a bundle (`update.bundle` from image-build) to the node: it verifies the signature
    /// and every hash, writes its other slot and makes it the default on trial; reboot the node
    /// to switch. Nothing changes when the bundle is refused.
    Apply {
        /// The bundle: a file, or an http:// or https:// URL (downloaded here and streamed to
        /// the node as it arrives).
        bundle: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// The node's slots: which one booted, which is the default, versions, trial state, and
    /// how the last update ended.
    Status(Connection),
    /// Make the node's other slot the default again (it boots at the next reboot).
    Rollback(Connection),
}

/// Where and how to reach the cluster, and how to print the answer: every cluster command
/// takes these.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The client file, as `shoalctl gen config` writes it [default: $SHOALCTL_CONFIG, else
    /// ./shoalctl.toml, else ~/.config/shoal/shoalctl.toml].
    #[arg(long, value_name = "FILE", conflicts_with = "machine_config")]
    config: Option<PathBuf>,
    /// Connect with a machine configuration's cluster secret instead of a client file: the
    /// admin credential and the server key are derived from it (needs --endpoint).
    #[arg(long, value_name = "FILE")]
    machine_config: Option<PathBuf>,
    /// A node's cluster API address (repeatable; tried in turn); replaces the file's
    /// endpoints.
    #[arg(long = "endpoint", value_name = "HOST:PORT")]
    endpoints: Vec<String>,
    /// How long one call may take on one endpoint.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Tables for people, or JSON or YAML (the API's field names) for scripts.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Print the nodes again whenever membership, a role, a node's health, image version or
    /// slot changes, until Ctrl-C.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's id (16 hex digits) or hostname.
    #[arg(value_name = "ID-or-HOSTNAME")]
    node: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The node's id (16 hex digits) or hostname; none: this machine.
    #[arg(value_name = "ID-or-HOSTNAME")]
    node: Option<String>,
    /// Collect from a tree captured with `shoal-inventory capture DIR` instead of this machine.
    #[arg(long, value_name = "DIR", conflicts_with = "node")]
    root: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// A key's value and the revision that last wrote it (a linearizable read); no such key:
    /// exit status 1.
    Get {
        key: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Set a key's value (one that starts with '-' goes after `--`).
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Compare-and-set: write or delete a key only at the revision expected.
    ///
    /// Writes VALUE, or without one deletes the key, only if its revision is EXPECTED_REVISION
    /// (0: only if it is absent); otherwise prints its current value and revision and exits
    /// with status 1.
    Cas {
        key: String,
        /// The revision that last wrote the key (0: the key must be absent).
        expected_revision: u64,
        /// The new value; none: delete the key.
        value: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Print the changes after this revision [default: the current revision, from status].
    #[arg(long, value_name = "REV")]
    after: Option<u64>,
    /// Exit after the first batch of changes.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status(c) => {
            let status = connect(&c)?.status().await?;
            show(c.output, &status, status_table)
        }
        ClusterCommand::Nodes(NodesArgs {
            watch: false,
            connection: c,
        }) => {
            let nodes = connect(&c)?.nodes().await?;
            show(c.output, &nodes, |n| nodes_table(n))
        }
        ClusterCommand::Nodes(NodesArgs {
            watch: true,
            connection: c,
        }) => {
            let client = connect(&c)?;
            let mut tag = String::new();
            loop {
                match client.watch_nodes(&tag, WATCH_WAIT).await {
                    Ok(view) if view.tag != tag => {
                        tag = view.tag;
                        match c.output {
                            Output::Table => println!("{}", nodes_table(&view.nodes)),
                            Output::Json => println!("{}", serde_json::to_string(&view.nodes)?),
                            Output::Yaml => {
                                println!("---");
                                crate::print_data(Output::Yaml, &view.nodes)?;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("shoalctl: {e} (retrying)");
                        tokio::time::sleep(WATCH_RETRY).await;
                    }
                }
            }
        }
        ClusterCommand::Node(args) => {
            let node = connect(&args.connection)?.node(&args.node).await?;
            show(args.connection.output, &node, node_table)
        }
        ClusterCommand::Update(UpdateCommand::Apply { bundle, connection }) => {
            let source = crate::upload::Source::parse(&bundle)?;
            let length = crate::upload::length(&source).await?;
            eprintln!("sending {bundle}; the node verifies it as it arrives");
            let started = std::time::Instant::now();
            let mut progress = crate::upload::Progress::new(length);
            // Writing a slot takes a while: wait up to 10 minutes for the answer.
            let applied = connect(&connection)?
                .with_timeout(Duration::from_secs(600))
                .update_apply_streaming(length, |mut body| async move {
                    crate::upload::stream(&source, &mut body, &mut progress).await?;
                    progress.finish();
                    Ok(())
                })
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            show(connection.output, &applied, |a| {
                format!(
                    "{} installed in slot {} ({:.1} MiB in {seconds:.1} s, signed by {}); reboot the node to try it\n",
                    a.version,
                    a.slot,
                    a.bytes as f64 / (1 << 20) as f64,
                    a.signer
                )
            })
        }
        ClusterCommand::Update(UpdateCommand::Status(c)) => {
            let status = connect(&c)?.update_status().await?;
            show(c.output, &status, update_table)
        }
        ClusterCommand::Update(UpdateCommand::Rollback(c)) => {
            let status = connect(&c)?.update_rollback().await?;
            show(c.output, &status, update_table)
        }
        ClusterCommand::Members(c) => {
            let members = connect(&c)?.members().await?;
            show(c.output, &members, members_table)
        }
        ClusterCommand::Inventory(args) => {
            let inventory = match (&args.node, &args.root) {
                (Some(node), _) => connect(&args.connection)?.inventory(node).await?,
                (None, Some(root)) => {
                    let recorded = shoal_inventory::Recorded::load(root).map_err(|e| anyhow!(e))?;
                    shoal_inventory::collect(&shoal_inventory::Roots::under(root), &recorded)
                }
                (None, None) => shoal_inventory::collect(
                    &shoal_inventory::Roots::host(),
                    &shoal_inventory::Live,
                ),
            };
            show(args.connection.output, &inventory, crate::inventory::table)
        }
        ClusterCommand::Kv(command) => kv(command).await,
        ClusterCommand::Watch(args) => watch(args).await,
    }
}

async fn kv(command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Get { key, connection } => match connect(&connection)?.get(&key).await? {
            Some(kv) => show(connection.output, &kv, key_value_table),
            None => bail!("no key {key:?}"),
        },
        KvCommand::Put {
            key,
            value,
            connection,
        } => {
            let written = connect(&connection)?.put(&key, &value).await?;
            show(connection.output, &written, |w| {
                written_line(&key, w, false)
            })
        }
        KvCommand::Delete { key, connection } => {
            let written = connect(&connection)?.delete(&key).await?;
            show(connection.output, &written, |w| written_line(&key, w, true))
        }
        KvCommand::Cas {
            key,
            expected_revision,
            value,
            connection,
        } => {
            let outcome = connect(&connection)?
                .cas(&key, expected_revision, value.as_deref())
                .await?;
            match outcome {
                CasOutcome::Written(written) => show(connection.output, &written, |w| {
                    written_line(&key, w, value.is_none())
                }),
                CasOutcome::Failed(failed) => {
                    if let Output::Table = connection.output {
                        bail!(
                            "{}",
                            cas_failed(&key, expected_revision, failed.current.as_ref())
                        );
                    }
                    show(connection.output, &failed, |_| String::new())?;
                    Err(Reported.into())
                }
            }
        }
    }
}

/// Long-polls for changes, printing each batch as it comes.
async fn watch(args: WatchArgs) -> Result<()> {
    let output = args.connection.output;
    let client = connect(&args.connection)?;
    let mut after = match args.after {
        Some(after) => after,
        None => client.status().await?.revision,
    };
    loop {
        let batch = match client.watch(after, WATCH_WAIT).await {
            Ok(batch) => batch,
            Err(e) if !args.once && passing(&e) => {
                eprintln!(
                    "shoalctl: warning: {e}; asking again in {}s",
                    WATCH_RETRY.as_secs()
                );
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if batch.compacted {
            eprintln!(
                "shoalctl: warning: the changes after revision {after} are no longer kept: some \
                 were missed (read the keys again); going on from revision {}",
                batch.revision
            );
        }
        let news = !batch.changes.is_empty() || batch.compacted;
        if news {
            print!("{}", watch_batch(output, &batch)?);
        }
        after = batch.revision;
        if args.once && news {
            return Ok(());
        }
    }
}

/// A failure that may pass while a watch goes on: no endpoint answered, or no leader.
fn passing(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable(_)
            | ClientError::Api {
                status: 502..=504,
                ..
            }
    )
}

/// One watch answer: a line per change in a table, else one JSON line or one YAML document.
fn watch_batch(output: Output, batch: &Watch) -> Result<String> {
    Ok(match output {
        Output::Table => {
            let rows: Vec<Vec<String>> = batch
                .changes
                .iter()
                .map(|c| {
                    vec![
                        c.revision.to_string(),
                        text(&c.key),
                        c.value.as_deref().map_or("(deleted)".into(), text),
                    ]
                })
                .collect();
            render(&rows)
        }
        Output::Json => format!("{}\n", serde_json::to_string(batch)?),
        Output::Yaml => format!(
            "---\n{}",
            crate::yaml::to_string(&serde_json::to_value(batch)?)
        ),
    })
}

/// A client for what `connection` names.
fn connect(connection: &Connection) -> Result<Client> {
    let target = resolve(connection, &Environment::current())?;
    let client = Client::new(target.endpoints, target.token, target.server_key)?;
    Ok(client.with_timeout(Duration::from_secs(connection.timeout)))
}

/// Where to connect, with what.
#[derive(PartialEq, Eq)]
struct Target {
    endpoints: Vec<String>,
    token: String,
    server_key: [u8; 32],
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoints", &self.endpoints)
            .field(
                "server_key",
                &shoal_cluster_api::identity::hex(&self.server_key),
            )
            .finish_non_exhaustive()
    }
}

/// What the environment says about where the client file is.
#[derive(Debug, Default)]
struct Environment {
    /// `$SHOALCTL_CONFIG`.
    shoalctl_config: Option<PathBuf>,
    /// `$HOME`.
    home: Option<PathBuf>,
}

impl Environment {
    fn current() -> Environment {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Environment {
            shoalctl_config: var("SHOALCTL_CONFIG"),
            home: var("HOME"),
        }
    }
}

fn resolve(connection: &Connection, env: &Environment) -> Result<Target> {
    let (mut target, missing_endpoints) = match &connection.machine_config {
        Some(file) => (
            from_machine_config(file)?,
            format!(
                "no endpoints: {} lists none; pass the nodes' cluster API addresses with \
                 --endpoint HOST:PORT (port 7443 unless api.port says otherwise)",
                file.display()
            ),
        ),
        None => {
            let file = client_file(connection.config.as_deref(), env, |p| p.exists())?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            (
                parse_client_file(&file.display().to_string(), &text)?,
                format!(
                    "no endpoints: list the nodes' cluster API addresses (\"host:port\", port 7443 \
                     unless api.port says otherwise) in endpoints in {}, or pass --endpoint \
                     HOST:PORT",
                    file.display()
                ),
            )
        }
    };
    if !connection.endpoints.is_empty() {
        target.endpoints = connection.endpoints.clone();
    }
    if target.endpoints.is_empty() {
        bail!("{missing_endpoints}");
    }
    for endpoint in &target.endpoints {
        check_endpoint(endpoint)?;
    }
    Ok(target)
}

/// `--config`, else `$SHOALCTL_CONFIG`, else `./shoalctl.toml`, else
/// `$HOME/.config/shoal/shoalctl.toml`: the first of the last two that `exists`.
fn client_file(
    explicit: Option<&Path>,
    env: &Environment,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf> {
    if let Some(file) = explicit.or(env.shoalctl_config.as_deref()) {
        return Ok(file.to_path_buf());
    }
    let mut candidates = vec![PathBuf::from(CLIENT_FILE)];
    if let Some(home) = &env.home {
        candidates.push(home.join(".config/shoal").join(CLIENT_FILE));
    }
    match candidates.iter().find(|p| exists(p)) {
        Some(file) => Ok(file.clone()),
        None => bail!(
            "no client file: neither ./{CLIENT_FILE} nor ~/.config/shoal/{CLIENT_FILE} is there; \
             pass --config FILE (`shoalctl gen config` writes one) or --machine-config FILE"
        ),
    }
}

/// shoalctl.toml: `cluster`, `token`, `server_key`, `endpoints`; `source` names it in errors.
fn parse_client_file(source: &str, text: &str) -> Result<Target> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow!("{source}: {}", e.to_string().trim_end()))?;
    let string = |key: &str| -> Result<Option<&str>> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => bail!("{source}: {key} must be a string"),
        }
    };
    for key in table.keys() {
        if !["cluster", "token", "server_key", "endpoints"].contains(&key.as_str()) {
            bail!(
                "{source}: unknown key `{key}` (a client file holds cluster, token, server_key \
                 and endpoints)"
            );
        }
    }
    string("cluster")?;
    let token = match string("token")? {
        Some(token) if !token.is_empty() => token.to_string(),
        _ => bail!(
            "{source}: no token (the admin token `shoalctl gen config` wrote; or connect with \
             --machine-config)"
        ),
    };
    let server_key = match string("server_key")? {
        Some(key) => parse_server_key(key).map_err(|e| anyhow!("{source}: server_key: {e}"))?,
        None => bail!(
            "{source}: no server_key, the cluster's API key that shoalctl pins \
             (\"ed25519:<64 hex digits>\"): `shoalctl gen config` writes it; or connect with \
             --machine-config, which derives it from the cluster secret"
        ),
    };
    let endpoints = match table.get("endpoints") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                _ => Err(anyhow!(
                    "{source}: endpoints must be a list of \"host:port\" strings"
                )),
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("{source}: endpoints must be a list of \"host:port\" strings"),
    };
    Ok(Target {
        endpoints,
        token,
        server_key,
    })
}

/// A machine configuration's cluster secret gives the admin credential and the server key; it
/// lists no endpoints.
fn from_machine_config(file: &Path) -> Result<Target> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse_machine_config(&file.display().to_string(), &text)
}

fn parse_machine_config(source: &str, text: &str) -> Result<Target> {
    let config = MachineConfig::parse(source, text, None).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!(
            "not a valid machine configuration:\n  {}",
            lines.join("\n  ")
        )
    })?;
    let Some(secret) = &config.cluster.secret else {
        bail!(
            "{source} holds no cluster secret ([cluster] secret), which the admin credential and \
             the server key are derived from; use the machine configuration the nodes boot with, \
             or a client file (--config)"
        );
    };
    Ok(Target {
        endpoints: Vec::new(),
        token: admin_credential(secret),
        server_key: Identity::derive(secret).public_key,
    })
}

fn check_endpoint(endpoint: &str) -> Result<()> {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => bail!(
            "endpoint {endpoint:?} is not HOST:PORT (the cluster API listens on port 7443 unless \
             api.port says otherwise)"
        ),
    }
}

/// A key or value for a table: as it is, or quoted when it is empty, has spaces at an end or
/// holds control characters.
fn text(s: &str) -> String {
    if s.is_empty() || s.trim() != s || s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.to_string()
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn list(items: &[String]) -> String {
    or_dash(&items.join(", "))
}

fn labels(labels: &BTreeMap<String, String>, separator: &str) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    or_dash(&pairs.join(separator))
}

/// `0.4s`, `12.0s`, then `1m5s`, `2h3m`, `1d`.
fn age(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        crate::network::duration(u32::try_from(ms / 1000).unwrap_or(u32::MAX))
    }
}

/// Unix milliseconds as `2025-06-01 12:00:00 UTC`; 0 as `-`.
fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let seconds = ms / 1000;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's civil_from_days.
    let z = (seconds / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `key:  value` lines.
fn details(rows: &[(&str, String)]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(key, value)| vec![format!("{key}:"), value.clone()])
        .collect();
    render(&rows)
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn status_table(s: &Status) -> String {
    details(&[
        ("cluster", s.cluster.clone()),
        (
            "cluster id",
            if s.cluster_id.is_empty() {
                "- (being formed)".into()
            } else {
                s.cluster_id.clone()
            },
        ),
        ("node", format!("{} (answered)", s.node)),
        ("role", s.role.clone()),
        ("leader", s.leader.clone().unwrap_or_else(|| "none".into())),
        ("term", s.term.to_string()),
        ("voters", list(&s.voters)),
        ("learners", list(&s.learners)),
        (
            "quorum",
            if s.quorum {
                "yes".into()
            } else {
                "no: this node hears from no leader; reads and writes fail".into()
            },
        ),
        ("applied", s.applied.to_string()),
        ("revision", s.revision.to_string()),
    ])
}

fn nodes_table(nodes: &[NodeView]) -> String {
    let mut rows = vec![header(&[
        "ID",
        "HOSTNAME",
        "ADDRESS",
        "ROLE",
        "HEALTHY",
        "HEARTBEAT",
        "VERSION",
        "SLOT",
        "LABELS",
    ])];
    for n in nodes {
        rows.push(vec![
            n.id.clone(),
            or_dash(&n.hostname),
            or_dash(&n.addr),
            n.role.clone(),
            yes_no(n.healthy),
            age(n.heartbeat_age_ms),
            or_dash(&n.version),
            slot(n).unwrap_or_else(|| "-".into()),
            labels(&n.labels, ","),
        ]);
    }
    render(&rows)
}

/// `a (good)`, `b (trial)`; `None` for a node booted over the network.
fn slot(n: &NodeView) -> Option<String> {
    let slot = n.slot.as_deref()?;
    Some(match n.slot_state.as_deref() {
        Some(state) => format!("{slot} ({state})"),
        None => slot.to_string(),
    })
}

fn node_table(n: &NodeView) -> String {
    details(&[
        ("id", n.id.clone()),
        ("hostname", or_dash(&n.hostname)),
        ("address", or_dash(&n.addr)),
        ("role", n.role.clone()),
        ("healthy", yes_no(n.healthy)),
        ("heartbeat", format!("{} ago", age(n.heartbeat_age_ms))),
        ("version", or_dash(&n.version)),
        (
            "slot",
            slot(n).unwrap_or_else(|| "- (booted over the network)".into()),
        ),
        ("labels", labels(&n.labels, ", ")),
        ("joined", utc(n.joined_ms)),
        (
            "hardware",
            n.hardware
                .clone()
                .unwrap_or_else(|| "- (no inventory published)".into()),
        ),
        ("hw labels", labels(&n.hardware_labels, ", ")),
    ])
}

fn update_table(status: &UpdateStatus) -> String {
    let mut rows = vec![header(&["SLOT", "VERSION", "STATE", "BOOTED", "DEFAULT"])];
    for slot in &status.slots {
        let state = match slot.tries_left {
            Some(n) if slot.state == "trial" => format!("trial ({n} tries left)"),
            _ => slot.state.clone(),
        };
        rows.push(vec![
            slot.slot.clone(),
            slot.version.clone().unwrap_or_else(|| "-".into()),
            state,
            if slot.booted { "yes" } else { "" }.into(),
            if slot.default { "yes" } else { "" }.into(),
        ]);
    }
    let mut out = render(&rows);
    if let Some(result) = &status.last_result {
        out.push_str(&format!("last update: {result}\n"));
    }
    out
}

fn members_table(m: &Members) -> String {
    let mut rows = vec![header(&["ID", "ROLE", "ADDRESS"])];
    for (members, role) in [(&m.voters, "voter"), (&m.learners, "learner")] {
        for member in members {
            let role = if m.leader.as_ref() == Some(&member.id) {
                format!("{role} (leader)")
            } else {
                role.to_string()
            };
            rows.push(vec![member.id.clone(), role, or_dash(&member.addr)]);
        }
    }
    let mut out = render(&rows);
    if m.leader.is_none() {
        out.push_str("no leader\n");
    }
    out
}

fn key_value_table(kv: &KeyValue) -> String {
    details(&[
        ("key", text(&kv.key)),
        ("value", text(&kv.value)),
        ("revision", kv.revision.to_string()),
    ])
}

/// What a write did, in a line.
fn written_line(key: &str, w: &Written, deleting: bool) -> String {
    let key = text(key);
    let revision = w.revision;
    match (&w.previous, deleting) {
        (Some(p), false) => format!(
            "{key}: written at revision {revision} (was revision {})\n",
            p.revision
        ),
        (None, false) => format!("{key}: written at revision {revision} (a new key)\n"),
        (Some(p), true) => format!(
            "{key}: deleted at revision {revision} (was revision {})\n",
            p.revision
        ),
        (None, true) => format!("{key}: not there; nothing deleted (revision {revision})\n"),
    }
}

/// Why a compare-and-set wrote nothing, with the key's current value and revision.
fn cas_failed(key: &str, expected: u64, current: Option<&KeyValue>) -> String {
    let key = text(key);
    match current {
        None => format!("{key} was not changed: it does not exist (expected revision {expected})"),
        Some(kv) if expected == 0 => format!(
            "{key} was not changed: it exists (expected it absent); revision {}, value {}",
            kv.revision,
            text(&kv.value)
        ),
        Some(kv) => format!(
            "{key} was not changed: its revision is {}, not {expected}; value {}",
            kv.revision,
            text(&kv.value)
        ),
    }
}

#[cfg(test)]
mod tests {
    use shoal_cluster_api::types::{Change, Member};

    use super::*;

    const SECRET: &str = "c2hvYWwtdGVzdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==";

    fn node(id: &str, hostname: &str, role: &str) -> NodeView {
        NodeView {
            id: id.into(),
            hostname: hostname.into(),
            addr: "10.0.0.5:7700".into(),
            labels: BTreeMap::new(),
            version: "0.1.0".into(),
            slot: Some("a".into()),
            slot_state: Some("good".into()),
            role: role.into(),
            healthy: true,
            heartbeat_age_ms: 420,
            joined_ms: 1_748_779_200_000,
            hardware: None,
            hardware_labels: Default::default(),
        }
    }

    #[test]
    fn status_as_details() {
        let status = Status {
            cluster: "lab".into(),
            cluster_id: "00c0ffee00c0ffee".into(),
            node: "0000000000000001".into(),
            role: "leader".into(),
            leader: Some("0000000000000001".into()),
            term: 3,
            voters: vec!["0000000000000001".into(), "0000000000000002".into()],
            learners: vec![],
            quorum: true,
            applied: 42,
            revision: 17,
        };
        assert_eq!(
            status_table(&status),
            "\
cluster:     lab
cluster id:  00c0ffee00c0ffee
node:        0000000000000001 (answered)
role:        leader
leader:      0000000000000001
term:        3
voters:      0000000000000001, 0000000000000002
learners:    -
quorum:      yes
applied:     42
revision:    17
"
        );
        let forming = Status {
            cluster_id: String::new(),
            leader: None,
            quorum: false,
            role: "candidate".into(),
            ..status
        };
        let out = status_table(&forming);
        assert!(out.contains("cluster id:  - (being formed)\n"), "{out}");
        assert!(out.contains("leader:      none\n"), "{out}");
        assert!(
            out.contains(
                "quorum:      no: this node hears from no leader; reads and writes fail\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn nodes_as_a_table() {
        let mut labelled = node("00000000000000a2", "edge-7", "voter");
        labelled.labels = BTreeMap::from([
            ("gpu".to_string(), "true".to_string()),
            ("rack".to_string(), "r1".to_string()),
        ]);
        labelled.healthy = false;
        labelled.heartbeat_age_ms = 125_000;
        labelled.version = String::new();
        labelled.slot = None;
        labelled.slot_state = None;
        let mut updated = node("00000000000000a3", "node-3", "non-voter");
        updated.version = "0.2.0".into();
        updated.slot = Some("b".into());
        updated.slot_state = Some("trial".into());
        let nodes = vec![
            node("00000000000000a1", "node-1", "leader"),
            labelled,
            updated,
        ];
        assert_eq!(
            nodes_table(&nodes),
            "\
ID                HOSTNAME  ADDRESS        ROLE       HEALTHY  HEARTBEAT  VERSION  SLOT       LABELS
00000000000000a1  node-1    10.0.0.5:7700  leader     yes      0.4s       0.1.0    a (good)   -
00000000000000a2  edge-7    10.0.0.5:7700  voter      no       2m5s       -        -          gpu=true,rack=r1
00000000000000a3  node-3    10.0.0.5:7700  non-voter  yes      0.4s       0.2.0    b (trial)  -
"
        );
        assert_eq!(
            nodes_table(&[]),
            "ID  HOSTNAME  ADDRESS  ROLE  HEALTHY  HEARTBEAT  VERSION  SLOT  LABELS\n"
        );
    }

    #[test]
    fn one_node_as_details() {
        let mut n = node("00000000000000a1", "node-1", "voter");
        n.labels = BTreeMap::from([
            ("gpu".to_string(), "true".to_string()),
            ("rack".to_string(), "r1".to_string()),
        ]);
        n.hardware = Some("4 threads (1 sockets, 2 cores), 8 GiB, 1 disks, 1 NICs".into());
        n.hardware_labels = BTreeMap::from([("disk.nvme".to_string(), "true".to_string())]);
        assert_eq!(
            node_table(&n),
            "\
id:         00000000000000a1
hostname:   node-1
address:    10.0.0.5:7700
role:       voter
healthy:    yes
heartbeat:  0.4s ago
version:    0.1.0
slot:       a (good)
labels:     gpu=true, rack=r1
joined:     2025-06-01 12:00:00 UTC
hardware:   4 threads (1 sockets, 2 cores), 8 GiB, 1 disks, 1 NICs
hw labels:  disk.nvme=true
"
        );
        n.slot = None;
        n.slot_state = None;
        assert!(
            node_table(&n).contains("\nslot:       - (booted over the network)\n"),
            "{}",
            node_table(&n)
        );
    }

    #[test]
    fn update_status_as_a_table() {
        use shoal_cluster_api::types::UpdateSlot;
        let slot =
            |slot: &str, version: Option<&str>, state: &str, tries, booted, default| UpdateSlot {
                slot: slot.into(),
                booted,
                default,
                version: version.map(Into::into),
                state: state.into(),
                tries_left: tries,
            };
        let status = UpdateStatus {
            booted: "a".into(),
            slots: vec![
                slot("a", Some("0.1.0"), "good", None, true, false),
                slot("b", Some("0.2.0"), "trial", Some(3), false, true),
            ],
            last_result: Some("0.2.0 installed in slot b".into()),
        };
        assert_eq!(
            update_table(&status),
            "\
SLOT  VERSION  STATE                 BOOTED  DEFAULT
a     0.1.0    good                  yes
b     0.2.0    trial (3 tries left)          yes
last update: 0.2.0 installed in slot b
"
        );
    }

    #[test]
    fn members_with_the_leader_marked() {
        let member = |id: &str, addr: &str| Member {
            id: id.into(),
            addr: addr.into(),
        };
        let mut members = Members {
            leader: Some("0000000000000002".into()),
            voters: vec![
                member("0000000000000001", "10.0.0.1:7700"),
                member("0000000000000002", "10.0.0.2:7700"),
                member("0000000000000003", "10.0.0.3:7700"),
            ],
            learners: vec![member("0000000000000004", "10.0.0.4:7700")],
        };
        assert_eq!(
            members_table(&members),
            "\
ID                ROLE            ADDRESS
0000000000000001  voter           10.0.0.1:7700
0000000000000002  voter (leader)  10.0.0.2:7700
0000000000000003  voter           10.0.0.3:7700
0000000000000004  learner         10.0.0.4:7700
"
        );
        members.leader = None;
        members.voters.truncate(1);
        members.learners.clear();
        assert_eq!(
            members_table(&members),
            "\
ID                ROLE   ADDRESS
0000000000000001  voter  10.0.0.1:7700
no leader
"
        );
    }

    #[test]
    fn key_values_and_writes() {
        let kv = KeyValue {
            key: "app/config".into(),
            value: "on".into(),
            revision: 7,
        };
        assert_eq!(
            key_value_table(&kv),
            "key:       app/config\nvalue:     on\nrevision:  7\n"
        );
        let odd = KeyValue {
            value: "two\nlines".into(),
            ..kv.clone()
        };
        assert!(key_value_table(&odd).contains("value:     \"two\\nlines\"\n"));
        let empty = KeyValue {
            value: String::new(),
            ..kv.clone()
        };
        assert!(key_value_table(&empty).contains("value:     \"\"\n"));

        let replaced = Written {
            revision: 8,
            previous: Some(kv.clone()),
        };
        let new = Written {
            revision: 8,
            previous: None,
        };
        assert_eq!(
            written_line("k", &replaced, false),
            "k: written at revision 8 (was revision 7)\n"
        );
        assert_eq!(
            written_line("k", &new, false),
            "k: written at revision 8 (a new key)\n"
        );
        assert_eq!(
            written_line("k", &replaced, true),
            "k: deleted at revision 8 (was revision 7)\n"
        );
        assert_eq!(
            written_line("k", &new, true),
            "k: not there; nothing deleted (revision 8)\n"
        );
    }

    #[test]
    fn a_failed_cas_tells_the_current_value_and_revision() {
        let kv = KeyValue {
            key: "k".into(),
            value: "v1".into(),
            revision: 9,
        };
        assert_eq!(
            cas_failed("k", 5, Some(&kv)),
            "k was not changed: its revision is 9, not 5; value v1"
        );
        assert_eq!(
            cas_failed("k", 0, Some(&kv)),
            "k was not changed: it exists (expected it absent); revision 9, value v1"
        );
        assert_eq!(
            cas_failed("k", 5, None),
            "k was not changed: it does not exist (expected revision 5)"
        );
    }

    #[test]
    fn watch_batches_in_each_format() {
        let batch = Watch {
            changes: vec![
                Change {
                    revision: 9,
                    key: "a".into(),
                    value: Some("1".into()),
                },
                Change {
                    revision: 10,
                    key: "bb".into(),
                    value: None,
                },
            ],
            revision: 10,
            compacted: false,
        };
        assert_eq!(
            watch_batch(Output::Table, &batch).unwrap(),
            "9   a   1\n10  bb  (deleted)\n"
        );
        let json = watch_batch(Output::Json, &batch).unwrap();
        assert_eq!(json.lines().count(), 1);
        let back: Watch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, batch);
        assert_eq!(
            watch_batch(Output::Yaml, &batch).unwrap(),
            "\
---
changes:
  - key: a
    revision: 9
    value: \"1\"
  - key: bb
    revision: 10
    value: null
compacted: false
revision: 10
"
        );
    }

    #[test]
    fn ages_and_dates() {
        assert_eq!(age(0), "0.0s");
        assert_eq!(age(420), "0.4s");
        assert_eq!(age(59_949), "59.9s");
        assert_eq!(age(60_000), "1m");
        assert_eq!(age(3_723_000), "1h2m");
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1000), "1970-01-01 00:00:01 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_709_251_199_999), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc(4_102_444_800_000), "2100-01-01 00:00:00 UTC");
    }

    #[test]
    fn only_passing_failures_are_retried() {
        assert!(passing(&ClientError::Unreachable("x".into())));
        let api = |status| ClientError::Api {
            status,
            message: "m".into(),
        };
        assert!(passing(&api(503)));
        assert!(!passing(&api(401)));
        assert!(!passing(&api(400)));
        assert!(!passing(&ClientError::Setup("s".into())));
    }

    // Where to connect.

    fn secret() -> shoal_config::Secret {
        SECRET.parse().unwrap()
    }

    fn server_key() -> String {
        Identity::derive(&secret()).server_key()
    }

    fn connection(args: &[&str]) -> Connection {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Test {
            #[command(flatten)]
            connection: Connection,
        }
        let args = std::iter::once("test").chain(args.iter().copied());
        Test::try_parse_from(args).unwrap().connection
    }

    fn client_text(endpoints: &str) -> String {
        format!(
            "cluster = \"lab\"\ntoken = \"t0ken\"\nserver_key = \"{}\"\nendpoints = {endpoints}\n",
            server_key()
        )
    }

    #[test]
    fn the_client_file_gives_token_key_and_endpoints() {
        let target =
            parse_client_file("c.toml", &client_text(r#"["10.0.0.1:7443", "n2:7443"]"#)).unwrap();
        assert_eq!(
            target,
            Target {
                endpoints: vec!["10.0.0.1:7443".into(), "n2:7443".into()],
                token: "t0ken".into(),
                server_key: Identity::derive(&secret()).public_key,
            }
        );
        assert!(!format!("{target:?}").contains("t0ken"));
        // Endpoints may be left out; cluster is for people.
        let text = format!("token = \"t\"\nserver_key = \"{}\"\n", server_key());
        assert_eq!(parse_client_file("c", &text).unwrap().endpoints.len(), 0);
    }

    #[test]
    fn a_bad_client_file_is_refused_with_the_reason() {
        let key = server_key();
        let cases = [
            (
                "token = \"t\"\n".to_string(),
                "c.toml: no server_key, the cluster's API key that shoalctl pins",
            ),
            (
                "token = \"t\"\nserver_key = \"rsa:00\"\n".to_string(),
                "c.toml: server_key: server key \"rsa:00\" does not start with ed25519:",
            ),
            (
                "token = \"t\"\nserver_key = \"ed25519:00ff\"\n".to_string(),
                "c.toml: server_key: server key \"ed25519:00ff\" is not 32 bytes",
            ),
            (
                "token = \"t\"\nserver_key = 5\n".to_string(),
                "c.toml: server_key must be a string",
            ),
            (format!("server_key = \"{key}\"\n"), "c.toml: no token"),
            (
                format!("token = \"\"\nserver_key = \"{key}\"\n"),
                "c.toml: no token",
            ),
            (
                format!("token = \"t\"\nserver_key = \"{key}\"\nendpoints = \"n1:7443\"\n"),
                "c.toml: endpoints must be a list of \"host:port\" strings",
            ),
            (
                format!("token = \"t\"\nserver_key = \"{key}\"\nendpoint = []\n"),
                "c.toml: unknown key `endpoint`",
            ),
            (
                "token = \n".to_string(),
                "c.toml: TOML parse error at line 1",
            ),
        ];
        for (text, start) in cases {
            let e = parse_client_file("c.toml", &text).unwrap_err().to_string();
            assert!(e.starts_with(start), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_machine_configuration_gives_the_derived_credential_and_key() {
        let text = format!("[cluster]\nname = \"lab\"\nsecret = \"{SECRET}\"\n");
        let target = parse_machine_config("machine.toml", &text).unwrap();
        assert_eq!(target.token, admin_credential(&secret()));
        assert_eq!(target.server_key, Identity::derive(&secret()).public_key);
        assert!(target.endpoints.is_empty());

        let e = parse_machine_config("machine.toml", "[cluster]\nname = \"lab\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("machine.toml holds no cluster secret ([cluster] secret)"),
            "{e}"
        );
        let e = parse_machine_config("machine.toml", "[cluster]\nvoters = 4\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("not a valid machine configuration:\n  machine.toml: cluster.voters: "),
            "{e}"
        );
    }

    #[test]
    fn endpoints_come_from_the_flags_first_and_must_be_there() {
        let dir = tempfile::tempdir().unwrap();
        let client = dir.path().join("shoalctl.toml");
        std::fs::write(&client, client_text(r#"["n1:7443"]"#)).unwrap();
        let machine = dir.path().join("machine.toml");
        std::fs::write(&machine, format!("[cluster]\nsecret = \"{SECRET}\"\n")).unwrap();
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, client_text("[]")).unwrap();
        let env = Environment::default();
        let path = |p: &Path| p.to_str().unwrap().to_string();

        let c = connection(&["--config", &path(&client)]);
        assert_eq!(resolve(&c, &env).unwrap().endpoints, ["n1:7443"]);
        let c = connection(&[
            "--config",
            &path(&client),
            "--endpoint",
            "a:1",
            "--endpoint",
            "[::1]:7443",
        ]);
        assert_eq!(resolve(&c, &env).unwrap().endpoints, ["a:1", "[::1]:7443"]);

        let c = connection(&["--config", &path(&empty)]);
        let e = resolve(&c, &env).unwrap_err().to_string();
        assert!(
            e.starts_with("no endpoints: list the nodes' cluster API addresses"),
            "{e}"
        );
        assert!(e.contains(&path(&empty)), "{e}");

        let c = connection(&["--machine-config", &path(&machine)]);
        let e = resolve(&c, &env).unwrap_err().to_string();
        assert!(e.starts_with("no endpoints: "), "{e}");
        assert!(e.contains("--endpoint HOST:PORT"), "{e}");
        let c = connection(&["--machine-config", &path(&machine), "--endpoint", "n1:7443"]);
        let target = resolve(&c, &env).unwrap();
        assert_eq!(target.token, admin_credential(&secret()));

        for bad in ["n1", "n1:", ":7443", "n1:http", "n1:0", "n1:70000"] {
            let c = connection(&["--config", &path(&client), "--endpoint", bad]);
            let e = resolve(&c, &env).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("endpoint {bad:?} is not HOST:PORT")),
                "{e}"
            );
        }

        // $SHOALCTL_CONFIG when --config is not given; a file that is not there is named.
        let env = Environment {
            shoalctl_config: Some(client.clone()),
            home: None,
        };
        assert_eq!(
            resolve(&connection(&[]), &env).unwrap().endpoints,
            ["n1:7443"]
        );
        let c = connection(&["--config", &path(&dir.path().join("gone.toml"))]);
        let e = format!("{:#}", resolve(&c, &env).unwrap_err());
        assert!(e.starts_with("cannot read "), "{e}");
        assert!(e.contains("gone.toml"), "{e}");
    }

    #[test]
    fn config_and_machine_config_exclude_each_other() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Test {
            #[command(flatten)]
            connection: Connection,
        }
        let e = Test::try_parse_from(["t", "--config", "a", "--machine-config", "b"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let c = connection(&[]);
        assert_eq!((c.timeout, c.endpoints.len()), (10, 0));
        assert!(matches!(c.output, Output::Table));
        assert!(matches!(connection(&["-o", "yaml"]).output, Output::Yaml));
    }

    #[test]
    fn the_client_file_is_looked_for_in_order() {
        let home = Some(PathBuf::from("/home/op"));
        let env = Environment {
            shoalctl_config: None,
            home: home.clone(),
        };
        let in_home = PathBuf::from("/home/op/.config/shoal/shoalctl.toml");
        let everywhere = |_: &Path| true;
        let nowhere = |_: &Path| false;
        let only_home = |p: &Path| p == in_home;

        let explicit = Path::new("/etc/x.toml");
        assert_eq!(
            client_file(Some(explicit), &env, nowhere).unwrap(),
            explicit
        );
        assert_eq!(
            client_file(None, &env, everywhere).unwrap(),
            Path::new("shoalctl.toml")
        );
        assert_eq!(client_file(None, &env, only_home).unwrap(), in_home);
        let e = client_file(None, &env, nowhere).unwrap_err().to_string();
        assert!(e.starts_with("no client file: "), "{e}");
        assert!(e.contains("--config FILE") && e.contains("--machine-config FILE"));

        let env = Environment {
            shoalctl_config: Some(PathBuf::from("/env/c.toml")),
            home,
        };
        assert_eq!(
            client_file(None, &env, everywhere).unwrap(),
            Path::new("/env/c.toml")
        );
        assert_eq!(
            client_file(Some(explicit), &env, everywhere).unwrap(),
            explicit
        );
    }

    #[test]
    fn a_generated_client_file_connects_as_the_machine_configuration_does() {
        let text = crate::generate::client_toml("lab", "t0ken", &server_key());
        let from_client = parse_client_file("shoalctl.toml", &text).unwrap();
        let machine = format!("[cluster]\nsecret = \"{SECRET}\"\n");
        let from_machine = parse_machine_config("machine.toml", &machine).unwrap();
        assert_eq!(from_client.server_key, from_machine.server_key);
        assert_eq!(from_client.token, "t0ken");
        assert!(from_client.endpoints.is_empty());
    }
}
