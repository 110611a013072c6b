//! An async client for the cluster API: tries each endpoint until one answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls;
use crate::types::{
    Cas, CasFailed, ErrorBody, KeyValue, MaintenanceAccepted, MaintenanceStatus, Members, NodeView,
    NodesWatch, Put, Status, UpdateApplied, UpdateStatus, Watch, Written,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint accepted a connection; nothing was sent.
    #[error("no endpoint answered: {0}")]
    Unreachable(String),
    /// The request was sent but no answer came: it may or may not have taken effect.
    #[error("sent, but no answer (the outcome is unknown): {0}")]
    Unknown(String),
    /// The cluster answered with an error (`status` is the HTTP status).
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected answer from {endpoint}: {reason}")]
    Decode { endpoint: String, reason: String },
    #[error("{0}")]
    Setup(String),
}

/// What a compare-and-set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    Written(Written),
    Failed(CasFailed),
}

/// A connection-less client: each call opens a TLS connection to the first endpoint that
/// accepts it.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<String>,
    token: String,
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `endpoints` (`host:port`), presenting `token`, trusting only `server_key`.
    pub fn new(
        endpoints: Vec<String>,
        token: String,
        server_key: [u8; 32],
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Setup(
                "no endpoints: list the nodes' API addresses (host:port) in shoalctl.toml or \
                 pass --endpoint"
                    .into(),
            ));
        }
        let config =
            tls::client_config(server_key).map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Client {
            endpoints,
            token,
            tls: TlsConnector::from(Arc::new(config)),
            timeout: Duration::from_secs(10),
        })
    }

    /// A client for a node in maintenance at `endpoint`, which pins the key derived from the
    /// one-time token the node shows and presents the token.
    pub fn maintenance(
        endpoint: String,
        token: &crate::identity::MaintenanceToken,
    ) -> Result<Client, ClientError> {
        let key = crate::identity::Identity::for_maintenance(token).public_key;
        Client::new(vec![endpoint], token.display(), key)
    }

    /// How long one call may take on one endpoint.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Connects to one endpoint (TCP, TLS, HTTP handshake): nothing is sent yet, so a failure
    /// here is safe to retry elsewhere.
    async fn connect(
        &self,
        endpoint: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<RequestBody>, String> {
        let stream = TcpStream::connect(endpoint)
            .await
            .map_err(|e| format!("{endpoint}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let tls = self
            .tls
            .connect(tls::server_name(), stream)
            .await
            .map_err(|e| format!("{endpoint}: TLS: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("{endpoint}: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Connects to the first endpoint that accepts a connection.
    async fn first_connection(
        &self,
    ) -> Result<(hyper::client::conn::http1::SendRequest<RequestBody>, String), ClientError> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            match tokio::time::timeout(self.timeout, self.connect(endpoint)).await {
                Ok(Ok(sender)) => return Ok((sender, endpoint.clone())),
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push(format!(
                    "{endpoint}: no connection within {:?}",
                    self.timeout
                )),
            }
        }
        Err(ClientError::Unreachable(failures.join("; ")))
    }

    /// Sends an update bundle as `produce` reads it from wherever it is (a file, a download),
    /// writing chunks into the [`BodySender`] it is given; the node verifies and writes it as
    /// it arrives (`POST /v1/update`). `length`, when known, is sent as the Content-Length. If
    /// the node answers before the body is complete, the answer is returned at once and
    /// `produce` is dropped. (A node that refuses a bundle early, say for its signature, reads
    /// and drops the rest before answering: closing with unread data would send a reset, and
    /// the answer would be lost.)
    pub async fn update_apply_streaming<F, Fut>(
        &self,
        length: Option<u64>,
        produce: F,
    ) -> Result<UpdateApplied, ClientError>
    where
        F: FnOnce(BodySender) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let (mut sender, endpoint) = self.first_connection().await?;
        let (tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/v1/update")
            .header("host", tls::SERVER_NAME)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/octet-stream");
        if let Some(length) = length {
            request = request.header("content-length", length);
        }
        let request = request
            .body(UnsyncBoxBody::new(body))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let response = sender.send_request(request);
        let pump = produce(BodySender(Some(tx)));
        tokio::pin!(response, pump);
        let exchange = async {
            let mut produced: Option<Result<(), String>> = None;
            let response = loop {
                tokio::select! {
                    r = &mut response => break r,
                    p = &mut pump, if produced.is_none() => produced = Some(p),
                }
            };
            let response = response.map_err(|e| {
                let cause = match &produced {
                    Some(Err(reason)) => format!("{reason} ({e})"),
                    _ => e.to_string(),
                };
                ClientError::Unknown(format!("{endpoint}: {cause}"))
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Unknown(format!("{endpoint}: {e}")))?
                .to_bytes();
            if !status.is_success() {
                return Err(api_error(status, &bytes));
            }
            decode(&bytes, &endpoint)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Unknown(format!(
                "{endpoint}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Sends one request. The first endpoint that accepts a connection gets it; once a request
    /// is sent it is never sent again elsewhere (a write could otherwise happen twice), so a
    /// failure after that point is an error whose outcome is unknown.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes, String), ClientError> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let mut sender = match tokio::time::timeout(self.timeout, self.connect(endpoint)).await
            {
                Ok(Ok(sender)) => sender,
                Ok(Err(e)) => {
                    failures.push(e);
                    continue;
                }
                Err(_) => {
                    failures.push(format!(
                        "{endpoint}: no connection within {:?}",
                        self.timeout
                    ));
                    continue;
                }
            };
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", tls::SERVER_NAME)
                .header("authorization", format!("Bearer {}", self.token))
                .header("content-type", "application/json")
                .body(full(body.clone().unwrap_or_default()))
                .map_err(|e| ClientError::Setup(e.to_string()))?;
            let exchange = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let bytes = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, bytes))
            };
            return match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok((status, bytes))) => Ok((status, bytes, endpoint.clone())),
                Ok(Err(e)) => Err(ClientError::Unknown(format!("{endpoint}: {e}"))),
                Err(_) => Err(ClientError::Unknown(format!(
                    "{endpoint}: no answer within {:?}",
                    self.timeout
                ))),
            };
        }
        Err(ClientError::Unreachable(failures.join("; ")))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes, endpoint) = self.call(method, path, body).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        decode(&bytes, &endpoint)
    }

    /// The answering node's slots (`GET /v1/update`).
    pub async fn update_status(&self) -> Result<UpdateStatus, ClientError> {
        self.json(Method::GET, "/v1/update", None).await
    }

    /// Sends an update bundle to the answering node, which verifies and installs it in its
    /// other slot (`POST /v1/update`).
    pub async fn update_apply(&self, bundle: Vec<u8>) -> Result<UpdateApplied, ClientError> {
        self.json(Method::POST, "/v1/update", Some(bundle)).await
    }

    /// Makes the answering node's other slot the default again (`POST /v1/update/rollback`).
    pub async fn update_rollback(&self) -> Result<UpdateStatus, ClientError> {
        self.json(Method::POST, "/v1/update/rollback", None).await
    }

    /// Why a node in maintenance has no configuration (`GET /v1/maintenance`).
    pub async fn maintenance_status(&self) -> Result<MaintenanceStatus, ClientError> {
        self.json(Method::GET, "/v1/maintenance", None).await
    }

    /// Gives a node in maintenance its machine configuration (`PUT /v1/maintenance/config`):
    /// checked there, and refused with every error when it is invalid.
    pub async fn push_config(&self, toml: &str) -> Result<MaintenanceAccepted, ClientError> {
        self.json(
            Method::PUT,
            "/v1/maintenance/config",
            Some(toml.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.json(Method::GET, "/v1/status", None).await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.json(Method::GET, "/v1/nodes", None).await
    }

    /// The nodes once their membership, roles or health change from the view `since` (empty:
    /// at once), waiting up to `wait`.
    pub async fn watch_nodes(
        &self,
        since: &str,
        wait: Duration,
    ) -> Result<NodesWatch, ClientError> {
        let client = self.clone().with_timeout(self.timeout + wait);
        client
            .json(
                Method::GET,
                &format!(
                    "/v1/nodes/watch?since={}&timeout={}",
                    encode_key(since),
                    wait.as_secs()
                ),
                None,
            )
            .await
    }

    pub async fn node(&self, id: &str) -> Result<NodeView, ClientError> {
        self.json(Method::GET, &format!("/v1/nodes/{}", encode_key(id)), None)
            .await
    }

    /// A node's hardware inventory (by id or hostname).
    pub async fn inventory(&self, node: &str) -> Result<shoal_inventory::Inventory, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/nodes/{}/inventory", encode_key(node)),
            None,
        )
        .await
    }

    pub async fn members(&self) -> Result<Members, ClientError> {
        self.json(Method::GET, "/v1/members", None).await
    }

    /// A linearizable read; `None` when the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, ClientError> {
        let (status, bytes, endpoint) = self
            .call(Method::GET, &format!("/v1/kv/{}", encode_key(key)), None)
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => decode(&bytes, &endpoint).map(Some),
            s => Err(api_error(s, &bytes)),
        }
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<Written, ClientError> {
        let body = serde_json::to_vec(&Put {
            value: value.to_owned(),
        })
        .map_err(|e| ClientError::Setup(e.to_string()))?;
        self.json(
            Method::PUT,
            &format!("/v1/kv/{}", encode_key(key)),
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<Written, ClientError> {
        self.json(Method::DELETE, &format!("/v1/kv/{}", encode_key(key)), None)
            .await
    }

    pub async fn cas(
        &self,
        key: &str,
        expected: u64,
        value: Option<&str>,
    ) -> Result<CasOutcome, ClientError> {
        let body = serde_json::to_vec(&Cas {
            expected,
            value: value.map(str::to_owned),
        })
        .map_err(|e| ClientError::Setup(e.to_string()))?;
        let (status, bytes, endpoint) = self
            .call(
                Method::POST,
                &format!("/v1/kv/{}/cas", encode_key(key)),
                Some(body),
            )
            .await?;
        match status {
            StatusCode::CONFLICT => decode(&bytes, &endpoint).map(CasOutcome::Failed),
            s if s.is_success() => decode(&bytes, &endpoint).map(CasOutcome::Written),
            s => Err(api_error(s, &bytes)),
        }
    }

    /// The changes after revision `after`, waiting up to `wait` for one.
    pub async fn watch(&self, after: u64, wait: Duration) -> Result<Watch, ClientError> {
        let client = self.clone().with_timeout(self.timeout + wait);
        client
            .json(
                Method::GET,
                &format!("/v1/watch?after={after}&timeout={}", wait.as_secs()),
                None,
            )
            .await
    }
}

/// Every request's body: whole, or produced while it is sent.
type RequestBody = UnsyncBoxBody<Bytes, std::io::Error>;

fn full(bytes: Vec<u8>) -> RequestBody {
    UnsyncBoxBody::new(Full::new(Bytes::from(bytes)).map_err(|never| match never {}))
}

/// Where a streamed body's chunks go ([`Client::update_apply_streaming`]).
#[derive(Debug)]
pub struct BodySender(Option<http_body_util::channel::Sender<Bytes, std::io::Error>>);

impl BodySender {
    /// Sends one chunk; an error means the request is over (the node answered or went away).
    pub async fn send(&mut self, chunk: Bytes) -> Result<(), String> {
        match &mut self.0 {
            Some(tx) => tx
                .send_data(chunk)
                .await
                .map_err(|_| "the node stopped reading".to_string()),
            None => Err("the body was aborted".into()),
        }
    }

    /// Ends the body with an error: the node sees a broken upload and keeps nothing.
    pub fn abort(&mut self, reason: &str) {
        if let Some(tx) = self.0.take() {
            tx.abort(std::io::Error::other(reason.to_string()));
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], endpoint: &str) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })
}

fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(bytes)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned());
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_key("plain-key_1.2~"), "plain-key_1.2~");
    }
}
