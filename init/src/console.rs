//! Where PID 1 speaks: the console (every log line and every boot event) and the kernel log
//! (`/dev/kmsg`, so `dmesg` and later the supervisor's log API have them too).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use shoal_boot_events::{Event, Record};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::cmdline::LogLevel;

static KMSG: OnceLock<File> = OnceLock::new();

/// The kernel prints kernel-log records below this level on the console itself
/// (`/proc/sys/kernel/printk`, first field). Log lines it will echo are not written twice.
static CONSOLE_LOGLEVEL: AtomicU8 = AtomicU8::new(0);

pub use shoal_boot_events::boottime;

/// Milliseconds since `start`, rounded to microseconds for short JSON.
pub fn ms_since(start: std::time::Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Opens `/dev/kmsg` once `/dev` is mounted. Before that, and if it fails, lines go to the
/// console only.
pub fn attach_kmsg() {
    if KMSG.get().is_none()
        && let Ok(file) = OpenOptions::new().write(true).open("/dev/kmsg")
    {
        let _ = KMSG.set(file);
    }
}

/// Writes one line to the console and, tagged for `dmesg`, to the kernel log. `priority` is the
/// syslog level (3 error, 4 warning, 6 info, 7 debug).
/// A log line (`is_event == false`) that the kernel will echo to the console anyway is written
/// to the kernel log only, so it shows once; event lines always go to the console with their
/// prefix, which the kernel's echo lacks.
fn write_line(console_line: &str, kmsg_text: &str, priority: u8, is_event: bool) {
    let kmsg = KMSG.get();
    let kernel_echoes = kmsg.is_some() && priority < CONSOLE_LOGLEVEL.load(Ordering::Relaxed);
    if is_event || !kernel_echoes {
        // One write call per line keeps lines whole when other processes share the console.
        let _ = io::stderr().write_all(console_line.as_bytes());
    }
    if let Some(mut kmsg) = kmsg {
        // The kernel truncates records past ~1 KiB; the console has the full line.
        let text: String = kmsg_text.trim_end().chars().take(900).collect();
        let _ = kmsg.write_all(format!("<{priority}>shoal-init: {text}\n").as_bytes());
    }
}

/// Prints a boot event. In the kernel log it is tagged differently from the console line so a
/// console that also echoes the kernel log never shows an event twice.
pub fn emit(event: Event) {
    let record = Record::now(event);
    let line = record.to_line();
    let json = line
        .strip_prefix(shoal_boot_events::PREFIX)
        .unwrap_or(&line);
    write_line(&format!("{line}\n"), &format!("event {json}"), 6, true);
}

/// The `tracing` writer: each formatted event arrives as one buffer.
#[derive(Debug, Clone, Copy)]
struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let priority = if text.contains(" ERROR ") {
            3
        } else if text.contains(" WARN ") {
            4
        } else {
            6
        };
        // The kernel log adds its own timestamp and our tag: drop ours.
        let bare = text
            .split_once("shoal-init: ")
            .map_or(&*text, |(_, rest)| rest);
        write_line(&text, bare, priority, false);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Timestamps like the kernel's own log: seconds since boot.
#[derive(Debug, Clone, Copy)]
struct KernelTime;

impl FormatTime for KernelTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let t = boottime();
        let micros = (t * 1e6) as u64;
        write!(
            w,
            "[{:5}.{:06}] shoal-init:",
            micros / 1_000_000,
            micros % 1_000_000
        )
    }
}

/// Installs the `tracing` subscriber for PID 1.
pub fn init_logging(level: LogLevel) {
    let level = match level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Trace => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(|| ConsoleWriter)
        .with_timer(KernelTime)
        .with_target(false)
        .with_max_level(level)
        .try_init();
}
