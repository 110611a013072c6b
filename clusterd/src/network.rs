//! openraft's network, over the sealed peer connections of [`crate::peer`].

use std::net::SocketAddr;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::formation::NodeId;
use crate::peer::{PeerError, Pool, Request, Response};
use crate::raft::TypeConfig;

/// Makes a client per target node; they share the connection pool.
#[derive(Debug, Clone)]
pub struct Network {
    pub pool: Pool,
}

/// Calls one node.
#[derive(Debug)]
pub struct Client {
    pool: Pool,
    target: NodeId,
    addr: Result<SocketAddr, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Client {
        Client {
            pool: self.pool.clone(),
            target,
            addr: node
                .addr
                .parse()
                .map_err(|e| format!("node {target} address {:?}: {e}", node.addr)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl Client {
    async fn call<E: std::error::Error>(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, RPCError<NodeId, BasicNode, E>> {
        let addr = match &self.addr {
            Ok(a) => *a,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&Failure(e.clone())))),
        };
        self.pool
            .call(addr, &request, timeout)
            .await
            .map_err(|e| match e {
                PeerError::Connect { .. } | PeerError::Timeout(_) => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })
    }

    fn unexpected<E: std::error::Error>(
        &self,
        response: Response,
    ) -> RPCError<NodeId, BasicNode, E> {
        if let Response::NotThisNode(id) = response {
            // The node this member was is gone; another one has its address.
            return RPCError::Unreachable(Unreachable::new(&Failure(format!(
                "node {:016x} is gone: node {id:016x} answers at its address",
                self.target
            ))));
        }
        RPCError::Network(NetworkError::new(&Failure(format!(
            "node {} answered with the wrong kind of response: {response:?}",
            self.target
        ))))
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(Request::AppendEntries(self.target, rpc), option.hard_ttl())
            .await?
        {
            Response::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(
                Request::InstallSnapshot(self.target, rpc),
                option.hard_ttl(),
            )
            .await?
        {
            Response::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(Request::Vote(self.target, rpc), option.hard_ttl())
            .await?
        {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(other)),
        }
    }
}
