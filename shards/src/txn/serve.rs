//! Serving transaction calls on the shard they were sent to, and the coordinator's start-up
//! (restore, resume decided transactions, timers). These need other shards (through the
//! mesh) and other services of this shard, so they live above the coordinator.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::future::join_all;
use sluice_net::ErrorCode;

use super::call::{TxnCall, TxnReply};
use super::completion;
use super::log::TxnLogEntry;
use super::marker::Marker;
use crate::messaging::ShardRequest;
use crate::shard::Shard;

/// Sends `call` to shard `owner` and waits for its answer (None: the shard is gone).
pub async fn ask(shard: &Rc<Shard>, owner: usize, call: TxnCall) -> Option<TxnReply> {
    if call.needs_coordinator() && !shard.coordinates() {
        return None; // the caller answers COORDINATOR_NOT_AVAILABLE: the client asks again
    }
    let answer = shard
        .mesh
        .ask(owner, |reply| ShardRequest::Txn { call, reply })
        .await;
    answer.await.ok()
}

/// Writes `marker` on partitions this broker leads, each through its owner shard (one call
/// per shard, all at once). `targets` are (a key of the caller's, owner shard, stream id);
/// returns each key with its partition's result.
pub async fn write_markers_on_owners<K>(
    shard: &Rc<Shard>,
    targets: Vec<(K, usize, u64)>,
    marker: Marker,
) -> Vec<(K, Result<(), ErrorCode>)> {
    let mut by_owner: BTreeMap<usize, Vec<(K, u64)>> = BTreeMap::new();
    for (key, owner, stream_id) in targets {
        by_owner.entry(owner).or_default().push((key, stream_id));
    }
    let asks = by_owner.into_iter().map(|(owner, targets)| async move {
        let stream_ids = targets.iter().map(|(_, stream_id)| *stream_id).collect();
        let call = TxnCall::WriteMarkers { stream_ids, marker };
        let results = match ask(shard, owner, call).await {
            Some(TxnReply::Markers(results)) if results.len() == targets.len() => results,
            _ => vec![Err(ErrorCode::UnknownServerError); targets.len()],
        };
        targets
            .into_iter()
            .zip(results)
            .map(|((key, _), result)| (key, result))
            .collect::<Vec<_>>()
    });
    join_all(asks).await.into_iter().flatten().collect()
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
            txns.init_producer_id(
                &shard.producer_ids,
                shard.image().broker_config().transaction_max_timeout_ms,
                &transactional_id,
                timeout_ms,
                expected,
            )
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
            txns.end(&transactional_id, producer_id, producer_epoch, commit)
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
                        let owner = shard.coordinator_shard(&group);
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
                .storage
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
        ordered.push(match shard.storage.partition(stream_id) {
            None => Err(ErrorCode::NotLeaderOrFollower),
            Some(partition) => {
                partition
                    .write_marker(&shard.storage.wal, &shard.storage.txn_index, marker)
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

/// Hands the transaction-log entries this shard replayed to the shards coordinating their ids
/// (the shard count may have changed since they were written) and waits until each has them.
pub async fn restore(shard: &Rc<Shard>) {
    let mut by_shard: Vec<Vec<TxnLogEntry>> = (0..shard.count).map(|_| Vec::new()).collect();
    for entry in shard.txns.take_replayed() {
        by_shard[shard.coordinator_shard(entry.transactional_id())].push(entry);
    }
    for (owner, entries) in by_shard.into_iter().enumerate() {
        if !entries.is_empty() {
            let _ = ask(shard, owner, TxnCall::Restore(entries)).await;
        }
    }
}

/// Makes the coordinator write the markers of every transaction it decides. Called when the
/// shard is built, before its router serves any request: another shard may pass the start-up
/// barrier and send an EndTxn here before this shard reaches [`start`].
pub fn attach(shard: &Rc<Shard>) {
    // Weak: the coordinator lives inside the shard, which must be dropped at shutdown.
    let weak = Rc::downgrade(shard);
    shard.txns.set_on_decided(Box::new(move |transactional_id| {
        if let Some(shard) = weak.upgrade() {
            completion::spawn(&shard, transactional_id);
        }
    }));
}

/// Resumes writing the markers of the transactions found decided (at start-up, or when this
/// broker became the coordinator).
pub fn resume_decided(shard: &Rc<Shard>) {
    for transactional_id in shard.txns.prepared() {
        tracing::info!(%transactional_id, "resuming the markers of a decided transaction");
        completion::spawn(shard, &transactional_id);
    }
}

/// Once every shard has restored its state: resumes the transactions found decided, and
/// starts the coordinator's timers, whose task is returned.
pub fn start(shard: &Rc<Shard>) -> glommio::Task<()> {
    resume_decided(shard);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(super::SWEEP_INTERVAL).await;
            shard.txns.sweep().await;
        }
    })
}
