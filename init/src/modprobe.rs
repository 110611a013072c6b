//! `modprobe`, as the kernel calls it: when something needs a module that is not loaded (a
//! bond, VLAN or bridge created over netlink, a filesystem mounted, a crypto algorithm), the
//! kernel runs `/sbin/modprobe -q -- NAME`, where NAME is a module name or one of its aliases
//! (`rtnl-link-bond`, `fs-xfs`, `crypto-sha256`). The image links `/sbin/modprobe` to
//! shoal-init, which answers from the same module index coldplug uses.

use std::collections::BTreeSet;
use std::path::Path;

use crate::coldplug::{Coldplug, Modules, Outcome, loaded_modules};
use crate::kmod::{ModuleDb, normalize};
use crate::sys::FinitLoader;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub quiet: bool,
}

/// Reads `modprobe [-q] [-b] [-v] [--] NAME [PARAMS...]`. Module parameters are not taken from
/// here (the kernel never passes any); they come from the kernel command line.
pub fn parse_args(args: &[String]) -> Result<Request, String> {
    let mut quiet = false;
    let mut options_done = false;
    for arg in args {
        if !options_done && arg.starts_with('-') {
            match arg.as_str() {
                "--" => options_done = true,
                "-q" | "--quiet" => quiet = true,
                "-b" | "--use-blacklist" | "-v" | "--verbose" => {}
                other => return Err(format!("unsupported option {other}")),
            }
            continue;
        }
        return Ok(Request {
            name: arg.clone(),
            quiet,
        });
    }
    Err("no module name".into())
}

/// The modules that provide `name`: the module itself, or every module with a matching alias.
pub fn resolve(db: &ModuleDb, name: &str) -> Vec<String> {
    if db.contains(name) || db.is_builtin(&normalize(name)) {
        return vec![normalize(name)];
    }
    db.modules_for(name)
}

/// Runs as `modprobe`; returns the exit code (0 when everything resolved loaded).
pub fn main(args: &[String]) -> i32 {
    let request = match parse_args(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("modprobe: {e}");
            return 2;
        }
    };
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let modules = match Modules::open(&Path::new("/lib/modules").join(release)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("modprobe: {e}");
            return 1;
        }
    };
    let wanted = resolve(&modules.db, &request.name);
    if wanted.is_empty() {
        if !request.quiet {
            eprintln!("modprobe: no module provides {}", request.name);
        }
        return 1;
    }
    let mut coldplug = Coldplug::new(
        modules,
        FinitLoader,
        loaded_modules(Path::new("/sys")),
        Default::default(),
    );
    let mut outcome = Outcome::default();
    for module in &wanted {
        coldplug.load_module(module, &format!("modprobe {}", request.name), &mut outcome);
    }
    for failed in &outcome.failed {
        eprintln!("modprobe: {}: {}", failed.module, failed.error);
    }
    let loaded: BTreeSet<String> = loaded_modules(Path::new("/sys"));
    let all_there = wanted
        .iter()
        .all(|m| loaded.contains(m) || coldplug.modules.db.is_builtin(m));
    if all_there { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmod::AliasIndex;

    #[test]
    fn parses_what_the_kernel_passes() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&args(&["-q", "--", "rtnl-link-bond"])),
            Ok(Request {
                name: "rtnl-link-bond".into(),
                quiet: true
            })
        );
        assert_eq!(parse_args(&args(&["8021q"])).unwrap().name, "8021q");
        assert_eq!(parse_args(&args(&["--", "-odd"])).unwrap().name, "-odd");
        assert!(parse_args(&args(&["-q"])).is_err());
        assert!(parse_args(&args(&["-r", "x"])).is_err());
    }

    #[test]
    fn resolves_names_and_aliases() {
        let db = ModuleDb::parse(
            "kernel/drivers/net/bonding/bonding.ko:\nkernel/net/8021q/8021q.ko: kernel/net/802/garp.ko\nkernel/net/802/garp.ko:\n",
            "",
            "kernel/net/bridge/bridge.ko\n",
            AliasIndex::parse("alias rtnl-link-bond bonding\nalias rtnl-link-vlan 8021q\n"),
        );
        assert_eq!(resolve(&db, "rtnl-link-bond"), ["bonding"]);
        assert_eq!(resolve(&db, "rtnl-link-vlan"), ["8021q"]);
        assert_eq!(resolve(&db, "bonding"), ["bonding"]);
        assert_eq!(
            resolve(&db, "bridge"),
            ["bridge"],
            "built in: nothing to load, not an error"
        );
        assert!(resolve(&db, "rtnl-link-nothing").is_empty());
    }
}
