//! Transactions and exactly-once (KIP-98, transaction version 1): the transaction coordinator
//! of each shard, and the partition-side pieces (markers, the aborted-transaction index).
//!
//! - A transactional id is coordinated by the shard serving its coordinator partition (the
//!   same hash as groups, `coordinator_partitions.rs`), which keeps its state machine
//!   (`state.rs`) and persists every change to that partition's transaction log (`log.rs`)
//!   before answering.
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
//!   (`serve::restore`) and transactions found decided resume writing their markers (`serve::start`).

pub mod aborted_index;
pub mod call;
pub mod completion;
pub mod coordinator;
pub mod log;
pub mod marker;
pub mod partition_index;
pub mod serve;
pub mod state;
pub mod unstable;

use std::time::Duration;

pub use coordinator::TxnCoordinator;

/// How often coordinators look for timed-out transactions and expired ids.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
