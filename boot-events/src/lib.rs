//! Boot events: one JSON object per console line, behind a fixed prefix.
//!
//! PID 1 prints a [`Record`] for every boot milestone, so that tests, benchmarks and people
//! reading a serial console can follow boot without scraping free-form log text:
//!
//! ```text
//! SHOAL-EVENT {"t":1.234567,"event":"root.mounted","source":"/shoal/rootfs.erofs","fstype":"erofs","ms":12.5}
//! ```
//!
//! `t` is seconds since the kernel started (`CLOCK_BOOTTIME`). Readers must skip lines they cannot
//! parse (an older reader meeting a newer event): [`parse_line`] returns `None` for those.

use serde::{Deserialize, Serialize};

/// Every event line starts with this, at the start of a console line.
pub const PREFIX: &str = "SHOAL-EVENT ";

/// Test helpers in test image profiles report their findings behind this prefix.
pub const TEST_PREFIX: &str = "SHOAL-TEST ";

/// One event as printed: when it happened and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Seconds since the kernel started.
    pub t: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// Which of PID 1's two stages emitted an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Running from the initramfs, before the root filesystem is mounted.
    Initramfs,
    /// Running from the read-only root filesystem after switch_root.
    Root,
}

/// A driver loaded for a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedModule {
    pub module: String,
    /// The sysfs device path (under /sys) the module was loaded for; empty when loaded by name.
    pub device: String,
}

/// A driver that failed to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedModule {
    pub module: String,
    pub error: String,
}

/// What PID 1 does when it shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    Poweroff,
    Reboot,
}

/// The boot milestones, in the order they normally appear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Event {
    /// PID 1 started (once per stage).
    #[serde(rename = "init.start")]
    InitStart { stage: Stage, version: String },
    /// The kernel command line was read; unknown `shoal.` keys and bad values are listed.
    #[serde(rename = "cmdline")]
    Cmdline {
        unknown_keys: Vec<String>,
        errors: Vec<String>,
    },
    /// The API filesystems (proc, sys, dev, run, ...) are mounted.
    #[serde(rename = "mounts.ready")]
    MountsReady { stage: Stage },
    /// Drivers were loaded for the devices present at that moment.
    #[serde(rename = "coldplug.done")]
    Coldplug {
        stage: Stage,
        devices: u32,
        loaded: Vec<LoadedModule>,
        failed: Vec<FailedModule>,
        ms: f64,
    },
    /// The read-only root filesystem is mounted.
    #[serde(rename = "root.mounted")]
    RootMounted {
        source: String,
        fstype: String,
        ms: f64,
    },
    /// A root slot on disk is opened through dm-verity: the partition, the device-mapper node
    /// and the root hash every block is checked against.
    #[serde(rename = "root.verity")]
    RootVerity {
        slot: String,
        partition: String,
        device: String,
        root_hash: String,
        ms: f64,
    },
    /// The STATE partition is mounted on /var. `grown_from` is its size in bytes before this
    /// boot grew it to fill the disk (first boot on a disk larger than the image), else absent.
    #[serde(rename = "state.mounted")]
    StateMounted {
        partition: String,
        bytes: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grown_from: Option<u64>,
        ms: f64,
    },
    /// The STATE partition could not be used: /var stays in memory for this boot.
    #[serde(rename = "state.failed")]
    StateFailed { partition: String, error: String },
    /// PID 1 holds the watchdog: a machine whose PID 1 stops feeding it for `timeout_s` is
    /// reset. `identity` is the driver's (`i6300ESB timer`, `Software Watchdog`).
    #[serde(rename = "watchdog.armed")]
    WatchdogArmed {
        device: String,
        identity: String,
        timeout_s: u32,
    },
    /// No watchdog could be armed (no device, or it refused): hangs are not caught.
    #[serde(rename = "watchdog.unavailable")]
    WatchdogUnavailable { error: String },
    /// An update bundle was verified and written to the other slot, which is now the default
    /// on trial.
    #[serde(rename = "update.applied")]
    UpdateApplied {
        slot: String,
        version: String,
        bytes: u64,
        ms: f64,
    },
    /// The slot on trial proved healthy (the node is back in its cluster): it is now good.
    #[serde(rename = "update.blessed")]
    UpdateBlessed { slot: String },
    /// The last update ran out of tries without becoming healthy; the node is back on the old
    /// slot, and says so.
    #[serde(rename = "update.failed")]
    UpdateFailed { message: String },
    /// The booted slot is on trial (its entry still counts tries): PID 1 reboots unless it is
    /// blessed within `timeout_s`.
    #[serde(rename = "update.trial")]
    UpdateTrial {
        slot: String,
        entry: String,
        timeout_s: u64,
    },
    /// A slot on trial did not become healthy in time: the node reboots so the boot counter
    /// moves on.
    #[serde(rename = "update.unhealthy")]
    UpdateUnhealthy { reason: String },
    /// PID 1 is about to move onto the root filesystem and exec its init.
    #[serde(rename = "switch_root")]
    SwitchRoot { init: String },
    /// The node's machine id is known.
    #[serde(rename = "machine_id")]
    MachineId { id: String, source: String },
    /// The hostname is set.
    #[serde(rename = "hostname")]
    Hostname { hostname: String, source: String },
    /// The loopback interface is up.
    #[serde(rename = "loopback.up")]
    LoopbackUp,
    /// A program from the image's boot task directory was started.
    #[serde(rename = "task.started")]
    TaskStarted { path: String, pid: i32 },
    /// The supervisor loaded its service definitions and started the boot's services.
    /// `config_errors` lists every definition it could not use (file, position, reason).
    #[serde(rename = "supervisor.started")]
    SupervisorStarted {
        services: u32,
        config_errors: Vec<String>,
    },
    /// A supervised service changed state (`waiting`, `starting`, `ready`, `done`, `stopping`,
    /// `backing-off`, `failed`, `inactive`).
    #[serde(rename = "service")]
    Service {
        name: String,
        from: String,
        to: String,
        reason: String,
    },
    /// The supervisor stopped every service (shutdown) and is exiting.
    #[serde(rename = "supervisor.stopped")]
    SupervisorStopped { ms: f64 },
    /// PID 1 finished booting; from here on it supervises, reaps and waits for signals.
    #[serde(rename = "boot.complete")]
    BootComplete,
    /// Boot cannot go on; the machine reboots after `reboot_in_s` seconds.
    #[serde(rename = "boot.failed")]
    BootFailed { reason: String, reboot_in_s: f64 },
    /// A device appeared after boot and drivers were loaded for it.
    #[serde(rename = "hotplug")]
    Hotplug {
        device: String,
        modalias: String,
        loaded: Vec<String>,
    },
    /// The hardware inventory was collected (at boot, and again after a disk or NIC came or
    /// went): a summary, how long it took, its size as JSON, the sources it could not read.
    #[serde(rename = "hardware.inventory")]
    HardwareInventory {
        reason: String,
        summary: String,
        ms: f64,
        bytes: u64,
        gaps: Vec<String>,
    },
    /// An ordered shutdown began.
    #[serde(rename = "shutdown.begin")]
    ShutdownBegin { action: PowerAction, reason: String },
    /// Everything is stopped and synced; the kernel is asked to power off or reboot.
    #[serde(rename = "shutdown.final")]
    ShutdownFinal {
        action: PowerAction,
        killed: u32,
        ms: f64,
    },
    /// PID 1 panicked; the machine reboots after `reboot_in_s` seconds.
    #[serde(rename = "panic")]
    Panic { message: String, reboot_in_s: f64 },
    /// netd read its configuration from `sources`; `errors` lists what it rejected (the last
    /// good configuration, or the defaults, stay in force).
    #[serde(rename = "network.config")]
    NetworkConfig {
        sources: Vec<String>,
        errors: Vec<String>,
    },
    /// Static addresses were configured on a link.
    #[serde(rename = "network.static")]
    NetworkStatic {
        link: String,
        addresses: Vec<String>,
    },
    /// A DHCPv4 lease was applied to a link; `ms` counts from netd's start.
    #[serde(rename = "dhcp.bound")]
    DhcpBound {
        link: String,
        address: String,
        gateway: Option<String>,
        dns: Vec<String>,
        lease_s: u32,
        ms: f64,
    },
    /// A lease was renewed (or rebound) and the address kept.
    #[serde(rename = "dhcp.renewed")]
    DhcpRenewed {
        link: String,
        address: String,
        lease_s: u32,
    },
    /// A lease ended (`expired`, `nak`, `released`, `replaced`) and its address was removed.
    #[serde(rename = "dhcp.lost")]
    DhcpLost {
        link: String,
        address: String,
        reason: String,
    },
    /// The node's configuration is in force: resolved from `sources` (`kind: where`), with its
    /// `[[nodes]]` section `node_section` applied; `ms` counts from shoal-configd's start.
    #[serde(rename = "config.resolved")]
    ConfigResolved {
        sources: Vec<String>,
        node_section: Option<u32>,
        ms: f64,
        /// Milliseconds spent reading each source (`esp`, `nocloud`, `imds`, `url`) in the
        /// round that succeeded.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        source_ms: std::collections::BTreeMap<String, f64>,
    },
    /// A configuration source could not be read (it is tried again).
    #[serde(rename = "config.source_failed")]
    ConfigSourceFailed { source: String, reason: String },
    /// No usable configuration: the node waits in maintenance and keeps trying its sources.
    #[serde(rename = "config.maintenance")]
    ConfigMaintenance {
        reason: String,
        /// The port of the maintenance API, where a configuration can be pushed with the
        /// one-time token shown on the console (none if it could not start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_port: Option<u16>,
    },
    /// The node is online: the links the configuration requires have addresses, or
    /// `timed_out` after the configured wait. `ms` counts from netd's start.
    #[serde(rename = "network.online")]
    NetworkOnline {
        ms: f64,
        timed_out: bool,
        links: Vec<String>,
    },
    /// This node initialised a new cluster with these voters (and learners), as formation
    /// decided; `ms` counts from shoal-clusterd's start.
    #[serde(rename = "cluster.initialize")]
    ClusterInitialize {
        cluster_id: String,
        voters: Vec<u64>,
        learners: Vec<u64>,
        ms: f64,
    },
    /// This node is a member of `cluster_id` and a leader is known; `ms` counts from
    /// shoal-clusterd's start. Printed once per start.
    #[serde(rename = "cluster.member")]
    ClusterMember {
        cluster_id: String,
        node: u64,
        leader: u64,
        voter: bool,
        ms: f64,
    },
    /// This node takes no part in a cluster (no cluster secret in its configuration).
    #[serde(rename = "cluster.disabled")]
    ClusterDisabled { reason: String },
    /// The leader this node follows changed (or it became leader).
    #[serde(rename = "cluster.leader")]
    ClusterLeader { leader: u64, term: u64 },
}

impl Event {
    /// The event's name as printed in the `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::InitStart { .. } => "init.start",
            Event::Cmdline { .. } => "cmdline",
            Event::MountsReady { .. } => "mounts.ready",
            Event::Coldplug { .. } => "coldplug.done",
            Event::RootMounted { .. } => "root.mounted",
            Event::RootVerity { .. } => "root.verity",
            Event::StateMounted { .. } => "state.mounted",
            Event::StateFailed { .. } => "state.failed",
            Event::WatchdogArmed { .. } => "watchdog.armed",
            Event::WatchdogUnavailable { .. } => "watchdog.unavailable",
            Event::UpdateApplied { .. } => "update.applied",
            Event::UpdateBlessed { .. } => "update.blessed",
            Event::UpdateFailed { .. } => "update.failed",
            Event::UpdateTrial { .. } => "update.trial",
            Event::UpdateUnhealthy { .. } => "update.unhealthy",
            Event::SwitchRoot { .. } => "switch_root",
            Event::MachineId { .. } => "machine_id",
            Event::Hostname { .. } => "hostname",
            Event::LoopbackUp => "loopback.up",
            Event::TaskStarted { .. } => "task.started",
            Event::SupervisorStarted { .. } => "supervisor.started",
            Event::Service { .. } => "service",
            Event::SupervisorStopped { .. } => "supervisor.stopped",
            Event::BootComplete => "boot.complete",
            Event::BootFailed { .. } => "boot.failed",
            Event::Hotplug { .. } => "hotplug",
            Event::HardwareInventory { .. } => "hardware.inventory",
            Event::ShutdownBegin { .. } => "shutdown.begin",
            Event::ShutdownFinal { .. } => "shutdown.final",
            Event::Panic { .. } => "panic",
            Event::NetworkConfig { .. } => "network.config",
            Event::NetworkStatic { .. } => "network.static",
            Event::DhcpBound { .. } => "dhcp.bound",
            Event::DhcpRenewed { .. } => "dhcp.renewed",
            Event::DhcpLost { .. } => "dhcp.lost",
            Event::NetworkOnline { .. } => "network.online",
            Event::ConfigResolved { .. } => "config.resolved",
            Event::ConfigSourceFailed { .. } => "config.source_failed",
            Event::ConfigMaintenance { .. } => "config.maintenance",
            Event::ClusterInitialize { .. } => "cluster.initialize",
            Event::ClusterMember { .. } => "cluster.member",
            Event::ClusterLeader { .. } => "cluster.leader",
            Event::ClusterDisabled { .. } => "cluster.disabled",
        }
    }
}

/// Seconds since the kernel started (`CLOCK_BOOTTIME`, which counts suspend too), rounded to
/// microseconds to keep event lines short.
pub fn boottime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        // One division of whole microseconds gives the double nearest the decimal value, which
        // serde_json prints without a tail of noise digits.
        .map(|t| (t.tv_sec() * 1_000_000 + t.tv_nsec() / 1000) as f64 / 1e6)
        .unwrap_or(0.0)
}

impl Record {
    /// The event stamped with the current [`boottime`].
    pub fn now(event: Event) -> Self {
        Self {
            t: boottime(),
            event,
        }
    }

    /// The console line for this record, without a trailing newline.
    pub fn to_line(&self) -> String {
        // Serialising these plain types cannot fail; fall back to a minimal line rather than panic
        // inside PID 1 if it ever did.
        match serde_json::to_string(self) {
            Ok(json) => format!("{PREFIX}{json}"),
            Err(_) => format!(
                "{PREFIX}{{\"t\":{},\"event\":\"{}\"}}",
                self.t,
                self.event.name()
            ),
        }
    }
}

/// The log level a Shoal daemon uses: `$SHOAL_LOG`, else the kernel command line's `shoal.log=`
/// (one knob for the whole node), else `info`. `env` and `cmdline` are given, so this is pure.
pub fn log_level(env: Option<&str>, cmdline: &str) -> String {
    env.map(str::to_string)
        .or_else(|| {
            cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix("shoal.log=").map(str::to_string))
        })
        .unwrap_or_else(|| "info".into())
}

/// [`log_level`] for this process, from its environment and `/proc/cmdline`.
pub fn node_log_level() -> String {
    let env = std::env::var("SHOAL_LOG").ok();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    log_level(env.as_deref(), &cmdline)
}

/// Parses one console line. Returns `None` for lines that are not events or that this reader
/// does not understand. Console lines may carry a carriage return or leading noise from the
/// kernel's own output interleaving, so the prefix is searched for, not only matched at the start.
pub fn parse_line(line: &str) -> Option<Record> {
    let start = line.find(PREFIX)?;
    let json = line[start + PREFIX.len()..].trim_end_matches(['\r', '\n']);
    serde_json::from_str(json).ok()
}

/// Parses a test helper's report line: the JSON value behind [`TEST_PREFIX`].
pub fn parse_test_line(line: &str) -> Option<serde_json::Value> {
    let start = line.find(TEST_PREFIX)?;
    serde_json::from_str(line[start + TEST_PREFIX.len()..].trim_end_matches(['\r', '\n'])).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_console_line() {
        let record = Record {
            t: 1.5,
            event: Event::RootMounted {
                source: "/shoal/rootfs.erofs".into(),
                fstype: "erofs".into(),
                ms: 3.25,
            },
        };
        let line = record.to_line();
        assert!(line.starts_with("SHOAL-EVENT {\"t\":1.5,\"event\":\"root.mounted\""));
        assert_eq!(parse_line(&line), Some(record));
    }

    #[test]
    fn finds_events_behind_console_noise() {
        let line = "[    1.2] x\rSHOAL-EVENT {\"t\":2.0,\"event\":\"boot.complete\"}\r";
        let record = parse_line(line).unwrap();
        assert_eq!(record.event, Event::BootComplete);
        assert_eq!(record.event.name(), "boot.complete");
    }

    #[test]
    fn ignores_other_lines_and_unknown_events() {
        assert_eq!(parse_line("hello"), None);
        assert_eq!(
            parse_line("SHOAL-EVENT {\"t\":1,\"event\":\"from.the.future\"}"),
            None
        );
        assert_eq!(parse_line("SHOAL-EVENT {broken"), None);
    }

    #[test]
    fn every_name_matches_its_serialised_tag() {
        let events = [
            Event::LoopbackUp,
            Event::BootComplete,
            Event::Service {
                name: "netd".into(),
                from: "starting".into(),
                to: "ready".into(),
                reason: "reported ready".into(),
            },
            Event::SwitchRoot {
                init: "/sbin/init".into(),
            },
            Event::ShutdownBegin {
                action: PowerAction::Poweroff,
                reason: "SIGTERM".into(),
            },
            Event::ClusterMember {
                cluster_id: "0a".into(),
                node: 1,
                leader: 2,
                voter: true,
                ms: 1.5,
            },
            Event::ClusterLeader { leader: 2, term: 3 },
            Event::HardwareInventory {
                reason: "boot".into(),
                summary: "4 threads".into(),
                ms: 12.5,
                bytes: 9000,
                gaps: vec![],
            },
            Event::ClusterDisabled {
                reason: "no secret".into(),
            },
            Event::ClusterInitialize {
                cluster_id: "0a".into(),
                voters: vec![1],
                learners: vec![],
                ms: 1.0,
            },
        ];
        for event in events {
            let json = serde_json::to_value(Record {
                t: 0.0,
                event: event.clone(),
            })
            .unwrap();
            assert_eq!(json["event"], event.name());
        }
    }

    #[test]
    fn boottime_is_microseconds_and_prints_short() {
        let t = boottime();
        assert!(t > 0.0);
        let printed = Record::now(Event::BootComplete).to_line();
        let json: serde_json::Value = serde_json::from_str(&printed[PREFIX.len()..]).unwrap();
        let digits = json["t"].to_string();
        let decimals = digits.split('.').nth(1).map_or(0, str::len);
        assert!(decimals <= 6, "{digits}");
    }

    #[test]
    fn the_log_level_comes_from_the_environment_then_the_command_line() {
        assert_eq!(log_level(Some("debug"), "shoal.log=trace"), "debug");
        assert_eq!(log_level(None, "quiet shoal.log=trace"), "trace");
        assert_eq!(log_level(None, "quiet"), "info");
    }

    #[test]
    fn parses_test_helper_reports() {
        let v = parse_test_line("SHOAL-TEST {\"test\":\"orphans\",\"zombies\":0}").unwrap();
        assert_eq!(v["zombies"], 0);
        assert!(parse_test_line("SHOAL-EVENT {}").is_none());
    }
}
