//! `shoal-clusterd`: takes the node into its cluster (forming one with its peers when there is
//! none) and keeps it there. Run by the supervisor after the configuration and the network.
//!
//! Exit codes: 1 when it cannot run (no cluster secret, ports taken), 2 for a bad command line.
//!
//! The `shoal-clusterd` binary and the node's multi-call binary (`shoal-node`) both run [`main`]
//! with the arguments after the program name.

use std::process::ExitCode;

use crate::daemon::{Options, run};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const USAGE: &str = "\
usage: shoal-clusterd [--config FILE] [--listen ADDR:PORT] [--advertise ADDR:PORT]
                      [--api-listen ADDR:PORT] [--data-dir DIR | --diskless]
                      [--snapshot-every ENTRIES] [--replace-after DURATION]
                      [--forget-after DURATION] [--inventory FILE]
                      [--local-socket PATH] [--admin-gid GID]
                      [--os-release FILE] [--resolv-conf FILE] [--nameserver ADDR:PORT]...
defaults: /run/shoal/config.toml, 0.0.0.0:<cluster.port>, this node's address towards its
first seed or the LAN, the --listen address with port <api.port>, /var/lib/shoal/cluster
when /var/lib/shoal exists (else in memory), a voter silent 30s is replaced, a non-voter
silent 10m is forgotten, the hardware inventory published from /run/shoal/inventory.json,
the local API (D-Bus org.shoal.Cluster1) on /run/shoal/clusterd.sock with its key-value
space for root only (--admin-gid: and this group), the image version from /etc/os-release,
seed names resolved with /etc/resolv.conf's nameservers (--nameserver: these instead)
";

pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let mut options = Options::default();
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        if arg == "--diskless" {
            options.data_dir = None;
            continue;
        }
        let Some(value) = args.next() else {
            eprintln!("shoal-clusterd: {arg} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        let address = |v: &str| {
            v.parse()
                .map_err(|e| format!("{arg}: {v:?} is not ADDR:PORT ({e})"))
        };
        let parsed = match arg.as_str() {
            "--config" => {
                options.config = value.into();
                Ok(())
            }
            "--listen" => address(&value).map(|a| options.listen = Some(a)),
            "--advertise" => address(&value).map(|a| options.advertise = Some(a)),
            "--api-listen" => address(&value).map(|a| options.api_listen = Some(a)),
            "--replace-after" => shoal_units::parse_duration(&value)
                .map(|d| options.replace_after = d)
                .map_err(|e| format!("--replace-after: {e}")),
            "--forget-after" => shoal_units::parse_duration(&value)
                .map(|d| options.forget_after = d)
                .map_err(|e| format!("--forget-after: {e}")),
            "--snapshot-every" => value
                .parse()
                .map(|n| options.snapshot_every = Some(n))
                .map_err(|e| format!("--snapshot-every: {value:?}: {e}")),
            "--data-dir" => {
                options.data_dir = Some(value.into());
                Ok(())
            }
            "--inventory" => {
                options.inventory = Some(value.into());
                Ok(())
            }
            "--local-socket" => {
                options.local_socket = value.into();
                Ok(())
            }
            "--os-release" => {
                options.os_release = value.into();
                Ok(())
            }
            "--resolv-conf" => {
                options.resolver.resolv_conf = value.into();
                Ok(())
            }
            "--nameserver" => address(&value).map(|a| {
                options
                    .resolver
                    .nameservers
                    .get_or_insert_with(Vec::new)
                    .push(a)
            }),
            "--admin-gid" => value
                .parse()
                .map(|gid| options.admin_gid = Some(gid))
                .map_err(|_| format!("--admin-gid {value:?}: not a group id")),
            _ => Err(format!("unknown option {arg}")),
        };
        if let Err(e) = parsed {
            eprintln!("shoal-clusterd: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let level = shoal_boot_events::node_log_level()
        .parse::<tracing::Level>()
        .unwrap_or(tracing::Level::INFO);
    // openraft narrates every vote and replication step at info, and logs every failed call
    // to an unreachable node (several a second) as an error: quiet unless the node is asked
    // for debug logs. Its fatal errors reach the daemon through its metrics.
    let openraft = if level >= tracing::Level::DEBUG {
        tracing_subscriber::filter::LevelFilter::from_level(level)
    } else {
        tracing_subscriber::filter::LevelFilter::OFF
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("openraft", openraft);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .with(filter)
        .init();
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
