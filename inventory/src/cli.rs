//! `shoal-inventory`: collects this machine's hardware inventory.
//!
//! ```text
//! shoal-inventory                         the inventory as JSON on stdout
//! shoal-inventory --root DIR              ... of a captured tree (see `capture`)
//! shoal-inventory --write FILE --event REASON
//!                                         write it atomically to FILE and print the
//!                                         `hardware.inventory` boot event (PID 1 runs this)
//! shoal-inventory capture DIR             copy what the readers read into DIR (a fixture)
//! ```
//!
//! The `shoal-inventory` binary and the node's multi-call binary (`shoal-node`) both run [`main`]
//! with the arguments after the program name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{Live, Platform, Recorded, Roots};
use shoal_boot_events::{Event, Record};

const USAGE: &str =
    "usage: shoal-inventory [--root DIR] [--write FILE --event REASON] | capture DIR";

#[derive(Debug, Default)]
struct Args {
    root: Option<PathBuf>,
    write: Option<PathBuf>,
    event: Option<String>,
    capture: Option<PathBuf>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--root" => out.root = Some(value("--root")?.into()),
            "--write" => out.write = Some(value("--write")?.into()),
            "--event" => out.event = Some(value("--event")?),
            "capture" => out.capture = Some(value("capture")?.into()),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if out.capture.is_some() && (out.write.is_some() || out.event.is_some()) {
        return Err("capture takes no other options than --root".into());
    }
    Ok(out)
}

pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = match parse(args.into_iter().map(|a| a.to_string_lossy().into_owned())) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("shoal-inventory: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoal-inventory: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let (roots, recorded) = match &args.root {
        Some(root) => (Roots::under(root), Some(Recorded::load(root)?)),
        None => (Roots::host(), None),
    };
    let platform: &dyn Platform = match &recorded {
        Some(r) => r,
        None => &Live,
    };
    if let Some(dir) = &args.capture {
        crate::capture::capture(&roots, platform, dir).map_err(|e| e.to_string())?;
        println!("captured into {}", dir.display());
        return Ok(());
    }
    let inventory = crate::collect(&roots, platform);
    let json = serde_json::to_vec(&inventory).map_err(|e| e.to_string())?;
    match &args.write {
        Some(path) => write_atomic(path, &json).map_err(|e| format!("{}: {e}", path.display()))?,
        None => {
            let pretty = serde_json::to_string_pretty(&inventory).map_err(|e| e.to_string())?;
            println!("{pretty}");
        }
    }
    if let Some(reason) = args.event {
        let event = Event::HardwareInventory {
            reason,
            summary: crate::summary(&inventory),
            ms: inventory.collect_ms,
            bytes: json.len() as u64,
            gaps: inventory
                .gaps
                .iter()
                .map(|g| format!("{}: {}", g.source, g.reason))
                .collect(),
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", Record::now(event).to_line());
    }
    Ok(())
}

/// Readers (clusterd) never see a half-written file: write beside it, then rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_arguments() {
        let a = args(&["--write", "/run/x.json", "--event", "boot"]).unwrap();
        assert_eq!(a.write.as_deref(), Some(Path::new("/run/x.json")));
        assert_eq!(a.event.as_deref(), Some("boot"));
        assert!(args(&["--write"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--bogus"]).unwrap_err().contains("unknown argument"));
        assert!(args(&["capture", "d", "--event", "x"]).is_err());
        assert_eq!(args(&["--help"]).unwrap_err(), "");
    }
}
