//! The console: boot events and every service's output as `[name] line`, on stdout.
//!
//! On a node stdout is the serial console, which can be far slower than a service can write.
//! A blocked write would stall the whole daemon (it is one thread), so a small writer thread
//! owns stdout behind a bounded queue: events wait for room (they are few and tests depend on
//! them), echoed service output is dropped when the queue is full and the drop is counted and
//! reported. Nothing is lost for good: every line is in the service's log ring.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use shoal_boot_events::{Event, Record};

/// Lines queued for the console at most.
const QUEUE: usize = 64;
/// Longest echoed service line, in bytes (the log ring keeps the full line).
const MAX_ECHO: usize = 1024;
/// The writer's stack: it only formats and writes.
const STACK: usize = 64 * 1024;

enum Line {
    Text(String),
    /// Answered once everything before it is written.
    Flush(SyncSender<()>),
}

/// A handle to the console writer; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Console {
    tx: Option<SyncSender<Line>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Text(text) => write!(f, "Text({text:?})"),
            Line::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Console {
    /// Starts the writer thread; if that fails, lines are written directly (and may block).
    pub(crate) fn start() -> Console {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let spawned = std::thread::Builder::new()
            .name("console".into())
            .stack_size(STACK)
            .spawn(move || writer(rx, &counter));
        match spawned {
            Ok(_) => Console {
                tx: Some(tx),
                dropped,
            },
            Err(error) => {
                tracing::warn!("cannot start the console writer ({error}); writing directly");
                Console { tx: None, dropped }
            }
        }
    }

    /// Prints a boot event, waiting for room in the queue.
    pub(crate) fn event(&self, event: Event) {
        let line = Record::now(event).to_line();
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(Line::Text(line))) = tx.send(Line::Text(line)) {
                    write_line(&line);
                }
            }
            None => write_line(&line),
        }
    }

    /// Echoes one line of a service's output, unless the console is behind.
    pub(crate) fn echo(&self, service: &str, text: &str) {
        let mut end = text.len().min(MAX_ECHO);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < text.len() { " [...]" } else { "" };
        let line = format!("[{service}] {}{cut}", &text[..end]);
        match &self.tx {
            Some(tx) => match tx.try_send(Line::Text(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(Line::Text(line))) => write_line(&line),
                Err(TrySendError::Disconnected(Line::Flush(_))) => {}
            },
            None => write_line(&line),
        }
    }

    /// Waits up to `timeout` until everything queued so far is written (before exiting).
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::sync_channel(1);
            if tx.send(Line::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(timeout);
            }
        }
        let _ = io::stdout().flush();
    }
}

fn writer(rx: Receiver<Line>, dropped: &AtomicU64) {
    while let Ok(line) = rx.recv() {
        match line {
            Line::Text(text) => write_line(&text),
            Line::Flush(ack) => {
                let _ = ack.send(());
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            write_line(&format!(
                "[shoal-supervisor] {lost} lines of service output not echoed (the console is \
                 too slow); they are in the services' logs"
            ));
        }
    }
}

/// One write per line keeps lines whole on a console shared with PID 1.
fn write_line(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(format!("{text}\n").as_bytes());
    let _ = out.flush();
}
