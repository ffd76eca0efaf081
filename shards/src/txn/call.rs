//! Transaction work as messages to the shard that owns it — a transactional id's coordinator,
//! a group's coordinator, or a partition's owner — and their answers (served by `serve.rs`).

use std::collections::BTreeSet;

use sluice_net::ErrorCode;
use sluice_net::messages::describe_transactions_response::TransactionState;
use sluice_net::messages::list_transactions_response::TransactionState as ListedTransaction;

use super::log::{StagedOffset, TxnLogEntry};
use super::marker::Marker;
use crate::storage::producer_state::ProducerView;

/// A transaction request for one shard.
pub enum TxnCall {
    /// InitProducerId with a transactional id (coordinator shard).
    InitProducerId {
        /// The transactional id.
        transactional_id: String,
        /// transaction.timeout.ms of the producer.
        timeout_ms: i32,
        /// The producer's current id and epoch when it re-initializes (KIP-360).
        expected: Option<(i64, i16)>,
    },
    /// AddPartitionsToTxn or AddOffsetsToTxn (coordinator shard).
    Add {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Partitions joining the transaction.
        partitions: Vec<(String, i32)>,
        /// A group whose offsets join the transaction.
        group: Option<String>,
    },
    /// AddPartitionsToTxn v4+ with verify_only (coordinator shard).
    Verify {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Partitions to check.
        partitions: Vec<(String, i32)>,
    },
    /// TxnOffsetCommit, once the group accepted the member (coordinator shard).
    StageOffsets {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// The consumer group.
        group: String,
        /// The offsets.
        offsets: Vec<StagedOffset>,
    },
    /// EndTxn (coordinator shard).
    End {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Commit (true) or abort.
        commit: bool,
    },
    /// DescribeTransactions of one id (coordinator shard).
    Describe(String),
    /// ListTransactions of one shard.
    List {
        /// State names to keep (empty: all).
        states: Vec<String>,
        /// Producer ids to keep (empty: all).
        producer_ids: Vec<i64>,
        /// Keep transactions open at least this long (-1: all).
        min_duration_ms: i64,
    },
    /// Transaction-log entries replayed by another shard at start-up (coordinator shard).
    Restore(Vec<TxnLogEntry>),
    /// TxnOffsetCommit's member and generation check (group coordinator shard).
    CheckGroupMember {
        /// The consumer group.
        group: String,
        /// Member id ("" for none).
        member_id: String,
        /// Static membership id.
        group_instance_id: Option<String>,
        /// Generation (-1 for none).
        generation_id: i32,
    },
    /// A transaction staged offsets of these partitions (group coordinator shard).
    MarkUnstable {
        /// The consumer group.
        group: String,
        /// Producer id of the transaction.
        producer_id: i64,
        /// The partitions.
        partitions: Vec<(String, i32)>,
    },
    /// The partitions of a group with staged offsets (group coordinator shard).
    Unstable(String),
    /// A transaction's outcome for a group: its offsets if it committed, none if it aborted
    /// (group coordinator shard).
    CompleteGroup {
        /// The consumer group.
        group: String,
        /// Producer id of the transaction.
        producer_id: i64,
        /// The offsets to commit.
        offsets: Vec<StagedOffset>,
    },
    /// Transaction markers for partitions of this shard (owner shard).
    WriteMarkers {
        /// Stream ids of the partitions.
        stream_ids: Vec<u64>,
        /// The marker.
        marker: Marker,
    },
    /// DescribeProducers of one partition (owner shard).
    DescribeProducers {
        /// Stream id of the partition.
        stream_id: u64,
    },
}

impl TxnCall {
    /// True for the calls a client's request makes of the transaction or group coordinator:
    /// a broker of a cluster that does not coordinate refuses them (`serve::ask`).
    pub fn needs_coordinator(&self) -> bool {
        match self {
            TxnCall::InitProducerId { .. }
            | TxnCall::Add { .. }
            | TxnCall::Verify { .. }
            | TxnCall::StageOffsets { .. }
            | TxnCall::End { .. }
            | TxnCall::Describe(_)
            | TxnCall::CheckGroupMember { .. }
            | TxnCall::Unstable(_) => true,
            TxnCall::List { .. }
            | TxnCall::Restore(_)
            | TxnCall::MarkUnstable { .. }
            | TxnCall::CompleteGroup { .. }
            | TxnCall::WriteMarkers { .. }
            | TxnCall::DescribeProducers { .. } => false,
        }
    }
}

/// The answer to a [`TxnCall`].
pub enum TxnReply {
    /// For InitProducerId: (producer id, epoch).
    ProducerId(Result<(i64, i16), ErrorCode>),
    /// For Add, StageOffsets, End, CheckGroupMember, CompleteGroup.
    Code(ErrorCode),
    /// For Verify: one code per partition.
    Codes(Vec<ErrorCode>),
    /// For Describe.
    Described(TransactionState),
    /// For List.
    Listed(Vec<ListedTransaction>),
    /// For WriteMarkers: one result per stream, once durable.
    Markers(Vec<Result<(), ErrorCode>>),
    /// For DescribeProducers.
    Producers(Result<Vec<ProducerView>, ErrorCode>),
    /// For Unstable.
    Partitions(BTreeSet<(String, i32)>),
    /// For Restore and MarkUnstable.
    Done,
}
