//! `shoal-configd`: resolves the node's configuration once at boot (a supervisor oneshot), or
//! waits in maintenance, retrying its sources, until it can.
//!
//! Exit codes: 0 once a configuration is in force, 1 when it cannot run, 2 for a bad command
//! line.

use std::path::PathBuf;
use std::process::ExitCode;

use shoal_configd::daemon::{Options, run};

const USAGE: &str = "\
usage: shoal-configd [--cmdline FILE] [--sys DIR] [--proc DIR] [--run-dir DIR]
                     [--state-dir DIR] [--netd-socket PATH] [--source-wait DURATION]
defaults: /proc/cmdline, /sys, /proc, /run/shoal, /var/lib/shoal, /run/shoal/netd.sock, 30s
";

fn main() -> ExitCode {
    let mut options = Options::default();
    let mut args = std::env::args_os().skip(1);
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
            "--run-dir" => options.run_dir = value,
            "--state-dir" => options.state_dir = value,
            "--netd-socket" => options.netd_socket = value,
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
    // $SHOAL_LOG, else the kernel command line's shoal.log= (one knob for the whole node).
    let level = std::env::var("SHOAL_LOG")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/cmdline").ok().and_then(|c| {
                c.split_whitespace()
                    .find_map(|w| w.strip_prefix("shoal.log=").map(str::to_string))
            })
        })
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
