//! Transactions and exactly-once (KIP-98, transaction version 1): the transaction coordinator
//! of each shard, and the partition-side pieces (markers, the aborted-transaction index).
//!
//! - A transactional id is coordinated by the shard its id hashes to (the same hash as
//!   groups), which keeps its state machine (`state.rs`) and persists every change through
//!   its WAL under stream id `u64::MAX - 1` (`log.rs`) before answering.
//! - EndTxn (or a fence, or a timeout) decides the transaction; `completion.rs` then writes a
//!   commit or abort marker (`marker.rs`) to each of its partitions through their owner
//!   shards, commits its staged offsets on their groups' coordinators, and completes it.
//! - TxnOffsetCommit stages offsets in the transaction; the group's coordinator marks their
//!   partitions unstable (`unstable.rs`) until the outcome reaches it, for OffsetFetch's
//!   require_stable.
//! - Each partition tracks its producers' open transactions (`producer_state.rs`): the last
//!   stable offset is the first offset of the oldest, and abort markers feed its
//!   `aborted_index.rs`, which read_committed fetches return.
//! - At start-up every shard replays its WAL; the records are routed to their coordinators
//!   ([`restore`]) and transactions found decided resume writing their markers ([`start`]).

pub mod aborted_index;
pub mod call;
pub mod completion;
pub mod coordinator;
pub mod log;
pub mod marker;
pub mod partition_index;
pub mod state;
pub mod unstable;

use std::rc::Rc;
use std::time::Duration;

pub use coordinator::TxnCoordinator;

use crate::shard::Shard;

/// How often coordinators look for timed-out transactions and expired ids.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The shard coordinating `transactional_id` (the groups' hash, so every shard agrees).
pub fn coordinator_shard(transactional_id: &str, shards: usize) -> usize {
    crate::group::coordinator_shard(transactional_id, shards)
}

/// Hands the transaction-log entries this shard replayed to the shards coordinating their ids
/// (the shard count may have changed since they were written) and waits until each has them.
pub async fn restore(shard: &Rc<Shard>) {
    let mut by_shard: Vec<Vec<log::TxnLogEntry>> = (0..shard.count).map(|_| Vec::new()).collect();
    for entry in shard.txns.take_replayed() {
        by_shard[coordinator_shard(entry.transactional_id(), shard.count)].push(entry);
    }
    for (owner, entries) in by_shard.into_iter().enumerate() {
        if !entries.is_empty() {
            let _ = call::ask(shard, owner, call::TxnCall::Restore(entries)).await;
        }
    }
}

/// Once every shard has restored its state: resumes the transactions found decided, and runs
/// the coordinator's timers.
pub fn start(shard: &Rc<Shard>) {
    for transactional_id in shard.txns.prepared() {
        tracing::info!(%transactional_id, "resuming the markers of a decided transaction");
        completion::spawn(shard, &transactional_id);
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(SWEEP_INTERVAL).await;
            shard.txns.sweep(&shard).await;
        }
    })
    .detach();
}
