//! `shoal-test-service` on the host, and the test image's service definitions checked with the
//! supervisor's own parser, so a broken definition fails here and not as a `config_errors`
//! entry in a VM.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_supervisor::config::{self, ServiceType};
use shoal_supervisor::notify::{Notify, NotifySocket};
use shoal_supervisor::users::Users;

const SERVICE: &str = env!("CARGO_BIN_EXE_shoal-test-service");

fn services_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../image-build/profiles/test-services")
}

fn spawn(args: &[&str]) -> Child {
    Command::new(SERVICE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning shoal-test-service")
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads stdout until a line contains `needle` (the child keeps running); returns all read.
fn read_until(child: &mut Child, needle: &str) -> String {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        match stdout.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => panic!(
                "stdout ended before {needle:?}: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn term(child: &Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("kill");
}

fn report(output: &str, test: &str) -> serde_json::Value {
    output
        .lines()
        .filter_map(shoal_boot_events::parse_test_line)
        .find(|v| v["test"] == test)
        .unwrap_or_else(|| panic!("no {test} report in {output:?}"))
}

/// The definitions an image gets from these profile directories, as one directory.
fn image_services(dirs: &[PathBuf]) -> tempfile::TempDir {
    let all = tempfile::tempdir().unwrap();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, all.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    all
}

fn default_services_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../image-build/profiles/services")
}

/// Every definition in `dir`, checked as the image's supervisor would (a panic lists every
/// problem). The image has only root in /etc/passwd; capsvc uses a bare number.
fn load_valid(dir: &Path) -> Vec<config::Service> {
    let services = config::load_dir(dir).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    config::validate_accounts(
        &services,
        &Users::parse("root:x:0:0:root:/:/sbin/nologin\n", ""),
    )
    .unwrap_or_else(|errors| panic!("{errors:?}"));
    services
}

#[test]
fn the_test_image_service_definitions_are_valid() {
    let dir = image_services(&[default_services_dir(), services_dir()]);
    let services = load_valid(dir.path());
    let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "base",
            "capsvc",
            "capture",
            "clusterd",
            "config",
            "crashy",
            "diskwrite",
            "forkbomb",
            "memhog",
            "mid",
            "netd",
            "netinfo",
            "network-online",
            "rss",
            "rss-cluster",
            "sleeper",
            "stubborn",
            "top"
        ]
    );
    for service in services
        .iter()
        .filter(|s| !["netd", "config", "clusterd"].contains(&s.name.as_str()))
    {
        if service.kind == ServiceType::Target {
            continue;
        }
        assert_eq!(
            service.command[0], "/usr/lib/shoal/shoal-test-service",
            "{}",
            service.name
        );
    }
    let base = services.iter().find(|s| s.name.as_str() == "base").unwrap();
    assert_eq!(base.kind, ServiceType::Notify);
}

#[test]
fn crash_exits_with_the_code() {
    let mut child = spawn(&["crash", "3"]);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("crash exits");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn bad_arguments_exit_2() {
    for args in [&["crash", "x"][..], &["nonsense"], &[]] {
        let mut child = spawn(args);
        let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn sleep_exits_0_on_sigterm() {
    let mut child = spawn(&["sleep"]);
    read_until(&mut child, "waiting for SIGTERM");
    term(&child);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ignore_term_survives_sigterm() {
    let mut child = spawn(&["ignore-term"]);
    read_until(&mut child, "ignoring SIGTERM");
    term(&child);
    assert!(wait_timeout(&mut child, Duration::from_millis(500)).is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn notify_after_sends_ready_on_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = NotifySocket::bind(dir.path().join("notify")).expect("bind");
    let started = Instant::now();
    let mut child = Command::new(SERVICE)
        .args(["notify-after", "300"])
        .env("NOTIFY_SOCKET", socket.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let received = loop {
        if let Some(received) = socket.recv().expect("recv") {
            break received;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no READY=1 within 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(received.pid.as_raw(), child.id() as i32);
    assert_eq!(received.notifications, [Notify::Ready]);
    read_until(&mut child, "waiting for SIGTERM");
    term(&child);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn notify_after_without_a_socket_fails() {
    let mut child = Command::new(SERVICE)
        .args(["notify-after", "0"])
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn memhog_allocates_in_mib_steps_and_holds() {
    let mut child = spawn(&["memhog", "8"]);
    let output = read_until(&mut child, "waiting for SIGTERM");
    assert!(
        output.contains("memhog: 4 MiB\nmemhog: 8 MiB\nmemhog: holding all 8 MiB"),
        "{output}"
    );
    let status_file = format!("/proc/{}/status", child.id());
    let status = std::fs::read_to_string(status_file).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        rss_kib >= 8 * 1024,
        "VmRSS {rss_kib} kB: the pages were not touched"
    );
    term(&child);
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn forkbomb_reports_its_forks_and_cleans_up_on_sigterm() {
    let mut child = spawn(&["forkbomb"]);
    let output = read_until(&mut child, "waiting for SIGTERM");
    let report = report(&output, "forkbomb");
    // Nothing limits it on the host (unless the host's own limits do): it stops at its cap.
    let forks = report["forks"].as_u64().unwrap();
    assert!(forks > 0, "{report}");
    assert_eq!(
        report["limited"].as_bool(),
        Some(report.get("error").is_some())
    );
    term(&child);
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn caps_reports_its_status_lines() {
    let mut child = spawn(&["caps"]);
    let output = read_until(&mut child, "waiting for SIGTERM");
    let report = report(&output, "caps");
    assert!(report.get("error").is_none(), "{report}");
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let value = report[key].as_str().unwrap_or_default();
        assert!(
            value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}: {report}"
        );
    }
    // /proc/self belongs to this process's effective uid, which the child shares.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    assert_eq!(report["Uid"], format!("{uid} {uid} {uid} {uid}"));
    assert!(report["NoNewPrivs"] == "0" || report["NoNewPrivs"] == "1");
    term(&child);
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn rss_reports_pid1_and_a_total() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal-test-service"))
        .arg("rss")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .find_map(shoal_boot_events::parse_test_line)
        .unwrap();
    assert_eq!(report["test"], "rss");
    let pid1 = report["pid1_kib"].as_u64().unwrap();
    let total = report["total_kib"].as_u64().unwrap();
    assert!(pid1 > 0 && total > pid1, "{report}");
    assert!(report["processes"].as_u64().unwrap() > 1, "{report}");
    // No supervisor or netd on the host: reported as 0, present in the report.
    assert!(
        report["supervisor_kib"].is_u64() && report["netd_kib"].is_u64(),
        "{report}"
    );
}

#[test]
fn the_default_image_service_definitions_are_valid() {
    let services = load_valid(&default_services_dir());
    let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["clusterd", "config", "netd", "network-online"]);
    let netd = services.iter().find(|s| s.name.as_str() == "netd").unwrap();
    assert_eq!(netd.kind, ServiceType::Notify);
    assert_eq!(netd.command, ["/usr/lib/shoal/shoal-netd"]);
    // clusterd needs the configuration (its secret) and the network; it holds no capability.
    let clusterd = services
        .iter()
        .find(|s| s.name.as_str() == "clusterd")
        .unwrap();
    let requires: Vec<&str> = clusterd.requires.iter().map(|n| n.as_str()).collect();
    assert_eq!(requires, ["config", "network-online"]);
    assert!(clusterd.capabilities.is_empty());
}

#[test]
fn netinfo_reports_resolver_routes_and_hostname() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shoal-test-service"))
        .arg("netinfo")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let r = report(&text, "netinfo");
    assert!(r["resolv_conf"].is_string(), "{r}");
    assert!(r["routes"].is_array(), "{r}");
    assert!(r["mtu"]["lo"].is_u64(), "{r}");
    assert!(!r["hostname"].as_str().unwrap().is_empty(), "{r}");
}
