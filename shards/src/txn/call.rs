//! Transaction work as messages to the shard that owns it — a transactional id's coordinator,
//! a group's coordinator, or a partition's owner — and their answers.

use std::collections::BTreeSet;
use std::rc::Rc;

use futures::future::join_all;
use sluice_net::ErrorCode;
use sluice_net::messages::describe_transactions_response::TransactionState;
use sluice_net::messages::list_transactions_response::TransactionState as ListedTransaction;

use super::log::{StagedOffset, TxnLogEntry};
use super::marker::Marker;
use crate::producer_state::ProducerView;
use crate::shard::{Shard, ShardRequest};

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

/// Sends `call` to shard `owner` and waits for its answer (None: the shard is gone).
pub async fn ask(shard: &Rc<Shard>, owner: usize, call: TxnCall) -> Option<TxnReply> {
    let answer = crate::api::ask(shard, owner, |reply| ShardRequest::Txn { call, reply }).await;
    answer.await.ok()
}

/// Serves one call on the shard it was sent to.
pub async fn serve(shard: &Rc<Shard>, call: TxnCall) -> TxnReply {
    let txns = &shard.txns;
    match call {
        TxnCall::InitProducerId {
            transactional_id,
            timeout_ms,
            expected,
        } => TxnReply::ProducerId(
            txns.init_producer_id(shard, &transactional_id, timeout_ms, expected)
                .await,
        ),
        TxnCall::Add {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
            group,
        } => TxnReply::Code(
            txns.add(
                &transactional_id,
                producer_id,
                producer_epoch,
                &partitions,
                group.as_deref(),
            )
            .await,
        ),
        TxnCall::Verify {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        } => TxnReply::Codes(txns.verify(
            &transactional_id,
            producer_id,
            producer_epoch,
            &partitions,
        )),
        TxnCall::StageOffsets {
            transactional_id,
            producer_id,
            producer_epoch,
            group,
            offsets,
        } => TxnReply::Code(
            txns.stage_offsets(
                &transactional_id,
                producer_id,
                producer_epoch,
                &group,
                offsets,
            )
            .await,
        ),
        TxnCall::End {
            transactional_id,
            producer_id,
            producer_epoch,
            commit,
        } => TxnReply::Code(
            txns.end(
                shard,
                &transactional_id,
                producer_id,
                producer_epoch,
                commit,
            )
            .await,
        ),
        TxnCall::Describe(transactional_id) => {
            TxnReply::Described(txns.describe(&transactional_id))
        }
        TxnCall::List {
            states,
            producer_ids,
            min_duration_ms,
        } => TxnReply::Listed(txns.list(&states, &producer_ids, min_duration_ms)),
        TxnCall::Restore(entries) => {
            // The groups learn of the restored staged offsets before start-up completes.
            let marks =
                txns.restore(entries)
                    .into_iter()
                    .map(|(group, producer_id, partitions)| {
                        let owner = crate::group::coordinator_shard(&group, shard.count);
                        ask(
                            shard,
                            owner,
                            TxnCall::MarkUnstable {
                                group,
                                producer_id,
                                partitions,
                            },
                        )
                    });
            join_all(marks).await;
            TxnReply::Done
        }
        TxnCall::CheckGroupMember {
            group,
            member_id,
            group_instance_id,
            generation_id,
        } => TxnReply::Code(shard.groups.check_txn_member(
            &group,
            &member_id,
            group_instance_id.as_deref(),
            generation_id,
        )),
        TxnCall::MarkUnstable {
            group,
            producer_id,
            partitions,
        } => {
            txns.unstable.mark(&group, producer_id, partitions);
            TxnReply::Done
        }
        TxnCall::Unstable(group) => TxnReply::Partitions(txns.unstable.partitions(&group)),
        TxnCall::CompleteGroup {
            group,
            producer_id,
            offsets,
        } => {
            // Committed offsets first: until they are in place the partitions stay unstable.
            if !offsets.is_empty()
                && let Err(code) = shard.groups.commit_txn_offsets(&group, offsets).await
            {
                return TxnReply::Code(code);
            }
            txns.unstable.clear(&group, producer_id);
            TxnReply::Code(ErrorCode::None)
        }
        TxnCall::WriteMarkers { stream_ids, marker } => {
            TxnReply::Markers(write_markers(shard, stream_ids, marker).await)
        }
        TxnCall::DescribeProducers { stream_id } => TxnReply::Producers(
            shard
                .partition(stream_id)
                .map(|p| p.producers())
                .ok_or(ErrorCode::NotLeaderOrFollower),
        ),
    }
}

/// Orders the marker on each partition (one after the other, so they share WAL writes), then
/// waits until all are durable.
async fn write_markers(
    shard: &Rc<Shard>,
    stream_ids: Vec<u64>,
    marker: Marker,
) -> Vec<Result<(), ErrorCode>> {
    let mut ordered = Vec::with_capacity(stream_ids.len());
    for stream_id in stream_ids {
        ordered.push(match shard.partition(stream_id) {
            None => Err(ErrorCode::NotLeaderOrFollower),
            Some(partition) => {
                partition
                    .write_marker(&shard.wal, &shard.txn_index, marker)
                    .await
            }
        });
    }
    join_all(ordered.into_iter().map(|pending| async move {
        match pending {
            Ok(pending) => pending.durable().await.map(|_| ()),
            Err(code) => Err(code),
        }
    }))
    .await
}
