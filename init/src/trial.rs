//! A slot on trial: booted from a boot entry that still counts its tries
//! (`shoal-<slot>+LEFT-DONE.conf`, systemd-boot's boot counting). The updater blesses it (drops
//! the counter) once the node is healthy; if that has not happened within the trial timeout
//! (`shoal.trial_timeout=SECONDS`, written into the entry by the updater), PID 1 reboots, which
//! spends a try. A hang is the watchdog's, a panic the kernel's (`panic=`): whatever stops the
//! node from becoming healthy, the counter runs out and systemd-boot goes back to the old slot.
//!
//! PID 1 owns this rather than the updater (in clusterd) because a new image whose clusterd
//! crashes or hangs must fail its trial too.
//!
//! What happened is kept for the updater of the slot the node comes back on, which says why
//! the update failed: `/var/lib/shoal/update-trial` on STATE (shared by both slots), as
//! `key=value` lines: `slot`, `entry` (the file booted), `outcome` (`started`, then
//! `unhealthy` if the timeout passed) and `timeout_s`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmdline::Slot;

/// The file on STATE.
pub const RECORD: &str = "update-trial";

/// The booted slot's entry, if it still counts tries (the boot is a trial).
pub fn trial_entry(entries_dir: &Path, slot: Slot) -> Option<String> {
    let prefix = format!("shoal-{}+", slot.as_str());
    let mut found: Vec<String> = std::fs::read_dir(entries_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix) && name.ends_with(".conf"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The record's text.
pub fn record_text(slot: Slot, entry: &str, outcome: &str, timeout: Duration) -> String {
    format!(
        "slot={}\nentry={entry}\noutcome={outcome}\ntimeout_s={}\n",
        slot.as_str(),
        timeout.as_secs()
    )
}

/// What the trial says when PID 1 looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still counting, with time left.
    Waiting,
    /// The updater blessed the slot.
    Blessed,
    /// Not blessed in time: reboot.
    Expired,
}

/// A trial in progress.
#[derive(Debug)]
pub struct Trial {
    pub slot: Slot,
    pub entry: String,
    pub timeout: Duration,
    pub deadline: Instant,
    entries_dir: PathBuf,
    record: PathBuf,
}

impl Trial {
    /// Starts watching when the boot is a trial, and records it.
    pub fn start(
        esp: &Path,
        state: &Path,
        slot: Slot,
        timeout: Duration,
        now: Instant,
    ) -> Option<Trial> {
        let entries_dir = esp.join("loader/entries");
        let entry = trial_entry(&entries_dir, slot)?;
        let trial = Trial {
            slot,
            entry,
            timeout,
            deadline: now + timeout,
            entries_dir,
            record: state.join(RECORD),
        };
        trial.write("started");
        Some(trial)
    }

    /// Where the trial stands at `now`.
    pub fn check(&self, now: Instant) -> Verdict {
        if trial_entry(&self.entries_dir, self.slot).is_none() {
            Verdict::Blessed
        } else if now >= self.deadline {
            Verdict::Expired
        } else {
            Verdict::Waiting
        }
    }

    /// Records the outcome (`started`, `unhealthy`) for the slot the node comes back on, on
    /// disk before it returns: a hang ends in a watchdog reset, with no sync.
    pub fn write(&self, outcome: &str) {
        use std::io::Write;
        let text = record_text(self.slot, &self.entry, outcome, self.timeout);
        let tmp = self.record.with_extension("tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &self.record))
            .and_then(|()| match self.record.parent() {
                Some(dir) => std::fs::File::open(dir).and_then(|d| d.sync_all()),
                None => Ok(()),
            });
        if let Err(e) = written {
            tracing::warn!("{}: {e}", self.record.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("loader/entries")).unwrap();
        for f in files {
            std::fs::write(dir.path().join("loader/entries").join(f), "title x\n").unwrap();
        }
        dir
    }

    #[test]
    fn a_counted_entry_of_the_booted_slot_is_a_trial() {
        let e = esp(&["shoal-a.conf", "shoal-b+1-2.conf"]);
        let dir = e.path().join("loader/entries");
        assert_eq!(
            trial_entry(&dir, Slot::B).as_deref(),
            Some("shoal-b+1-2.conf")
        );
        assert_eq!(trial_entry(&dir, Slot::A), None);
        assert_eq!(trial_entry(&e.path().join("missing"), Slot::B), None);
    }

    #[test]
    fn a_trial_is_blessed_by_a_rename_or_expires_and_is_recorded() {
        let e = esp(&["shoal-a.conf", "shoal-b+2-1.conf"]);
        let state = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(300);
        let trial = Trial::start(e.path(), state.path(), Slot::B, timeout, t0).unwrap();
        let record = std::fs::read_to_string(state.path().join(RECORD)).unwrap();
        assert_eq!(
            record,
            "slot=b\nentry=shoal-b+2-1.conf\noutcome=started\ntimeout_s=300\n"
        );
        assert_eq!(trial.check(t0 + Duration::from_secs(10)), Verdict::Waiting);
        assert_eq!(trial.check(t0 + timeout), Verdict::Expired);
        trial.write("unhealthy");
        assert!(
            std::fs::read_to_string(state.path().join(RECORD))
                .unwrap()
                .contains("outcome=unhealthy\n")
        );
        let entries = e.path().join("loader/entries");
        std::fs::rename(
            entries.join("shoal-b+2-1.conf"),
            entries.join("shoal-b.conf"),
        )
        .unwrap();
        assert_eq!(trial.check(t0 + timeout), Verdict::Blessed);
        // Not a trial: nothing is watched or written.
        let other = tempfile::tempdir().unwrap();
        assert!(Trial::start(e.path(), other.path(), Slot::A, timeout, t0).is_none());
        assert!(!other.path().join(RECORD).exists());
    }
}
