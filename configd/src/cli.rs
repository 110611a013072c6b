//! `shoal-configd`: resolves the node's configuration once at boot (a supervisor oneshot), or
//! waits in maintenance, retrying its sources, until it can.
//!
//! Exit codes: 0 once a configuration is in force, 1 when it cannot run, 2 for a bad command
//! line.
//!
//! The `shoal-configd` binary and the node's multi-call binary (`shoal-node`) both run [`main`]
//! with the arguments after the program name.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon::{Options, run};

const USAGE: &str = "\
usage: shoal-configd [--cmdline FILE] [--sys DIR] [--proc DIR] [--dev DIR] [--run-dir DIR]
                     [--state-dir DIR] [--netd-socket PATH] [--source-wait DURATION]
                     [--imds-endpoint HOST:PORT] [--maintenance-port PORT]
defaults: /proc/cmdline, /sys, /proc, /dev, /run/shoal, /var/lib/shoal, /run/shoal/netd.sock,
30s, 169.254.169.254:80, 7443 (0: any free port)
";

pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--help" || arg == "-h" {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let Some(value) = args.next().map(PathBuf::from) else {
            eprintln!("shoal-configd: {arg} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match arg.as_str() {
            "--cmdline" => options.cmdline = value,
            "--sys" => options.sys = value,
            "--proc" => options.proc = value,
            "--dev" => options.dev = value,
            "--run-dir" => options.run_dir = value,
            "--state-dir" => options.state_dir = value,
            "--netd-socket" => options.netd_socket = value,
            "--imds-endpoint" => options.imds_endpoint = value.to_string_lossy().into_owned(),
            "--maintenance-port" => match value.to_string_lossy().parse() {
                Ok(port) => options.maintenance_port = port,
                Err(_) => {
                    eprintln!("shoal-configd: --maintenance-port: not a port number\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--source-wait" => match shoal_units::parse_duration(&value.to_string_lossy()) {
                Ok(d) => options.source_wait = d,
                Err(e) => {
                    eprintln!("shoal-configd: --source-wait: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("shoal-configd: unknown option {arg}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    shoal_api::init_logging(&shoal_boot_events::node_log_level());
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
