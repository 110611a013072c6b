//! The console: boot events and every service's output as `[name] line`, on stdout.
//!
//! On a node stdout is the serial console, which can be far slower than a service can write.
//! A blocked write would stall the whole daemon (it is one thread), so a small writer thread
//! owns stdout behind a bounded queue: the supervisor's own events wait for room (they are few
//! and tests depend on them). Echoed service output is dropped once [`ECHO_QUEUE`] lines wait,
//! and the drop is counted and reported; a service's boot events (`SHOAL-EVENT` lines, and a
//! test image's `SHOAL-TEST` lines) are kept up to [`EVENT_QUEUE`] lines, so a chatty service
//! (debug logs, say) cannot push `cluster.member` off the console. Nothing is lost for good:
//! every line is in the service's log ring.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use shoal_boot_events::{Event, PREFIX, Record, TEST_PREFIX};

/// Lines waiting for the console past which service output is no longer echoed.
const ECHO_QUEUE: usize = 64;
/// Lines queued for the console at most: services' boot events beyond this are dropped too.
const EVENT_QUEUE: usize = 1024;
/// Longest echoed service line, in bytes (the log ring keeps the full line).
const MAX_ECHO: usize = 1024;
/// Longest service boot event echoed whole (a cut one would not parse).
const MAX_EVENT: usize = 64 * 1024;
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
    /// Lines sent and not yet written.
    queued: Arc<AtomicUsize>,
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
        let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let (lost, waiting) = (Arc::clone(&dropped), Arc::clone(&queued));
        let spawned = std::thread::Builder::new()
            .name("console".into())
            .stack_size(STACK)
            .spawn(move || writer(rx, &lost, &waiting, &mut io::stdout()));
        let tx = match spawned {
            Ok(_) => Some(tx),
            Err(error) => {
                tracing::warn!("cannot start the console writer ({error}); writing directly");
                None
            }
        };
        Console {
            tx,
            dropped,
            queued,
        }
    }

    /// Prints a boot event, waiting for room in the queue.
    pub(crate) fn event(&self, event: Event) {
        let line = Record::now(event).to_line();
        match &self.tx {
            Some(tx) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::SendError(Line::Text(line))) = tx.send(Line::Text(line)) {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    write_line(&mut io::stdout(), &line);
                }
            }
            None => write_line(&mut io::stdout(), &line),
        }
    }

    /// Echoes one line of a service's output, unless the console is behind: a boot event
    /// unless [`EVENT_QUEUE`] lines wait, anything else unless [`ECHO_QUEUE`] do.
    pub(crate) fn echo(&self, service: &str, text: &str) {
        let event = text.starts_with(PREFIX) || text.starts_with(TEST_PREFIX);
        let mut end = text.len().min(if event { MAX_EVENT } else { MAX_ECHO });
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < text.len() { " [...]" } else { "" };
        let line = format!("[{service}] {}{cut}", &text[..end]);
        let Some(tx) = &self.tx else {
            return write_line(&mut io::stdout(), &line);
        };
        if !event && self.queued.load(Ordering::Relaxed) >= ECHO_QUEUE {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Line::Text(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(Line::Text(line))) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                write_line(&mut io::stdout(), &line)
            }
            Err(TrySendError::Disconnected(Line::Flush(_))) => {}
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

fn writer(rx: Receiver<Line>, dropped: &AtomicU64, queued: &AtomicUsize, out: &mut impl Write) {
    while let Ok(line) = rx.recv() {
        match line {
            Line::Text(text) => {
                write_line(out, &text);
                queued.fetch_sub(1, Ordering::Relaxed);
            }
            Line::Flush(ack) => {
                let _ = ack.send(());
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            write_line(
                out,
                &format!(
                    "[shoal-supervisor] {lost} lines of service output not echoed (the console \
                     is too slow); they are in the services' logs"
                ),
            );
        }
    }
}

/// One write per line keeps lines whole on a console shared with PID 1.
fn write_line(out: &mut impl Write, text: &str) {
    let _ = out.write_all(format!("{text}\n").as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console whose writer has not started: what is queued stays queued.
    fn stalled() -> (Console, Receiver<Line>) {
        let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
        let console = Console {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
        };
        (console, rx)
    }

    /// Closes the queue and runs the writer over what it holds.
    fn written(console: Console, rx: Receiver<Line>) -> Vec<String> {
        let Console {
            tx,
            dropped,
            queued,
        } = console;
        drop(tx);
        let mut out = Vec::new();
        writer(rx, &dropped, &queued, &mut out);
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_service_event_is_echoed_whole_while_its_chatter_is_dropped() {
        let (console, rx) = stalled();
        for i in 0..200 {
            console.echo("clusterd", &format!("DEBUG chatter {i}"));
        }
        let long = format!(
            "{PREFIX}{{\"event\":\"cluster.member\",\"pad\":\"{}\"}}",
            "x".repeat(3000)
        );
        console.echo("clusterd", &long);
        console.echo("check", &format!("{TEST_PREFIX}found"));
        let lines = written(console, rx);
        let chatter = lines.iter().filter(|l| l.contains("chatter")).count();
        assert_eq!(chatter, ECHO_QUEUE, "{lines:?}");
        assert!(lines.contains(&format!("[clusterd] {long}")), "{lines:?}");
        assert!(
            lines.contains(&format!("[check] {TEST_PREFIX}found")),
            "{lines:?}"
        );
        let note = "[shoal-supervisor] 136 lines of service output not echoed (the console is \
                    too slow); they are in the services' logs";
        assert!(lines.iter().any(|l| l == note), "{lines:?}");
    }

    #[test]
    fn events_beyond_their_queue_are_dropped_and_counted_not_waited_for() {
        let (console, rx) = stalled();
        for i in 0..EVENT_QUEUE + 5 {
            console.echo("svc", &format!("{PREFIX}{{\"n\":{i}}}"));
        }
        console.echo("svc", &"y".repeat(MAX_ECHO + 10));
        let lines = written(console, rx);
        assert_eq!(
            lines.len(),
            EVENT_QUEUE + 1,
            "every queued event, and the count"
        );
        let events = lines
            .iter()
            .filter(|l| l.starts_with("[svc] SHOAL-EVENT"))
            .count();
        assert_eq!(events, EVENT_QUEUE);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("[shoal-supervisor] 6 lines")),
            "{lines:?}"
        );
    }
}
