//! The owner side of the mesh: every request for this shard, from other shards and from its
//! own connections (the loopback channel), is taken here in the order each sender sent it and
//! handed to the service that serves it.
//!
//! A produce takes its place in its partition's order right here, synchronously, before the
//! next request is received ([`PartitionStore::arrive`]): that place, not the order in which
//! tasks happen to run, is what keeps one connection's batches in request order.

use std::rc::Rc;
use std::time::Instant;

use futures::{Stream, StreamExt};

use crate::connection_limits::ConnectionPermit;
use crate::group::call::GroupCall;
use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::request::PartitionRequest;

/// A connection handed over by another shard: its socket, its place under the limits and
/// the index of its listener.
pub type Adopted = (std::os::fd::OwnedFd, ConnectionPermit, usize);

/// Serves the requests of one channel into this shard (from another shard, or its loopback)
/// until it closes; connections handed over go to `adopt`.
pub async fn serve(
    shard: Rc<Shard>,
    requests: impl Stream<Item = ShardRequest>,
    adopt: Rc<dyn Fn(Adopted)>,
) {
    let mut requests = std::pin::pin!(requests);
    while let Some(request) = requests.next().await {
        if let Some(adopted) = handle(&shard, request).await {
            adopt(adopted);
        }
    }
}

/// Starts serving one request: a task of its own for each, so a produce waiting for WAL
/// space does not hold up reads behind it. Returns a connection handed over.
///
/// Each task but a transaction call's holds a permit of `--shard-tasks-max`, taken before the
/// request is looked at, so that at the cap this channel is not read (its sender waits) and a
/// produce's place in its partition's order is taken only once its task can start.
async fn handle(shard: &Rc<Shard>, request: ShardRequest) -> Option<Adopted> {
    match request {
        ShardRequest::AdoptConnection {
            socket,
            permit,
            listener,
        } => return Some((socket, permit, listener)),
        ShardRequest::Partition(PartitionRequest::Produce {
            stream_id,
            batch,
            reply,
        }) => {
            // The order stage starts here, so that a wait for a task permit shows in it.
            let arrived_at = Instant::now();
            let task = shard.task_permits.acquire().await;
            if let Some(produce) = shard.storage.arrive(stream_id, batch, reply, arrived_at) {
                let storage = shard.storage.clone();
                glommio::spawn_local(async move {
                    storage.order(produce).await;
                    drop(task);
                })
                .detach();
            }
        }
        ShardRequest::Partition(request) => {
            let task = shard.task_permits.acquire().await;
            let storage = shard.storage.clone();
            glommio::spawn_local(async move {
                storage.serve(request).await;
                drop(task);
            })
            .detach();
        }
        ShardRequest::Group { call, reply } => {
            if !shard.coordinator_loaded() && !matches!(call, GroupCall::Restore(_)) {
                // Its groups are not here yet (`coordinator_move.rs`): dropped, the caller
                // answers COORDINATOR_NOT_AVAILABLE and the client retries.
                return None;
            }
            let task = shard.task_permits.acquire().await;
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let image = shard.image();
                let _ = reply.send(shard.groups.call(call, &image).await);
                drop(task);
            })
            .detach();
        }
        ShardRequest::QuotaUsage { from, report } => shard.quotas.receive(from, report),
        ShardRequest::Txn { call, reply } => {
            // No permit: a transaction call asks other shards, whose routers may wait for
            // permits held by tasks waiting for this one (see `task_permits`). These tasks
            // are bounded by the requests that send them: a client's transactional requests
            // (--connections-max × --pipeline-depth) and a shard's completions.
            if call.needs_coordinator() && !shard.coordinator_loaded() {
                return None; // as for groups above
            }
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let _ = reply.send(crate::txn::serve::serve(&shard, call).await);
            })
            .detach();
        }
    }
    None
}
