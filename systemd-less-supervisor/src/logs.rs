//! Bounded per-service log rings, and their optional persistence under `/var/log`.
//!
//! [`LogRing`] is sans-IO: bytes and a caller-supplied timestamp go in, lines come out. Its
//! memory is bounded whatever a service writes: stored lines are charged their text plus a
//! fixed per-line overhead and the oldest are evicted to stay within `max_bytes`; a line
//! longer than `max_line` is cut and marked (the rest up to its newline is discarded), so the
//! per-stream partial-line buffers never exceed `max_line` either. Total memory is thus at
//! most `max_bytes + 4 * max_line` plus the deque's slack.
//!
//! Every line gets a sequence number, consecutive over the ring's life; a follower remembers
//! the next number it wants and [`LogRing::since`] tells it how many lines it missed if the
//! ring evicted them first.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default longest line kept whole, in bytes.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// What each stored line costs beyond its text (its metadata and bookkeeping).
pub const LINE_OVERHEAD: usize = std::mem::size_of::<LogLine>();

/// The smallest ring accepted: smaller sizes are raised to it.
pub const MIN_RING_BYTES: usize = 1024;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// The kernel log (`/dev/kmsg`), for the lines concerning the service (e.g. OOM kills).
    Kernel,
    /// The supervisor's own messages about the service (started, exited, restarting).
    Supervisor,
}

impl Stream {
    const ALL: [Stream; 4] = [
        Stream::Stdout,
        Stream::Stderr,
        Stream::Kernel,
        Stream::Supervisor,
    ];

    /// The stream's name as printed: `stdout`, `stderr`, `kernel`, `supervisor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Kernel => "kernel",
            Stream::Supervisor => "supervisor",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Consecutive over the ring's life, from 0.
    pub seq: u64,
    /// The caller's clock when the line's first byte arrived.
    pub time: Duration,
    pub stream: Stream,
    /// Without the newline (and a trailing `\r`); invalid UTF-8 replaced.
    pub text: String,
    /// The line was longer than the ring's maximum and was cut.
    pub truncated: bool,
}

impl fmt::Display for LogLine {
    /// `<seconds>.<micros> <stream> <text>`, with ` [truncated]` after a cut line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06} {} {}",
            self.time.as_secs(),
            self.time.subsec_micros(),
            self.stream,
            self.text
        )?;
        if self.truncated {
            f.write_str(" [truncated]")?;
        }
        Ok(())
    }
}

/// What a follower gets from [`LogRing::since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub lines: Vec<LogLine>,
    /// The sequence number to ask for next time.
    pub next_seq: u64,
    /// Lines the follower asked for that the ring had already evicted.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Partial {
    buf: Vec<u8>,
    /// When the first byte of the pending line arrived.
    started: Option<Duration>,
    /// The pending line was already emitted cut; drop bytes until its newline.
    discarding: bool,
}

/// A bounded in-memory log of one service.
#[derive(Debug)]
pub struct LogRing {
    lines: VecDeque<LogLine>,
    stored: usize,
    max_bytes: usize,
    max_line: usize,
    next_seq: u64,
    partial: [Partial; 4],
}

impl LogRing {
    /// A ring holding at most `max_bytes` (at least [`MIN_RING_BYTES`]) with lines cut at
    /// [`DEFAULT_MAX_LINE`] bytes.
    pub fn new(max_bytes: usize) -> Self {
        Self::with_max_line(max_bytes, DEFAULT_MAX_LINE)
    }

    /// As [`LogRing::new`] with lines cut at `max_line` bytes (at most what fits the ring).
    pub fn with_max_line(max_bytes: usize, max_line: usize) -> Self {
        let max_bytes = max_bytes.max(MIN_RING_BYTES);
        Self {
            lines: VecDeque::new(),
            stored: 0,
            max_bytes,
            max_line: max_line.clamp(1, max_bytes - LINE_OVERHEAD),
            next_seq: 0,
            partial: Default::default(),
        }
    }

    /// Adds output of `stream`: complete lines are stored, a trailing partial line waits for
    /// its newline (see [`LogRing::flush`]).
    pub fn push_bytes(&mut self, stream: Stream, mut bytes: &[u8], now: Duration) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|b| *b == b'\n');
            let (chunk, rest, complete) = match newline {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            let partial = &mut self.partial[stream.index()];
            if partial.discarding {
                partial.discarding = !complete;
                continue;
            }
            partial.started.get_or_insert(now);
            let room = self.max_line - partial.buf.len();
            if chunk.len() > room {
                partial.buf.extend_from_slice(&chunk[..room]);
                self.emit(stream, true);
                self.partial[stream.index()].discarding = !complete;
            } else {
                partial.buf.extend_from_slice(chunk);
                if complete {
                    self.emit(stream, false);
                }
            }
        }
    }

    /// Stores `text` as one whole line (the supervisor's and the kernel's messages). A
    /// pending partial line of the same stream is completed first.
    pub fn push_line(&mut self, stream: Stream, text: &str, now: Duration) {
        self.flush(stream);
        self.push_bytes(stream, text.as_bytes(), now);
        self.flush(stream);
    }

    /// Stores the pending partial line of `stream`, if any (the service exited, or the pipe
    /// closed, without a final newline).
    pub fn flush(&mut self, stream: Stream) {
        let partial = &mut self.partial[stream.index()];
        partial.discarding = false;
        if partial.started.is_some() {
            self.emit(stream, false);
        }
    }

    fn emit(&mut self, stream: Stream, mut truncated: bool) {
        let partial = &mut self.partial[stream.index()];
        let time = partial.started.take().unwrap_or_default();
        let mut raw = std::mem::take(&mut partial.buf);
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        let mut text = match String::from_utf8(raw) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        };
        // Replacement characters can make the text longer than its bytes were.
        if text.len() > self.max_line {
            let mut cut = self.max_line;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            truncated = true;
        }
        text.shrink_to_fit();
        let cost = text.len() + LINE_OVERHEAD;
        while self.stored + cost > self.max_bytes {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.stored -= old.text.len() + LINE_OVERHEAD;
        }
        self.stored += cost;
        self.lines.push_back(LogLine {
            seq: self.next_seq,
            time,
            stream,
            text,
            truncated,
        });
        self.next_seq += 1;
    }

    /// Every stored line from sequence number `seq` on.
    pub fn since(&self, seq: u64) -> Since {
        self.since_limit(seq, usize::MAX)
    }

    /// At most `limit` stored lines from sequence number `seq` on (for paging followers).
    pub fn since_limit(&self, seq: u64, limit: usize) -> Since {
        let first = self.first_seq();
        let dropped = first.saturating_sub(seq);
        let start = seq.max(first);
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        let lines: Vec<LogLine> = self.lines.iter().skip(skip).take(limit).cloned().collect();
        let next_seq = lines.last().map_or(start.min(self.next_seq), |l| l.seq + 1);
        Since {
            lines,
            next_seq,
            dropped,
        }
    }

    /// The newest `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }

    /// The sequence number of the oldest stored line (= `next_seq` when empty).
    pub fn first_seq(&self) -> u64 {
        self.lines.front().map_or(self.next_seq, |l| l.seq)
    }

    /// The sequence number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes charged for the stored lines; never above [`LogRing::max_bytes`].
    pub fn stored_bytes(&self) -> usize {
        self.stored
    }

    /// The bound on [`LogRing::stored_bytes`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Stored lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is stored.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes waiting in partial lines, at most `max_line` per stream.
    pub fn pending_bytes(&self) -> usize {
        Stream::ALL
            .iter()
            .map(|s| self.partial[s.index()].buf.len())
            .sum()
    }
}

/// Why persisting a log failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("service name {0:?} cannot name a log file")]
    InvalidName(String),
}

/// Appends a service's lines to `<dir>/<service>.log`, moving it to `<service>.log.1` (one
/// generation, replacing the previous) when it would grow past `max_file_bytes`. Writes are
/// buffered: call [`Persist::flush`] after each batch (drop flushes too).
#[derive(Debug)]
pub struct Persist {
    path: PathBuf,
    rotated: PathBuf,
    file: BufWriter<File>,
    size: u64,
    max_file_bytes: u64,
}

impl Persist {
    /// Opens (creating `dir` and the file as needed) the log of `service` under `dir`
    /// (`/var/log/shoal` on a node). Fails when `dir` is not writable: a node without a
    /// writable /var keeps its logs in memory only.
    pub fn open(dir: &Path, service: &str, max_file_bytes: u64) -> Result<Self, PersistError> {
        if crate::cgroup::validate_name(service).is_err() {
            return Err(PersistError::InvalidName(service.to_owned()));
        }
        fs::create_dir_all(dir).map_err(|source| PersistError::Io {
            op: "creating",
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(format!("{service}.log"));
        let rotated = dir.join(format!("{service}.log.1"));
        let (file, size) = open_append(&path)?;
        Ok(Self {
            path,
            rotated,
            file: BufWriter::new(file),
            size,
            max_file_bytes,
        })
    }

    /// The current log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` as its [`Display`](fmt::Display) form and a newline, rotating first if
    /// the file would outgrow its bound (a single line longer than the bound is still
    /// written, alone in its file).
    pub fn append(&mut self, line: &LogLine) -> Result<(), PersistError> {
        let text = format!("{line}\n");
        let len = text.len() as u64;
        if self.size > 0 && self.size + len > self.max_file_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(text.as_bytes())
            .map_err(|source| self.io_err("writing", source))?;
        self.size += len;
        Ok(())
    }

    /// Writes out buffered lines.
    pub fn flush(&mut self) -> Result<(), PersistError> {
        self.file
            .flush()
            .map_err(|source| self.io_err("writing", source))
    }

    fn rotate(&mut self) -> Result<(), PersistError> {
        self.flush()?;
        fs::rename(&self.path, &self.rotated).map_err(|source| PersistError::Io {
            op: "rotating",
            path: self.path.clone(),
            source,
        })?;
        let (file, size) = open_append(&self.path)?;
        self.file = BufWriter::new(file);
        self.size = size;
        Ok(())
    }

    fn io_err(&self, op: &'static str, source: io::Error) -> PersistError {
        PersistError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }
}

fn open_append(path: &Path) -> Result<(File, u64), PersistError> {
    let err = |op, source| PersistError::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| err("opening", e))?;
    let size = file.metadata().map_err(|e| err("inspecting", e))?.len();
    Ok((file, size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn splits_lines_and_keeps_partials_per_stream() {
        let mut ring = LogRing::new(64 * 1024);
        ring.push_bytes(Stream::Stdout, b"hel", t(1));
        ring.push_bytes(Stream::Stderr, b"oops\r\nhalf", t(2));
        ring.push_bytes(Stream::Stdout, b"lo\nworld\n\nnext", t(3));
        let lines = ring.tail(10);
        assert_eq!(texts(&lines), ["oops", "hello", "world", ""]);
        assert_eq!(lines[0].stream, Stream::Stderr);
        // A line is stamped with the time its first byte arrived.
        assert_eq!(lines[1].time, t(1));
        assert_eq!(lines[2].time, t(3));
        assert_eq!(ring.pending_bytes(), "half".len() + "next".len());
        ring.flush(Stream::Stdout);
        ring.flush(Stream::Stderr);
        assert_eq!(texts(&ring.tail(2)), ["next", "half"]);
        assert_eq!(ring.pending_bytes(), 0);
        assert_eq!(
            ring.tail(100).iter().map(|l| l.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn whole_lines_complete_a_pending_partial_first() {
        let mut ring = LogRing::new(4096);
        ring.push_bytes(Stream::Supervisor, b"dangling", t(1));
        ring.push_line(Stream::Supervisor, "service exited with status 1", t(2));
        assert_eq!(
            texts(&ring.tail(5)),
            ["dangling", "service exited with status 1"]
        );
        assert_eq!(
            ring.tail(1)[0].to_string(),
            "2.000000 supervisor service exited with status 1"
        );
    }

    #[test]
    fn long_lines_are_cut_marked_and_the_rest_discarded() {
        let mut ring = LogRing::with_max_line(64 * 1024, 16);
        ring.push_bytes(Stream::Stdout, b"0123456789", t(1));
        ring.push_bytes(Stream::Stdout, b"abcdefghij", t(1));
        ring.push_bytes(Stream::Stdout, b"more of the same line", t(1));
        assert_eq!(ring.pending_bytes(), 0);
        ring.push_bytes(Stream::Stdout, b" still\nshort\n", t(1));
        let lines = ring.tail(10);
        assert_eq!(texts(&lines), ["0123456789abcdef", "short"]);
        assert!(lines[0].truncated && !lines[1].truncated);
        assert!(lines[0].to_string().ends_with(" [truncated]"));
    }

    #[test]
    fn invalid_utf8_is_replaced_within_the_line_bound() {
        let mut ring = LogRing::with_max_line(4096, 4);
        ring.push_bytes(Stream::Stdout, b"\xff\xff\xff\xff\n", t(1));
        let line = &ring.tail(1)[0];
        assert!(line.text.len() <= 4 && line.truncated, "{line:?}");
        ring.push_bytes(Stream::Stdout, b"a\xffb\n", t(1));
        assert_eq!(ring.tail(1)[0].text, "a\u{fffd}");
    }

    #[test]
    fn a_100_mb_flood_stays_within_64_kib_and_keeps_the_newest_lines() {
        const BOUND: usize = 64 * 1024;
        let mut ring = LogRing::new(BOUND);
        let mut chunk = Vec::with_capacity(1 << 20);
        let mut sent = 0usize;
        let mut line_no = 0u64;
        while sent < 100 << 20 {
            chunk.clear();
            // 1 MiB batches of ~100-byte lines, split mid-line to exercise partials.
            while chunk.len() < (1 << 20) - 128 {
                writeln!(chunk, "line {line_no:010} {}", "x".repeat(80)).unwrap();
                line_no += 1;
            }
            let (a, b) = chunk.split_at(chunk.len() / 3 + 7);
            ring.push_bytes(Stream::Stdout, a, t(1));
            ring.push_bytes(Stream::Stdout, b, t(2));
            sent += chunk.len();
            assert!(ring.stored_bytes() <= BOUND);
        }
        assert!(ring.stored_bytes() <= BOUND, "{}", ring.stored_bytes());
        assert!(ring.stored_bytes() > BOUND / 2);
        assert_eq!(ring.next_seq(), line_no);
        let tail = ring.tail(2);
        assert!(
            tail[1]
                .text
                .starts_with(&format!("line {:010} ", line_no - 1))
        );
        assert!(
            tail[0]
                .text
                .starts_with(&format!("line {:010} ", line_no - 2))
        );
        // A newline-free flood: one cut line, the partial buffer bounded.
        for _ in 0..10 {
            ring.push_bytes(Stream::Stderr, &[b'y'; 1 << 20], t(3));
            assert!(ring.pending_bytes() <= DEFAULT_MAX_LINE);
        }
        assert!(ring.stored_bytes() <= BOUND);
        let last = &ring.tail(1)[0];
        assert!(last.truncated && last.text.len() == DEFAULT_MAX_LINE);
        assert_eq!(ring.next_seq(), line_no + 1);
    }

    #[test]
    fn followers_page_and_learn_what_they_missed() {
        let mut ring = LogRing::new(MIN_RING_BYTES);
        let first = ring.since(0);
        assert_eq!(
            (first.lines.len(), first.next_seq, first.dropped),
            (0, 0, 0)
        );
        for i in 0..5 {
            ring.push_line(Stream::Stdout, &format!("l{i}"), t(i));
        }
        let page = ring.since_limit(0, 2);
        assert_eq!(texts(&page.lines), ["l0", "l1"]);
        let rest = ring.since(page.next_seq);
        assert_eq!(texts(&rest.lines), ["l2", "l3", "l4"]);
        assert_eq!((rest.next_seq, rest.dropped), (5, 0));
        let idle = ring.since(rest.next_seq);
        assert_eq!((idle.lines.len(), idle.next_seq), (0, 5));

        // Flood past the ring: a follower at 5 missed the evicted lines.
        for i in 5..200 {
            ring.push_line(Stream::Stdout, &format!("l{i}"), t(i));
        }
        let behind = ring.since(5);
        let first_kept = ring.first_seq();
        assert!(first_kept > 5);
        assert_eq!(behind.dropped, first_kept - 5);
        assert_eq!(behind.lines[0].seq, first_kept);
        assert_eq!(behind.next_seq, 200);
        assert_eq!(behind.lines.last().unwrap().text, "l199");
        // Asking beyond the end is harmless.
        let ahead = ring.since(1000);
        assert_eq!(
            (ahead.lines.len(), ahead.next_seq, ahead.dropped),
            (0, 200, 0)
        );
    }

    fn line(seq: u64, text: &str) -> LogLine {
        LogLine {
            seq,
            time: Duration::from_micros(1_500_000),
            stream: Stream::Stderr,
            text: text.to_owned(),
            truncated: false,
        }
    }

    #[test]
    fn persist_appends_and_rotates_once() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("var/log/shoal");
        // Each persisted line is "1.500000 stderr NN\n": 19 bytes.
        let mut persist = Persist::open(&logs, "netd", 40).unwrap();
        for i in 0..5 {
            persist.append(&line(i, &format!("{i:02}"))).unwrap();
        }
        persist.flush().unwrap();
        let current = fs::read_to_string(logs.join("netd.log")).unwrap();
        let rotated = fs::read_to_string(logs.join("netd.log.1")).unwrap();
        assert_eq!(current, "1.500000 stderr 04\n");
        assert_eq!(rotated, "1.500000 stderr 02\n1.500000 stderr 03\n");
        assert_eq!(persist.path(), logs.join("netd.log"));
        drop(persist);

        // Reopening continues the file and counts what is there.
        let mut persist = Persist::open(&logs, "netd", 40).unwrap();
        persist.append(&line(5, "05")).unwrap();
        persist.append(&line(6, "06")).unwrap();
        drop(persist);
        assert_eq!(
            fs::read_to_string(logs.join("netd.log")).unwrap(),
            "1.500000 stderr 06\n"
        );
        assert_eq!(
            fs::read_to_string(logs.join("netd.log.1")).unwrap(),
            "1.500000 stderr 04\n1.500000 stderr 05\n"
        );
    }

    #[test]
    fn persist_refuses_bad_names_and_unwritable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Persist::open(dir.path(), "../etc/passwd", 100),
            Err(PersistError::InvalidName(_))
        ));
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        let err = Persist::open(&file.join("logs"), "netd", 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not-a-dir"), "{err}");
    }
}
