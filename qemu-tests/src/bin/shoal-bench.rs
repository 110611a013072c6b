//! `shoal-bench`: boot-time benchmark. Boots 1 VM, then 3 VMs started together, R times each,
//! on a network with a DHCP server and a configuration URL (a cluster secret, the expected size
//! set to the number of VMs), and prints per node the median host seconds from QEMU's start to
//! every boot event up to `cluster.member` (the node is in the cluster and a leader is known),
//! next to the floor: the same kernel with a trivial `/init` that only says it was reached. One
//! row is a duration rather than a moment: netd's start to its first lease.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use shoal_qemu_tests::events::Event;
use shoal_qemu_tests::floor::{FLOOR_LINE, build_floor_initramfs};
use shoal_qemu_tests::stats::{event_label, median};
use shoal_qemu_tests::{Accel, Image, Network, NicModel, Vm, init_logging, require_root, scaled};

#[derive(Debug, Parser)]
#[command(about = "Measure Shoal's boot time in QEMU against the kernel-only floor")]
struct Args {
    /// Repetitions of each scenario.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Image directory (default: SHOAL_IMAGE_DIR, else out/test, built if missing).
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Memory per VM in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// How many VMs the concurrent scenario starts together.
    #[arg(long, default_value_t = 3)]
    concurrent: usize,
    /// Write every image VM's console, each line stamped with seconds since QEMU's start, to
    /// DIR/<scenario>-run<R>-<node>.log: where the time between two events went.
    #[arg(long, value_name = "DIR")]
    consoles: Option<PathBuf>,
    /// More kernel command-line words for the image's VMs (e.g. `shoal.log=debug` with
    /// `--consoles`, to see where the time goes; it slows the boot down).
    #[arg(long, value_name = "WORDS")]
    cmdline: Option<String>,
}

/// Which initramfs a scenario boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Floor,
}

/// One VM's timings in one run: label -> host seconds since QEMU started.
type Timings = BTreeMap<String, f64>;

/// Not a moment but a duration: netd's start to its first lease applied, in seconds.
const NETD_LEASE_LABEL: &str = "(duration) netd start -> first lease";
/// Not a moment but a duration: the boot's hardware inventory collection, in seconds.
const INVENTORY_LABEL: &str = "(duration) hardware inventory collected";
/// Not a moment but a size: the boot's hardware inventory as JSON, in KiB.
const INVENTORY_SIZE_LABEL: &str = "(KiB) hardware inventory as JSON";

/// The bench cluster's secret (a test value, never a real cluster's).
const BENCH_SECRET: &str = "YmVuY2ggY2x1c3RlciBzZWNyZXQsIG5vdCBmb3IgdXNlIQ==";

/// The label of the floor's only milestone.
const FLOOR_LABEL: &str = "floor (/init reached)";

#[derive(Debug, Serialize)]
struct Report {
    runs: usize,
    accel: String,
    image: String,
    kernel: String,
    /// Artefact sizes in bytes, from manifest.json.
    sizes: BTreeMap<String, u64>,
    /// Event labels in boot order.
    events: Vec<String>,
    /// Scenario ("1 VM", "3 VMs") -> node -> label -> median seconds.
    image_medians: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>,
    /// Scenario -> node -> median seconds to the floor's `/init`.
    floor_medians: BTreeMap<String, BTreeMap<String, f64>>,
    /// Every run's raw timings: scenario -> run -> node -> label -> seconds.
    raw: BTreeMap<String, Vec<Vec<Timings>>>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs > 0 && args.concurrent > 0,
        "--runs and --concurrent must be at least 1"
    );
    require_root()?;
    let image = match &args.image_dir {
        Some(dir) => Image::open(dir)?,
        None => Image::locate()?,
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    eprintln!("building the floor initramfs (shoal-floor-init)");
    let floor = build_floor_initramfs(scratch.path())?;
    // DHCP for the nodes, and their configuration over HTTP: one file per cluster size.
    let mut network = Network::new()?;
    network.start_dnsmasq(network.dhcp_config())?;
    let www = scratch.path().join("www");
    std::fs::create_dir_all(&www).context("creating the web root")?;
    for size in [1, args.concurrent] {
        std::fs::write(
            www.join(format!("cluster-{size}.toml")),
            format!(
                "[cluster]\nname = \"bench\"\nsecret = \"{BENCH_SECRET}\"\nexpected_size = {size}\n"
            ),
        )
        .context("writing the bench configuration")?;
    }
    network.serve_http(&www)?;
    let bench = Bench {
        args,
        image: &image,
        floor,
        network,
    };

    let mut raw: BTreeMap<String, Vec<Vec<Timings>>> = BTreeMap::new();
    let scenarios = [
        (1, "1 VM".to_string()),
        (args.concurrent, format!("{} VMs", args.concurrent)),
    ];
    for (count, scenario) in &scenarios {
        // Image and floor runs alternate, so slow phases of a noisy host hit both alike.
        for r in 0..args.runs {
            for kind in [Kind::Image, Kind::Floor] {
                let key = scenario_key(kind, scenario);
                eprintln!("{key}: run {}/{}", r + 1, args.runs);
                let timings = bench
                    .run_once(kind, *count, &format!("{count}vm-run{}", r + 1))
                    .with_context(|| format!("{key}, run {}", r + 1))?;
                raw.entry(key).or_default().push(timings);
            }
        }
    }

    let events = event_order(
        raw.get(&scenario_key(Kind::Image, &scenarios[0].1))
            .map(Vec::as_slice)
            .unwrap_or(&[]),
    );
    let mut image_medians = BTreeMap::new();
    let mut floor_medians = BTreeMap::new();
    for (_, scenario) in &scenarios {
        if let Some(runs) = raw.get(&scenario_key(Kind::Image, scenario)) {
            image_medians.insert(scenario.clone(), medians_per_node(runs));
        }
        if let Some(runs) = raw.get(&scenario_key(Kind::Floor, scenario)) {
            let per_node = medians_per_node(runs)
                .into_iter()
                .filter_map(|(node, labels)| labels.get(FLOOR_LABEL).map(|s| (node, *s)))
                .collect();
            floor_medians.insert(scenario.clone(), per_node);
        }
    }
    let report = Report {
        runs: args.runs,
        accel: format!("{:?}", Accel::detect()).to_lowercase(),
        image: image.dir().display().to_string(),
        kernel: image.manifest().kernel.release.clone(),
        sizes: image
            .manifest()
            .artefacts
            .iter()
            .map(|a| (a.name.clone(), a.size))
            .collect(),
        events,
        image_medians,
        floor_medians,
        raw,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            render(
                &report,
                &scenarios.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()
            )
        );
    }
    Ok(())
}

fn scenario_key(kind: Kind, scenario: &str) -> String {
    match kind {
        Kind::Image => format!("image, {scenario}"),
        Kind::Floor => format!("floor, {scenario}"),
    }
}

struct Bench<'a> {
    args: &'a Args,
    image: &'a Image,
    floor: PathBuf,
    network: Network,
}

impl Bench<'_> {
    /// Starts `count` VMs together and returns each one's timings.
    /// `run` names the run in console file names.
    fn run_once(&self, kind: Kind, count: usize, run: &str) -> anyhow::Result<Vec<Timings>> {
        let timeout = scaled(Duration::from_secs(60 + 30 * count as u64));
        let mut vms = Vec::new();
        for i in 0..count {
            let mut builder = Vm::builder(&format!("bench{i}"))
                .image(self.image)
                .memory_mb(self.args.memory)
                .nic(&self.network, NicModel::VirtioNet);
            if kind == Kind::Floor {
                builder = builder.initrd(&self.floor);
            } else {
                builder = builder.cmdline(format!(
                    "shoal.config=http://10.77.0.1/cluster-{count}.toml {}",
                    self.args.cmdline.as_deref().unwrap_or_default()
                ));
            }
            vms.push(builder.start()?);
        }
        let mut all = Vec::new();
        for vm in &vms {
            let mut timings = Timings::new();
            match kind {
                Kind::Image => {
                    vm.wait_for_event("boot.complete", timeout)?;
                    vm.wait_for_event("network.online", timeout)?;
                    vm.wait_for_event("cluster.member", timeout)?;
                    // A profile without the collector has no inventory to wait for.
                    let _ = vm.wait_for_event("hardware.inventory", scaled(Duration::from_secs(5)));
                    for event in vm.events() {
                        timings
                            .entry(event_label(&event.record.event))
                            .or_insert(event.at.as_secs_f64());
                        // netd's own clock: from its start to the first lease applied.
                        match &event.record.event {
                            Event::DhcpBound { ms, .. } => {
                                timings
                                    .entry(NETD_LEASE_LABEL.to_string())
                                    .or_insert(ms / 1000.0);
                            }
                            Event::HardwareInventory {
                                reason, ms, bytes, ..
                            } if reason == "boot" => {
                                timings.insert(INVENTORY_LABEL.to_string(), ms / 1000.0);
                                timings.insert(
                                    INVENTORY_SIZE_LABEL.to_string(),
                                    *bytes as f64 / 1024.0,
                                );
                            }
                            _ => {}
                        }
                    }
                }
                Kind::Floor => {
                    let line = vm.wait_for_text(FLOOR_LINE, timeout)?;
                    timings.insert(FLOOR_LABEL.to_string(), line.at.as_secs_f64());
                }
            }
            all.push(timings);
        }
        for vm in &vms {
            vm.kill();
        }
        if let (Kind::Image, Some(dir)) = (kind, &self.args.consoles) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for vm in &vms {
                let path = dir.join(format!("{run}-{}.log", vm.name()));
                let text: String = vm
                    .lines()
                    .iter()
                    .map(|line| format!("{:8.3} {}\n", line.at.as_secs_f64(), line.text))
                    .collect();
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Ok(all)
    }
}

/// Labels in the order they first appear (by median time across runs of node 0).
fn event_order(runs: &[Vec<Timings>]) -> Vec<String> {
    let Some(first) = runs.iter().find_map(|r| r.first()) else {
        return Vec::new();
    };
    let medians = medians_per_node(runs);
    let node0 = medians.get("node0").cloned().unwrap_or_default();
    let mut labels: Vec<String> = first.keys().cloned().collect();
    for run in runs {
        for node in run {
            for label in node.keys() {
                if !labels.contains(label) {
                    labels.push(label.clone());
                }
            }
        }
    }
    labels.sort_by(|a, b| {
        let (ta, tb) = (
            node0.get(a).copied().unwrap_or(f64::MAX),
            node0.get(b).copied().unwrap_or(f64::MAX),
        );
        // Durations and sizes (labels in parentheses) go last; moments in boot order.
        a.starts_with('(')
            .cmp(&b.starts_with('('))
            .then(ta.total_cmp(&tb))
    });
    labels
}

/// node -> label -> median over runs.
fn medians_per_node(runs: &[Vec<Timings>]) -> BTreeMap<String, BTreeMap<String, f64>> {
    let nodes = runs.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = BTreeMap::new();
    for n in 0..nodes {
        let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for run in runs {
            if let Some(timings) = run.get(n) {
                for (label, secs) in timings {
                    samples.entry(label.clone()).or_default().push(*secs);
                }
            }
        }
        let medians = samples
            .into_iter()
            .filter_map(|(label, s)| median(&s).map(|m| (label, m)))
            .collect();
        out.insert(format!("node{n}"), medians);
    }
    out
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The human-readable report: one row per event, one column per scenario and node.
fn render(report: &Report, scenarios: &[String]) -> String {
    let mut columns: Vec<(String, String)> = Vec::new(); // (scenario, node)
    for scenario in scenarios {
        let nodes = report
            .image_medians
            .get(scenario)
            .map(|m| m.keys().cloned().collect::<Vec<_>>());
        for node in nodes.unwrap_or_default() {
            columns.push((scenario.clone(), node));
        }
    }
    let header_of = |(scenario, node): &(String, String)| {
        if scenario == "1 VM" {
            "1 VM".to_string()
        } else {
            format!("{scenario}: {node}")
        }
    };
    let label_width = report
        .events
        .iter()
        .map(String::len)
        .chain([FLOOR_LABEL.len(), 5])
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = columns.iter().map(|c| header_of(c).len().max(6)).collect();
    let row = |label: &str, cells: Vec<String>| {
        let mut line = format!("{label:<label_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            line.push_str(&format!("  {cell:>width$}"));
        }
        line.push('\n');
        line
    };
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |s| format!("{s:.2}"));

    let mut out = format!(
        "Shoal boot benchmark: {} run(s) per scenario, accel {}, kernel {}\nimage {}\n\
         seconds from QEMU start, median of the runs\n\n",
        report.runs, report.accel, report.kernel, report.image
    );
    out.push_str(&row("event", columns.iter().map(header_of).collect()));
    out.push_str(&row(
        &"-".repeat(label_width),
        widths.iter().map(|w| "-".repeat(*w)).collect(),
    ));
    for label in &report.events {
        let cells = columns
            .iter()
            .map(|(scenario, node)| {
                secs(
                    report
                        .image_medians
                        .get(scenario)
                        .and_then(|m| m.get(node))
                        .and_then(|m| m.get(label))
                        .copied(),
                )
            })
            .collect();
        out.push_str(&row(label, cells));
    }
    let floor_cells = columns
        .iter()
        .map(|(scenario, node)| {
            secs(
                report
                    .floor_medians
                    .get(scenario)
                    .and_then(|m| m.get(node))
                    .copied(),
            )
        })
        .collect();
    out.push_str(&row(FLOOR_LABEL, floor_cells));
    let over_floor = |label: &str| {
        columns
            .iter()
            .map(|(scenario, node)| {
                let at = report
                    .image_medians
                    .get(scenario)
                    .and_then(|m| m.get(node))
                    .and_then(|m| m.get(label));
                let floor = report.floor_medians.get(scenario).and_then(|m| m.get(node));
                match (at, floor) {
                    (Some(c), Some(f)) => format!("{:+.2}", c - f),
                    _ => "-".into(),
                }
            })
            .collect()
    };
    out.push_str(&row("boot.complete - floor", over_floor("boot.complete")));
    out.push_str(&row("network.online - floor", over_floor("network.online")));
    out.push_str(&row("cluster.member - floor", over_floor("cluster.member")));
    out.push_str("\nimage sizes (manifest.json):\n");
    let name_width = report.sizes.keys().map(String::len).max().unwrap_or(0);
    for (name, size) in &report.sizes {
        out.push_str(&format!(
            "  {name:<name_width$}  {:>10}  ({size} bytes)\n",
            megabytes(*size)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(pairs: &[(&str, f64)]) -> Timings {
        pairs.iter().map(|(l, s)| (l.to_string(), *s)).collect()
    }

    #[test]
    fn medians_are_per_node_and_label() {
        let runs = vec![
            vec![timings(&[("a", 1.0), ("b", 2.0)]), timings(&[("a", 5.0)])],
            vec![timings(&[("a", 3.0), ("b", 4.0)]), timings(&[("a", 7.0)])],
            vec![timings(&[("a", 2.0), ("b", 9.0)]), timings(&[("a", 6.0)])],
        ];
        let m = medians_per_node(&runs);
        assert_eq!(m["node0"]["a"], 2.0);
        assert_eq!(m["node0"]["b"], 4.0);
        assert_eq!(m["node1"]["a"], 6.0);
        assert_eq!(event_order(&runs), vec!["a".to_string(), "b".to_string()]);
    }
}
