//! `shoalctl`: the operator's command line. For now it speaks to the local supervisor (run on
//! the node, as root or an admin); cluster commands come with clusterd.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use shoal_api::supervisor::{Client, SOCKET, ServiceInfo};

#[derive(Debug, Parser)]
#[command(name = "shoalctl", version, about = "Control a Shoal node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Services under the node's supervisor.
    #[command(subcommand)]
    Service(ServiceCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
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
        eprintln!("shoalctl: {e:#}");
        std::process::exit(1);
    }
}

async fn connect(socket: &std::path::Path) -> Result<Client> {
    Client::connect(socket).await.with_context(|| {
        format!(
            "cannot reach the supervisor at {} (run on the node as root or an admin)",
            socket.display()
        )
    })
}

async fn run(cli: Cli) -> Result<()> {
    let Command::Service(command) = cli.command;
    match command {
        ServiceCommand::List { output, socket } => {
            let services = connect(&socket).await?.list().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&json(&services))?),
                Output::Table => print!("{}", table(&services)),
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
    let mut rows = vec![
        [
            "NAME", "STATE", "PID", "RESTARTS", "UPTIME", "MEMORY", "CPU", "REASON",
        ]
        .map(String::from),
    ];
    for s in services {
        rows.push([
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
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
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
