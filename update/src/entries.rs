//! The slots' Boot Loader Specification entries on the ESP (`loader/entries/shoal-<slot>*.conf`)
//! and what systemd-boot makes of them.
//!
//! - An entry on trial carries a boot counter in its name: `shoal-b+3-0.conf` has 3 tries left
//!   and 0 done; systemd-boot renames it on every boot it makes from it (`+2-1`, ...). An entry
//!   without a counter is good ("blessed"). Blessing drops the counter with one rename.
//! - systemd-boot sorts entries with no tries left last, then by `sort-key` (ascending). Every
//!   entry written gets a sort key one generation newer than any on the ESP
//!   (`shoal-<99999999 - generation>`), so the newest entry sorts first and is the default: the
//!   switch to a new slot, and a rollback, are each one atomic rename of a complete file.
//! - When a trial entry runs out of tries, it sorts last and the other slot boots again.
//!
//! Everything here works on an ESP directory given as a parameter, so it runs on fixture trees.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Tries a new slot gets before systemd-boot falls back.
pub const TRIES: u32 = 3;
const RANK_BASE: u64 = 99_999_999;

/// A root slot.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn parse(text: &str) -> Option<Slot> {
        match text {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot's GPT partition name.
    pub fn partition(self) -> String {
        format!("shoal-root-{}", self.letter())
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// A boot counter: tries left and tries done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    pub left: u32,
    pub done: u32,
}

/// One slot's entry as found on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub slot: Slot,
    /// `None`: blessed (or as flashed).
    pub counter: Option<Counter>,
    pub version: String,
    pub generation: u64,
    pub options: String,
}

impl Entry {
    /// Whether systemd-boot would still boot it.
    pub fn bootable(&self) -> bool {
        self.counter.is_none_or(|c| c.left > 0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no boot entry for slot {0}")]
    NoEntry(Slot),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses an entry file name: `shoal-a.conf`, `shoal-b+3-0.conf`, `shoal-b+0-3.conf`.
pub fn parse_name(file: &str) -> Option<(Slot, Option<Counter>)> {
    let stem = file.strip_prefix("shoal-")?.strip_suffix(".conf")?;
    let (slot, counter) = match stem.split_once('+') {
        None => (stem, None),
        Some((slot, counter)) => {
            let (left, done) = match counter.split_once('-') {
                Some((l, d)) => (l.parse().ok()?, d.parse().ok()?),
                None => (counter.parse().ok()?, 0),
            };
            (slot, Some(Counter { left, done }))
        }
    };
    Some((Slot::parse(slot)?, counter))
}

/// The file name of `slot`'s entry with `counter`.
pub fn file_name(slot: Slot, counter: Option<Counter>) -> String {
    match counter {
        None => format!("shoal-{slot}.conf"),
        Some(c) => format!("shoal-{slot}+{}-{}.conf", c.left, c.done),
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim())
    })
}

/// The generation a sort key stands for (`shoal-99999998` is generation 1).
fn generation(sort_key: Option<&str>) -> u64 {
    sort_key
        .and_then(|k| k.strip_prefix("shoal-"))
        .and_then(|r| r.parse::<u64>().ok())
        .map(|rank| RANK_BASE.saturating_sub(rank))
        .unwrap_or(0)
}

/// The kernel command line of a slot's entry: the image's own, then the keys that make PID 1
/// boot the slot through dm-verity.
pub fn slot_options(cmdline: &str, slot: Slot, root_hash: &str, hash_offset: u64) -> String {
    format!("{cmdline} shoal.slot={slot} shoal.roothash={root_hash} shoal.hashoffset={hash_offset}")
}

/// The entry text for `slot` at `generation`.
pub fn entry_text(slot: Slot, version: &str, generation: u64, options: &str) -> String {
    format!(
        "title Shoal {version} (slot {slot})\n\
         version {version}\n\
         sort-key shoal-{:08}\n\
         linux /shoal/{slot}/vmlinuz\n\
         initrd /shoal/{slot}/initramfs\n\
         options {options}\n",
        RANK_BASE - generation
    )
}

/// Every Shoal entry in `<esp>/loader/entries`, newest generation first.
pub fn read(esp: &Path) -> Result<Vec<Entry>, Error> {
    let dir = esp.join("loader/entries");
    let mut entries = Vec::new();
    for item in fs::read_dir(&dir).map_err(io(&dir))? {
        let item = item.map_err(io(&dir))?;
        let file = item.file_name().to_string_lossy().into_owned();
        let Some((slot, counter)) = parse_name(&file) else {
            continue;
        };
        let path = item.path();
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        entries.push(Entry {
            slot,
            counter,
            version: field(&text, "version").unwrap_or("").to_string(),
            generation: generation(field(&text, "sort-key")),
            options: field(&text, "options").unwrap_or("").to_string(),
            file,
        });
    }
    entries.sort_by(|a, b| b.generation.cmp(&a.generation).then(a.file.cmp(&b.file)));
    Ok(entries)
}

/// The entry systemd-boot boots by default: the newest that still has tries.
pub fn default_entry(entries: &[Entry]) -> Option<&Entry> {
    entries
        .iter()
        .find(|e| e.bootable())
        .or_else(|| entries.first())
}

fn write_synced(path: &Path, text: &str) -> Result<(), Error> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Renames `from` to `to` on the ESP and makes it durable. On FAT, a rename writes the new
/// directory entry with no first cluster and size 0; the file's own values reach it only when
/// the file itself is written back. Syncing the directory alone is not enough: a power cut
/// then leaves an empty file under the new name (the power-cut VM test found it). So the file
/// is synced after the rename, then the directory.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(io(from))?;
    fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io(to))?;
    match to.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Writes `slot`'s entry, newest of all, with a trial counter of `tries` (or none: good as
/// written), replacing the slot's previous entries. The entry becomes the default in one
/// rename; before it, nothing bootable has changed.
pub fn install(
    esp: &Path,
    slot: Slot,
    version: &str,
    options: &str,
    tries: Option<u32>,
) -> Result<Entry, Error> {
    let dir = esp.join("loader/entries");
    let existing = read(esp)?;
    let generation = existing.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
    let counter = tries.map(|left| Counter { left, done: 0 });
    let file = file_name(slot, counter);
    // Older entries of this slot first (they point at the slot being replaced anyway).
    for old in existing.iter().filter(|e| e.slot == slot && e.file != file) {
        let path = dir.join(&old.file);
        fs::remove_file(&path).map_err(io(&path))?;
    }
    let tmp = dir.join(format!(".{file}.tmp"));
    write_synced(&tmp, &entry_text(slot, version, generation, options))?;
    let path = dir.join(&file);
    rename_durably(&tmp, &path)?;
    Ok(Entry {
        file,
        slot,
        counter,
        version: version.to_string(),
        generation,
        options: options.to_string(),
    })
}

/// Drops `slot`'s boot counter: the slot is good. Returns whether anything changed.
pub fn bless(esp: &Path, slot: Slot) -> Result<bool, Error> {
    let dir = esp.join("loader/entries");
    let entries = read(esp)?;
    let entry = entries
        .iter()
        .find(|e| e.slot == slot)
        .ok_or(Error::NoEntry(slot))?;
    if entry.counter.is_none() {
        return Ok(false);
    }
    let from = dir.join(&entry.file);
    let to = dir.join(file_name(slot, None));
    rename_durably(&from, &to)?;
    Ok(true)
}

/// Makes `slot` (which must have an entry) the default again, as a good entry, newest of all:
/// an operator's rollback.
pub fn make_default(esp: &Path, slot: Slot) -> Result<Entry, Error> {
    let entries = read(esp)?;
    let entry = entries
        .iter()
        .find(|e| e.slot == slot)
        .ok_or(Error::NoEntry(slot))?
        .clone();
    install(esp, slot, &entry.version, &entry.options, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp_with(files: &[(&str, u64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let entries = dir.path().join("loader/entries");
        fs::create_dir_all(&entries).unwrap();
        for (file, generation) in files {
            let (slot, _) = parse_name(file).unwrap();
            fs::write(
                entries.join(file),
                entry_text(slot, "0.1.0", *generation, &format!("shoal.slot={slot}")),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn entry_names_carry_the_boot_counter() {
        assert_eq!(parse_name("shoal-a.conf"), Some((Slot::A, None)));
        assert_eq!(
            parse_name("shoal-b+2-1.conf"),
            Some((Slot::B, Some(Counter { left: 2, done: 1 })))
        );
        assert_eq!(
            parse_name("shoal-b+3.conf"),
            Some((Slot::B, Some(Counter { left: 3, done: 0 })))
        );
        assert_eq!(parse_name("shoal-c.conf"), None);
        assert_eq!(parse_name("other.conf"), None);
        assert_eq!(parse_name("shoal-a+x-1.conf"), None);
        assert_eq!(
            file_name(Slot::B, Some(Counter { left: 0, done: 3 })),
            "shoal-b+0-3.conf"
        );
    }

    #[test]
    fn a_new_entry_is_the_default_until_its_tries_run_out() {
        let esp = esp_with(&[("shoal-a.conf", 0)]);
        let b = install(esp.path(), Slot::B, "0.2.0", "shoal.slot=b", Some(TRIES)).unwrap();
        assert_eq!(b.file, "shoal-b+3-0.conf");
        let entries = read(esp.path()).unwrap();
        assert_eq!(default_entry(&entries).unwrap().slot, Slot::B);
        let text = fs::read_to_string(esp.path().join("loader/entries/shoal-b+3-0.conf")).unwrap();
        assert!(text.contains("sort-key shoal-99999998\n"), "{text}");
        assert!(text.contains("linux /shoal/b/vmlinuz\n"), "{text}");
        // systemd-boot counted three failed boots: the old slot is the default again.
        fs::rename(
            esp.path().join("loader/entries/shoal-b+3-0.conf"),
            esp.path().join("loader/entries/shoal-b+0-3.conf"),
        )
        .unwrap();
        let entries = read(esp.path()).unwrap();
        assert_eq!(default_entry(&entries).unwrap().slot, Slot::A);
        assert!(!entries[0].bootable());
    }

    #[test]
    fn blessing_drops_the_counter_and_rollback_makes_the_other_slot_newest() {
        let esp = esp_with(&[("shoal-a.conf", 0), ("shoal-b+2-1.conf", 1)]);
        assert!(bless(esp.path(), Slot::B).unwrap());
        assert!(!bless(esp.path(), Slot::B).unwrap());
        let entries = read(esp.path()).unwrap();
        assert_eq!(entries[0].file, "shoal-b.conf");
        assert_eq!(default_entry(&entries).unwrap().slot, Slot::B);
        let a = make_default(esp.path(), Slot::A).unwrap();
        assert_eq!(a.generation, 2);
        let entries = read(esp.path()).unwrap();
        assert_eq!(default_entry(&entries).unwrap().slot, Slot::A);
        assert_eq!(entries.len(), 2);
        assert!(matches!(
            bless(esp_with(&[("shoal-a.conf", 0)]).path(), Slot::B),
            Err(Error::NoEntry(Slot::B))
        ));
    }

    #[test]
    fn installing_a_slot_replaces_its_older_entries_only() {
        let esp = esp_with(&[("shoal-a.conf", 0), ("shoal-b+0-3.conf", 1)]);
        install(esp.path(), Slot::B, "0.3.0", "shoal.slot=b", Some(TRIES)).unwrap();
        let files: Vec<String> = read(esp.path())
            .unwrap()
            .into_iter()
            .map(|e| e.file)
            .collect();
        assert_eq!(files, ["shoal-b+3-0.conf", "shoal-a.conf"]);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(esp.path().join("loader/entries"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2);
    }
}
