//! The consensus log's file: an append-only journal of changes (entries appended, the log
//! truncated or purged, the vote, the committed id), each record framed with its length and a
//! CRC-32 so a torn write at the end is found and cut off on the next start.
//!
//! A change is acknowledged only after `fdatasync` returns. The journal is rewritten from the
//! live state when purges have left it mostly dead records.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Framing: 4-byte little-endian length, 4-byte CRC-32 of the body, the body (JSON).
const HEADER: usize = 8;
/// The largest record read back (a batch of entries is written as one record each).
const MAX_RECORD: usize = 64 << 20;

/// An append-only file of records of type `R`.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// What opening found.
#[derive(Debug)]
pub struct Opened<R> {
    pub journal: Journal,
    pub records: Vec<R>,
    /// Bytes cut off the end (a torn or corrupt tail).
    pub discarded: u64,
}

fn frame<R: Serialize>(record: &R) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(record).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses records from `data` up to the first one that is incomplete or corrupt; returns them
/// and the length of the good prefix.
pub fn parse<R: DeserializeOwned>(data: &[u8]) -> (Vec<R>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while data.len() - at >= HEADER {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD || data.len() - at - HEADER < len {
            break;
        }
        let body = &data[at + HEADER..at + HEADER + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        match serde_json::from_slice(body) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        at += HEADER + len;
    }
    (records, at)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Journal {
    /// Opens (or creates) the journal at `path` and reads its records, cutting off a bad tail.
    pub fn open<R: DeserializeOwned>(path: &Path) -> io::Result<Opened<R>> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let (records, good) = parse(&data);
        let discarded = (data.len() - good) as u64;
        if discarded > 0 {
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        sync_dir(path)?;
        Ok(Opened {
            journal: Journal {
                path: path.to_path_buf(),
                file,
                len: good as u64,
            },
            records,
            discarded,
        })
    }

    /// Appends records and waits until they are on disk.
    pub fn append<R: Serialize>(&mut self, records: &[R]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(&frame(r)?);
        }
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replaces the whole journal with `records`, atomically (a new file renamed over).
    pub fn rewrite<R: Serialize>(&mut self, records: &[R]) -> io::Result<()> {
        let temporary = self.path.with_extension("rewrite");
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(&frame(r)?);
        }
        {
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &self.path)?;
        sync_dir(&self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = bytes.len() as u64;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically and durably (a temporary file, fsync, rename, fsync of
/// the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file's permission bits (`0o600` for keys), set from creation on.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    sync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut opened = Journal::open::<String>(&path).unwrap();
        assert!(opened.records.is_empty() && opened.journal.is_empty());
        opened
            .journal
            .append(&["one".to_string(), "two".into()])
            .unwrap();
        opened.journal.append(&["three".to_string()]).unwrap();
        drop(opened);
        // A torn write: half a header and a body.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let opened = Journal::open::<String>(&path).unwrap();
        assert_eq!(opened.records, ["one", "two", "three"]);
        assert_eq!(opened.discarded, 6);
        let mut journal = opened.journal;
        journal.append(&["four".to_string()]).unwrap();
        let reopened = Journal::open::<String>(&path).unwrap();
        assert_eq!(reopened.records, ["one", "two", "three", "four"]);
        assert_eq!(reopened.discarded, 0);
    }

    #[test]
    fn a_corrupt_record_ends_the_good_prefix() {
        let mut data = frame(&"a".to_string()).unwrap();
        let mut second = frame(&"b".to_string()).unwrap();
        let last = second.len() - 1;
        second[last] ^= 0xff;
        data.extend_from_slice(&second);
        data.extend_from_slice(&frame(&"c".to_string()).unwrap());
        let (records, good) = parse::<String>(&data);
        assert_eq!(records, ["a"]);
        assert_eq!(good, frame(&"a".to_string()).unwrap().len());
    }

    #[test]
    fn a_rewrite_replaces_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut j = Journal::open::<u32>(&path).unwrap().journal;
        j.append(&[1u32, 2, 3]).unwrap();
        j.rewrite(&[7u32]).unwrap();
        j.append(&[8u32]).unwrap();
        assert_eq!(Journal::open::<u32>(&path).unwrap().records, [7, 8]);
    }
}
