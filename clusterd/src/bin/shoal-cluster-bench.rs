//! `shoal-cluster-bench`: starts three shoal-clusterd processes on loopback, each keeping its
//! log on disk (fdatasync per write, in a temporary directory), and measures what issue 6 asks
//! for besides boot time: key-value write latency (sequential) and throughput (concurrent
//! clients), linearizable read latency, and the time from killing the leader to the next
//! acknowledged write. Prints a table; `--json` for machines.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use shoal_boot_events::{Event, parse_line};
use shoal_cluster_api::client::Client;
use shoal_cluster_api::identity::{Identity, admin_credential};
use shoal_config::secret::Secret;

const SECRET: &str = "YmVuY2ggY2x1c3RlciBzZWNyZXQsIG5vdCBmb3IgdXNlIQ==";

struct Node {
    child: Child,
    events: Receiver<Event>,
    api: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", addr.port())).is_ok() {
            return addr.port();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-cluster-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("shoal-clusterd"))
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("shoal-clusterd is not next to this binary"))?;
    let dir = tempfile::tempdir()?;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let seeds: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let config = dir.path().join("machine.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[cluster]\nname = \"bench\"\nsecret = \"{SECRET}\"\nexpected_size = 3\nseeds = [{}]\n",
            seeds.join(", ")
        ),
    )?;
    let started = Instant::now();
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let api = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(&bin)
            .arg("--data-dir")
            .arg(dir.path().join(format!("data{i}")))
            .arg("--config")
            .arg(&config)
            .args(["--listen", &addr, "--advertise", &addr])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .arg("--local-socket")
            .arg(dir.path().join(format!("clusterd{i}.sock")))
            .env("SHOAL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(r) = parse_line(&line)
                    && tx.send(r.event).is_err()
                {
                    break;
                }
            }
        });
        nodes.push(Node {
            child,
            events: rx,
            api,
        });
    }
    let mut ids = Vec::new();
    let mut leader = 0;
    for node in &nodes {
        loop {
            match node.events.recv_timeout(Duration::from_secs(20))? {
                Event::ClusterMember {
                    node: id,
                    leader: l,
                    ..
                } => {
                    ids.push(id);
                    leader = l;
                    break;
                }
                _ => continue,
            }
        }
    }
    let formed = started.elapsed();
    let secret: Secret = SECRET.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = admin_credential(&secret);
    let key = Identity::derive(&secret).public_key;
    let client = |i: usize| {
        Client::new(
            vec![format!("127.0.0.1:{}", nodes[i].api)],
            token.clone(),
            key,
        )
        .map(|c| c.with_timeout(Duration::from_secs(10)))
    };
    let leader_index = ids.iter().position(|id| *id == leader).unwrap_or(0);
    let follower = (leader_index + 1) % 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // Sequential writes and reads, through the leader and through a follower.
    let measure = |through: usize, write: bool, n: usize| -> anyhow::Result<Vec<f64>> {
        let c = client(through)?;
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            if write {
                rt.block_on(c.put(&format!("seq{}", i % 50), "value"))?;
            } else {
                rt.block_on(c.get(&format!("seq{}", i % 50)))?;
            }
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        Ok(samples)
    };
    let writes_leader = measure(leader_index, true, 300)?;
    let writes_follower = measure(follower, true, 300)?;
    let reads_follower = measure(follower, false, 300)?;

    // Concurrent writers through the leader.
    let writers = 16usize;
    let per = 100usize;
    let c = client(leader_index)?;
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    c.put(&format!("w{w}/{i}"), "value").await?;
                }
                Ok::<_, shoal_cluster_api::client::ClientError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let throughput = (writers * per) as f64 / t.elapsed().as_secs_f64();

    // Failover: kill the leader, time the next acknowledged write through a survivor.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader_index).collect();
    let c = Client::new(
        survivors
            .iter()
            .map(|i| format!("127.0.0.1:{}", nodes[*i].api))
            .collect(),
        token.clone(),
        key,
    )?
    .with_timeout(Duration::from_secs(2));
    nodes[leader_index].child.kill()?;
    let cut = Instant::now();
    loop {
        if rt.block_on(c.put("after-failover", "x")).is_ok() {
            break;
        }
        anyhow::ensure!(
            cut.elapsed() < Duration::from_secs(30),
            "no write after the failover"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let failover = cut.elapsed();

    let rows = [
        (
            "formation (3 processes, from start)",
            format!("{:.2} s", formed.as_secs_f64()),
        ),
        (
            "write via leader, p50 / p99",
            format!(
                "{:.2} / {:.2} ms",
                percentile(&writes_leader, 0.5),
                percentile(&writes_leader, 0.99)
            ),
        ),
        (
            "write via follower, p50 / p99",
            format!(
                "{:.2} / {:.2} ms",
                percentile(&writes_follower, 0.5),
                percentile(&writes_follower, 0.99)
            ),
        ),
        (
            "linearizable read via follower, p50 / p99",
            format!(
                "{:.2} / {:.2} ms",
                percentile(&reads_follower, 0.5),
                percentile(&reads_follower, 0.99)
            ),
        ),
        (
            "write throughput, 16 concurrent clients",
            format!("{throughput:.0} writes/s"),
        ),
        (
            "leader killed -> next acknowledged write",
            format!("{:.2} s", failover.as_secs_f64()),
        ),
    ];
    if json {
        let map: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
            .collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        println!(
            "Shoal cluster benchmark: 3 shoal-clusterd processes on loopback, log on disk (fdatasync per write), TLS API"
        );
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            println!("{k:<width$}  {v}");
        }
    }
    Ok(())
}
