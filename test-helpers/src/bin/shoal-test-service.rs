//! A service for the test image's supervisor definitions: one static program whose behaviour
//! the first argument selects, so each test service provokes one thing the supervisor must
//! handle.
//!
//! ```text
//! shoal-test-service crash CODE        exit at once with CODE
//! shoal-test-service notify-after MS   sleep MS, send READY=1 to $NOTIFY_SOCKET, then like sleep
//! shoal-test-service memhog MB         allocate and touch MB MiB, 1 MiB at a time, then hold
//!                                      (progress every 4 MiB)
//! shoal-test-service forkbomb          fork until fork fails, report how many worked, then hold
//! shoal-test-service caps              report its capability sets and ids, then like sleep
//! shoal-test-service ignore-term       ignore SIGTERM and sleep for ever
//! shoal-test-service sleep             sleep until SIGTERM, then exit 0
//! shoal-test-service rss               report the resident memory of PID 1, the supervisor,
//!                                      netd and all userspace processes (VmRSS), then exit 0
//! shoal-test-service netinfo           report /etc/resolv.conf, /run/shoal/ntp-servers, the
//!                                      IPv4 routes (/proc/net/route), every link's MTU and the
//!                                      hostname, then exit 0
//! shoal-test-service capture           only with `shoaltest.capture` on the kernel command
//!                                      line: mount the 9p share `capture` and write a hardware
//!                                      capture into it (`shoal-inventory capture`), report,
//!                                      exit 0; without it, exit 0 at once
//! ```
//!
//! Output goes to stdout (the supervisor echoes it on the console as `[name] line`); reports
//! the VM tests parse are one `SHOAL-TEST {"test":...}` line each. A wrong command line exits 2.

use std::fmt::Write as _;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pause};
use shoal_boot_events::TEST_PREFIX;

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;
/// The fork bomb stops here even when nothing limits it, so a broken pids.max cannot take the
/// test VM down with it; the report then says `"limited":false`.
const MAX_FORKS: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match args.as_slice() {
        ["crash", code] => match code.parse::<i32>() {
            Ok(code) => crash(code),
            Err(_) => usage(&format!("crash: {code:?} is not an exit code")),
        },
        ["notify-after", ms] => match ms.parse::<u64>() {
            Ok(ms) => notify_after(Duration::from_millis(ms)),
            Err(_) => usage(&format!(
                "notify-after: {ms:?} is not a number of milliseconds"
            )),
        },
        ["memhog", mb] => match mb.parse::<usize>() {
            Ok(mb) => memhog(mb),
            Err(_) => usage(&format!("memhog: {mb:?} is not a number of MiB")),
        },
        ["forkbomb"] => forkbomb(),
        ["caps"] => caps(),
        ["ignore-term"] => ignore_term(),
        ["sleep"] => sleep_until_term(),
        ["rss"] => rss("rss"),
        // The same a few seconds after clusterd started: an idle cluster member's footprint.
        ["rss-cluster"] => {
            std::thread::sleep(std::time::Duration::from_secs(4));
            rss("rss-cluster")
        }
        ["netinfo"] => netinfo(),
        ["capture"] => capture(),
        ["diskwrite"] => diskwrite(),
        _ => usage(&format!("unknown arguments {args:?}")),
    };
    std::process::exit(code);
}

fn usage(problem: &str) -> i32 {
    eprintln!("shoal-test-service: {problem}");
    eprintln!(
        "usage: shoal-test-service crash CODE | notify-after MS | memhog MB | forkbomb | caps | \
         ignore-term | sleep | rss | netinfo"
    );
    2
}

/// The footprint figure the issue asks for: VmRSS of PID 1, of the supervisor, and the sum over
/// every userspace process (kernel threads have none), ourselves excluded.
fn rss(test: &str) -> i32 {
    let me = std::process::id();
    let (mut pid1, mut supervisor, mut netd, mut clusterd, mut total, mut processes) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u32);
    let entries = std::fs::read_dir("/proc")
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default();
    for entry in entries {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
        };
        let Some(kib) =
            field("VmRSS:").and_then(|v| v.trim_end_matches(" kB").trim().parse::<u64>().ok())
        else {
            continue; // a kernel thread
        };
        processes += 1;
        total += kib;
        if pid == 1 {
            pid1 = kib;
        }
        match field("Name:") {
            Some("shoal-superviso") => supervisor = kib,
            Some("shoal-netd") => netd = kib,
            Some("shoal-clusterd") => clusterd = kib,
            _ => {}
        }
    }
    println!(
        "{TEST_PREFIX}{{\"test\":\"{test}\",\"pid1_kib\":{pid1},\"supervisor_kib\":{supervisor},\"netd_kib\":{netd},\"clusterd_kib\":{clusterd},\"total_kib\":{total},\"processes\":{processes}}}"
    );
    0
}

/// What netd left for the rest of the node, as a program on the node sees it.
/// When the kernel command line says `shoaltest.diskwrite=MIB`: writes that many MiB to a file
/// on STATE (`/var/lib/shoal`) in 1 MiB sequential writes, syncs, removes it, and reports the
/// time: the raw write speed an update's apply is compared with.
fn diskwrite() -> i32 {
    use std::io::Write;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(mib) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("shoaltest.diskwrite="))
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return 0;
    };
    let path = std::path::Path::new("/var/lib/shoal/diskwrite.tmp");
    let chunk = vec![0x5au8; 1 << 20];
    let started = std::time::Instant::now();
    let written = std::fs::File::create(path).and_then(|mut f| {
        for _ in 0..mib {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    });
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = std::fs::remove_file(path);
    match written {
        Ok(()) => {
            println!(
                "SHOAL-TEST {{\"test\":\"diskwrite\",\"mib\":{mib},\"ms\":{ms:.1},\"mib_s\":{:.2}}}",
                mib as f64 / (ms / 1000.0)
            );
            0
        }
        Err(e) => {
            println!(
                "SHOAL-TEST {{\"test\":\"diskwrite\",\"error\":{}}}",
                json_string(&e.to_string())
            );
            1
        }
    }
}

/// Writes a capture of this VM's hardware into the host directory QEMU shares as `capture`
/// (qemu-tests' fixture maker; see inventory/tests/fixtures).
fn capture() -> i32 {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !cmdline.split_whitespace().any(|w| w == "shoaltest.capture") {
        return 0;
    }
    let mount = || -> Result<(), String> {
        std::fs::create_dir_all("/run/capture").map_err(|e| format!("mkdir: {e}"))?;
        nix::mount::mount(
            Some("capture"),
            "/run/capture",
            Some("9p"),
            nix::mount::MsFlags::empty(),
            Some("trans=virtio,version=9p2000.L"),
        )
        .map_err(|e| format!("mount 9p: {e}"))?;
        let status = std::process::Command::new("/usr/lib/shoal/shoal-inventory")
            .args(["capture", "/run/capture/root"])
            .status()
            .map_err(|e| format!("shoal-inventory: {e}"))?;
        nix::unistd::sync();
        let _ = nix::mount::umount("/run/capture");
        status
            .success()
            .then_some(())
            .ok_or(format!("shoal-inventory capture: {status}"))
    };
    let (ok, error) = match mount() {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e),
    };
    println!(
        "{TEST_PREFIX}{{\"test\":\"capture\",\"ok\":{ok},\"error\":{}}}",
        json_string(&error)
    );
    0
}

fn netinfo() -> i32 {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|e| format!("ERROR {e}"));
    // /proc/net/route: Iface Destination Gateway ... in little-endian hex.
    let routes: Vec<String> = read("/proc/net/route")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let ip = |hex: &str| {
                u32::from_str_radix(hex, 16)
                    .ok()
                    .map(|v| std::net::Ipv4Addr::from(v.swap_bytes()).to_string())
            };
            let mask = ip(f.get(7)?)?;
            let prefix = mask
                .parse::<std::net::Ipv4Addr>()
                .ok()?
                .to_bits()
                .leading_ones();
            Some(format!(
                "{}/{prefix} via {} dev {}",
                ip(f.get(1)?)?,
                ip(f.get(2)?)?,
                f.first()?
            ))
        })
        .collect();
    let routes = routes
        .iter()
        .map(|r| json_string(r))
        .collect::<Vec<_>>()
        .join(",");
    // Every link's MTU, from sysfs.
    let mut mtus: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mtu = std::fs::read_to_string(entry.path().join("mtu")).ok()?;
            Some(format!(
                "{}:{}",
                json_string(&name),
                mtu.trim().parse::<u32>().ok()?
            ))
        })
        .collect();
    mtus.sort();
    println!(
        "{TEST_PREFIX}{{\"test\":\"netinfo\",\"resolv_conf\":{},\"ntp_servers\":{},\"routes\":[{routes}],\"mtu\":{{{}}},\"hostname\":{}}}",
        json_string(&read("/etc/resolv.conf")),
        json_string(&read("/run/shoal/ntp-servers")),
        mtus.join(","),
        json_string(read("/proc/sys/kernel/hostname").trim()),
    );
    0
}

fn crash(code: i32) -> i32 {
    println!("crash: exiting with {code}");
    code
}

/// Sleeps until SIGTERM arrives, then exits 0: a well-behaved service.
fn sleep_until_term() -> i32 {
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    // Blocked, SIGTERM stays pending until sigwait takes it, so it cannot be lost in between.
    if let Err(e) = term.thread_block() {
        println!("sleep: cannot block SIGTERM: {e}");
        return 1;
    }
    println!("sleep: waiting for SIGTERM");
    loop {
        match term.wait() {
            Ok(Signal::SIGTERM) => {
                println!("sleep: SIGTERM, exiting 0");
                return 0;
            }
            Ok(_) | Err(_) => continue,
        }
    }
}

fn ignore_term() -> i32 {
    // SAFETY: SIG_IGN installs no handler code; nothing else in this program handles signals.
    if let Err(e) = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) } {
        println!("ignore-term: cannot ignore SIGTERM: {e}");
        return 1;
    }
    println!("ignore-term: ignoring SIGTERM");
    loop {
        pause();
    }
}

/// Sends `READY=1` to the supervisor's notify socket: a path, or `@name` for an abstract socket
/// (sd_notify's convention).
fn send_ready() -> Result<(), String> {
    let target = std::env::var("NOTIFY_SOCKET").map_err(|_| "NOTIFY_SOCKET is not set")?;
    let address = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&target),
    }
    .map_err(|e| format!("NOTIFY_SOCKET={target:?}: {e}"))?;
    let socket = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    socket
        .send_to_addr(b"READY=1\n", &address)
        .map_err(|e| format!("sending READY=1 to {target}: {e}"))?;
    Ok(())
}

fn notify_after(delay: Duration) -> i32 {
    println!("notify-after: READY=1 in {} ms", delay.as_millis());
    std::thread::sleep(delay);
    if let Err(e) = send_ready() {
        println!("notify-after: {e}");
        return 1;
    }
    println!("notify-after: sent READY=1");
    sleep_until_term()
}

fn memhog(mb: usize) -> i32 {
    println!("memhog: allocating {mb} MiB");
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(mb);
    for n in 1..=mb {
        let mut chunk = vec![0u8; MIB];
        // Zeroed memory may be untouched pages: write to every page so it is really charged.
        for offset in (0..MIB).step_by(PAGE) {
            chunk[offset] = 0xa5;
        }
        held.push(std::hint::black_box(chunk));
        // Every 4 MiB: the supervisor drops echoed lines when the console falls behind, and
        // the other services' reports must not be among them.
        if n % 4 == 0 {
            println!("memhog: {n} MiB");
        }
    }
    println!("memhog: holding all {mb} MiB");
    let code = sleep_until_term();
    drop(std::hint::black_box(held));
    code
}

fn forkbomb() -> i32 {
    let mut children: Vec<Pid> = Vec::new();
    let mut error = None;
    while children.len() < MAX_FORKS {
        // SAFETY: this program is single-threaded, so the child may run any code.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => loop {
                pause();
            },
            Ok(ForkResult::Parent { child }) => children.push(child),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let mut report = format!(
        "{{\"test\":\"forkbomb\",\"forks\":{},\"limited\":{}",
        children.len(),
        error.is_some()
    );
    if let Some(e) = error {
        let _ = write!(report, ",\"error\":{}", json_string(&e.to_string()));
    }
    report.push('}');
    println!("{TEST_PREFIX}{report}");
    let code = sleep_until_term();
    for child in &children {
        let _ = kill(*child, Signal::SIGKILL);
    }
    for child in children {
        let _ = waitpid(child, None);
    }
    code
}

/// The `/proc/self/status` fields the caps report carries.
const STATUS_FIELDS: [&str; 9] = [
    "Uid",
    "Gid",
    "Groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
];

/// The caps report: every [`STATUS_FIELDS`] line of `status`, whitespace runs as one space.
fn caps_report(status: &str) -> String {
    let mut report = String::from("{\"test\":\"caps\"");
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if STATUS_FIELDS.contains(&key) {
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = write!(report, ",{}:{}", json_string(key), json_string(&value));
        }
    }
    report.push('}');
    report
}

fn caps() -> i32 {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => println!("{TEST_PREFIX}{}", caps_report(&status)),
        Err(e) => println!(
            "{TEST_PREFIX}{{\"test\":\"caps\",\"error\":{}}}",
            json_string(&format!("reading /proc/self/status: {e}"))
        ),
    }
    sleep_until_term()
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\td\u{1}"), r#""a\"b\\c\td\u0001""#);
    }

    #[test]
    fn caps_report_keeps_the_status_fields_it_names() {
        let status = "Name:\tshoal-test-serv\nUid:\t65534\t65534\t65534\t65534\n\
                      Gid:\t65534\t65534\t65534\t65534\nGroups:\t\nCapInh:\t0000000000001000\n\
                      CapPrm:\t0000000000001000\nCapEff:\t0000000000001000\n\
                      CapBnd:\t0000000000001000\nCapAmb:\t0000000000001000\nNoNewPrivs:\t1\n\
                      Seccomp:\t0\n";
        let report: serde_json::Value = serde_json::from_str(&caps_report(status)).unwrap();
        assert_eq!(report["test"], "caps");
        assert_eq!(report["Uid"], "65534 65534 65534 65534");
        assert_eq!(report["Groups"], "");
        assert_eq!(report["CapEff"], "0000000000001000");
        assert_eq!(report["NoNewPrivs"], "1");
        assert!(report.get("Name").is_none() && report.get("Seccomp").is_none());
    }
}
