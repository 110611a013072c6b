//! `shoalctl`: the operator's command line. It speaks to the cluster over the cluster API that
//! every node serves (`status`, `nodes`, `node`, `members`, `kv`, `watch`: HTTPS with the
//! cluster's key pinned, credentials from shoalctl.toml or a machine configuration's cluster
//! secret), to the node's own daemons over their local APIs (`service`: the supervisor, as root
//! or an admin; `network`: netd, anyone may read, root or an admin may reload), and writes and
//! checks machine configurations (`config`, `gen`). Every command that prints data takes
//! `-o table|json|yaml`.

mod cluster;
mod config;
mod generate;
mod inventory;
mod network;
mod table;
mod upload;
mod yaml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use shoal_api::supervisor::{ApiError, Client, SOCKET, ServiceInfo};

#[derive(Debug, Parser)]
#[command(
    name = "shoalctl",
    version,
    about = "Control a Shoal cluster and its nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Cluster(cluster::ClusterCommand),
    /// Services under the node's supervisor.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// The node's network as netd sees it: links, addresses, routes, leases, DNS.
    Network(network::NetworkArgs),
    /// Machine configurations: check one, print the JSON Schema, push one to a node in
    /// maintenance.
    Config(config::ConfigArgs),
    /// Make files for a new cluster.
    Gen(generate::GenArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

/// Prints `value` for scripts: as YAML when asked, else as pretty JSON.
pub(crate) fn print_data<T: Serialize + ?Sized>(output: Output, value: &T) -> Result<()> {
    match output {
        Output::Yaml => print!("{}", yaml::to_string(&serde_json::to_value(value)?)),
        Output::Table | Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// Prints `value` as `table` renders it, or as JSON or YAML.
pub(crate) fn show<T: Serialize + ?Sized>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<()> {
    match output {
        Output::Table => {
            print!("{}", table(value));
            Ok(())
        }
        Output::Json | Output::Yaml => print_data(output, value),
    }
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Every service with its state, main pid, restarts, uptime and resource use.
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[arg(long, default_value = SOCKET)]
        socket: PathBuf,
    },
    /// Start a service (and what it requires).
    Start {
        name: String,
        #[arg(long, default_value = SOCKET)]
        socket: PathBuf,
    },
    /// Stop a service; what requires it stops too.
    Stop {
        name: String,
        #[arg(long, default_value = SOCKET)]
        socket: PathBuf,
    },
    /// Stop and start a service at once.
    Restart {
        name: String,
        #[arg(long, default_value = SOCKET)]
        socket: PathBuf,
    },
    /// A service's captured output.
    Logs {
        name: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines (before following).
        #[arg(long, short = 'n', default_value_t = 200)]
        lines: u32,
        #[arg(long, default_value = SOCKET)]
        socket: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        if !e.is::<Reported>() {
            eprintln!("shoalctl: {e:#}");
        }
        std::process::exit(1);
    }
}

/// A failure whose messages are printed already: exit 1 without another line.
#[derive(Debug)]
pub(crate) struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the errors above")
    }
}

impl std::error::Error for Reported {}

async fn connect(socket: &Path) -> Result<Client> {
    Client::connect(socket).await.map_err(|e| {
        cannot_reach(
            e,
            format!(
                "cannot reach the supervisor at {} (run on the node as root or an admin)",
                socket.display()
            ),
        )
    })
}

/// A failed connection under `context`, which names the socket already: an I/O error is told
/// without its path again.
pub(crate) fn cannot_reach(e: ApiError, context: String) -> anyhow::Error {
    match e {
        ApiError::Socket { source, .. } => anyhow::Error::new(source).context(context),
        other => anyhow::Error::new(other).context(context),
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Cluster(command) => cluster::run(command).await,
        Command::Service(command) => service(command).await,
        Command::Network(args) => network::run(args).await,
        Command::Config(args) => config::run(args).await,
        Command::Gen(args) => generate::run(args),
    }
}

async fn service(command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::List { output, socket } => {
            let services = connect(&socket).await?.list().await?;
            match output {
                Output::Table => print!("{}", table(&services)),
                _ => print_data(output, &json(&services))?,
            }
        }
        ServiceCommand::Start { name, socket } => connect(&socket).await?.start(&name).await?,
        ServiceCommand::Stop { name, socket } => connect(&socket).await?.stop(&name).await?,
        ServiceCommand::Restart { name, socket } => connect(&socket).await?.restart(&name).await?,
        ServiceCommand::Logs {
            name,
            follow,
            lines,
            socket,
        } => {
            let client = connect(&socket).await?;
            // Find where the log ends, then print the last `lines` of it.
            let end = client.logs(&name, u64::MAX, 0).await?.next_seq;
            let mut since = end.saturating_sub(u64::from(lines));
            loop {
                let chunk = client.logs(&name, since, 500).await?;
                if chunk.dropped > 0 {
                    println!(
                        "-- {} lines dropped (the log ring overflowed) --",
                        chunk.dropped
                    );
                }
                for line in &chunk.lines {
                    println!("{:>12.6} {:<6} {}", line.time_s, line.stream, line.text);
                }
                since = chunk.next_seq;
                if chunk.lines.is_empty() {
                    if !follow {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
    Ok(())
}

fn json(services: &[ServiceInfo]) -> serde_json::Value {
    services
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name, "state": s.state, "reason": s.reason, "pid": s.pid,
                "restarts": s.restarts, "uptime_s": s.uptime_s, "memory_bytes": s.memory_bytes,
                "cpu_usec": s.cpu_usec, "status": s.status,
            })
        })
        .collect()
}

fn table(services: &[ServiceInfo]) -> String {
    let mut rows = vec![Vec::from(
        [
            "NAME", "STATE", "PID", "RESTARTS", "UPTIME", "MEMORY", "CPU", "REASON",
        ]
        .map(String::from),
    )];
    for s in services {
        rows.push(vec![
            s.name.clone(),
            s.state.clone(),
            if s.pid > 0 {
                s.pid.to_string()
            } else {
                "-".into()
            },
            s.restarts.to_string(),
            if s.pid > 0 {
                format!("{:.0}s", s.uptime_s)
            } else {
                "-".into()
            },
            format!("{:.1}M", s.memory_bytes as f64 / (1 << 20) as f64),
            format!("{:.2}s", s.cpu_usec as f64 / 1e6),
            s.reason.clone(),
        ]);
    }
    table::render(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up() {
        let s = ServiceInfo {
            name: "netd".into(),
            state: "ready".into(),
            reason: "reported ready".into(),
            pid: 120,
            restarts: 0,
            uptime_s: 12.4,
            memory_bytes: 3 << 20,
            cpu_usec: 250_000,
            status: String::new(),
        };
        let failed = ServiceInfo {
            name: "crashy".into(),
            state: "failed".into(),
            pid: 0,
            ..s.clone()
        };
        let out = table(&[s, failed]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "NAME    STATE   PID  RESTARTS  UPTIME  MEMORY  CPU    REASON"
        );
        assert_eq!(
            lines[1],
            "netd    ready   120  0         12s     3.0M    0.25s  reported ready"
        );
        assert_eq!(
            lines[2],
            "crashy  failed  -    0         -       3.0M    0.25s  reported ready"
        );
    }
}
