//! Messages between shards: one request type per subsystem, wrapped in [`ShardRequest`], and
//! the [`Mesh`] that carries them. A request for this shard goes through its own loopback
//! channel, so a partition's owner sees local and remote requests on one path (`router.rs`)
//! in the order each sender sent them.

use futures::channel::oneshot;
use glommio::channels::local_channel::LocalSender;
use glommio::channels::shared_channel::ConnectedSender;

use crate::connection_limits::ConnectionPermit;
use crate::group::call::{GroupCall, GroupReply};
use crate::storage::request::PartitionRequest;
use crate::txn::call::{TxnCall, TxnReply};

/// Work for the shard that owns it, sent by the shard that parsed the request (or by itself).
pub enum ShardRequest {
    /// Serve this client connection here: its partitions live on this shard (see `affinity`).
    AdoptConnection {
        /// The connected socket, a dup the sending shard made of its stream.
        socket: std::os::fd::OwnedFd,
        /// Its place under the connection limits, which moves with it.
        permit: ConnectionPermit,
        /// The index of the listener it came through (a PLAINTEXT one).
        listener: usize,
    },
    /// A partition this shard owns.
    Partition(PartitionRequest),
    /// A request for the group coordinator of this shard.
    Group {
        /// The call.
        call: GroupCall,
        /// Its answer.
        reply: oneshot::Sender<GroupReply>,
    },
    /// Another shard's client quota rates (`quota::share_usage`).
    QuotaUsage {
        /// The shard that measured them.
        from: usize,
        /// Its rates per entity.
        report: crate::quota::UsageReport,
    },
    /// Transaction work for this shard (coordinator, group coordinator or partition owner).
    Txn {
        /// The call.
        call: TxnCall,
        /// Its answer.
        reply: oneshot::Sender<TxnReply>,
    },
}

/// A shard's senders: one bounded channel to every other shard and one to itself.
pub struct Mesh {
    id: usize,
    peers: Vec<Option<ConnectedSender<ShardRequest>>>,
    loopback: LocalSender<ShardRequest>,
}

impl Mesh {
    /// The mesh of shard `id`: `peers[i]` reaches shard i (`None` at `id`), `loopback` this
    /// shard's own request loop.
    pub fn new(
        id: usize,
        peers: Vec<Option<ConnectedSender<ShardRequest>>>,
        loopback: LocalSender<ShardRequest>,
    ) -> Mesh {
        Mesh {
            id,
            peers,
            loopback,
        }
    }

    /// Queues `request` for shard `owner` (this one included); waits only while that queue is
    /// full. Answers come on the request's reply channel.
    pub async fn deliver(&self, owner: usize, request: ShardRequest) {
        let sent = if owner == self.id {
            self.loopback.send(request).await.is_ok()
        } else {
            match self.peers.get(owner) {
                Some(Some(peer)) => peer.send(request).await.is_ok(),
                // An owner outside the mesh: a placement bug; the reply is dropped, which the
                // asker sees as a closed channel.
                _ => false,
            }
        };
        if !sent {
            tracing::debug!(owner, "shard channel closed (stopping)");
        }
    }

    /// Sends the request `build` makes to shard `owner` and returns where its answer arrives.
    pub async fn ask<T>(
        &self,
        owner: usize,
        build: impl FnOnce(oneshot::Sender<T>) -> ShardRequest,
    ) -> oneshot::Receiver<T> {
        let (reply, answer) = oneshot::channel();
        self.deliver(owner, build(reply)).await;
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::call::GroupCall;
    use glommio::channels::local_channel;

    fn executor() -> glommio::LocalExecutor {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .make()
            .expect("executor")
    }

    #[test]
    fn requests_for_this_shard_go_through_its_loopback_in_order() {
        executor().run(async {
            let (sender, receiver) = local_channel::new_bounded(4);
            let mesh = Mesh::new(0, vec![None], sender);
            let mut answers = Vec::new();
            for _ in 0..3 {
                answers.push(
                    mesh.ask(0, |reply| ShardRequest::Group {
                        call: GroupCall::Restore(Vec::new()),
                        reply,
                    })
                    .await,
                );
            }
            for _ in 0..3 {
                let Some(ShardRequest::Group { reply, .. }) = receiver.recv().await else {
                    panic!("not a group request");
                };
                drop(reply);
            }
            for answer in answers {
                assert!(answer.await.is_err(), "the reply was dropped unanswered");
            }
        });
    }

    #[test]
    fn a_request_for_a_shard_outside_the_mesh_is_dropped_not_panicked() {
        executor().run(async {
            let (sender, _receiver) = local_channel::new_bounded(1);
            let mesh = Mesh::new(0, vec![None], sender);
            let answer = mesh
                .ask(7, |reply| ShardRequest::Group {
                    call: GroupCall::Restore(Vec::new()),
                    reply,
                })
                .await;
            assert!(answer.await.is_err());
        });
    }
}
