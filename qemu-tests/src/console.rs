//! The serial console: a thread reads QEMU's stdout, appends every line to `console.log`, and
//! keeps each line and each parsed boot event with the host time since QEMU was spawned.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoal_boot_events::{Record, parse_line};

/// One console line and when the host read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLine {
    /// Host time since QEMU was spawned.
    pub at: Duration,
    pub text: String,
}

/// One boot event and when the host read it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedEvent {
    /// Host time since QEMU was spawned (the benchmark's clock).
    pub at: Duration,
    /// The event as PID 1 printed it (`record.t` is the guest's clock).
    pub record: Record,
}

impl TimedEvent {
    pub fn name(&self) -> &'static str {
        self.record.event.name()
    }
}

#[derive(Debug, Default)]
pub(crate) struct ConsoleState {
    pub lines: Vec<ConsoleLine>,
    pub events: Vec<TimedEvent>,
    /// QEMU closed its stdout (it exited).
    pub closed: bool,
}

/// Shared between the reader thread and the [`crate::Vm`].
#[derive(Debug, Default)]
pub(crate) struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
}

impl Console {
    /// Starts the reader thread on QEMU's stdout.
    pub(crate) fn spawn(
        vm: &str,
        source: impl Read + Send + 'static,
        mut log: File,
        started: Instant,
    ) -> std::io::Result<(Arc<Console>, std::thread::JoinHandle<()>)> {
        let console = Arc::new(Console::default());
        let shared = Arc::clone(&console);
        let thread = std::thread::Builder::new()
            .name(format!("console-{vm}"))
            .spawn(move || {
                let mut reader = BufReader::new(source);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let _ = log.write_all(&raw);
                    let text = String::from_utf8_lossy(&raw);
                    let text = text.trim_end_matches(['\n', '\r']).replace('\r', "");
                    shared.push(ConsoleLine {
                        at: started.elapsed(),
                        text,
                    });
                }
                let _ = log.flush();
                shared.lock().closed = true;
                shared.changed.notify_all();
            })?;
        Ok((console, thread))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ConsoleState> {
        // A panic while holding this lock cannot leave the plain vectors inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, line: ConsoleLine) {
        let mut state = self.lock();
        if let Some(record) = parse_line(&line.text) {
            state.events.push(TimedEvent {
                at: line.at,
                record,
            });
        }
        state.lines.push(line);
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until `check` returns `Some`, the console closes (then `Err(true)`), or the time
    /// runs out (`Err(false)`).
    pub(crate) fn wait<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&ConsoleState) -> Option<T>,
    ) -> Result<T, bool> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(found) = check(&state) {
                return Ok(found);
            }
            if state.closed {
                return Err(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(false);
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The last `n` lines, joined.
    pub(crate) fn tail(&self, n: usize) -> String {
        let state = self.lock();
        let start = state.lines.len().saturating_sub(n);
        let mut text = String::new();
        for line in &state.lines[start..] {
            text.push_str(&format!("[{:>7.3}] {}\n", line.at.as_secs_f64(), line.text));
        }
        if text.is_empty() {
            text.push_str("(no console output)\n");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lines_and_events_and_notices_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("console.log")).unwrap();
        let input =
            b"[    0.1] Linux\r\nSHOAL-EVENT {\"t\":1.0,\"event\":\"boot.complete\"}\r\npartial"
                .to_vec();
        let (console, thread) =
            Console::spawn("t", std::io::Cursor::new(input), log, Instant::now()).unwrap();
        thread.join().unwrap();
        let found = console.wait(Duration::from_secs(1), |s| {
            s.events
                .iter()
                .find(|e| e.name() == "boot.complete")
                .map(|e| e.record.t)
        });
        assert_eq!(found, Ok(1.0));
        let state = console.lock();
        assert_eq!(state.lines.len(), 3);
        assert_eq!(state.lines[0].text, "[    0.1] Linux");
        assert_eq!(state.lines[2].text, "partial");
        assert!(state.closed);
        drop(state);
        assert_eq!(
            console.wait(Duration::from_secs(1), |_| None::<()>),
            Err(true)
        );
        let logged = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert!(logged.contains("boot.complete"));
        assert!(console.tail(1).contains("partial"));
    }
}
