//! Service output: one pipe per service (stdout and stderr share it, so their order is kept),
//! read by a task into the service's bounded [`LogRing`], appended to `<log-dir>/<name>.log`
//! when the log directory is writable, and echoed to the console.
//!
//! Lines are stamped with the time since boot (`CLOCK_BOOTTIME`), the clock of the boot events
//! and of the control API's log lines. Lines from both streams are stored as
//! [`Stream::Stdout`]; the supervisor's own notes are [`Stream::Supervisor`].

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::logs::{LogLine, LogRing, Persist, Since, Stream};

use super::console::Console;

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 4096;
/// A persisted log is rotated (one previous generation kept) past this size.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Every service's log, by name. Fixed at startup.
pub(crate) type LogMap = Arc<BTreeMap<String, Arc<ServiceLog>>>;

/// One service's log: its ring, its file, and a wake-up for followers.
#[derive(Debug)]
pub(crate) struct ServiceLog {
    state: Mutex<LogState>,
    grew: tokio::sync::Notify,
}

#[derive(Debug)]
struct LogState {
    ring: LogRing,
    persist: Option<Persist>,
}

impl ServiceLog {
    /// A log of at most `ring_bytes` in memory, persisted under `dir` when it is writable.
    pub(crate) fn new(name: &str, ring_bytes: usize, dir: Option<&Path>) -> Self {
        let persist = dir.and_then(|dir| match Persist::open(dir, name, MAX_FILE_BYTES) {
            Ok(persist) => Some(persist),
            Err(error) => {
                tracing::debug!(service = name, "logs kept in memory only: {error}");
                None
            }
        });
        Self {
            state: Mutex::new(LogState {
                ring: LogRing::new(ring_bytes),
                persist,
            }),
            grew: tokio::sync::Notify::new(),
        }
    }

    /// Whether lines also go to a file.
    #[cfg(test)]
    pub(crate) fn persisted(&self) -> bool {
        self.lock().persist.is_some()
    }

    /// Output from the service's pipe; the complete lines it made.
    pub(crate) fn push_output(&self, bytes: &[u8]) -> Vec<LogLine> {
        self.update(|ring, now| ring.push_bytes(Stream::Stdout, bytes, now))
    }

    /// The pipe closed: a last line without its newline.
    pub(crate) fn end_output(&self) -> Vec<LogLine> {
        self.update(|ring, _| ring.flush(Stream::Stdout))
    }

    /// A kernel log record, stamped with the kernel's own time.
    pub(crate) fn push_kernel(&self, text: &str, time: Duration) {
        self.update(|ring, _| ring.push_line(Stream::Kernel, text, time));
    }

    /// A note of the supervisor's about the service.
    pub(crate) fn note(&self, text: &str) {
        self.update(|ring, now| ring.push_line(Stream::Supervisor, text, now));
    }

    /// Stored lines from `seq` on, at most `limit`.
    pub(crate) fn since(&self, seq: u64, limit: usize) -> Since {
        self.lock().ring.since_limit(seq, limit)
    }

    /// Waits until a line numbered `seq` or later exists, then returns as [`Self::since`].
    pub(crate) async fn follow(&self, seq: u64, limit: usize) -> Since {
        loop {
            let grew = self.grew.notified();
            tokio::pin!(grew);
            grew.as_mut().enable();
            if self.lock().ring.next_seq() > seq {
                return self.since(seq, limit);
            }
            grew.await;
        }
    }

    fn update(&self, change: impl FnOnce(&mut LogRing, Duration)) -> Vec<LogLine> {
        let now = Duration::from_secs_f64(shoal_boot_events::boottime());
        let lines = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let first = state.ring.next_seq();
            change(&mut state.ring, now);
            let lines = state.ring.since(first).lines;
            if let Some(persist) = &mut state.persist
                && !lines.is_empty()
            {
                let written = lines
                    .iter()
                    .try_for_each(|line| persist.append(line))
                    .and_then(|()| persist.flush());
                if let Err(error) = written {
                    tracing::warn!("{error}; this service's logs are kept in memory only now");
                    state.persist = None;
                }
            }
            lines
        };
        if !lines.is_empty() {
            self.grew.notify_waiters();
        }
        lines
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A panic while holding the lock leaves a ring that is still consistent enough to read.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts the task that reads a service's output pipe until every writer has closed it.
pub(crate) fn read_pipe(
    service: String,
    log: Arc<ServiceLog>,
    console: Console,
    read_end: OwnedFd,
) -> io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    for line in log.push_output(&buf[..n]) {
                        console.echo(&service, &line.text);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%service, "reading the output pipe: {error}");
                    break;
                }
            }
        }
        for line in log.end_output() {
            console.echo(&service, &line.text);
        }
    });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_the_ring_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = ServiceLog::new("svc", 4096, Some(dir.path()));
        assert!(log.persisted());
        assert!(log.push_output(b"one\ntw").len() == 1);
        let lines = log.push_output(b"o\n");
        assert_eq!(lines[0].text, "two");
        log.note("exited");
        let tail = log.push_output(b"partial");
        assert!(tail.is_empty());
        assert_eq!(log.end_output()[0].text, "partial");
        let all = log.since(0, 10);
        let texts: Vec<&str> = all.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "two", "exited", "partial"]);
        assert_eq!(all.lines[2].stream, Stream::Supervisor);
        let file = std::fs::read_to_string(dir.path().join("svc.log")).unwrap();
        assert_eq!(file.lines().count(), 4);
        assert!(file.contains(" supervisor exited\n"), "{file}");
    }

    #[test]
    fn an_unwritable_directory_keeps_logs_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let log = ServiceLog::new("svc", 4096, Some(&file));
        assert!(!log.persisted());
        log.push_output(b"kept\n");
        assert_eq!(log.since(0, 10).lines.len(), 1);
    }

    #[test]
    fn followers_wake_up_for_new_lines() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let log = Arc::new(ServiceLog::new("svc", 4096, None));
        rt.block_on(async {
            let follower = {
                let log = Arc::clone(&log);
                tokio::spawn(async move { log.follow(0, 10).await })
            };
            tokio::task::yield_now().await;
            log.push_output(b"hello\n");
            let got = follower.await.unwrap();
            assert_eq!(got.lines[0].text, "hello");
            assert_eq!(got.next_seq, 1);
        });
    }
}
