//! The little HTTP/1.1 a node needs to fetch its configuration: a GET (or the PUT of IMDSv2's
//! token) with a few headers, a response with `Content-Length`, chunked, or read-to-close
//! body. Parsing is sans-IO; [`fetch`] is the thin blocking adapter with timeouts.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest body accepted: a configuration is a few KiB; anything near this is a mistake.
pub const MAX_BODY: usize = 1 << 20;
const MAX_HEAD: usize = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not an http:// URL (https:// is not supported yet)")]
    Scheme(String),
    #[error("{0:?}: {1}")]
    BadUrl(String, &'static str),
    #[error(
        "{url}: host {host:?} is a name; only IP addresses are supported until the node resolves names"
    )]
    NameNotSupported { url: String, host: String },
    #[error("{0}")]
    Io(String),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("the response is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// An `http://` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| HttpError::Scheme(url.to_string()))?;
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(HttpError::BadUrl(
                url.into(),
                "no host, or user info (not supported)",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or(HttpError::BadUrl(url.into(), "unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| HttpError::BadUrl(url.into(), "bad port"))?,
                None if after.is_empty() => 80,
                None => return Err(HttpError::BadUrl(url.into(), "junk after the host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse()
                        .map_err(|_| HttpError::BadUrl(url.into(), "bad port"))?,
                ),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() {
            return Err(HttpError::BadUrl(url.into(), "no host"));
        }
        if target.contains(char::is_whitespace) {
            return Err(HttpError::BadUrl(url.into(), "spaces in the path"));
        }
        Ok(Url { host, port, target })
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
        let host = if self.url.host.contains(':') {
            format!("[{}]", self.url.host)
        } else {
            self.url.host.clone()
        };
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
        if body.len() + size > MAX_BODY {
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

/// Sends `request` and reads the whole response, all within `timeout`.
pub fn fetch(request: &Request, timeout: Duration) -> Result<Response, HttpError> {
    let url_text = format!(
        "http://{}:{}{}",
        request.url.host, request.url.port, request.url.target
    );
    let ip: IpAddr = request
        .url
        .host
        .parse()
        .map_err(|_| HttpError::NameNotSupported {
            url: url_text.clone(),
            host: request.url.host.clone(),
        })?;
    let deadline = Instant::now() + timeout;
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            HttpError::Timeout(timeout)
        } else {
            HttpError::Io(e.to_string())
        }
    };
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::new(ip, request.url.port), timeout).map_err(io)?;
    stream.write_all(&request.encode()).map_err(io)?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout(timeout));
        }
        stream.set_read_timeout(Some(left)).map_err(io)?;
        let n = stream.read(&mut chunk).map_err(io)?;
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buffer, n == 0)? {
            return Ok(response);
        }
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
                host: "10.77.0.1".into(),
                port: 80,
                target: "/cfg/node.toml?x=1".into()
            }
        );
        assert_eq!(Url::parse("http://10.0.0.1:8080").unwrap().target, "/");
        let v6 = Url::parse("http://[fd77::1]:81/c").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd77::1", 81));
        assert_eq!(
            Url::parse("https://x/c").unwrap_err().to_string(),
            "\"https://x/c\" is not an http:// URL (https:// is not supported yet)"
        );
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://h:port/").is_err());
        assert!(Url::parse("http://u@h/").is_err());
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
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), closed in any::<bool>()) {
            let _ = parse_response(&bytes, closed);
        }
    }
}
