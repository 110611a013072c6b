//! Shoal's local control APIs, shared by the daemons that serve them and by `shoalctl`.
//!
//! Every API is D-Bus in peer-to-peer mode on a unix socket under `/run/shoal` (no bus daemon),
//! served with zbus on tokio. The server reads the peer's credentials from the socket before it
//! speaks a single message: the supervisor serves only root and members of the admin group;
//! netd serves its state to every local user and its `Reload` to root and admins only.

pub mod network;
pub mod supervisor;

/// A client's peer-to-peer D-Bus connection over the unix socket at `path`.
pub(crate) async fn connect_p2p(
    path: &std::path::Path,
) -> Result<zbus::Connection, supervisor::ApiError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|source| supervisor::ApiError::Socket {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await?)
}

/// A server GUID for a peer-to-peer connection. zbus's own `Guid::generate` draws a UUID from
/// `getrandom(2)` without flags, which blocks until the kernel's CRNG is seeded: early in
/// boot on a VM without a hardware RNG that stalled the whole daemon (its runtime is one
/// thread) for tens of seconds. The GUID only names the connection, so `GRND_INSECURE` bytes,
/// which never block, are enough; the clock and PID keep two GUIDs apart even without them.
pub(crate) fn server_guid() -> zbus::Guid<'static> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own; with
    // GRND_INSECURE it never blocks.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_INSECURE) };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = if n == 16 {
        u128::from_le_bytes(bytes)
    } else {
        0
    } ^ nanos
        ^ (u128::from(std::process::id()) << 96);
    // 32 hex digits is exactly a D-Bus GUID.
    zbus::Guid::try_from(format!("{mixed:032x}")).unwrap_or_else(|_| zbus::Guid::generate())
}

#[cfg(test)]
pub(crate) mod test_support {
    /// Runs the test `test` of this test binary again as `uid` (and its gid), with `key` set to
    /// `value` in its environment, and returns what it printed after `CHILD-OUTCOME `.
    #[allow(clippy::unwrap_used)]
    pub fn rerun_as(test: &str, uid: u32, key: &str, value: &std::path::Path) -> String {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(key, value)
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.split_once("CHILD-OUTCOME ").map(|(_, o)| o.to_owned()))
            .unwrap_or_else(|| {
                format!(
                    "no outcome: {stdout} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_guids_are_valid_and_differ() {
        let a = super::server_guid();
        let b = super::server_guid();
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, b);
    }
}
