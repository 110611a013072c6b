//! The network daemon's state interface `org.shoal.Network1` at `/org/shoal/Network`.
//!
//! The daemon owns the state; this module owns the wire, as [`crate::supervisor`] does for the
//! supervisor. The server turns each method call into a [`NetworkRequest`] on a bounded channel
//! and awaits the daemon's answer.
//!
//! Access is not the supervisor's all-or-nothing: `Status` is open to every local user, and
//! `Reload` needs root or the admin group (the same [`Access`] rule the supervisor applies to
//! every call). What `Status` shows (links, addresses, routes, leases, DNS and NTP servers) any
//! user can already read from rtnetlink, `/proc/net` and `/run/shoal/resolv.conf`, and
//! `shoalctl network` as a plain user is the `ip addr` of a Shoal node. So the socket is mode
//! 0666, and the peer's credentials (`SO_PEERCRED`, read at accept) decide per call. Because
//! any user can connect, unprivileged peers are capped at [`MAX_UNPRIVILEGED_PEERS`] open
//! connections, each must finish the D-Bus handshake within [`HANDSHAKE_TIMEOUT`], and a
//! connection's task ends when its peer hangs up: a local user cannot starve netd of file
//! descriptors. Root and admins are never capped.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use zbus::zvariant::Type;

pub use crate::supervisor::{Access, ApiError};
pub use crate::{HANDSHAKE_TIMEOUT, MAX_UNPRIVILEGED_PEERS};

/// Where netd listens.
pub const SOCKET: &str = "/run/shoal/netd.sock";
pub const OBJECT_PATH: &str = "/org/shoal/Network";
pub const INTERFACE: &str = "org.shoal.Network1";
/// Every local user may read the state; `Reload` checks the caller itself.
pub const SOCKET_MODE: u32 = 0o666;

/// The node's network as netd sees and manages it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct NetworkStatus {
    /// The online rule (`online.require`) is met.
    pub online: bool,
    /// netd gave up waiting for `online` after `online.timeout` and let boot go on.
    pub online_timed_out: bool,
    pub links: Vec<LinkStatus>,
    /// The main routing table, IPv4 and IPv6.
    pub routes: Vec<RouteStatus>,
    /// What `/run/shoal/resolv.conf` holds.
    pub dns_servers: Vec<String>,
    pub dns_search: Vec<String>,
    /// What `/run/shoal/ntp-servers` holds.
    pub ntp_servers: Vec<String>,
    /// Where the configuration in force came from (the file, `kernel command line`, or
    /// `defaults`).
    pub config_sources: Vec<String>,
    /// Why the last (re)load was rejected; empty when the configuration in force is the last
    /// one read.
    pub config_errors: Vec<String>,
}

/// One link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct LinkStatus {
    pub name: String,
    /// The kernel's interface index.
    pub index: u32,
    /// `aa:bb:cc:dd:ee:ff`, `""` when the link has none.
    pub mac: String,
    /// `bond`, `bridge`, `vlan`, `veth`, ...; `""` for plain devices.
    pub kind: String,
    /// The kernel driver, `""` when none (virtual links).
    pub driver: String,
    /// The device's bus path (`pci-0000:00:03.0`), `""` when none.
    pub bus_path: String,
    /// Administratively up.
    pub up: bool,
    pub carrier: bool,
    pub mtu: u32,
    /// The bond or bridge this link is a port of, `""` if none.
    pub master: String,
    /// netd configures it (otherwise it only reports it).
    pub managed: bool,
    /// In CIDR notation, `10.0.0.5/24`, IPv4 and IPv6.
    pub addresses: Vec<String>,
    /// The DHCPv4 client of this link: none or one element (D-Bus has no optional values).
    pub dhcp: Vec<LeaseStatus>,
}

/// A link's DHCPv4 client and its lease.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct LeaseStatus {
    /// `selecting`, `requesting`, `rebooting`, `bound`, `renewing`, `rebinding`, `paused`, ...
    pub state: String,
    /// The leased address in CIDR notation, `""` when none.
    pub address: String,
    /// The server that granted it, `""` when none.
    pub server: String,
    /// The lease's router, `""` when none.
    pub gateway: String,
    /// The lease time the server granted.
    pub lease_s: u32,
    /// Until the lease expires.
    pub remaining_s: u32,
    /// Until the client renews (T1); 0 when renewing already.
    pub renew_in_s: u32,
    /// Until the client rebinds (T2); 0 when rebinding already.
    pub rebind_in_s: u32,
    pub dns: Vec<String>,
    pub domain_search: Vec<String>,
    pub ntp: Vec<String>,
}

/// One route of the main table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct RouteStatus {
    /// In CIDR notation; the default routes are `0.0.0.0/0` and `::/0`.
    pub destination: String,
    /// `""` for on-link routes.
    pub gateway: String,
    /// The outgoing link's name.
    pub link: String,
    pub metric: u32,
    /// Who installed it: `kernel`, `boot`, `static`, `dhcp`, `ra`, ...
    pub protocol: String,
}

/// A method call, for the daemon to carry out. A dropped reply sender tells the caller that
/// netd dropped the request.
#[derive(Debug)]
pub enum NetworkRequest {
    /// A snapshot of the state.
    Status(oneshot::Sender<NetworkStatus>),
    /// Re-read the configuration and apply it. The reply is the list of errors, empty when the
    /// new configuration is in force; on errors the last good configuration stays in force.
    Reload(oneshot::Sender<Vec<String>>),
}

struct Interface {
    requests: mpsc::Sender<NetworkRequest>,
    /// The peer is root or in the admin group (from its credentials at accept).
    admin: bool,
}

impl Interface {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> NetworkRequest,
    ) -> zbus::fdo::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| zbus::fdo::Error::Failed("netd is shutting down".into()))?;
        rx.await
            .map_err(|_| zbus::fdo::Error::Failed("netd dropped the request".into()))
    }
}

#[zbus::interface(name = "org.shoal.Network1")]
impl Interface {
    async fn status(&self) -> zbus::fdo::Result<NetworkStatus> {
        self.ask(NetworkRequest::Status).await
    }

    async fn reload(&self) -> zbus::fdo::Result<Vec<String>> {
        if !self.admin {
            return Err(zbus::fdo::Error::AccessDenied(
                "reloading the network configuration needs root or the admin group".into(),
            ));
        }
        self.ask(NetworkRequest::Reload).await
    }
}

/// Binds the socket (replacing a stale one), mode [`SOCKET_MODE`]: every local user may
/// connect, `Reload` checks the caller.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    crate::bind_socket(path, SOCKET_MODE)
}

/// Serves the interface on `listener` until the request channel closes. Each peer gets its own
/// connection; `access` decides who may call `Reload` (see the module documentation).
pub async fn serve(listener: UnixListener, access: Access, requests: mpsc::Sender<NetworkRequest>) {
    serve_limited(listener, access, requests, MAX_UNPRIVILEGED_PEERS).await;
}

async fn serve_limited(
    listener: UnixListener,
    access: Access,
    requests: mpsc::Sender<NetworkRequest>,
    max_unprivileged: usize,
) {
    crate::serve_per_call(
        "network API",
        listener,
        access,
        max_unprivileged,
        OBJECT_PATH,
        requests.closed(),
        |admin| Interface {
            requests: requests.clone(),
            admin,
        },
    )
    .await;
}

// In p2p mode the destination is not routed anywhere, but zbus wants one.
#[zbus::proxy(
    interface = "org.shoal.Network1",
    default_service = "org.shoal.Network",
    default_path = "/org/shoal/Network"
)]
pub trait Network {
    fn status(&self) -> zbus::Result<NetworkStatus>;
    fn reload(&self) -> zbus::Result<Vec<String>>;
}

/// A connection to netd, for `shoalctl` and tests.
pub struct NetworkClient {
    proxy: NetworkProxy<'static>,
}

impl std::fmt::Debug for NetworkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkClient").finish_non_exhaustive()
    }
}

impl NetworkClient {
    pub async fn connect(path: &Path) -> Result<Self, ApiError> {
        let connection = crate::connect_p2p(path).await?;
        let proxy = NetworkProxy::builder(&connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        Ok(Self { proxy })
    }

    pub async fn status(&self) -> Result<NetworkStatus, ApiError> {
        self.proxy.status().await.map_err(failed)
    }

    /// The configuration's errors, empty when the new configuration is in force.
    pub async fn reload(&self) -> Result<Vec<String>, ApiError> {
        self.proxy.reload().await.map_err(failed)
    }
}

/// A D-Bus error reply becomes the daemon's own message (a refusal included).
fn failed(e: zbus::Error) -> ApiError {
    match e {
        zbus::Error::MethodError(_, Some(message), _) => ApiError::Failed(message),
        zbus::Error::FDO(fdo) => match *fdo {
            zbus::fdo::Error::Failed(message) | zbus::fdo::Error::AccessDenied(message) => {
                ApiError::Failed(message)
            }
            other => ApiError::Bus(zbus::Error::FDO(Box::new(other))),
        },
        other => ApiError::Bus(other),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn sample() -> NetworkStatus {
        NetworkStatus {
            online: true,
            links: vec![LinkStatus {
                name: "eth0".into(),
                index: 2,
                mac: "52:54:00:12:34:56".into(),
                driver: "virtio_net".into(),
                up: true,
                carrier: true,
                mtu: 1500,
                managed: true,
                addresses: vec!["10.0.2.15/24".into()],
                dhcp: vec![LeaseStatus {
                    state: "bound".into(),
                    address: "10.0.2.15/24".into(),
                    lease_s: 3600,
                    ..LeaseStatus::default()
                }],
                ..LinkStatus::default()
            }],
            routes: vec![RouteStatus {
                destination: "0.0.0.0/0".into(),
                gateway: "10.0.2.2".into(),
                link: "eth0".into(),
                metric: 1024,
                protocol: "dhcp".into(),
            }],
            dns_servers: vec!["10.0.2.3".into()],
            ..NetworkStatus::default()
        }
    }

    /// A daemon stand-in: answers `Status` with [`sample`] and `Reload` with `reload_errors`.
    fn fake_daemon(mut requests: mpsc::Receiver<NetworkRequest>, reload_errors: Vec<String>) {
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                match request {
                    NetworkRequest::Status(reply) => {
                        let _ = reply.send(sample());
                    }
                    NetworkRequest::Reload(reply) => {
                        let _ = reply.send(reload_errors.clone());
                    }
                }
            }
        });
    }

    async fn server(
        dir: &Path,
        reload_errors: Vec<String>,
        max_unprivileged: usize,
    ) -> (PathBuf, mpsc::Sender<NetworkRequest>) {
        let path = dir.join("netd.sock");
        let listener = bind(&path).unwrap();
        let (tx, rx) = mpsc::channel(16);
        fake_daemon(rx, reload_errors);
        tokio::spawn(serve_limited(
            listener,
            Access { admin_gid: None },
            tx.clone(),
            max_unprivileged,
        ));
        (path, tx)
    }

    #[tokio::test]
    async fn calls_go_to_the_daemon_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let errors = vec!["network.toml: line 3, column 1: unknown field `mtuu`".to_string()];
        let (path, _keep) = server(dir.path(), errors.clone(), 1).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);

        let client = NetworkClient::connect(&path).await.unwrap();
        assert_eq!(client.status().await.unwrap(), sample());
        assert_eq!(client.reload().await.unwrap(), errors);
    }

    #[tokio::test]
    async fn a_daemon_that_is_gone_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netd.sock");
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(serve(listener, Access { admin_gid: None }, tx));
        let client = NetworkClient::connect(&path).await.unwrap();

        // Taken, but never answered.
        let pending = tokio::spawn(async move {
            let Some(NetworkRequest::Status(reply)) = rx.recv().await else {
                panic!("a Status request");
            };
            drop(reply);
            rx
        });
        let err = client.status().await.unwrap_err();
        assert_eq!(err.to_string(), "netd dropped the request");

        // The daemon stops listening: the connection open still answers, new ones are refused.
        drop(pending.await.unwrap());
        let err = client.status().await.unwrap_err();
        assert_eq!(err.to_string(), "netd is shutting down");
        let err = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match NetworkClient::connect(&path).await {
                    Err(e) => break e,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("the listener closes");
        assert!(
            matches!(&err, ApiError::Socket { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused),
            "{err}"
        );
        assert!(err.to_string().starts_with(&path.display().to_string()));
    }

    /// Every user may read the state; only root and admins may reload; unprivileged peers are
    /// capped (here at one open connection) and a closed connection frees its place.
    #[test]
    fn unprivileged_peers_may_read_but_not_reload() {
        const CHILD: &str = "SHOAL_NETWORK_API_CHILD_SOCKET";
        if let Some(path) = std::env::var_os(CHILD) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let outcome = rt.block_on(child(Path::new(&path)));
            println!("\nCHILD-OUTCOME {outcome}");
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            panic!("this test runs as root (CI does): it switches a child to uid 65534");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (path, _keep) = rt.block_on(server(dir.path(), Vec::new(), 1));

        let run_as = |uid: u32| {
            crate::test_support::rerun_as(
                "network::tests::unprivileged_peers_may_read_but_not_reload",
                uid,
                CHILD,
                &path,
            )
        };
        assert_eq!(
            run_as(65534),
            "status=ok | reload=reloading the network configuration needs root or the admin \
             group | second connection=refused | after hang-up=ok"
        );
        assert_eq!(
            run_as(0),
            "status=ok | reload=ok | second connection=ok | after hang-up=ok"
        );
    }

    /// In the child: what a peer with the child's credentials may do.
    async fn child(path: &Path) -> String {
        let status = |r: Result<NetworkStatus, ApiError>| match r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        let first = match NetworkClient::connect(path).await {
            Ok(c) => c,
            Err(e) => return format!("connect: {e}"),
        };
        let read = status(first.status().await);
        let reload = match first.reload().await {
            Ok(errors) if errors.is_empty() => "ok".to_string(),
            Ok(errors) => errors.join("; "),
            Err(e) => e.to_string(),
        };
        let second = match NetworkClient::connect(path).await {
            Ok(c) => match c.status().await {
                Ok(_) => "ok",
                Err(_) => "refused",
            },
            Err(_) => "refused",
        };
        drop(first);
        // The server notices the hang-up on its own time.
        let mut after = String::new();
        for _ in 0..250 {
            after = match NetworkClient::connect(path).await {
                Ok(c) => status(c.status().await),
                Err(e) => e.to_string(),
            };
            if after == "ok" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        format!(
            "status={read} | reload={reload} | second connection={second} | after hang-up={after}"
        )
    }
}
