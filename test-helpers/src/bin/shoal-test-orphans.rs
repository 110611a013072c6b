//! Makes orphans and checks that PID 1 reaps them.
//!
//! Each round forks a child that forks a grandchild and exits at once, so the grandchild is
//! re-parented to PID 1. The grandchildren exit a little later. A PID 1 that does not reap
//! leaves them as zombies (`Z` in /proc/PID/stat) for ever. The findings go to the console as
//! one `SHOAL-TEST` line.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe};
use shoal_boot_events::TEST_PREFIX;

const ORPHANS: usize = 8;

fn main() {
    match run() {
        Ok(report) => println!("{TEST_PREFIX}{report}"),
        Err(e) => println!("{TEST_PREFIX}{{\"test\":\"orphans\",\"error\":\"{e}\"}}"),
    }
}

fn run() -> Result<String, String> {
    let mut orphans = Vec::new();
    for _ in 0..ORPHANS {
        orphans.push(spawn_orphan()?);
    }
    // Each orphan waits for its parent to be gone, so by now all of them belong to PID 1.
    let reparented = orphans
        .iter()
        .filter(|pid| parent_of(**pid) == Some(1))
        .count();

    // The orphans exit 300 ms after they start; give PID 1 a generous while to reap them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let zombies = loop {
        // One snapshot per round: a zombie still has a /proc entry, so "gone" means reaped.
        let states: Vec<char> = orphans.iter().filter_map(|pid| state_of(*pid)).collect();
        let zombies = states.iter().filter(|s| **s == 'Z').count();
        if states.is_empty() || Instant::now() > deadline {
            break zombies;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every zombie on the machine whose parent is PID 1 counts, not only ours.
    let all_zombies_of_init = zombies_of_init();
    Ok(format!(
        "{{\"test\":\"orphans\",\"orphans\":{},\"reparented\":{reparented},\"zombies\":{zombies},\"zombies_of_pid1\":{all_zombies_of_init}}}",
        orphans.len()
    ))
}

/// Forks a child that forks the orphan and exits; returns the orphan's pid.
fn spawn_orphan() -> Result<i32, String> {
    let (read_end, write_end) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this program is single-threaded, so the forked child may run any code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(read_end);
            // SAFETY: still single-threaded in the child.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    // The orphan: wait until re-parented, then live a little and exit.
                    let parent = nix::unistd::getppid();
                    let start = Instant::now();
                    while nix::unistd::getppid() == parent
                        && start.elapsed() < Duration::from_secs(2)
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    std::process::exit(0);
                }
                Ok(ForkResult::Parent { child }) => {
                    let mut w = std::fs::File::from(write_end);
                    let _ = w.write_all(&child.as_raw().to_le_bytes());
                    std::process::exit(0);
                }
                Err(_) => std::process::exit(1),
            }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut buf = [0u8; 4];
            let mut r = std::fs::File::from(read_end);
            let got = r.read_exact(&mut buf);
            let _ = waitpid(child, None);
            got.map_err(|e| format!("reading orphan pid from fd {}: {e}", r.as_raw_fd()))?;
            Ok(i32::from_le_bytes(buf))
        }
    }
}

/// (state, ppid) from /proc/PID/stat; `None` once the process is gone.
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn state_of(pid: i32) -> Option<char> {
    stat_of(pid).map(|(s, _)| s)
}

fn parent_of(pid: i32) -> Option<i32> {
    stat_of(pid).map(|(_, p)| p)
}

fn zombies_of_init() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat_of(*pid) == Some(('Z', 1)))
        .count()
}
