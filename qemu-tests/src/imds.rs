//! An EC2-style instance metadata service (IMDSv2 only, as on an instance with
//! `HttpTokens=required`) at 169.254.169.254 inside the test's network namespace: a session
//! token from `PUT /latest/api/token`, then `GET`s that present it; a `GET` without it is 401.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::net::Namespace;
use crate::{Error, Result};

/// Where clouds answer.
pub const IMDS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const TOKEN: &str = "AQAEAshoal-test-session-token==";

/// A running service; stops on drop.
#[derive(Debug)]
pub struct ImdsServer {
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl ImdsServer {
    /// Serves `user_data` and `local_hostname` (either may be absent: 404).
    pub(crate) fn start(
        namespace: &Namespace,
        user_data: Option<String>,
        local_hostname: Option<String>,
    ) -> Result<ImdsServer> {
        let handle = namespace.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (s, log) = (stop.clone(), requests.clone());
        let thread = std::thread::Builder::new()
            .name("shoal-imds".into())
            .spawn(move || {
                let listener = match crate::http::bind_in_namespace(
                    &handle,
                    SocketAddr::from((IMDS_ADDR, 80)),
                ) {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while !s.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(line) =
                                answer(stream, user_data.as_deref(), local_hostname.as_deref())
                                && let Ok(mut log) = log.lock()
                            {
                                log.push(line);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map_err(Error::io("spawn the IMDS thread"))?;
        ready_rx.recv().map_err(|_| Error::Io {
            what: "start the IMDS server".into(),
            source: std::io::Error::other("its thread ended"),
        })??;
        Ok(ImdsServer {
            stop,
            requests,
            thread: Some(thread),
        })
    }

    /// `METHOD PATH STATUS` of every request answered so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for ImdsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(stream: TcpStream, user_data: Option<&str>, hostname: Option<&str>) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let first = head.first()?.clone();
    let mut words = first.split_whitespace();
    let (method, path) = (words.next()?, words.next()?);
    let header = |name: &str| {
        head.iter().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let authorised = header("X-aws-ec2-metadata-token").as_deref() == Some(TOKEN);
    let (status, body) = match (method, path) {
        ("PUT", "/latest/api/token")
            if header("X-aws-ec2-metadata-token-ttl-seconds").is_some() =>
        {
            (200, Some(TOKEN))
        }
        ("PUT", _) => (400, None),
        ("GET", _) if !authorised => (401, None),
        ("GET", "/latest/user-data") => user_data.map_or((404, None), |b| (200, Some(b))),
        ("GET", "/latest/meta-data/local-hostname") => {
            hostname.map_or((404, None), |b| (200, Some(b)))
        }
        _ => (404, None),
    };
    let body = body.unwrap_or("");
    let mut stream = stream;
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    Some(format!("{method} {path} {status}"))
}
