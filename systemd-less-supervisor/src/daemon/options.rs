//! The command line. PID 1 starts the daemon without arguments, so every default is a node's
//! path; tests point each root somewhere else.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_duration;

/// Where the daemon finds and puts things, and how long it gives a shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Service definitions, `<name>.toml` each.
    pub services_dir: PathBuf,
    /// The root whose `etc/passwd` and `etc/group` name users and groups.
    pub root: PathBuf,
    /// The cgroup2 mount (or a cgroup below it) Shoal's tree is made in.
    pub cgroup_root: PathBuf,
    /// Where the sd_notify socket is bound (`NOTIFY_SOCKET` for services).
    pub notify_socket: PathBuf,
    /// The control API's socket (D-Bus, peer to peer).
    pub api_socket: PathBuf,
    /// Besides root, members of this group may use the control API.
    pub admin_gid: Option<u32>,
    /// Where logs are persisted when it is writable.
    pub log_dir: PathBuf,
    /// procfs, for the cgroup and parent of notifying processes.
    pub proc_root: PathBuf,
    /// The kernel log device, served as the `kernel` log.
    pub kmsg: PathBuf,
    /// How long services get to stop in order at shutdown before they are killed.
    pub shutdown_timeout: Duration,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            services_dir: PathBuf::from(crate::config::DEFAULT_DIR),
            root: PathBuf::from("/"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            notify_socket: PathBuf::from("/run/shoal/notify"),
            api_socket: PathBuf::from(shoal_api::supervisor::SOCKET),
            admin_gid: None,
            log_dir: PathBuf::from("/var/log/shoal"),
            proc_root: PathBuf::from("/proc"),
            kmsg: PathBuf::from("/dev/kmsg"),
            // PID 1 waits 20 s for the supervisor; this leaves time to kill and report.
            shutdown_timeout: Duration::from_secs(15),
            log_level: "info".to_owned(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Box<Options>),
    Help,
    Version,
}

pub const USAGE: &str = "\
usage: shoal-supervisor [OPTIONS]

Runs Shoal's services: dependencies, readiness, restarts, cgroup limits, capabilities, logs.
Started by PID 1; stops every service in reverse dependency order on SIGTERM or SIGINT.

options:
  --services DIR          service definitions (default /etc/shoal/services)
  --root DIR              root holding etc/passwd and etc/group (default /)
  --cgroup-root DIR       cgroup2 mount for the services' cgroups (default /sys/fs/cgroup);
                          without a writable cgroup2 there, services run without cgroups
  --notify-socket PATH    sd_notify socket (default /run/shoal/notify)
  --api-socket PATH       control API, D-Bus peer to peer (default /run/shoal/supervisor.sock)
  --admin-gid GID         besides root, this group may use the control API
  --log-dir DIR           persisted logs, if writable (default /var/log/shoal)
  --proc DIR              procfs (default /proc)
  --kmsg PATH             kernel log, served as the log kernel (default /dev/kmsg)
  --shutdown-timeout DUR  ordered stop before everything is killed (default 15s)
  --log-level LEVEL       error, warn, info, debug, trace (default info, or $SHOAL_LOG)
  --help, --version
";

/// Parses the arguments after the program name; `env_log` is `$SHOAL_LOG`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env_log: Option<String>,
) -> Result<Command, String> {
    let mut options = Options::default();
    if let Some(level) = env_log.filter(|l| !l.is_empty()) {
        options.log_level = level;
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            _ => {}
        }
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(value) => Ok(value),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--services" => options.services_dir = value()?.into(),
            "--root" => options.root = value()?.into(),
            "--cgroup-root" => options.cgroup_root = value()?.into(),
            "--notify-socket" => options.notify_socket = value()?.into(),
            "--api-socket" => options.api_socket = value()?.into(),
            "--admin-gid" => {
                let v = value()?;
                let gid = v
                    .parse()
                    .map_err(|_| format!("--admin-gid {v}: not a group id"))?;
                options.admin_gid = Some(gid);
            }
            "--log-dir" => options.log_dir = value()?.into(),
            "--proc" => options.proc_root = value()?.into(),
            "--kmsg" => options.kmsg = value()?.into(),
            "--shutdown-timeout" => {
                let text = value()?;
                options.shutdown_timeout =
                    parse_duration(&text).map_err(|e| format!("--shutdown-timeout: {e}"))?;
            }
            "--log-level" => options.log_level = value()?,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if !["error", "warn", "info", "debug", "trace"].contains(&options.log_level.as_str()) {
        return Err(format!(
            "log level {:?} is not one of error, warn, info, debug, trace",
            options.log_level
        ));
    }
    Ok(Command::Run(Box::new(options)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn no_arguments_are_a_nodes_defaults() {
        assert_eq!(parse(args(&[]), None), Ok(Command::Run(Box::default())));
    }

    #[test]
    fn every_option_both_ways() {
        let Ok(Command::Run(o)) = parse(
            args(&[
                "--services",
                "/s",
                "--root=/r",
                "--cgroup-root",
                "/c",
                "--notify-socket=/n",
                "--log-dir",
                "/l",
                "--proc",
                "/p",
                "--shutdown-timeout=3s",
                "--log-level",
                "debug",
            ]),
            Some("warn".into()),
        ) else {
            panic!()
        };
        assert_eq!(o.services_dir, PathBuf::from("/s"));
        assert_eq!(o.root, PathBuf::from("/r"));
        assert_eq!(o.cgroup_root, PathBuf::from("/c"));
        assert_eq!(o.notify_socket, PathBuf::from("/n"));
        assert_eq!(o.log_dir, PathBuf::from("/l"));
        assert_eq!(o.proc_root, PathBuf::from("/p"));
        assert_eq!(o.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(o.log_level, "debug");
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            parse(args(&["--services"]), None),
            Err("--services needs a value".into())
        );
        assert!(
            parse(args(&["--bogus"]), None)
                .unwrap_err()
                .contains("--bogus")
        );
        assert!(
            parse(args(&["--shutdown-timeout", "soon"]), None)
                .unwrap_err()
                .starts_with("--shutdown-timeout: ")
        );
        assert!(parse(args(&[]), Some("loud".into())).is_err());
        assert_eq!(parse(args(&["--help"]), None), Ok(Command::Help));
        let Ok(Command::Run(o)) = parse(args(&[]), Some("debug".into())) else {
            panic!()
        };
        assert_eq!(o.log_level, "debug");
    }
}
