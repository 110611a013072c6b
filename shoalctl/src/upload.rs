//! `shoalctl update apply FILE|URL`: the bundle is streamed to the node as it is read from the
//! file or downloaded (http:// or https:// with the public web PKI), never held whole in
//! memory, with progress on standard error.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use shoal_cluster_api::client::BodySender;
use tokio::io::AsyncReadExt;

/// Where a bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(std::path::PathBuf),
    Url {
        https: bool,
        host: String,
        port: u16,
        /// Path and query.
        target: String,
    },
}

impl Source {
    pub fn parse(text: &str) -> Result<Source> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if text.contains("://") {
            bail!("{text:?}: a bundle URL is http:// or https://");
        } else {
            return Ok(Source::File(text.into()));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .with_context(|| format!("{text:?}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().with_context(|| format!("{text:?}: bad port"))?,
                None if after.is_empty() => default_port,
                None => bail!("{text:?}: junk after the host"),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().with_context(|| format!("{text:?}: bad port"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || host.contains('@') {
            bail!("{text:?}: no host, or user info (not supported)");
        }
        Ok(Source::Url {
            https,
            host,
            port,
            target,
        })
    }
}

/// Progress on standard error: a line redrawn in place on a terminal, a line per quarter
/// otherwise.
pub struct Progress {
    total: Option<u64>,
    sent: u64,
    started: Instant,
    terminal: bool,
    quarter: u64,
}

impl Progress {
    pub fn new(total: Option<u64>) -> Progress {
        Progress {
            total,
            sent: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            quarter: 0,
        }
    }

    pub fn add(&mut self, bytes: u64) {
        self.sent += bytes;
        let line = self.line();
        if self.terminal {
            eprint!("\r{line}   ");
        } else if let Some(total) = self.total.filter(|t| *t > 0) {
            let quarter = self.sent * 4 / total;
            if quarter > self.quarter {
                self.quarter = quarter;
                eprintln!("{line}");
            }
        }
    }

    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }

    /// `12.0 of 35.3 MiB (34%), 4.1 MiB/s`.
    pub fn line(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = mib(self.sent) / seconds;
        match self.total {
            Some(total) if total > 0 => format!(
                "{:.1} of {:.1} MiB ({}%), {rate:.1} MiB/s",
                mib(self.sent),
                mib(total),
                self.sent * 100 / total
            ),
            _ => format!("{:.1} MiB, {rate:.1} MiB/s", mib(self.sent)),
        }
    }
}

const CHUNK: usize = 256 << 10;

/// Opens the bundle: its size when known, and a function that streams it into a body.
pub async fn stream(
    source: &Source,
    body: &mut BodySender,
    progress: &mut Progress,
) -> std::result::Result<(), String> {
    let outcome = match source {
        Source::File(path) => stream_file(path, body, progress).await,
        Source::Url { .. } => stream_url(source, body, progress).await,
    };
    if let Err(reason) = &outcome {
        body.abort(reason);
    }
    outcome
}

async fn stream_file(
    path: &std::path::Path,
    body: &mut BodySender,
    progress: &mut Progress,
) -> std::result::Result<(), String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        body.send(Bytes::copy_from_slice(&buffer[..n])).await?;
        progress.add(n as u64);
    }
}

/// The size of the bundle behind `source`, when it can be known before sending.
pub async fn length(source: &Source) -> Result<Option<u64>> {
    match source {
        Source::File(path) => Ok(Some(
            std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len(),
        )),
        // A download's length comes with its response; the upload is then chunked.
        Source::Url { .. } => Ok(None),
    }
}

async fn stream_url(
    source: &Source,
    body: &mut BodySender,
    progress: &mut Progress,
) -> std::result::Result<(), String> {
    let Source::Url {
        https,
        host,
        port,
        target,
    } = source
    else {
        return Err("not a URL".into());
    };
    let url = format!(
        "{}://{host}:{port}{target}",
        if *https { "https" } else { "http" }
    );
    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let request = hyper::Request::get(target.as_str())
        .header("host", host.as_str())
        .header("user-agent", "shoalctl")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let response = if *https {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{url}: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{url}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{url}: TLS: {e}"))?;
        send(hyper_util::rt::TokioIo::new(tls), request, &url).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request, &url).await?
    };
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    progress.total = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut incoming = response.into_body();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| format!("{url}: {e}"))?;
        if let Ok(data) = frame.into_data() {
            let n = data.len() as u64;
            body.send(data).await?;
            progress.add(n);
        }
    }
    Ok(())
}

async fn send<T>(
    io: T,
    request: hyper::Request<http_body_util::Empty<Bytes>>,
    url: &str,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_files_or_http_urls() {
        assert_eq!(
            Source::parse("out/test/update.bundle").unwrap(),
            Source::File("out/test/update.bundle".into())
        );
        assert_eq!(
            Source::parse("https://images.example/shoal/0.2.0.bundle").unwrap(),
            Source::Url {
                https: true,
                host: "images.example".into(),
                port: 443,
                target: "/shoal/0.2.0.bundle".into()
            }
        );
        assert_eq!(
            Source::parse("http://10.0.0.1:8080?v=2").unwrap(),
            Source::Url {
                https: false,
                host: "10.0.0.1".into(),
                port: 8080,
                target: "/?v=2".into()
            }
        );
        let v6 = Source::parse("http://[fd00::1]/b").unwrap();
        assert!(matches!(v6, Source::Url { ref host, port: 80, .. } if host == "fd00::1"));
        for bad in [
            "ftp://x/b",
            "http://:80/b",
            "http://u@h/b",
            "http://h:port/b",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn progress_says_how_far_and_how_fast() {
        let mut p = Progress::new(Some(4 << 20));
        p.terminal = false;
        p.add(1 << 20);
        let line = p.line();
        assert!(line.starts_with("1.0 of 4.0 MiB (25%), "), "{line}");
        assert!(line.ends_with(" MiB/s"), "{line}");
        assert_eq!(p.quarter, 1);
        let unknown = Progress::new(None);
        assert!(unknown.line().starts_with("0.0 MiB, "));
    }
}
