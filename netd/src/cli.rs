//! `shoal-netd`: the network daemon. `--config` is the node's resolved machine configuration
//! (its `[network]` section is netd's). The supervisor runs it (`type = "notify"`): it reports
//! ready once the node is online, or after the configured timeout.
//!
//! Exit codes: 0 after SIGTERM (leases released), 1 when it cannot run, 2 for a bad command line.
//!
//! The `shoal-netd` binary and the node's multi-call binary (`shoal-node`) both run [`main`]
//! with the arguments after the program name.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon::{self, Paths};

const USAGE: &str = "\
usage: shoal-netd [--config FILE] [--cmdline FILE] [--run-dir DIR] [--state-dir DIR]
                  [--sys DIR] [--api-socket PATH] [--admin-gid GID] [--log-level LEVEL]
defaults: /run/shoal/config.toml, /proc/cmdline, /run/shoal, /run/shoal/netd, /sys,
          /run/shoal/netd.sock, root only, info
$SHOAL_LOG, else shoal.log= on the kernel command line, sets the log level too.
";

pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let mut paths = Paths::default();
    let mut level = shoal_boot_events::node_log_level();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--help" || arg == "-h" {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        if arg == "--version" {
            println!("shoal-netd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        let Some(value) = args.next() else {
            eprintln!("shoal-netd: {arg} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        let path = PathBuf::from(&value);
        match arg.as_str() {
            "--config" => paths.config = path,
            "--cmdline" => paths.cmdline = path,
            "--run-dir" => paths.run_dir = path,
            "--state-dir" => paths.state_dir = path,
            "--sys" => paths.sys = path,
            "--api-socket" => paths.api_socket = path,
            "--admin-gid" => match value.to_string_lossy().parse::<u32>() {
                Ok(gid) => paths.admin_gid = Some(gid),
                Err(_) => {
                    eprintln!("shoal-netd: --admin-gid {value:?}: not a group id\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--log-level" => level = value.to_string_lossy().into_owned(),
            _ => {
                eprintln!("shoal-netd: unknown option {arg}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    shoal_api::init_logging(&level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-netd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(daemon::run(paths)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
