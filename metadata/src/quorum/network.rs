//! The controllers' RPCs: openraft's three (append entries, vote, install snapshot), and the
//! two a controller that is not the leader sends the leader (submit a command, ask for a
//! read barrier). Each travels as `[len u32 big endian][JSON]` over a TCP connection that a
//! client keeps open and re-opens after any error.
//!
//! Written here because openraft leaves the network to the application; JSON because
//! openraft's messages are serde types and the metadata traffic is small (one record per
//! admin change or upload).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::QuorumTypes;
use super::node::{NodeInner, QuorumDescription};

/// Largest RPC frame: a snapshot chunk or a batch of entries, well above both.
const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Connections a controller serves at once (peers and forwarding brokers); more wait.
const CONNECTIONS_MAX: usize = 256;
/// How long a forwarded command or read barrier may take at the leader.
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<QuorumTypes>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<QuorumTypes>),
    /// A `MetadataCommand`, rkyv-encoded, for the leader to apply.
    Submit(Vec<u8>),
    /// The leader's applied index once it has made sure it still leads.
    ReadIndex,
    /// An observer (a broker that is not a controller) asks to be added as a learner.
    Join {
        node_id: u64,
        addr: String,
    },
    /// The quorum as the leader sees it.
    Describe,
    /// An observer asks to be removed (a broker the quorum refused).
    Leave {
        node_id: u64,
    },
    /// A broker is alive (Kafka's BrokerHeartbeat); the leader fences brokers that stop.
    Heartbeat {
        broker_id: i32,
        /// Its partitions' bytes in and out (`traffic.rs`), for the balancer.
        #[serde(default)]
        traffic: Vec<super::PartitionTraffic>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Submit(Result<SubmitReply, SubmitRefusal>),
    ReadIndex(Result<u64, SubmitRefusal>),
    Join(Result<(), SubmitRefusal>),
    Describe(Result<QuorumDescription, SubmitRefusal>),
    Leave(Result<(), SubmitRefusal>),
    Heartbeat(Result<(), SubmitRefusal>),
}

/// A forwarded command's result at the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SubmitReply {
    /// The leader's image epoch once the command applied.
    pub epoch: u64,
    /// The `CommandOutcome`, rkyv-encoded.
    pub outcome: Vec<u8>,
}

/// Why the leader did not apply a forwarded command.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SubmitRefusal {
    /// The receiver does not lead (any more); try the leader it names, if any.
    NotLeader(Option<(u64, BasicNode)>),
    /// The command was refused or failed: its Kafka error code and message.
    Failed(i16, String),
}

/// Sends one request on `stream` and reads the response.
async fn exchange(stream: &mut TcpStream, request: &Request) -> io::Result<Response> {
    let json = serde_json::to_vec(request)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|len| *len as usize <= FRAME_BYTES_MAX)
        .ok_or_else(|| io::Error::other("quorum request over FRAME_BYTES_MAX"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&json).await?;
    let json = read_frame(stream).await?;
    serde_json::from_slice(&json).map_err(io::Error::other)
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > FRAME_BYTES_MAX {
        return Err(io::Error::other(format!(
            "quorum frame of {len} bytes is over FRAME_BYTES_MAX"
        )));
    }
    let mut json = vec![0; len];
    stream.read_exact(&mut json).await?;
    Ok(json)
}

/// A connection to one controller, opened on first use and after any error.
pub(crate) struct PeerClient {
    target: u64,
    addr: String,
    stream: Option<TcpStream>,
}

impl PeerClient {
    pub(crate) fn new(target: u64, addr: String) -> PeerClient {
        PeerClient {
            target,
            addr,
            stream: None,
        }
    }

    /// The controller this client calls.
    pub(crate) fn target(&self) -> u64 {
        self.target
    }

    /// One request and its response within `ttl`; the connection is dropped on any error
    /// (the next call opens a new one).
    pub(crate) async fn call(&mut self, request: &Request, ttl: Duration) -> io::Result<Response> {
        let result = tokio::time::timeout(ttl, async {
            if self.stream.is_none() {
                let stream = TcpStream::connect(&self.addr).await?;
                stream.set_nodelay(true)?;
                self.stream = Some(stream);
            }
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| io::Error::other("no stream"))?;
            exchange(stream, request).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "quorum RPC timed out",
            ))
        });
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Network(NetworkError::new(&io::Error::other(format!(
            "controller {} answered with the wrong response type",
            self.target
        ))))
    }
}

/// openraft's way to reach the other controllers.
pub(crate) struct PeerNetwork;

impl RaftNetworkFactory<QuorumTypes> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient::new(target, node.addr.clone())
    }
}

impl RaftNetwork<QuorumTypes> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QuorumTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(Ok(response))) => Ok(response),
            Ok(Response::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<QuorumTypes>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(Ok(response))) => Ok(response),
            Ok(Response::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(Ok(response))) => Ok(response),
            Ok(Response::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}

/// Serves the controller's RPCs until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, node: Arc<NodeInner>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::debug!(%error, "quorum accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            serve_connection(stream, &node).await;
        });
    }
}

async fn serve_connection(mut stream: TcpStream, node: &NodeInner) {
    // A peer that closes or sends garbage just loses its connection; Raft retries.
    while let Ok(json) = read_frame(&mut stream).await {
        let Ok(request) = serde_json::from_slice::<Request>(&json) else {
            return;
        };
        let response = answer(node, request).await;
        let Ok(json) = serde_json::to_vec(&response) else {
            return;
        };
        let Ok(len) = u32::try_from(json.len()) else {
            return;
        };
        if stream.write_all(&len.to_be_bytes()).await.is_err()
            || stream.write_all(&json).await.is_err()
        {
            return;
        }
    }
}

async fn answer(node: &NodeInner, request: Request) -> Response {
    let raft: &Raft<QuorumTypes> = &node.raft;
    match request {
        Request::AppendEntries(rpc) => Response::AppendEntries(raft.append_entries(rpc).await),
        Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => {
            Response::InstallSnapshot(raft.install_snapshot(rpc).await)
        }
        Request::Submit(command) => Response::Submit(node.submit_forwarded(&command).await),
        Request::ReadIndex => Response::ReadIndex(node.read_index_here().await),
        Request::Join { node_id, addr } => {
            Response::Join(node.add_learner_here(node_id, addr).await)
        }
        Request::Describe => Response::Describe(node.describe_here()),
        Request::Leave { node_id } => Response::Leave(node.remove_observer_here(node_id).await),
        Request::Heartbeat { broker_id, traffic } => {
            Response::Heartbeat(node.heartbeat_here(broker_id, &traffic).await)
        }
    }
}
