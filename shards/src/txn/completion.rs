//! Completing a decided transaction: its markers go to every partition it wrote to (through
//! the partitions' owner shards), its staged offsets to their groups' coordinators, then the
//! transaction becomes complete. Runs in the background after EndTxn was answered, after a
//! fence or a timeout, and again after a restart for transactions found prepared.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures::future::join_all;
use sluice_net::ErrorCode;

use sluice_net::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic, WriteTxnMarkersRequest,
};
use sluice_net::{Request, Response};

use super::call::{TxnCall, TxnReply};
use super::log::StagedOffset;
use super::marker::Marker;
use super::state::TxnState;
use crate::shard::Shard;

/// First wait before retrying markers or offsets that failed; doubled up to the maximum.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Completes `transactional_id`'s decided transaction in a task of its own.
///
/// Not under `--shard-tasks-max` (`task_permits`): it asks partition owners on other shards,
/// and a permit held across that could deadlock with their routers. One task per decided
/// transaction, and an id is refused a new transaction (CONCURRENT_TRANSACTIONS) until its
/// task ends, so there are at most as many as transactional ids.
pub fn spawn(shard: &Rc<Shard>, transactional_id: &str) {
    let shard = shard.clone();
    let transactional_id = transactional_id.to_string();
    glommio::spawn_local(async move { complete(&shard, &transactional_id).await }).detach();
}

/// Writes the markers and commits the offsets, retrying what fails (a full or failing WAL, a
/// partition moving) until everything is done, then completes the transaction.
async fn complete(shard: &Rc<Shard>, transactional_id: &str) {
    let Some(decided) = shard.txns.decided(transactional_id) else {
        return;
    };
    let metadata = &decided.metadata;
    let commit = metadata.state == TxnState::PrepareCommit;
    let marker = Marker {
        producer_id: metadata.producer_id,
        producer_epoch: metadata.producer_epoch,
        commit,
        // Higher than any coordinator's before this one: a partition refuses the markers of
        // a coordinator that was paused while its role moved (TRANSACTION_COORDINATOR_FENCED).
        coordinator_epoch: shard.image().coordinator_epoch(),
    };
    let mut partitions: Vec<(String, i32)> = metadata.partitions.iter().cloned().collect();
    // Every group with staged offsets learns the outcome: the offsets on commit, none on abort.
    let mut groups: Vec<(String, Vec<StagedOffset>)> = decided
        .staged
        .into_iter()
        .map(|(group, offsets)| {
            let offsets = if commit {
                offsets
                    .into_iter()
                    .map(|((topic, partition), committed)| (topic, partition, committed))
                    .collect()
            } else {
                Vec::new()
            };
            (group, offsets)
        })
        .collect();
    let mut backoff = RETRY_BACKOFF_MIN;
    loop {
        partitions = write_markers(shard, partitions, marker).await;
        groups = complete_groups(shard, metadata.producer_id, groups).await;
        if partitions.is_empty() && groups.is_empty() {
            match shard.txns.complete(transactional_id).await {
                Ok(()) => {
                    tracing::debug!(transactional_id, commit, "transaction complete");
                    return;
                }
                Err(code) => {
                    tracing::warn!(
                        transactional_id,
                        ?code,
                        "transaction completion not persisted; retrying"
                    )
                }
            }
        } else {
            tracing::warn!(
                transactional_id,
                partitions = partitions.len(),
                groups = groups.len(),
                "transaction markers not all written; retrying"
            );
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}

/// Writes `marker` to `partitions`: those this broker leads through their owner shards, the
/// others through their leaders (WriteTxnMarkers); returns those to retry (an offline
/// partition waits for its broker).
async fn write_markers(
    shard: &Rc<Shard>,
    partitions: Vec<(String, i32)>,
    marker: Marker,
) -> Vec<(String, i32)> {
    let image = shard.image();
    // ((topic, partition), owner shard, stream id) of the partitions led here.
    let mut here = Vec::new();
    let mut by_broker: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut retry = Vec::new();
    for (topic, partition) in partitions {
        let Some((owner, stream_id)) = shard.locate(&image, &topic, partition) else {
            // A deleted topic has no log to end the transaction in.
            tracing::debug!(%topic, partition, "no marker for a deleted partition");
            continue;
        };
        match image.leadership(stream_id).leader {
            Some(leader) if leader == image.node_id => {
                here.push(((topic, partition), owner, stream_id))
            }
            Some(leader) => by_broker
                .entry(leader)
                .or_default()
                .push((topic, partition)),
            None => retry.push((topic, partition)),
        }
    }
    let local = super::serve::write_markers_on_owners(shard, here, marker);
    let sends = by_broker.into_iter().map(|(broker, targets)| {
        let endpoint = image
            .live_brokers()
            .find(|(id, _)| *id == broker)
            .map(|(_, endpoint)| endpoint.to_string());
        async move {
            let Some(endpoint) = endpoint else {
                return targets;
            };
            let results = send_markers(shard, &endpoint, marker, &targets).await;
            targets
                .into_iter()
                .zip(results)
                .filter_map(|(partition, result)| still_to_write(partition, result))
                .collect::<Vec<_>>()
        }
    });
    let (local, remote) = futures::join!(local, join_all(sends));
    retry.extend(
        local
            .into_iter()
            .filter_map(|(partition, result)| still_to_write(partition, result)),
    );
    retry.extend(remote.into_iter().flatten());
    retry
}

/// None when a marker's write is over: written, or stale (the partition has seen a newer
/// epoch or coordinator, so a later marker ended the producer's transaction there; Kafka
/// drops it too); else the partition, to retry.
fn still_to_write(
    partition: (String, i32),
    result: Result<(), ErrorCode>,
) -> Option<(String, i32)> {
    match result {
        Ok(()) => None,
        Err(ErrorCode::InvalidProducerEpoch | ErrorCode::TransactionCoordinatorFenced) => {
            tracing::warn!(topic = %partition.0, partition = partition.1, "stale transaction marker dropped");
            None
        }
        Err(code) => {
            tracing::debug!(topic = %partition.0, partition = partition.1, ?code, "transaction marker failed");
            Some(partition)
        }
    }
}

/// WriteTxnMarkers v1 of `marker` on `partitions` to the broker at `endpoint`: each
/// partition's result, in order (all failed when the call did).
async fn send_markers(
    shard: &Shard,
    endpoint: &str,
    marker: Marker,
    partitions: &[(String, i32)],
) -> Vec<Result<(), ErrorCode>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    let request = WriteTxnMarkersRequest {
        markers: vec![WritableTxnMarker {
            producer_id: marker.producer_id,
            producer_epoch: marker.producer_epoch,
            transaction_result: marker.commit,
            topics: topics
                .into_iter()
                .map(|(name, partition_indexes)| WritableTxnMarkerTopic {
                    name: name.to_string(),
                    partition_indexes,
                })
                .collect(),
            coordinator_epoch: marker.coordinator_epoch,
        }],
    };
    let answer = shard
        .controller
        .call_broker(endpoint, 1, Request::WriteTxnMarkers(request))
        .await;
    let codes: BTreeMap<(String, i32), i16> = match answer {
        Ok(Response::WriteTxnMarkers(response)) => response
            .markers
            .into_iter()
            .flat_map(|m| m.topics)
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .map(move |p| ((name.clone(), p.partition_index), p.error_code))
            })
            .collect(),
        Ok(_) => BTreeMap::new(),
        Err(error) => {
            tracing::debug!(%error, endpoint, "transaction markers not sent");
            BTreeMap::new()
        }
    };
    partitions
        .iter()
        .map(|partition| match codes.get(partition) {
            Some(0) => Ok(()),
            Some(code) => Err(ErrorCode::from_i16(*code).unwrap_or(ErrorCode::UnknownServerError)),
            None => Err(ErrorCode::UnknownServerError),
        })
        .collect()
}

/// Tells each group's coordinator the outcome (committing the offsets, or not); returns the
/// groups to retry.
async fn complete_groups(
    shard: &Rc<Shard>,
    producer_id: i64,
    groups: Vec<(String, Vec<StagedOffset>)>,
) -> Vec<(String, Vec<StagedOffset>)> {
    let asks = groups.into_iter().map(|(group, offsets)| async move {
        let owner = shard.coordinator_shard(&group);
        let call = TxnCall::CompleteGroup {
            group: group.clone(),
            producer_id,
            offsets: offsets.clone(),
        };
        let code = match super::serve::ask(shard, owner, call).await {
            Some(TxnReply::Code(code)) => code,
            _ => ErrorCode::CoordinatorNotAvailable,
        };
        if code == ErrorCode::None {
            return None;
        }
        tracing::debug!(%group, ?code, "transactional offsets not committed");
        Some((group, offsets))
    });
    join_all(asks).await.into_iter().flatten().collect()
}
