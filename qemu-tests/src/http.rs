//! A tiny read-only HTTP/1.0 file server for PXE: iPXE fetches `boot.ipxe`, the kernel and the
//! initramfs from it. TFTP would take ~20 s for the same files under TCG.
//!
//! The listener lives in the test's network namespace: its thread `setns()`es into the namespace
//! before binding (network namespaces are per thread), so the rest of the process is unaffected.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::CloneFlags;

use crate::net::Namespace;
use crate::{Error, Result};

/// How long the accept loop sleeps when no connection is pending; bounds shutdown latency.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// One request the server answered, for tests that check what was fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    /// How long answering took (the download time for a file).
    pub took: Duration,
}

/// A running server; stops (and joins its thread) on drop.
#[derive(Debug)]
pub struct HttpServer {
    url: String,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Served>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves the files under `root` on `addr` inside `namespace`.
    pub(crate) fn start(
        namespace: &Namespace,
        addr: SocketAddr,
        root: &Path,
    ) -> Result<HttpServer> {
        let root = root
            .canonicalize()
            .map_err(Error::io(format!("HTTP root {}", root.display())))?;
        let handle = namespace.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let thread = {
            let (stop, log) = (Arc::clone(&stop), Arc::clone(&log));
            std::thread::Builder::new()
                .name("shoal-http".into())
                .spawn(move || {
                    let listener = match bind_in_namespace(&handle, addr) {
                        Ok(listener) => {
                            let _ = ready_tx.send(Ok(()));
                            listener
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    accept_loop(listener, &root, &stop, &log);
                })
                .map_err(Error::io("spawn the HTTP server thread"))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Io {
                    what: "HTTP server thread".into(),
                    source: std::io::Error::other("exited before binding"),
                });
            }
        }
        Ok(HttpServer {
            url: format!("http://{addr}"),
            stop,
            log,
            thread: Some(thread),
        })
    }

    /// `http://ADDR:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request answered so far.
    pub fn served(&self) -> Vec<Served> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn bind_in_namespace(handle: &Path, addr: SocketAddr) -> Result<TcpListener> {
    let ns = File::open(handle).map_err(Error::io(format!("open {}", handle.display())))?;
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Io {
        what: format!("setns into {}", handle.display()),
        source: e.into(),
    })?;
    let listener = TcpListener::bind(addr).map_err(Error::io(format!("bind HTTP on {addr}")))?;
    listener
        .set_nonblocking(true)
        .map_err(Error::io("make the HTTP listener non-blocking"))?;
    Ok(listener)
}

fn accept_loop(
    listener: TcpListener,
    root: &Path,
    stop: &AtomicBool,
    log: &Arc<Mutex<Vec<Served>>>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (root, log) = (root.to_path_buf(), Arc::clone(log));
                // One thread per connection: several VMs fetch their initramfs at once.
                let _ = std::thread::Builder::new()
                    .name("shoal-http-conn".into())
                    .spawn(move || {
                        if let Some(served) = handle_connection(stream, &root)
                            && let Ok(mut log) = log.lock()
                        {
                            log.push(served);
                        }
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn handle_connection(stream: TcpStream, root: &Path) -> Option<Served> {
    let began = std::time::Instant::now();
    // Accepted sockets inherit the listener's non-blocking mode on some systems; be explicit.
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line).ok()?;
        head.extend_from_slice(&line);
        if n == 0 || line == b"\r\n" || line == b"\n" || head.len() > MAX_REQUEST_HEAD {
            break;
        }
    }
    let mut stream = stream;
    let (status, path, body) = match parse_request(&head) {
        Err(status) => (status, String::new(), None),
        Ok(path) => match resolve(root, &path).and_then(|p| File::open(p).ok()) {
            Some(file) => match file.metadata() {
                Ok(meta) if meta.is_file() => (200, path, Some((file, meta.len()))),
                _ => (404, path, None),
            },
            None => (404, path, None),
        },
    };
    let served = match body {
        Some((mut file, len)) => {
            let header = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let sent = stream
                .write_all(header.as_bytes())
                .and_then(|()| std::io::copy(&mut (&mut file).take(len), &mut stream));
            Served {
                path,
                status,
                bytes: sent.unwrap_or(0),
                took: began.elapsed(),
            }
        }
        None => {
            let reason = match status {
                400 => "Bad Request",
                405 => "Method Not Allowed",
                _ => "Not Found",
            };
            let text = format!("{status} {reason}\n");
            let _ = write!(
                stream,
                "HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            Served {
                path,
                status,
                bytes: 0,
                took: began.elapsed(),
            }
        }
    };
    let _ = stream.flush();
    Some(served)
}

/// The request path of a `GET`, or the HTTP status to answer with.
fn parse_request(head: &[u8]) -> Result<String, u16> {
    let head = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let request_line = head.lines().next().ok_or(400u16)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/") {
        return Err(400);
    }
    if method != "GET" {
        return Err(405);
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(400);
    }
    Ok(path.to_string())
}

/// Maps a request path onto a file under `root`; `None` for anything that could leave it.
fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let relative = Path::new(request_path.trim_start_matches('/'));
    let mut resolved = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (resolved != root).then_some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_requests() {
        assert_eq!(
            parse_request(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok("/boot.ipxe".into())
        );
        assert_eq!(
            parse_request(b"GET /vmlinuz?x=1 HTTP/1.0\r\n\r\n"),
            Ok("/vmlinuz".into())
        );
        assert_eq!(parse_request(b"POST /x HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(parse_request(b"GET\r\n\r\n"), Err(400));
        assert_eq!(parse_request(b"GET x HTTP/1.1\r\n\r\n"), Err(400));
    }

    #[test]
    fn never_resolves_outside_the_root() {
        let root = Path::new("/srv/image");
        assert_eq!(
            resolve(root, "/vmlinuz"),
            Some(PathBuf::from("/srv/image/vmlinuz"))
        );
        assert_eq!(
            resolve(root, "/a/./b"),
            Some(PathBuf::from("/srv/image/a/b"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../x"), None);
        assert_eq!(resolve(root, "/"), None);
    }

    #[test]
    fn serves_files_with_content_length() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello"), b"hello world").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let root = dir.path().to_path_buf();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                handle_connection(stream, &root).unwrap();
            }
        });
        let fetch = |request: &str| {
            let mut client = TcpStream::connect(addr).unwrap();
            client.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            client.read_to_string(&mut response).unwrap();
            response
        };
        let ok = fetch("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 11\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nhello world"), "{ok}");
        let missing = fetch("GET /nope HTTP/1.0\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.0 404 Not Found"), "{missing}");
        server.join().unwrap();
    }
}
