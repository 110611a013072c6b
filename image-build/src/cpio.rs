//! A deterministic writer for cpio "newc" archives, the format Linux unpacks as an initramfs.
//!
//! Entries are collected first and written sorted by path at [`CpioWriter::write_to`], so the
//! order of `add_*` calls does not change the output. Every entry gets the same mtime, uid and
//! gid 0, and inode numbers counting up from 1 in write order. Missing parent directories are
//! added (mode 0755) so the kernel, which does not create parents while unpacking, never meets
//! a file before its directory.
//!
//! ```
//! use shoal_image_build::cpio::CpioWriter;
//!
//! let mut archive = CpioWriter::new(0);
//! archive.add_file("/init", 0o755, b"#!not-really\n".to_vec())?;
//! archive.add_char_device("/dev/console", 0o600, 5, 1)?;
//! archive.add_dir("/proc", 0o755)?;
//! let mut bytes = Vec::new();
//! archive.write_to(&mut bytes)?;
//! assert!(bytes.starts_with(b"070701"));
//! # Ok::<(), shoal_image_build::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

#[derive(Debug, Clone)]
enum Body {
    Dir,
    Bytes(Vec<u8>),
    /// A file copied from disk when the archive is written; the size is taken when added.
    FromFile(PathBuf, u32),
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    permissions: u32,
    body: Body,
}

impl Entry {
    fn mode(&self) -> u32 {
        let kind = match self.body {
            Body::Dir => S_IFDIR,
            Body::Bytes(_) | Body::FromFile(..) => S_IFREG,
            Body::Symlink(_) => S_IFLNK,
            Body::CharDevice { .. } => S_IFCHR,
        };
        kind | self.permissions
    }

    fn size(&self) -> u32 {
        match &self.body {
            Body::Dir | Body::CharDevice { .. } => 0,
            // Lengths were checked against u32 when the entry was added.
            Body::Bytes(bytes) => bytes.len() as u32,
            Body::FromFile(_, size) => *size,
            Body::Symlink(target) => target.len() as u32,
        }
    }
}

/// Collects archive entries and writes them as a sorted, reproducible newc archive.
#[derive(Debug, Clone)]
pub struct CpioWriter {
    mtime: u32,
    entries: BTreeMap<String, Entry>,
}

/// Turns `/a/b` or `a/b` into `a/b`; rejects empty, `.`, `..` and doubled slashes.
fn archive_path(path: &str) -> Result<String> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let valid = !trimmed.is_empty()
        && !trimmed.contains('\0')
        && trimmed
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !valid {
        return Err(Error::Cpio(format!(
            "invalid archive path {path:?}: use a path like /dir/name without ., .. or empty parts"
        )));
    }
    Ok(trimmed.to_owned())
}

fn check_len(path: &str, len: u64) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::Cpio(format!(
            "{path}: {len} bytes is too large for newc (4 GiB limit)"
        ))
    })
}

impl CpioWriter {
    /// An empty archive whose entries will all carry `mtime` (seconds since the epoch).
    pub fn new(mtime: u32) -> Self {
        CpioWriter {
            mtime,
            entries: BTreeMap::new(),
        }
    }

    fn insert(&mut self, path: &str, permissions: u32, body: Body) -> Result<()> {
        let key = archive_path(path)?;
        if permissions & !0o7777 != 0 {
            return Err(Error::Cpio(format!(
                "{path}: mode {permissions:o} has bits beyond 0o7777"
            )));
        }
        if self.entries.contains_key(&key) {
            return Err(Error::Cpio(format!("{path}: added twice")));
        }
        self.entries.insert(key, Entry { permissions, body });
        Ok(())
    }

    /// Adds a directory.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.insert(path, mode, Body::Dir)
    }

    /// Adds a regular file with the given contents.
    pub fn add_file(&mut self, path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Result<()> {
        let contents = contents.into();
        check_len(path, contents.len() as u64)?;
        self.insert(path, mode, Body::Bytes(contents))
    }

    /// Adds a regular file whose contents are read from `source` when the archive is written
    /// (so large files are streamed, not held in memory).
    pub fn add_file_from(&mut self, path: &str, mode: u32, source: &Path) -> Result<()> {
        let meta = std::fs::metadata(source).map_err(Error::io("read", source))?;
        if !meta.is_file() {
            return Err(Error::Cpio(format!(
                "{}: not a regular file",
                source.display()
            )));
        }
        let size = check_len(path, meta.len())?;
        self.insert(path, mode, Body::FromFile(source.to_path_buf(), size))
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        if target.is_empty() || target.contains('\0') {
            return Err(Error::Cpio(format!(
                "{path}: invalid symlink target {target:?}"
            )));
        }
        self.insert(path, 0o777, Body::Symlink(target.to_owned()))
    }

    /// Adds a character device node (for example `/dev/console`, 5:1).
    pub fn add_char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(path, mode, Body::CharDevice { major, minor })
    }

    /// Number of entries added so far (implicit parent directories not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries to write: the added ones plus implicit parent directories, sorted by path
    /// (a parent sorts before its children because it is a prefix of them).
    fn complete_entries(&self) -> Result<BTreeMap<&str, Entry>> {
        let mut all: BTreeMap<&str, Entry> = self
            .entries
            .iter()
            .map(|(path, entry)| (path.as_str(), entry.clone()))
            .collect();
        for path in self.entries.keys() {
            let mut parent = path.as_str();
            while let Some((up, _)) = parent.rsplit_once('/') {
                parent = up;
                match all.get(parent) {
                    Some(Entry {
                        body: Body::Dir, ..
                    }) => {}
                    Some(_) => {
                        return Err(Error::Cpio(format!(
                            "/{path}: parent /{parent} is not a directory"
                        )));
                    }
                    None => {
                        all.insert(
                            parent,
                            Entry {
                                permissions: 0o755,
                                body: Body::Dir,
                            },
                        );
                    }
                }
            }
        }
        Ok(all)
    }

    /// Writes the archive (sorted entries, then `TRAILER!!!`) and returns the bytes written.
    pub fn write_to(&self, out: impl Write) -> Result<u64> {
        let entries = self.complete_entries()?;
        let mut out = CountingWriter {
            inner: BufWriter::with_capacity(1 << 20, out),
            count: 0,
        };
        let write_err = |e: io::Error| Error::Cpio(format!("cannot write the archive: {e}"));
        for (ino, (path, entry)) in (1u32..).zip(&entries) {
            let (rdev_major, rdev_minor) = match entry.body {
                Body::CharDevice { major, minor } => (major, minor),
                _ => (0, 0),
            };
            let nlink = if matches!(entry.body, Body::Dir) {
                2
            } else {
                1
            };
            let header = Header {
                ino,
                mode: entry.mode(),
                nlink,
                mtime: self.mtime,
                size: entry.size(),
                rdev_major,
                rdev_minor,
            };
            header.write(&mut out, path).map_err(write_err)?;
            match &entry.body {
                Body::Dir | Body::CharDevice { .. } => {}
                Body::Bytes(bytes) => out.write_all(bytes).map_err(write_err)?,
                Body::Symlink(target) => out.write_all(target.as_bytes()).map_err(write_err)?,
                Body::FromFile(source, size) => {
                    let file = File::open(source).map_err(Error::io("read", source))?;
                    let copied = io::copy(&mut file.take(u64::from(*size) + 1), &mut out)
                        .map_err(Error::io("read", source))?;
                    if copied != u64::from(*size) {
                        return Err(Error::Cpio(format!(
                            "{}: size changed from {size} to {copied} bytes while writing the archive",
                            source.display()
                        )));
                    }
                }
            }
            out.pad4().map_err(write_err)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        trailer.write(&mut out, TRAILER).map_err(write_err)?;
        out.inner.flush().map_err(write_err)?;
        Ok(out.count)
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

impl Header {
    /// Writes the 110-byte header and the NUL-terminated name, padded to 4 bytes.
    fn write<W: Write>(&self, out: &mut CountingWriter<W>, name: &str) -> io::Result<()> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime,
            self.size,
            0, // dev major
            0, // dev minor
            self.rdev_major,
            self.rdev_minor,
            namesize,
            0, // check
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        out.write_all(header.as_bytes())?;
        out.write_all(name.as_bytes())?;
        out.write_all(&[0])?;
        out.pad4()
    }
}

struct CountingWriter<W: Write> {
    inner: BufWriter<W>,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.count % 4) as usize) % 4;
        self.write_all(&[0; 3][..pad])
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn bytes(archive: &CpioWriter) -> Vec<u8> {
        let mut out = Vec::new();
        let n = archive.write_to(&mut out).unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    #[test]
    fn header_layout_matches_newc() {
        let mut archive = CpioWriter::new(0x5f5e_1000);
        archive.add_file("/a", 0o644, b"hello".to_vec()).unwrap();
        let out = bytes(&archive);
        let expected_header = concat!(
            "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "5f5e1000",
            "00000005", "00000000", "00000000", "00000000", "00000000", "00000002", "00000000",
        );
        assert_eq!(&out[..110], expected_header.as_bytes());
        // name "a\0" ends at 112 (already 4-aligned), then 5 bytes of data padded to 8.
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(&out[112..117], b"hello");
        assert_eq!(&out[117..120], &[0, 0, 0]);
        assert_eq!(&out[120..126], b"070701");
        assert!(out.ends_with(b"TRAILER!!!\0\0\0\0") || out.ends_with(b"TRAILER!!!\0"));
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn output_does_not_depend_on_insertion_order() {
        let mut one = CpioWriter::new(7);
        one.add_dir("/proc", 0o755).unwrap();
        one.add_file("/lib/modules/x/a.ko", 0o644, b"A".to_vec())
            .unwrap();
        one.add_symlink("/bin", "usr/bin").unwrap();
        let mut two = CpioWriter::new(7);
        two.add_symlink("bin", "usr/bin").unwrap();
        two.add_file("lib/modules/x/a.ko", 0o644, b"A".to_vec())
            .unwrap();
        two.add_dir("proc", 0o755).unwrap();
        assert_eq!(bytes(&one), bytes(&two));
    }

    #[test]
    fn rejects_bad_paths_duplicates_and_files_as_parents() {
        let mut archive = CpioWriter::new(0);
        for bad in ["", "/", "a/../b", "a//b", "./a", "a/."] {
            assert!(archive.add_dir(bad, 0o755).is_err(), "{bad:?} accepted");
        }
        archive.add_file("/f", 0o644, Vec::new()).unwrap();
        assert!(archive.add_file("f", 0o644, Vec::new()).is_err());
        archive.add_file("/f/g", 0o644, Vec::new()).unwrap();
        let err = archive.write_to(Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("parent /f is not a directory"),
            "{err}"
        );
        assert!(CpioWriter::new(0).add_dir("/d", 0o10755).is_err());
    }

    fn run_cpio(args: &[&str], archive: &[u8], dir: &Path) -> String {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the cpio CLI is needed for this test: apt-get install cpio");
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "cpio {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8_lossy(&output.stderr)
    }

    fn sample() -> (CpioWriter, tempfile::TempDir) {
        let src = tempfile::tempdir().unwrap();
        let big = src.path().join("big");
        std::fs::write(&big, vec![0xa5u8; 100_003]).unwrap();
        let mut archive = CpioWriter::new(1_700_000_000);
        archive
            .add_file("/init", 0o755, b"\x7fELF-ish".to_vec())
            .unwrap();
        archive
            .add_file_from("/shoal/rootfs.erofs", 0o644, &big)
            .unwrap();
        archive.add_dir("/proc", 0o755).unwrap();
        archive.add_dir("/tmp", 0o1777).unwrap();
        archive
            .add_symlink("/lib/modules/current", "6.1.0-test")
            .unwrap();
        archive
            .add_file(
                "/lib/modules/6.1.0-test/modules.dep",
                0o644,
                b"kernel/a.ko:\n".to_vec(),
            )
            .unwrap();
        (archive, src)
    }

    #[test]
    fn cpio_cli_lists_entries_in_sorted_order() {
        let (mut archive, _src) = sample();
        archive
            .add_char_device("/dev/console", 0o600, 5, 1)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let listing = run_cpio(&["-it", "--quiet"], &bytes(&archive), dir.path());
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.1.0-test",
                "lib/modules/6.1.0-test/modules.dep",
                "lib/modules/current",
                "proc",
                "shoal",
                "shoal/rootfs.erofs",
                "tmp",
            ]
        );
        let verbose = run_cpio(&["-itv", "--quiet"], &bytes(&archive), dir.path());
        let console = verbose
            .lines()
            .find(|l| l.ends_with("dev/console"))
            .unwrap();
        assert!(console.starts_with("crw-------"), "{console}");
        assert!(
            console.contains("5,   1") || console.contains("5, 1"),
            "{console}"
        );
        let tmp = verbose.lines().find(|l| l.ends_with(" tmp")).unwrap();
        assert!(tmp.starts_with("drwxrwxrwt"), "{tmp}");
    }

    #[test]
    fn cpio_cli_extracts_identical_contents() {
        let (archive, src) = sample();
        let dir = tempfile::tempdir().unwrap();
        run_cpio(
            &["-idv", "--quiet", "--no-absolute-filenames"],
            &bytes(&archive),
            dir.path(),
        );
        let root = dir.path();
        assert_eq!(std::fs::read(root.join("init")).unwrap(), b"\x7fELF-ish");
        assert_eq!(
            std::fs::read(root.join("shoal/rootfs.erofs")).unwrap(),
            std::fs::read(src.path().join("big")).unwrap()
        );
        assert_eq!(
            std::fs::read_link(root.join("lib/modules/current")).unwrap(),
            Path::new("6.1.0-test")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("init"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(
            std::fs::read_to_string(root.join("lib/modules/6.1.0-test/modules.dep")).unwrap(),
            "kernel/a.ko:\n"
        );
    }
}
