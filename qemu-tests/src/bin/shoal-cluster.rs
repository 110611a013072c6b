//! `shoal-cluster`: boots N nodes from the built image on one bridge in a fresh network
//! namespace, with a freshly generated machine configuration served over HTTP (a new cluster
//! secret, the expected size set to N), shows their boot events live until every node is a
//! cluster member, prints a table per node, and powers them off.
//!
//! Exit status 0 only when every node booted, joined the one cluster, and powered off cleanly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::{DhcpConfig, Image, Network, NicModel, Vm, init_logging, require_root};

#[derive(Debug, Parser)]
#[command(about = "Boot a cluster of Shoal nodes in QEMU (TCG) on a private bridge")]
struct Args {
    /// How many nodes to boot.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Image directory (default: SHOAL_IMAGE_DIR, else out/test, built if missing).
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// Keep the nodes running after boot until Ctrl-C, then power them off.
    #[arg(long)]
    keep_running: bool,
    /// Memory per node in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Seconds to wait for every node to boot and join the cluster.
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
    /// Seconds to wait for every node to power off.
    #[arg(long, default_value_t = 60)]
    poweroff_timeout: u64,
}

/// What is known about a node, gathered from its boot events. New facts (cluster membership,
/// network addresses) become new fields here and new entries in [`COLUMNS`].
#[derive(Debug, Default, Clone)]
struct NodeReport {
    name: String,
    mac: String,
    hostname: Option<String>,
    machine_id: Option<String>,
    /// Host seconds from QEMU's start to `boot.complete`.
    boot_complete_s: Option<f64>,
    /// The address its first DHCP lease gave.
    address: Option<String>,
    /// From `cluster.member`: the cluster, this node's id, the leader, whether it votes, and
    /// the host seconds from QEMU's start.
    cluster_id: Option<String>,
    node_id: Option<u64>,
    leader: Option<u64>,
    voter: bool,
    member_s: Option<f64>,
    /// Why the node did not boot (`boot.failed`, `panic`, QEMU exited, timeout).
    failure: Option<String>,
    /// How the power-off went (`clean`, or what went wrong).
    poweroff: Option<String>,
}

impl NodeReport {
    fn booted(&self) -> bool {
        self.boot_complete_s.is_some() && self.failure.is_none()
    }

    fn member(&self) -> bool {
        self.member_s.is_some() && self.failure.is_none()
    }

    /// Takes in one boot event.
    fn observe(&mut self, event: &Event, at: Duration) {
        match event {
            Event::Hostname { hostname, .. } => self.hostname = Some(hostname.clone()),
            Event::MachineId { id, .. } => self.machine_id = Some(id.clone()),
            Event::BootComplete => self.boot_complete_s = Some(at.as_secs_f64()),
            Event::DhcpBound { address, .. } if self.address.is_none() => {
                self.address = Some(address.clone());
            }
            Event::ClusterMember {
                cluster_id,
                node,
                leader,
                voter,
                ..
            } if self.member_s.is_none() => {
                self.cluster_id = Some(cluster_id.clone());
                self.node_id = Some(*node);
                self.leader = Some(*leader);
                self.voter = *voter;
                self.member_s = Some(at.as_secs_f64());
            }
            Event::ClusterLeader { leader, .. } => self.leader = Some(*leader),
            Event::BootFailed { reason, .. } => {
                self.failure = Some(format!("boot.failed: {reason}"))
            }
            Event::Panic { message, .. } => self.failure = Some(format!("panic: {message}")),
            _ => {}
        }
    }
}

/// One column of the summary table.
struct Column {
    header: &'static str,
    value: fn(&NodeReport) -> String,
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".into())
}

const COLUMNS: &[Column] = &[
    Column {
        header: "node",
        value: |n| n.name.clone(),
    },
    Column {
        header: "mac",
        value: |n| n.mac.clone(),
    },
    Column {
        header: "hostname",
        value: |n| or_dash(&n.hostname),
    },
    Column {
        header: "address",
        value: |n| or_dash(&n.address),
    },
    Column {
        header: "boot.complete (s)",
        value: |n| {
            n.boot_complete_s
                .map_or_else(|| "-".into(), |s| format!("{s:.2}"))
        },
    },
    Column {
        header: "member (s)",
        value: |n| n.member_s.map_or_else(|| "-".into(), |s| format!("{s:.2}")),
    },
    Column {
        header: "cluster",
        value: |n| or_dash(&n.cluster_id),
    },
    Column {
        header: "node id",
        value: |n| {
            n.node_id
                .map_or_else(|| "-".into(), |id| format!("{id:016x}"))
        },
    },
    Column {
        header: "role",
        value: |n| match (n.node_id, n.leader) {
            (Some(id), Some(leader)) if id == leader => "leader".into(),
            (Some(_), _) if n.voter => "voter".into(),
            (Some(_), _) => "non-voter".into(),
            _ => "-".into(),
        },
    },
    Column {
        header: "status",
        value: |n| match (&n.failure, &n.poweroff) {
            (Some(failure), _) => failure.clone(),
            (None, Some(poweroff)) if n.member() => format!("member, poweroff {poweroff}"),
            (None, Some(poweroff)) => format!("booted, poweroff {poweroff}"),
            (None, None) if n.member() => "member".into(),
            (None, None) if n.booted() => "booted".into(),
            (None, None) => "not booted".into(),
        },
    },
];

/// Renders rows as an aligned text table.
fn render_table(nodes: &[NodeReport]) -> String {
    let cells: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| COLUMNS.iter().map(|c| (c.value)(n)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|row| row[i].len())
                .chain([c.header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(COLUMNS.iter().map(|c| c.header).collect());
    out.push('\n');
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in &cells {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set [`INTERRUPTED`] instead of killing us, so the nodes get powered off.
fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a {signal} handler"))?;
    }
    Ok(())
}

struct Node {
    vm: Vm,
    report: NodeReport,
    seen_events: usize,
    done: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shoal-cluster: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    require_root()?;
    install_signal_handlers()?;
    let image = match &args.image_dir {
        Some(dir) => Image::open(dir)?,
        None => Image::locate()?,
    };
    let mut network = Network::new()?;
    let macs: Vec<String> = (0..args.nodes)
        .map(|i| format!("52:54:00:5a:00:{:02x}", i + 1))
        .collect();
    // A DHCP server with fixed leases for whatever on the nodes asks for an address.
    let fixed = macs
        .iter()
        .enumerate()
        .map(|(i, mac)| {
            (
                mac.clone(),
                std::net::Ipv4Addr::new(10, 77, 0, 10 + i as u8),
            )
        })
        .collect();
    network.start_dnsmasq(DhcpConfig {
        fixed,
        ..DhcpConfig::default()
    })?;
    // One configuration for every node, with a fresh cluster secret, as `shoalctl gen config`
    // would write it; the nodes fetch it from shoal.config=.
    let www = tempfile::tempdir().context("creating the web root")?;
    let secret = shoal_config::secret::Secret::generate().context("generating a cluster secret")?;
    std::fs::write(
        www.path().join("cluster.toml"),
        format!(
            "version = 1\n[cluster]\nname = \"demo\"\nsecret = \"{}\"\nexpected_size = {}\n",
            secret.to_base64(),
            args.nodes
        ),
    )
    .context("writing the cluster configuration")?;
    network.serve_http(www.path())?;
    let config_url = format!("http://{}/cluster.toml", network.host_addr());
    println!(
        "image {} (kernel {}), {} node(s), network namespace {} (bridge br0, {}/24)",
        image.dir().display(),
        image.manifest().kernel.release,
        args.nodes,
        network.name(),
        network.host_addr()
    );

    let mut nodes = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let name = format!("node{i}");
        let vm = Vm::builder(&name)
            .image(&image)
            .memory_mb(args.memory)
            .nic_with_mac(&network, NicModel::VirtioNet, mac.clone())
            .cmdline(format!("shoal.config={config_url}"))
            .start()
            .with_context(|| format!("starting {name}"))?;
        let report = NodeReport {
            name,
            mac: mac.clone(),
            ..NodeReport::default()
        };
        nodes.push(Node {
            vm,
            report,
            seen_events: 0,
            done: false,
        });
    }

    follow_boot(&mut nodes, Duration::from_secs(args.boot_timeout));
    let reports: Vec<NodeReport> = nodes.iter().map(|n| n.report.clone()).collect();
    println!("\n{}", render_table(&reports));
    let formed = formed_cluster(&reports);
    println!("\n{}", formed.as_ref().unwrap_or_else(|e| e));

    if args.keep_running && !INTERRUPTED.load(Ordering::SeqCst) {
        println!(
            "\nnodes running: consoles in {}; Ctrl-C powers them off",
            console_dirs(&nodes)
        );
        while !INTERRUPTED.load(Ordering::SeqCst) && nodes.iter().any(|n| n.vm.is_running()) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    power_off(&mut nodes, Duration::from_secs(args.poweroff_timeout));
    let reports: Vec<NodeReport> = nodes.iter().map(|n| n.report.clone()).collect();
    println!("\n{}", render_table(&reports));
    let all_good = formed.is_ok()
        && reports
            .iter()
            .all(|r| r.booted() && r.poweroff.as_deref() == Some("clean"));
    if !all_good {
        for node in &nodes {
            node.vm.mark_failed();
        }
    }
    Ok(all_good)
}

/// One sentence on the cluster: formed (one cluster id, one leader, every node a member), or
/// why not.
fn formed_cluster(reports: &[NodeReport]) -> Result<String, String> {
    let missing: Vec<&str> = reports
        .iter()
        .filter(|r| !r.member())
        .map(|r| r.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "cluster NOT formed: not members: {}",
            missing.join(", ")
        ));
    }
    let clusters: std::collections::BTreeSet<&str> = reports
        .iter()
        .filter_map(|r| r.cluster_id.as_deref())
        .collect();
    let leaders: std::collections::BTreeSet<u64> =
        reports.iter().filter_map(|r| r.leader).collect();
    if clusters.len() != 1 || leaders.len() != 1 {
        return Err(format!(
            "cluster NOT formed: clusters {clusters:?}, leaders {leaders:?}"
        ));
    }
    let leader = leaders.first().copied().unwrap_or_default();
    let leader_name = reports
        .iter()
        .find(|r| r.node_id == Some(leader))
        .map_or("?", |r| r.name.as_str());
    let last = reports
        .iter()
        .filter_map(|r| r.member_s)
        .fold(0.0f64, f64::max);
    Ok(format!(
        "cluster {} formed with no manual step: {} members, leader {leader_name}; every node a \
         member {last:.2} s after its QEMU started",
        clusters.first().copied().unwrap_or_default(),
        reports.len()
    ))
}

fn console_dirs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| n.vm.console_log().display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints every node's boot events as they arrive until all nodes are done booting (complete,
/// failed, exited), the timeout passes, or the user interrupts.
fn follow_boot(nodes: &mut [Node], timeout: Duration) {
    let start = Instant::now();
    let width = nodes.iter().map(|n| n.report.name.len()).max().unwrap_or(4);
    while nodes.iter().any(|n| !n.done) {
        for node in nodes.iter_mut().filter(|n| !n.done) {
            let events = node.vm.events();
            for event in &events[node.seen_events..] {
                node.report.observe(&event.record.event, event.at);
                println!(
                    "[{:>7.2}s] {:<width$}  {}",
                    event.at.as_secs_f64(),
                    node.report.name,
                    describe(&event.record.event)
                );
            }
            node.seen_events = events.len();
            if node.report.member_s.is_some() || node.report.failure.is_some() {
                node.done = true;
            } else if let Some(status) = node.vm.try_exit_status() {
                node.report.failure = Some(format!("QEMU exited ({status}) before joining"));
                node.done = true;
            }
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            println!("interrupted: powering off");
            break;
        }
        if start.elapsed() > timeout {
            for node in nodes.iter_mut().filter(|n| !n.done) {
                let missing = if node.report.booted() {
                    "cluster.member"
                } else {
                    "boot.complete"
                };
                node.report.failure = Some(format!("no {missing} after {} s", timeout.as_secs()));
                node.done = true;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The event's name and the fields worth a glance.
fn describe(event: &Event) -> String {
    let name = shoal_qemu_tests::stats::event_label(event);
    match event {
        Event::Coldplug {
            loaded, failed, ms, ..
        } => {
            format!(
                "{name}: {} driver(s) loaded, {} failed, {ms:.0} ms",
                loaded.len(),
                failed.len()
            )
        }
        Event::RootMounted { source, fstype, ms } => {
            format!("{name}: {source} ({fstype}) in {ms:.0} ms")
        }
        Event::MachineId { id, source } => format!("{name}: {id} (from {source})"),
        Event::Hostname { hostname, .. } => format!("{name}: {hostname}"),
        Event::Cmdline {
            unknown_keys,
            errors,
        } if !unknown_keys.is_empty() || !errors.is_empty() => {
            format!("{name}: unknown {unknown_keys:?}, errors {errors:?}")
        }
        Event::BootFailed { reason, .. } => format!("{name}: {reason}"),
        Event::DhcpBound { link, address, .. } => format!("{name}: {address} on {link}"),
        Event::Service {
            name: service, to, ..
        } => format!("{name}: {service} {to}"),
        Event::ConfigResolved { sources, ms, .. } => {
            format!("{name}: from {} in {ms:.0} ms", sources.join(", "))
        }
        Event::ClusterInitialize {
            cluster_id, voters, ..
        } => {
            format!(
                "{name}: cluster {cluster_id} with {} voter(s)",
                voters.len()
            )
        }
        Event::ClusterMember {
            cluster_id,
            node,
            leader,
            ..
        } => format!("{name}: node {node:016x} in cluster {cluster_id}, leader {leader:016x}"),
        Event::ClusterLeader { leader, term } => format!("{name}: {leader:016x} (term {term})"),
        Event::Panic { message, .. } => format!("{name}: {message}"),
        Event::ShutdownBegin { action, reason } => format!("{name}: {action:?} ({reason})"),
        _ => name,
    }
}

/// Presses every running node's power button, then waits for all of them to exit.
fn power_off(nodes: &mut [Node], timeout: Duration) {
    for node in nodes.iter_mut() {
        if !node.vm.is_running() {
            node.report.poweroff = Some("not running".into());
            continue;
        }
        if let Err(e) = node.vm.powerdown() {
            node.report.poweroff = Some(format!("power button failed: {e}"));
        }
    }
    println!("powering off {} node(s)", nodes.len());
    let deadline = Instant::now() + timeout;
    for node in nodes.iter_mut().filter(|n| n.report.poweroff.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        node.report.poweroff = Some(match node.vm.wait_exit(left) {
            Ok(status) if status.success() => {
                let final_seen = node
                    .vm
                    .events()
                    .iter()
                    .any(|e| e.name() == "shutdown.final");
                if final_seen {
                    "clean".into()
                } else {
                    "exited without shutdown.final".into()
                }
            }
            Ok(status) => format!("QEMU exited with {status}"),
            Err(_) => {
                node.vm.kill();
                format!("still running after {} s, killed", timeout.as_secs())
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, cluster: &str, node: u64, leader: u64) -> NodeReport {
        NodeReport {
            name: name.into(),
            boot_complete_s: Some(8.0),
            cluster_id: Some(cluster.into()),
            node_id: Some(node),
            leader: Some(leader),
            voter: true,
            member_s: Some(9.5 + node as f64 / 10.0),
            ..NodeReport::default()
        }
    }

    #[test]
    fn the_cluster_is_formed_only_with_one_id_one_leader_and_every_node() {
        let mut nodes = vec![member("node0", "ab", 1, 2), member("node1", "ab", 2, 2)];
        let formed = formed_cluster(&nodes).unwrap();
        assert!(formed.contains("cluster ab formed"), "{formed}");
        assert!(formed.contains("leader node1"), "{formed}");
        assert!(formed.contains("9.70 s"), "{formed}");
        nodes[1].cluster_id = Some("cd".into());
        assert!(formed_cluster(&nodes).unwrap_err().contains("clusters"));
        nodes[1] = member("node1", "ab", 2, 3);
        assert!(formed_cluster(&nodes).unwrap_err().contains("leaders"));
        nodes[1].member_s = None;
        assert_eq!(
            formed_cluster(&nodes).unwrap_err(),
            "cluster NOT formed: not members: node1"
        );
    }

    #[test]
    fn table_columns_line_up() {
        let mut a = NodeReport {
            name: "node0".into(),
            mac: "52:54:00:5a:00:01".into(),
            ..NodeReport::default()
        };
        a.observe(
            &Event::Hostname {
                hostname: "shoal-1234".into(),
                source: "machine-id".into(),
            },
            Duration::ZERO,
        );
        a.observe(&Event::BootComplete, Duration::from_millis(6500));
        let b = NodeReport {
            name: "node1".into(),
            failure: Some("panic: x".into()),
            ..NodeReport::default()
        };
        let table = render_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("node   mac"), "{table}");
        assert!(
            lines[2].contains("shoal-1234")
                && lines[2].contains("6.50")
                && lines[2].ends_with("booted"),
            "{table}"
        );
        assert!(lines[3].ends_with("panic: x"), "{table}");
        let status_at = lines[0].find("status").unwrap();
        assert_eq!(lines[2].find("booted"), Some(status_at));
    }
}
