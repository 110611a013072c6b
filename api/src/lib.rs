//! Shoal's local control APIs, shared by the daemons that serve them and by `shoalctl`.
//!
//! Every API is D-Bus in peer-to-peer mode on a unix socket under `/run/shoal` (no bus daemon),
//! served with zbus on tokio. The server reads the peer's credentials from the socket before it
//! speaks a single message: the supervisor serves only root and members of the admin group;
//! netd serves its state to every local user and its `Reload` to root and admins only;
//! clusterd serves the cluster's status and nodes to every local user and its key-value space
//! to root and admins only.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

pub mod cluster;

/// The node daemons' logging: lines on stderr (the console, through the supervisor), one write
/// each, no colours, no module targets; `level` is a tracing level name (`debug`, `info`, ...),
/// anything else means `info`. Every daemon that serves a local API sets its logging up here.
pub fn init_logging(level: &str) {
    let level = level
        .parse::<tracing::Level>()
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

pub mod network;
pub mod supervisor;

use supervisor::{Access, ApiError};

/// On a socket every local user may connect to: open connections of peers that are neither
/// root nor admins; more are refused at accept.
pub const MAX_UNPRIVILEGED_PEERS: usize = 16;
/// A peer that has not finished the D-Bus handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds a server's socket at `path` (replacing a stale one, creating its directory) with the
/// permissions `mode`.
pub(crate) fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, ApiError> {
    let socket_err = |source| ApiError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(socket_err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(socket_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(socket_err)?;
    Ok(listener)
}

/// The accept loop of an API whose socket every local user may connect to: each peer gets its
/// own connection serving `object(admin)` at `path`, where `admin` says whether the peer is root
/// or in the admin group (its credentials, read at accept); the object checks each call with
/// it. Peers that are not admins are capped at `max_unprivileged` open connections, each must
/// finish the handshake within [`HANDSHAKE_TIMEOUT`], and a connection's place is freed when
/// its peer hangs up; root and admins are never capped. Returns when `stop` completes.
pub(crate) async fn serve_per_call<I: zbus::object_server::Interface>(
    what: &'static str,
    listener: UnixListener,
    access: Access,
    max_unprivileged: usize,
    path: &'static str,
    stop: impl Future<Output = ()>,
    object: impl Fn(bool) -> I,
) {
    let unprivileged = Arc::new(Semaphore::new(max_unprivileged));
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("{what}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let creds = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{what}: peer credentials: {e}");
                continue;
            }
        };
        let admin = access.allows(creds.uid(), creds.gid());
        let permit = if admin {
            None
        } else {
            match unprivileged.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // Debug, not warn: any local user could otherwise flood the daemon's log.
                    tracing::debug!(
                        uid = creds.uid(),
                        pid = creds.pid(),
                        "{what}: refused a peer: {max_unprivileged} unprivileged connections open"
                    );
                    continue;
                }
            }
        };
        let served = object(admin);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_peer(stream, path, served).await {
                tracing::debug!("{what} peer: {e}");
            }
        });
    }
}

/// Serves `object` at `path` to one peer until it hangs up.
async fn serve_peer<I: zbus::object_server::Interface>(
    stream: UnixStream,
    path: &'static str,
    object: I,
) -> Result<(), ApiError> {
    let handshake = zbus::connection::Builder::unix_stream(stream)
        .server(server_guid())?
        .p2p()
        .serve_at(path, object)?
        .build();
    let connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            ApiError::Failed(format!(
                "no D-Bus handshake within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        })??;
    connection.closed().await;
    Ok(())
}

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
