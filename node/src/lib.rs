//! The node's daemons in one executable. `/usr/lib/shoal/shoal-node` is installed once and
//! each daemon's path (`/usr/lib/shoal/shoal-netd`, ...) is a symbolic link to it: the program
//! runs the daemon its name says, so the supervisor, PID 1 and the process list see the
//! familiar names. Each daemon's crate still builds its own binary from the same `cli::main`
//! for host tests and development.
//!
//! Why: every daemon links tokio, serde, tracing and most link zbus and rustls. Five static
//! copies cost the image about 15 MB before compression, and the page cache holds five copies
//! of the same code; one executable holds one.
//!
//! Choosing the program is pure ([`select`]); the binary only passes `std::env::args_os`.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

/// Makes every thread allocate from the one main heap. glibc gives each thread that allocates
/// its own arena (up to 8 per CPU), each keeping pages resident once touched; a daemon's helper
/// threads (tokio's blocking pool for file and DNS work, log readers) allocate little, so their
/// arenas are mostly waste in a node's footprint, and the daemons allocate too rarely for a
/// shared heap's lock to matter. Call before any thread starts.
pub fn one_malloc_arena() {
    // SAFETY: mallopt(3) only sets an allocator parameter; called before any other thread
    // exists, nothing else is allocating meanwhile.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// A daemon's entry point: its arguments after the program name.
pub type Main = fn(Vec<OsString>) -> ExitCode;

/// The programs this executable is, by name.
pub const PROGRAMS: &[(&str, Main)] = &[
    ("shoal-supervisor", |args| shoal_supervisor::cli::main(args)),
    ("shoal-netd", |args| shoal_netd::cli::main(args)),
    ("shoal-configd", |args| shoal_configd::cli::main(args)),
    ("shoal-clusterd", |args| shoal_clusterd::cli::main(args)),
    ("shoal-inventory", |args| shoal_inventory::cli::main(args)),
];

/// The executable's own name, under which the first argument names the program
/// (`shoal-node netd --help`).
pub const NAME: &str = "shoal-node";

/// The program that `argv` (program name first) asks for, with its arguments: the one named by
/// the file name it was run as, or, run as [`NAME`], the one its first argument names (with or
/// without the `shoal-` prefix).
pub fn select(argv: Vec<OsString>) -> Result<(&'static str, Main, Vec<OsString>), String> {
    let mut argv = argv.into_iter();
    let argv0 = argv.next().unwrap_or_default();
    let called = Path::new(&argv0)
        .file_name()
        .unwrap_or(OsStr::new(""))
        .to_owned();
    if let Some(&(name, main)) = find(&called) {
        return Ok((name, main, argv.collect()));
    }
    if called != NAME {
        return Err(format!(
            "{}: not one of this executable's names ({})",
            called.to_string_lossy(),
            names()
        ));
    }
    let Some(program) = argv.next() else {
        return Err(format!(
            "usage: {NAME} PROGRAM [ARGS...]; programs: {}",
            names()
        ));
    };
    let long = {
        let mut long = OsString::from("shoal-");
        long.push(&program);
        long
    };
    match find(&program).or_else(|| find(&long)) {
        Some(&(name, main)) => Ok((name, main, argv.collect())),
        None => Err(format!(
            "{NAME}: unknown program {:?}; programs: {}",
            program.to_string_lossy(),
            names()
        )),
    }
}

fn find(name: &OsStr) -> Option<&'static (&'static str, Main)> {
    PROGRAMS.iter().find(|(n, _)| OsStr::new(n) == name)
}

fn names() -> String {
    PROGRAMS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn chosen(args: &[&str]) -> Result<(&'static str, Vec<OsString>), String> {
        select(argv(args)).map(|(name, _, rest)| (name, rest))
    }

    #[test]
    fn the_name_it_is_run_as_picks_the_program() {
        assert_eq!(
            chosen(&["/usr/lib/shoal/shoal-netd", "--config", "x"]),
            Ok(("shoal-netd", argv(&["--config", "x"])))
        );
        assert_eq!(chosen(&["shoal-clusterd"]), Ok(("shoal-clusterd", vec![])));
        for (name, _) in PROGRAMS {
            assert_eq!(chosen(&[&format!("/x/{name}")]), Ok((*name, vec![])));
        }
    }

    #[test]
    fn run_as_itself_the_first_argument_picks_it() {
        assert_eq!(
            chosen(&["/usr/lib/shoal/shoal-node", "inventory", "--root", "/r"]),
            Ok(("shoal-inventory", argv(&["--root", "/r"])))
        );
        assert_eq!(
            chosen(&["shoal-node", "shoal-configd"]),
            Ok(("shoal-configd", vec![]))
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_names() {
        let err = chosen(&["/bin/shoal-nope"]).unwrap_err();
        assert!(err.starts_with("shoal-nope: not one of"), "{err}");
        assert!(err.contains("shoal-supervisor, shoal-netd"), "{err}");
        let err = chosen(&["shoal-node"]).unwrap_err();
        assert!(err.starts_with("usage: shoal-node PROGRAM"), "{err}");
        let err = chosen(&["shoal-node", "init"]).unwrap_err();
        assert!(err.contains("unknown program \"init\""), "{err}");
        assert!(chosen(&[]).is_err());
    }
}
