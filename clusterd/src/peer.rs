//! The peer service: consensus messages and join requests between nodes, over TCP, sealed with
//! keys derived from the cluster secret.
//!
//! A connection starts with a handshake: the connecting side sends the magic and a 32-byte
//! nonce, the accepting side answers with its own; both derive one key per direction from the
//! cluster's peer key and the two nonces. Every frame after that is a 4-byte big-endian length
//! and a ChaCha20-Poly1305 ciphertext whose nonce is the frame's number in its direction; a
//! frame that does not open (another secret, tampering, replay, reordering) ends the
//! connection. Frames carry JSON: one request, then its response.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::formation::{Hint, NodeId};
use crate::keys::ClusterKeys;
use crate::raft::TypeConfig;
use crate::state::{Command, Outcome, Value};

/// The first bytes a connecting peer sends (and the protocol version).
pub const PEER_MAGIC: &[u8; 8] = b"SHOALP1\0";
/// The largest frame either side accepts: a snapshot chunk plus framing.
pub const MAX_FRAME: usize = 16 << 20;
/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a peer exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("not a Shoal peer (wrong protocol magic)")]
    Magic,
    #[error(
        "a frame did not authenticate: the peer has another cluster secret, or the data was tampered with"
    )]
    Authentication,
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    FrameTooLarge(usize),
    #[error("malformed message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Consensus messages name the node they are for: an address can pass to another node
    /// (a wiped node back with a new id), which must not answer for the old one.
    AppendEntries(NodeId, AppendEntriesRequest<TypeConfig>),
    Vote(NodeId, VoteRequest<NodeId>),
    InstallSnapshot(NodeId, InstallSnapshotRequest<TypeConfig>),
    /// Add this node to the cluster (forwarded to the leader by whoever receives it).
    Join(JoinRequest),
    /// Propose a command (forwarded to the leader, once).
    Propose {
        command: Command,
        forwarded: bool,
    },
    /// A linearizable read of one key (forwarded to the leader, once).
    Read {
        key: String,
        forwarded: bool,
    },
    /// The index a linearizable read must see applied (forwarded to the leader, once).
    ReadIndex {
        forwarded: bool,
    },
}

/// A node asking to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub hint: Hint,
    /// Set when a node forwards the request to its leader: a forwarded request is never
    /// forwarded again.
    #[serde(default)]
    pub forwarded: bool,
}

/// The answer to a [`Request`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The cluster the node joined (it is a learner, or already a member).
    Join(Result<JoinReply, String>),
    Propose(Result<Outcome, Failure>),
    Read(Result<Option<Value>, Failure>),
    ReadIndex(Result<u64, Failure>),
    /// A consensus message for another node id reached this one (which has this id).
    NotThisNode(NodeId),
}

/// Why a proposal or a read did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The request itself is wrong (a key too long...): retrying will not help.
    #[error("{0}")]
    Invalid(String),
    /// No leader, no quorum, or the leader is unreachable: retrying later may help.
    #[error("{0}")]
    Unavailable(String),
}

/// The cluster a join went into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    pub cluster_id: u64,
    pub leader: NodeId,
    pub members: BTreeMap<NodeId, BasicNode>,
}

/// One end of an established, sealed connection.
pub struct Channel {
    stream: TcpStream,
    seal: ChaCha20Poly1305,
    open: ChaCha20Poly1305,
    sent: u64,
    received: u64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.stream.peer_addr().ok())
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    *Nonce::from_slice(&n)
}

impl Channel {
    /// Connects to `addr` and runs the handshake.
    pub async fn connect(addr: SocketAddr, keys: &ClusterKeys) -> Result<Channel, PeerError> {
        let connect = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|source| PeerError::Connect { addr, source })?;
            stream.set_nodelay(true)?;
            let mut mine = [0u8; 32];
            crate::random::fill(&mut mine);
            let mut hello = [0u8; 40];
            hello[..8].copy_from_slice(PEER_MAGIC);
            hello[8..].copy_from_slice(&mine);
            stream.write_all(&hello).await?;
            let mut theirs = [0u8; 32];
            stream.read_exact(&mut theirs).await?;
            let (to_server, to_client) = keys.session(&mine, &theirs);
            Ok(Channel {
                stream,
                seal: ChaCha20Poly1305::new(&to_server),
                open: ChaCha20Poly1305::new(&to_client),
                sent: 0,
                received: 0,
            })
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| PeerError::Timeout(HANDSHAKE_TIMEOUT))?
    }

    /// Runs the accepting side of the handshake on a new connection.
    pub async fn accept(mut stream: TcpStream, keys: &ClusterKeys) -> Result<Channel, PeerError> {
        let accept = async {
            stream.set_nodelay(true)?;
            let mut hello = [0u8; 40];
            stream.read_exact(&mut hello).await?;
            if &hello[..8] != PEER_MAGIC {
                return Err(PeerError::Magic);
            }
            let mut theirs = [0u8; 32];
            theirs.copy_from_slice(&hello[8..]);
            let mut mine = [0u8; 32];
            crate::random::fill(&mut mine);
            stream.write_all(&mine).await?;
            let (to_server, to_client) = keys.session(&theirs, &mine);
            Ok(Channel {
                stream,
                seal: ChaCha20Poly1305::new(&to_client),
                open: ChaCha20Poly1305::new(&to_server),
                sent: 0,
                received: 0,
            })
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, accept)
            .await
            .map_err(|_| PeerError::Timeout(HANDSHAKE_TIMEOUT))?
    }

    /// Seals and sends one message.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), PeerError> {
        let plain = serde_json::to_vec(message)?;
        let sealed = self
            .seal
            .encrypt(&nonce(self.sent), plain.as_slice())
            .map_err(|_| PeerError::Authentication)?;
        if sealed.len() > MAX_FRAME {
            return Err(PeerError::FrameTooLarge(sealed.len()));
        }
        self.sent += 1;
        let mut frame = Vec::with_capacity(4 + sealed.len());
        frame.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        frame.extend_from_slice(&sealed);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Receives and opens one message.
    pub async fn receive<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, PeerError> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(PeerError::FrameTooLarge(len));
        }
        let mut sealed = vec![0u8; len];
        self.stream.read_exact(&mut sealed).await?;
        let plain = self
            .open
            .decrypt(&nonce(self.received), sealed.as_slice())
            .map_err(|_| PeerError::Authentication)?;
        self.received += 1;
        Ok(serde_json::from_slice(&plain)?)
    }

    /// Sends a request and waits for its response, within `timeout`.
    pub async fn call(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        tokio::time::timeout(timeout, async {
            self.send(request).await?;
            self.receive().await
        })
        .await
        .map_err(|_| PeerError::Timeout(timeout))?
    }
}

/// Idle connections to other nodes, reused by every call.
#[derive(Debug, Clone)]
pub struct Pool {
    keys: ClusterKeys,
    idle: Arc<std::sync::Mutex<BTreeMap<SocketAddr, Vec<Channel>>>>,
}

impl Pool {
    pub fn new(keys: ClusterKeys) -> Pool {
        Pool {
            keys,
            idle: Arc::default(),
        }
    }

    /// Calls `addr`: on an idle connection if there is one (and once more on a fresh one if
    /// that fails, as the peer may have closed it), else on a new one.
    pub async fn call(
        &self,
        addr: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        let idle = self.take(addr);
        if let Some(mut channel) = idle
            && let Ok(response) = channel.call(request, timeout).await
        {
            self.give_back(addr, channel);
            return Ok(response);
        }
        let mut channel = tokio::time::timeout(timeout, Channel::connect(addr, &self.keys))
            .await
            .map_err(|_| PeerError::Timeout(timeout))??;
        let response = channel.call(request, timeout).await?;
        self.give_back(addr, channel);
        Ok(response)
    }

    fn take(&self, addr: SocketAddr) -> Option<Channel> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(&addr).and_then(Vec::pop)
    }

    fn give_back(&self, addr: SocketAddr, channel: Channel) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        // A few per peer: replication, heartbeats and votes may overlap.
        if list.len() < 4 {
            list.push(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn keys(secret: &str) -> ClusterKeys {
        ClusterKeys::new(secret.as_bytes())
    }

    async fn pair(
        client: &ClusterKeys,
        server: &ClusterKeys,
    ) -> (Result<Channel, PeerError>, Result<Channel, PeerError>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = server.clone();
        let accept = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            Channel::accept(stream, &server).await
        });
        let client = Channel::connect(addr, client).await;
        (client, accept.await.unwrap())
    }

    #[tokio::test]
    async fn a_sealed_exchange_works_both_ways() {
        let k = keys("the same secret for both ends, 32+ bytes");
        let (client, server) = pair(&k, &k).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        for i in 0..3u32 {
            client.send(&format!("ping {i}")).await.unwrap();
            assert_eq!(
                server.receive::<String>().await.unwrap(),
                format!("ping {i}")
            );
            server.send(&i).await.unwrap();
            assert_eq!(client.receive::<u32>().await.unwrap(), i);
        }
    }

    #[tokio::test]
    async fn another_secret_fails_on_the_first_frame() {
        let (client, server) = pair(
            &keys("secret one, long enough to be real"),
            &keys("secret two, long enough to be real"),
        )
        .await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        client.send(&"join me").await.unwrap();
        assert!(matches!(
            server.receive::<String>().await,
            Err(PeerError::Authentication)
        ));
    }

    #[tokio::test]
    async fn a_stranger_is_refused_at_the_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            Channel::accept(stream, &keys("whatever secret of enough length")).await
        });
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: shoal.example\r\nAccept: */*\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(accept.await.unwrap(), Err(PeerError::Magic)));
    }
}
