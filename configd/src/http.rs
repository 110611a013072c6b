//! The little HTTP/1.1 a node needs to fetch its configuration: a GET (or the PUT of IMDSv2's
//! token) with a few headers, a response with `Content-Length`, chunked, or read-to-close
//! body, over plain TCP or TLS. Parsing is sans-IO; [`fetch`] and [`fetch_with`] are the thin
//! blocking adapter with timeouts: names are resolved by [`crate::dns`] (the static binaries
//! have no working `getaddrinfo`), `https://` goes through rustls (ring, TLS 1.2 and 1.3).
//!
//! Trust for `https://` is either the public web PKI (Mozilla's roots from `webpki-roots`, with
//! host-name verification) or a pin ([`Trust::Pin`]): the SHA-256 of the server certificate's
//! SubjectPublicKeyInfo, as curl's `--pinnedpubkey sha256//...` but written `sha256:<hex>`. With
//! a pin, neither the chain, the name nor the validity dates are checked (a PXE server's
//! self-signed certificate, and a node whose clock is not set yet, both work): the key is the
//! trust, and the handshake must still be signed by that key. To compute a pin:
//! `openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct};
use rustls::{RootCertStore, SignatureScheme, StreamOwned};
use tracing::debug;

use crate::dns::{self, DnsError};

/// The largest body accepted: a configuration is a few KiB; anything near this is a mistake.
pub const MAX_BODY: usize = 1 << 20;
const MAX_HEAD: usize = 16 << 10;
/// Where the nameservers are listed on a node (a link to netd's `/run/shoal/resolv.conf`).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not an http:// or https:// URL")]
    Scheme(String),
    #[error("{0:?}: {1}")]
    BadUrl(String, &'static str),
    #[error("{url:?}: host {host:?} is neither an IP address nor a valid name: {reason}")]
    BadHost {
        url: String,
        host: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("cannot connect to {}", list_failures(.0))]
    Connect(Vec<(SocketAddr, String)>),
    #[error("{0}")]
    Io(String),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("the response is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS with {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error(
        "TLS with {host}: the certificate's public key is {found}, which does not match the pin {pin}"
    )]
    PinMismatch {
        host: String,
        /// Both as `sha256:<hex>`.
        pin: String,
        found: String,
    },
    #[error(
        "bad pin {text:?}: {reason} (expected sha256:<64 hex digits>, the SHA-256 of the \
         certificate's SubjectPublicKeyInfo)"
    )]
    BadPin { text: String, reason: &'static str },
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
}

fn list_failures(failures: &[(SocketAddr, String)]) -> String {
    failures
        .iter()
        .map(|(address, why)| format!("{address}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An `http://` or `https://` URL, split. The host is an IP address (IPv6 without its
/// brackets) or a checked, lowercased name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/` (a fragment is dropped: it is never sent).
    pub target: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("https://") {
            (Scheme::Https, &url[8..])
        } else if lower.starts_with("http://") {
            (Scheme::Http, &url[7..])
        } else {
            return Err(HttpError::Scheme(url.to_string()));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(HttpError::BadUrl(
                url.into(),
                "no host, or user info (not supported)",
            ));
        }
        let bad_port = || HttpError::BadUrl(url.into(), "bad port");
        let parse_port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(bad_port)
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or(HttpError::BadUrl(url.into(), "unclosed [ in the host"))?;
            if h.parse::<Ipv6Addr>().is_err() {
                return Err(HttpError::BadUrl(
                    url.into(),
                    "bad IPv6 address in brackets",
                ));
            }
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => scheme.default_port(),
                None => return Err(HttpError::BadUrl(url.into(), "junk after the host")),
            };
            (h.to_string(), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p)?),
                None => (authority, scheme.default_port()),
            };
            if host.is_empty() {
                return Err(HttpError::BadUrl(url.into(), "no host"));
            }
            if host.parse::<Ipv4Addr>().is_err() {
                let bad_host = |reason| HttpError::BadHost {
                    url: url.into(),
                    host: host.into(),
                    reason,
                };
                if host.contains(':') {
                    return Err(bad_host("an IPv6 address goes in brackets"));
                }
                dns::check_name(host).map_err(bad_host)?;
            }
            (host.to_ascii_lowercase(), port)
        };
        if target.contains(char::is_whitespace) {
            return Err(HttpError::BadUrl(url.into(), "spaces in the path"));
        }
        Ok(Url {
            scheme,
            host,
            port,
            target,
        })
    }

    /// The host as an IP address, when it is one (a name is resolved by [`fetch_with`]).
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The host as the `Host` header and a URL write it (IPv6 in brackets).
    fn authority_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority_host())?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.target)
    }
}

/// What an `https://` server's certificate is checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trust {
    /// The public web PKI: a chain to one of Mozilla's roots, valid now, for the URL's host.
    #[default]
    WebPki,
    /// The SHA-256 of the server certificate's SubjectPublicKeyInfo (DER): only that key is
    /// trusted, whoever signed the certificate (see the module's documentation).
    Pin([u8; 32]),
}

/// Reads a pin written `sha256:<64 hex digits>` (either case).
pub fn parse_pin(text: &str) -> Result<[u8; 32], HttpError> {
    let bad = |reason| HttpError::BadPin {
        text: text.to_string(),
        reason,
    };
    let hex = text
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("sha256:"))
        .map(|_| &text[7..])
        .ok_or_else(|| bad("it does not start with sha256:"))?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("not hexadecimal after sha256:"));
    }
    if hex.len() != 64 {
        return Err(bad("not 64 hex digits after sha256:"));
    }
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).map_err(|_| bad("not hexadecimal after sha256:"))?;
        *byte = u8::from_str_radix(digits, 16).map_err(|_| bad("not hexadecimal after sha256:"))?;
    }
    Ok(pin)
}

/// A pin as [`parse_pin`] reads it: `sha256:<64 lowercase hex digits>`.
pub fn format_pin(pin: &[u8; 32]) -> String {
    let mut text = String::from("sha256:");
    for byte in pin {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The pin of a certificate (DER): the SHA-256 of its SubjectPublicKeyInfo.
pub fn spki_sha256(certificate: &[u8]) -> Result<[u8; 32], HttpError> {
    let der = CertificateDer::from(certificate);
    let parsed = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| HttpError::BadCertificate(e.to_string()))?;
    let spki = parsed.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    let mut pin = [0u8; 32];
    pin.copy_from_slice(digest.as_ref());
    Ok(pin)
}

/// How [`fetch_with`] resolves names and trusts servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    pub trust: Trust,
    /// Where the nameservers are read from.
    pub resolv_conf: PathBuf,
    /// These servers (any port) instead of resolv.conf's, without search domains.
    pub nameservers: Option<Vec<SocketAddr>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            trust: Trust::WebPki,
            resolv_conf: RESOLV_CONF.into(),
            nameservers: None,
        }
    }
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub url: Url,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn get(url: Url) -> Request {
        Request {
            method: "GET",
            url,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The bytes on the wire (no body: neither GET nor IMDS's token PUT has one).
    pub fn encode(&self) -> Vec<u8> {
        let host = self.url.authority_host();
        let mut text = format!(
            "{} {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: shoal-configd\r\nAccept: */*\r\nConnection: close\r\n",
            self.method, self.url.target, self.url.port
        );
        if self.method != "GET" {
            text.push_str("Content-Length: 0\r\n");
        }
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a complete response (the connection was closed after it). `Ok(None)`: more bytes
/// are needed.
pub fn parse_response(bytes: &[u8], closed: bool) -> Result<Option<Response>, HttpError> {
    let Some(head_end) = find(bytes, b"\r\n\r\n") else {
        if bytes.len() > MAX_HEAD {
            return Err(HttpError::Malformed("headers too long"));
        }
        return if closed {
            Err(HttpError::Malformed("connection closed in the headers"))
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&bytes[..head_end])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(HttpError::Malformed("bad status code"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("a header line without ':'"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let response = |body: Vec<u8>| Response {
        status,
        headers: headers.clone(),
        body,
    };
    let body = &bytes[head_end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return match dechunk(body)? {
            Some(body) => Ok(Some(response(body))),
            None if closed => Err(HttpError::Malformed("connection closed inside a chunk")),
            None => Ok(None),
        };
    }
    if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
        if length > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        return if body.len() >= length {
            Ok(Some(response(body[..length].to_vec())))
        } else if closed {
            Err(HttpError::Malformed(
                "connection closed before Content-Length bytes",
            ))
        } else {
            Ok(None)
        };
    }
    if body.len() > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    Ok(closed.then(|| response(body.to_vec())))
}

/// The body of a chunked transfer, or `None` while incomplete.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&data[..line_end])
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        // Checked before any addition: the size is the peer's and may be near usize::MAX.
        if size > MAX_BODY - body.len() {
            return Err(HttpError::TooLarge);
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        if &data[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("a chunk does not end in CRLF"));
        }
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` and reads the whole response, all within `timeout`, with the default
/// options: names from `/etc/resolv.conf`, `https://` trusted through the web PKI.
pub fn fetch(request: &Request, timeout: Duration) -> Result<Response, HttpError> {
    fetch_with(request, timeout, &FetchOptions::default())
}

/// Sends `request` and reads the whole response, all within `timeout` (name resolution,
/// connection, TLS handshake and response together). Each address of a name is tried in turn,
/// each with an equal share of the time left.
pub fn fetch_with(
    request: &Request,
    timeout: Duration,
    options: &FetchOptions,
) -> Result<Response, HttpError> {
    let deadline = Instant::now() + timeout;
    let url = &request.url;
    let addresses = match url.host_ip() {
        Some(ip) => vec![ip],
        None => match &options.nameservers {
            Some(servers) => dns::resolve_with(&url.host, servers, timeout)?,
            None => dns::resolve(&url.host, &options.resolv_conf, timeout)?,
        },
    };
    let stream = connect(&addresses, url.port, deadline, timeout)?;
    match url.scheme {
        Scheme::Http => exchange(stream, request, deadline, timeout, None),
        Scheme::Https => {
            let tls = Tls {
                host: url.host.clone(),
                pin: match options.trust {
                    Trust::WebPki => None,
                    Trust::Pin(pin) => Some(pin),
                },
            };
            let server_name = match url.host_ip() {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None => ServerName::try_from(url.host.clone())
                    .map_err(|e| tls.error(&rustls::Error::General(e.to_string())))?,
            };
            let connection = client_config(options.trust)
                .and_then(|config| ClientConnection::new(config, server_name))
                .map_err(|e| tls.error(&e))?;
            let stream = StreamOwned::new(connection, stream);
            exchange(stream, request, deadline, timeout, Some(&tls))
        }
    }
}

fn connect(
    addresses: &[IpAddr],
    port: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, HttpError> {
    let mut failures = Vec::new();
    for (i, ip) in addresses.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let share = (left / u32::try_from(addresses.len() - i).unwrap_or(u32::MAX))
            .max(Duration::from_millis(1));
        let address = SocketAddr::new(*ip, port);
        match TcpStream::connect_timeout(&address, share) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                debug!(%address, error = %e, "connection failed");
                let why = if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    format!("no answer within {} ms", share.as_millis())
                } else {
                    e.to_string()
                };
                failures.push((address, why));
            }
        }
    }
    if failures.is_empty() {
        return Err(HttpError::Timeout(timeout));
    }
    Err(HttpError::Connect(failures))
}

/// A connection to write a request to and read a response from, plain or TLS.
trait Transport: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for StreamOwned<ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

fn exchange(
    mut stream: impl Transport,
    request: &Request,
    deadline: Instant,
    timeout: Duration,
    tls: Option<&Tls>,
) -> Result<Response, HttpError> {
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return HttpError::Timeout(timeout);
        }
        if let Some(tls) = tls {
            if let Some(error) = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return tls.error(error);
            }
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return HttpError::Tls {
                    host: tls.host.clone(),
                    reason: "the server closed the connection without close_notify before \
                             the response was complete"
                        .into(),
                };
            }
        }
        HttpError::Io(e.to_string())
    };
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(HttpError::Timeout(timeout))
        } else {
            Ok(left)
        }
    };
    // The TLS handshake happens in the first write and read, under these timeouts.
    stream.tcp().set_write_timeout(Some(left()?)).map_err(io)?;
    stream.tcp().set_read_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(&request.encode()).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        stream.tcp().set_read_timeout(Some(left()?)).map_err(io)?;
        let n = stream.read(&mut chunk).map_err(io)?;
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buffer, n == 0)? {
            return Ok(response);
        }
    }
}

/// What TLS errors are reported with.
struct Tls {
    host: String,
    pin: Option<[u8; 32]>,
}

impl Tls {
    fn error(&self, error: &rustls::Error) -> HttpError {
        let host = self.host.clone();
        let reason = match error {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                if let (Some(mismatch), Some(pin)) =
                    (other.0.downcast_ref::<PinMismatch>(), self.pin)
                {
                    return HttpError::PinMismatch {
                        host,
                        pin: format_pin(&pin),
                        found: format_pin(&mismatch.found),
                    };
                }
                format!("invalid certificate: {other}")
            }
            rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
                if self.pin.is_some() {
                    "the handshake's signature does not verify with the pinned key (the server \
                     does not hold the certificate's private key)"
                        .into()
                } else {
                    "a signature in the certificate chain or the handshake does not verify".into()
                }
            }
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "the certificate is not signed by an authority of the public web PKI \
                  (unknown issuer); for a private or self-signed certificate, pin its key"
                    .into()
            }
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!("the certificate is not valid for the name {}", self.host),
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => "the certificate has expired (or the clock is wrong)".into(),
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
            ) => "the certificate is not valid yet (or the clock is wrong)".into(),
            rustls::Error::AlertReceived(alert) => format!("the server sent the alert {alert:?}"),
            other => other.to_string(),
        };
        HttpError::Tls { host, reason }
    }
}

fn client_config(trust: Trust) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let config = match trust {
        Trust::WebPki => builder
            .with_root_certificates(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth(),
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, algorithms }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The leaf's key did not hash to the pin (carried through rustls to [`Tls::error`]).
#[derive(Debug, thiserror::Error)]
#[error("the certificate's public key is {}, not the pinned one", format_pin(.found))]
struct PinMismatch {
    found: [u8; 32],
}

/// Trusts exactly the leaf certificate whose SubjectPublicKeyInfo hashes to the pin; the
/// handshake's signatures are still checked against that certificate's key.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = spki_sha256(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if found != self.pin {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch { found })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls_split_into_host_port_and_target() {
        assert_eq!(
            Url::parse("http://10.77.0.1/cfg/node.toml?x=1").unwrap(),
            Url {
                scheme: Scheme::Http,
                host: "10.77.0.1".into(),
                port: 80,
                target: "/cfg/node.toml?x=1".into()
            }
        );
        assert_eq!(Url::parse("http://10.0.0.1:8080").unwrap().target, "/");
        let v6 = Url::parse("http://[fd77::1]:81/c").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd77::1", 81));
        assert_eq!(
            Url::parse("ftp://x/c").unwrap_err().to_string(),
            "\"ftp://x/c\" is not an http:// or https:// URL"
        );
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://h:port/").is_err());
        assert!(Url::parse("http://h:0/").is_err());
        assert!(Url::parse("http://u@h/").is_err());
        assert!(Url::parse("http://[fd77::1/").is_err());
        assert!(Url::parse("http://[not-v6]/").is_err());
    }

    #[test]
    fn https_and_names() {
        assert_eq!(
            Url::parse("HTTPS://Config.Example/node.toml#top").unwrap(),
            Url {
                scheme: Scheme::Https,
                host: "config.example".into(),
                port: 443,
                target: "/node.toml".into()
            }
        );
        let named = Url::parse("https://pxe.lab:8443?mac=52:54:00:12:34:56").unwrap();
        assert_eq!(
            (named.host.as_str(), named.port, named.target.as_str()),
            ("pxe.lab", 8443, "/?mac=52:54:00:12:34:56")
        );
        assert_eq!(named.host_ip(), None);
        assert_eq!(
            Url::parse("https://[fd77::1]/c").unwrap().host_ip(),
            Some("fd77::1".parse().unwrap())
        );
        assert_eq!(
            Url::parse("http://config..example/")
                .unwrap_err()
                .to_string(),
            "\"http://config..example/\": host \"config..example\" is neither an IP address nor a \
             valid name: an empty label (two dots in a row, or a leading dot)"
        );
        for bad in [
            "http://10.0.0.256/",
            "http://fd00::1/",
            "https://under score/",
            "https://-x.example/",
            "https://x_y.exa%6dple/",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(HttpError::BadHost { .. })),
                "{bad}"
            );
        }
        // Written back, with the port only when it is not the scheme's.
        for url in [
            "https://config.example/node.toml",
            "http://[fd00::1]:8080/?a=b",
            "http://10.0.0.1:443/",
        ] {
            assert_eq!(Url::parse(url).unwrap().to_string(), url);
        }
        assert_eq!(
            Url::parse("https://c.example:443/x").unwrap().to_string(),
            "https://c.example/x"
        );
    }

    #[test]
    fn pins_are_sha256_hex() {
        let text = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let pin = parse_pin(&text).unwrap();
        assert_eq!(pin[..4], [0x01, 0x23, 0x45, 0x67]);
        assert_eq!(format_pin(&pin), text);
        assert_eq!(parse_pin(&text.to_uppercase()), Ok(pin));
        for (bad, reason) in [
            ("0123", "it does not start with sha256:"),
            ("sha1:0123", "it does not start with sha256:"),
            ("sha256:0123", "not 64 hex digits after sha256:"),
            (&format!("{text}00"), "not 64 hex digits after sha256:"),
            (
                &format!("sha256:{}", "x".repeat(64)),
                "not hexadecimal after sha256:",
            ),
            ("sha256:é", "not hexadecimal after sha256:"),
        ] {
            assert_eq!(
                parse_pin(bad),
                Err(HttpError::BadPin {
                    text: bad.to_string(),
                    reason
                })
            );
        }
        assert_eq!(
            parse_pin("md5:00").unwrap_err().to_string(),
            "bad pin \"md5:00\": it does not start with sha256: (expected sha256:<64 hex \
             digits>, the SHA-256 of the certificate's SubjectPublicKeyInfo)"
        );
        assert!(matches!(
            spki_sha256(b"not a certificate"),
            Err(HttpError::BadCertificate(_))
        ));
    }

    #[test]
    fn tls_errors_say_what_to_do() {
        let tls = Tls {
            host: "config.example".into(),
            pin: Some([0xab; 32]),
        };
        let mismatch = rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch { found: [0xcd; 32] })),
        ));
        assert_eq!(
            tls.error(&mismatch).to_string(),
            format!(
                "TLS with config.example: the certificate's public key is sha256:{}, which does \
                 not match the pin sha256:{}",
                "cd".repeat(32),
                "ab".repeat(32)
            )
        );
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(
            tls.error(&unknown).to_string().contains("(unknown issuer)"),
            "{}",
            tls.error(&unknown)
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert_eq!(
            tls.error(&name).to_string(),
            "TLS with config.example: the certificate is not valid for the name config.example"
        );
    }

    #[test]
    fn requests_are_plain_http_1_1() {
        let r = Request::get(Url::parse("http://10.0.0.1/a").unwrap()).header("X-A", "b");
        assert_eq!(
            String::from_utf8(r.encode()).unwrap(),
            "GET /a HTTP/1.1\r\nHost: 10.0.0.1:80\r\nUser-Agent: shoal-configd\r\nAccept: */*\r\n\
             Connection: close\r\nX-A: b\r\n\r\n"
        );
    }

    #[test]
    fn responses_with_length_chunks_or_close() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", false).unwrap(),
            None
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked, false).unwrap().unwrap().body,
            b"Wikipedia"
        );
        let close = parse_response(b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\ngone", true)
            .unwrap()
            .unwrap();
        assert_eq!((close.status, close.header("server")), (404, Some("x")));
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse_response(b"SSH-2.0\r\n\r\n", true).is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n", true).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", true).is_err());
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
                false
            ),
            Err(HttpError::TooLarge)
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", true).is_err());
        assert!(parse_response(b"HTTP/1.1 200", true).is_err());
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\nab";
        assert_eq!(parse_response(huge, false), Err(HttpError::TooLarge));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), closed in any::<bool>()) {
            let _ = parse_response(&bytes, closed);
        }
    }
}
