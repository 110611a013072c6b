//! The control API on the wire: `shoal_api::supervisor` serves D-Bus (peer to peer, credential
//! checked) and hands each call over as a request; this module answers them with the
//! [`Daemon`] handle.

use std::path::Path;

use shoal_api::supervisor::{self as wire, Access, Request};
use tokio::sync::mpsc;

use super::api::{Daemon, ServiceInfo};

/// Requests in flight at once; more wait for their turn.
const QUEUE: usize = 64;
/// Lines per `Logs` call at most.
const MAX_LOG_PAGE: u32 = 1000;

/// Binds `socket` and serves the API until the daemon stops. A socket that cannot be bound is
/// an error for the caller to log: the node runs on without a control API.
pub fn start(daemon: Daemon, socket: &Path, admin_gid: Option<u32>) -> Result<(), wire::ApiError> {
    let listener = wire::bind(socket)?;
    let (tx, mut rx) = mpsc::channel(QUEUE);
    tokio::spawn(wire::serve(
        listener,
        Access { admin_gid },
        tx,
        daemon.changes(),
    ));
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            answer(&daemon, request).await;
        }
    });
    Ok(())
}

async fn answer(daemon: &Daemon, request: Request) {
    let text = |e: super::ApiError| e.to_string();
    // A peer that hung up before the answer is no error of ours: ignore failed sends.
    match request {
        Request::List(reply) => {
            let _ = reply.send(
                daemon
                    .list()
                    .await
                    .map(|l| l.iter().map(to_wire).collect())
                    .map_err(text),
            );
        }
        Request::Start(name, reply) => {
            let _ = reply.send(daemon.start(&name).await.map_err(text));
        }
        Request::Stop(name, reply) => {
            let _ = reply.send(daemon.stop(&name).await.map_err(text));
        }
        Request::Restart(name, reply) => {
            let _ = reply.send(daemon.restart(&name).await.map_err(text));
        }
        Request::Logs {
            name,
            since,
            limit,
            reply,
        } => {
            let page = daemon
                .logs(&name, since, limit.min(MAX_LOG_PAGE) as usize)
                .map(|s| wire::LogChunk {
                    lines: s
                        .lines
                        .iter()
                        .map(|l| wire::LogLine {
                            seq: l.seq,
                            time_s: l.time.as_secs_f64(),
                            stream: l.stream.as_str().to_string(),
                            text: l.text.clone(),
                        })
                        .collect(),
                    next_seq: s.next_seq,
                    dropped: s.dropped,
                });
            let _ = reply.send(page.map_err(text));
        }
    }
}

fn to_wire(s: &ServiceInfo) -> wire::ServiceInfo {
    let stats = s.stats.as_ref();
    wire::ServiceInfo {
        name: s.name.clone(),
        state: s.state.to_string(),
        reason: s.reason.clone().unwrap_or_default(),
        pid: s.pid.unwrap_or(0),
        restarts: s.restarts,
        uptime_s: s.uptime.map_or(0.0, |u| u.as_secs_f64()),
        memory_bytes: stats.and_then(|st| st.memory_current).unwrap_or(0),
        cpu_usec: stats.and_then(|st| st.cpu_usage_usec).unwrap_or(0),
        status: s.status_text.clone().unwrap_or_default(),
    }
}
