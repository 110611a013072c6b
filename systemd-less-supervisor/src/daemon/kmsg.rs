//! The kernel log as one more log in the API (`kernel`), read from `/dev/kmsg`: every record
//! the kernel still holds at start, then new ones as they come.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::output::ServiceLog;

/// The log's name in the API.
pub(crate) const NAME: &str = "kernel";
/// Kernel log ring size.
pub(crate) const RING_BYTES: usize = 256 * 1024;

/// One `/dev/kmsg` record: `PRIO,SEQ,USEC,FLAGS[,...];MESSAGE`, then optional ` KEY=value`
/// continuation lines. Returns the syslog level (0..7), the time since boot and the message.
pub(crate) fn parse_record(record: &str) -> Option<(u8, Duration, String)> {
    let (header, rest) = record.split_once(';')?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let _seq: u64 = fields.next()?.parse().ok()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    let message = rest.lines().next().unwrap_or("").to_string();
    Some(((prio & 7) as u8, Duration::from_micros(usec), message))
}

/// Follows `path` into `log` until the task is dropped. A kernel log that cannot be opened is
/// logged once; the supervisor runs on without it.
pub(crate) fn start(path: &Path, log: Arc<ServiceLog>) {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!("{}: {e}; the kernel log is not in the API", path.display());
            return;
        }
    };
    // SAFETY: the File owns its descriptor, returns that one from as_raw_fd and keeps it open
    // until dropped, which only the AsyncFd that now owns it can do.
    let fd = match unsafe { AsyncFd::register(file) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("{}: {e}; the kernel log is not in the API", path.display());
            return;
        }
    };
    tokio::spawn(async move {
        // One read returns one record; records are at most ~8 KiB.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return;
            };
            match ready.try_io(|f| f.get_ref().read(&mut buf)) {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => {
                    if let Some((level, time, text)) =
                        parse_record(&String::from_utf8_lossy(&buf[..n]))
                    {
                        log.push_kernel(&format!("<{level}> {text}"), time);
                    }
                }
                // EPIPE: records were overwritten before we read them; reading goes on.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                    log.note("(kernel log records were lost before they could be read)");
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    tracing::warn!("reading the kernel log: {e}");
                    return;
                }
                Err(_would_block) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kmsg_records() {
        let (level, time, text) =
            parse_record("6,339,5140900,-;NET: Registered protocol family 10\n SUBSYSTEM=net\n")
                .unwrap();
        assert_eq!(
            (level, time, text.as_str()),
            (
                6,
                Duration::from_micros(5_140_900),
                "NET: Registered protocol family 10"
            )
        );
        // Facility bits are dropped: 30 = daemon.info.
        assert_eq!(parse_record("30,1,2,c;x").unwrap().0, 6);
        assert_eq!(parse_record("garbage"), None);
        assert_eq!(parse_record("a,b,c;x"), None);
    }
}
