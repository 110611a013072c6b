//! The maintenance API: a node with no usable configuration accepts one pushed to it.
//!
//! The node makes a one-time token (128 random bits) and shows it on its console. The API is
//! HTTPS on the cluster API's port, with a key derived from the token, so a client that holds
//! the token pins the node's key and nobody on the network can stand in for it, and every call
//! presents the token. There is no insecure default: without the token, nothing is accepted
//! and nothing is said.
//!
//! - `GET /v1/maintenance`: why the node is in maintenance, and its facts (MAC, UUID,
//!   serial), so the operator can write its `[[nodes]]` section.
//! - `PUT /v1/maintenance/config`: a machine configuration (TOML). It is checked exactly as
//!   any source is; an invalid one is refused with every error, and the token stays valid for
//!   the next try. A valid one is handed to the daemon, which applies and keeps it; the answer
//!   says so, and the token is spent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_cluster_api::identity::{Identity, MaintenanceToken};
use shoal_cluster_api::types::{MaintenanceAccepted, MaintenanceStatus};
use shoal_config::MachineConfig;
use shoal_config::machine::ServiceCheck;
use tokio::sync::oneshot;

/// The port: the cluster API's, which clusterd takes once the node has a configuration.
pub const PORT: u16 = 7443;
/// The largest configuration accepted.
const MAX_BODY: usize = 1 << 20;

/// A configuration pushed by an operator, for the daemon to apply. The daemon answers on
/// `answer` (what the client is told).
#[derive(Debug)]
pub struct Pushed {
    pub config: MachineConfig,
    pub from: SocketAddr,
    pub answer: oneshot::Sender<Result<MaintenanceAccepted, String>>,
}

/// What the server shows and checks.
struct Shared {
    token: MaintenanceToken,
    status: Mutex<MaintenanceStatus>,
    check: fn(&str, &str) -> Vec<(String, String)>,
    pushed: std::sync::mpsc::Sender<Pushed>,
    /// Set once a configuration was accepted: the token is spent.
    spent: Mutex<bool>,
    /// Told once the answer to an accepted configuration has been written.
    answered: std::sync::mpsc::Sender<()>,
}

/// A running maintenance API.
pub struct Server {
    pub port: u16,
    pub token: MaintenanceToken,
    /// Configurations operators pushed.
    pub pushed: std::sync::mpsc::Receiver<Pushed>,
    /// Once per accepted configuration, after its answer went out.
    pub answered: std::sync::mpsc::Receiver<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Updates what `GET /v1/maintenance` says.
    pub fn set_reason(&self, reason: &str) {
        if let Ok(mut status) = self.shared.status.lock() {
            status.reason = reason.to_string();
        }
    }

    /// The key clients pin (derived from the token), as shoalctl names keys.
    pub fn server_key(&self) -> String {
        Identity::for_maintenance(&self.token).server_key()
    }
}

/// Reads 16 bytes from the kernel's random source.
pub fn random_token() -> std::io::Result<MaintenanceToken> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(MaintenanceToken::from_bytes(bytes))
}

/// Starts the API on `bind` (port 0: any) in a thread of its own.
pub fn start(
    bind: SocketAddr,
    token: MaintenanceToken,
    status: MaintenanceStatus,
    check: fn(&str, &str) -> Vec<(String, String)>,
) -> anyhow::Result<Server> {
    let identity = Identity::for_maintenance(&token);
    let tls = Arc::new(shoal_cluster_api::tls::server_config(&identity)?);
    let listener = std::net::TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let (pushed_tx, pushed) = std::sync::mpsc::channel();
    let (answered_tx, answered) = std::sync::mpsc::channel();
    let shared = Arc::new(Shared {
        token: token.clone(),
        status: Mutex::new(status),
        check,
        pushed: pushed_tx,
        spent: Mutex::new(false),
        answered: answered_tx,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let serving = shared.clone();
    std::thread::Builder::new()
        .name("maintenance-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, tls, serving).await,
                    Err(e) => tracing::error!("maintenance API: {e}"),
                }
            })
        })?;
    Ok(Server {
        port,
        token,
        pushed,
        answered,
        shared,
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) {
    shoal_cluster_api::tls::serve_tls(listener, tls, "maintenance API", move |tls, from| {
        let shared = shared.clone();
        async move {
            let accepted = Arc::new(Mutex::new(false));
            let seen = accepted.clone();
            let handler = shared.clone();
            let service = hyper::service::service_fn(move |request| {
                let (shared, seen) = (handler.clone(), seen.clone());
                async move { Ok::<_, Infallible>(handle(&shared, from, request, &seen).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!("maintenance API connection from {from}: {e}");
            }
            // The answer to an accepted configuration is out: the daemon may move on.
            if accepted.lock().is_ok_and(|a| *a) {
                let _ = shared.answered.send(());
            }
        }
    })
    .await;
}

use shoal_cluster_api::reply::{Reply, error, json};

/// The token a request presents, if it is this node's.
fn authorised(shared: &Shared, request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| MaintenanceToken::parse(t).ok())
        .is_some_and(|t| t.matches(&shared.token))
}

async fn handle(
    shared: &Shared,
    from: SocketAddr,
    request: Request<Incoming>,
    accepted: &Mutex<bool>,
) -> Reply {
    if !authorised(shared, &request) {
        tracing::warn!("maintenance API: a call from {from} without this node's token");
        return error(
            StatusCode::UNAUTHORIZED,
            "this node is in maintenance: present the one-time token its console shows",
        );
    }
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/v1/maintenance") => match shared.status.lock() {
            Ok(status) => json(StatusCode::OK, &*status),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "status unavailable"),
        },
        (Method::PUT, "/v1/maintenance/config") => {
            if shared.spent.lock().map_or(true, |s| *s) {
                return error(
                    StatusCode::CONFLICT,
                    "a configuration was already accepted; the node is booting with it",
                );
            }
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the configuration could not be read (at most {MAX_BODY} bytes): {e}"
                        ),
                    );
                }
            };
            let Ok(text) = String::from_utf8(body.to_vec()) else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the configuration is not UTF-8 text",
                );
            };
            let check = shared.check;
            let checker: ServiceCheck<'_> = &check;
            let config = match MachineConfig::parse("pushed configuration", &text, Some(checker)) {
                Ok(config) => config,
                Err(errors) => {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    tracing::warn!("maintenance API: {from} pushed an invalid configuration");
                    return error(StatusCode::UNPROCESSABLE_ENTITY, errors.join("; "));
                }
            };
            // One at a time: the token is spent while the daemon applies this one, and given
            // back if that fails.
            match shared.spent.lock() {
                Ok(mut spent) if !*spent => *spent = true,
                _ => {
                    return error(
                        StatusCode::CONFLICT,
                        "a configuration was already accepted; the node is booting with it",
                    );
                }
            }
            let (answer, answered) = oneshot::channel();
            let handed = shared.pushed.send(Pushed {
                config,
                from,
                answer,
            });
            let outcome = match handed {
                Ok(()) => answered
                    .await
                    .unwrap_or_else(|_| Err("the configuration service stopped".into())),
                Err(_) => Err("the configuration service stopped".into()),
            };
            match outcome {
                Ok(done) => {
                    if let Ok(mut a) = accepted.lock() {
                        *a = true;
                    }
                    json(StatusCode::OK, &done)
                }
                Err(reason) => {
                    if let Ok(mut spent) = shared.spent.lock() {
                        *spent = false;
                    }
                    error(StatusCode::INTERNAL_SERVER_ERROR, reason)
                }
            }
        }
        (method, path) => error(
            StatusCode::NOT_FOUND,
            format!(
                "{method} {path}: a node in maintenance serves GET /v1/maintenance and PUT /v1/maintenance/config"
            ),
        ),
    }
}
