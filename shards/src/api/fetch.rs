//! Fetch: read from the owners' log caches, long-polling on max.wait.ms / min.bytes;
//! read_committed fetches stop at the last stable offset and list the aborted transactions.
//! Incremental fetch sessions (KIP-227) are `fetch_session.rs`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use sluice_net::messages::fetch_request::FetchRequest;
use sluice_net::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use sluice_net::{ErrorCode, Uuid};

use super::fetch_session::{FetchKey, Sent};
use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::fetch_budget::FetchBudget;
use crate::storage::partition_log::ReadSlice;
use crate::storage::request::{PartitionRead, PartitionRequest};

/// The longest a fetch may wait, whatever max.wait.ms says.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// The largest fetch response. A busy pool (the log cache's batches spread over it) seldom
/// has a free block of its largest chunk size, and a response that finds none is encoded
/// into fresh heap memory, faulted in page by page: with 16 MiB responses that was a tenth
/// of the broker's CPU at 16 partitions. 4 MiB is a few milliseconds of any consumer's rate.
const FETCH_RESPONSE_BYTES_MAX: usize = 4 << 20;

/// Room kept in a response's chunk for everything but the records (headers, offsets, names).
const RESPONSE_OVERHEAD_BYTES_RESERVED: usize = 64 * 1024;

/// Fetch's isolation_level for read_committed (0 is read_uncommitted).
const READ_COMMITTED: i8 = 1;

/// A partition of the request, resolved against metadata.
struct Target {
    key: FetchKey,
    /// The topic's name (for responses before v13).
    topic: String,
    fetch_offset: i64,
    partition_max_bytes: usize,
    location: Result<(usize, u64), ErrorCode>,
}

/// Answers a Fetch request, in its session if it names one.
pub async fn handle(shard: &Rc<Shard>, version: i16, request: FetchRequest) -> FetchResponse {
    let image = shard.image();
    let slots = (image
        .broker_config()
        .max_incremental_fetch_session_cache_slots
        .max(0) as usize)
        .div_ceil(shard.count.max(1));
    let begun = shard
        .fetch_sessions
        .borrow_mut()
        .begin(version, &request, slots, Instant::now());
    let plan = match begun {
        Ok(plan) => plan,
        Err(code) => {
            return FetchResponse {
                error_code: code.code(),
                ..Default::default()
            };
        }
    };
    // Fetch v4 and up only (`implemented.rs`): every version has the isolation level,
    // max_bytes and aborted transactions.
    let read_committed = request.isolation_level == READ_COMMITTED;
    let missing = if version >= 13 {
        ErrorCode::UnknownTopicId
    } else {
        ErrorCode::UnknownTopicOrPartition
    };
    let targets: Vec<Target> = plan
        .wanted
        .into_iter()
        .map(|wanted| {
            let found = if version >= 13 {
                image.topic_by_id(wanted.key.topic_id.0)
            } else {
                image.topic(&wanted.key.topic)
            };
            let location = found
                .and_then(|t| {
                    t.partitions
                        .get(usize::try_from(wanted.key.partition).ok()?)
                })
                .ok_or(missing)
                .and_then(|part| {
                    super::check_leader_epoch(&image, part.stream_id, wanted.current_leader_epoch)?;
                    Ok((shard.owner_of(part), part.stream_id))
                });
            Target {
                topic: found.map_or_else(|| wanted.key.topic.clone(), |t| t.name.clone()),
                key: wanted.key,
                fetch_offset: wanted.fetch_offset,
                partition_max_bytes: wanted.partition_max_bytes.max(0) as usize,
                location,
            }
        })
        .collect();
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = request.max_bytes.max(0) as usize;
    // A response is encoded into one chunk of the pool, so its records stay within a chunk
    // the pool can find (fetch.max.bytes is an upper bound: clients fetch again for the rest).
    let max_bytes = max_bytes.min(
        shard
            .memory_pool
            .chunk_bytes_max()
            .min(FETCH_RESPONSE_BYTES_MAX)
            .saturating_sub(RESPONSE_OVERHEAD_BYTES_RESERVED),
    );
    let mut reads = read_all(shard, &targets, max_bytes, read_committed).await;
    loop {
        let total: usize = reads
            .iter()
            .map(|r| r.as_ref().map(|s| s.records.len()).unwrap_or(0))
            .sum();
        let any_error = reads.iter().any(|r| r.is_err());
        let now = Instant::now();
        if total >= min_bytes.max(1) || any_error || now >= deadline || targets.is_empty() {
            break;
        }
        wait_for_any(shard, &targets, &reads, deadline - now).await;
        reads = read_all(shard, &targets, max_bytes, read_committed).await;
    }
    // Each owner kept its own partitions within max_bytes; across owners, again.
    let mut budget = FetchBudget::new(max_bytes);
    let mut answers = Vec::with_capacity(targets.len());
    for (target, read) in targets.iter().zip(reads) {
        let data = match read {
            Ok(mut slice) => {
                budget.take(&mut slice, usize::MAX);
                PartitionData {
                    partition_index: target.key.partition,
                    error_code: 0,
                    high_watermark: slice.high_watermark,
                    last_stable_offset: slice.last_stable_offset,
                    log_start_offset: slice.log_start_offset,
                    aborted_transactions: Some(
                        slice
                            .aborted_transactions
                            .iter()
                            .map(|t| AbortedTransaction {
                                producer_id: t.producer_id,
                                first_offset: t.first_offset,
                            })
                            .collect(),
                    ),
                    records: Some(slice.records),
                    ..Default::default()
                }
            }
            Err(code) => PartitionData {
                partition_index: target.key.partition,
                error_code: code.code(),
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: Some(bytes::Bytes::new()),
                ..Default::default()
            },
        };
        answers.push(data);
    }
    let sent: Vec<bool> = if plan.session_id == 0 {
        vec![true; answers.len()]
    } else {
        let news: Vec<(FetchKey, Sent, bool)> = targets
            .iter()
            .zip(&answers)
            .map(|(target, data)| {
                let has_news =
                    data.error_code != 0 || data.records.as_ref().is_some_and(|r| !r.is_empty());
                let sent = Sent {
                    high_watermark: data.high_watermark,
                    last_stable_offset: data.last_stable_offset,
                    log_start_offset: data.log_start_offset,
                };
                (target.key.clone(), sent, has_news)
            })
            .collect();
        shard
            .fetch_sessions
            .borrow_mut()
            .finish(plan.session_id, plan.incremental, &news)
    };
    // One entry per run of partitions of the same topic, in the session's order.
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut last_key: Option<(&str, Uuid)> = None;
    for ((target, data), send) in targets.iter().zip(answers).zip(sent) {
        if !send {
            continue;
        }
        let topic_key = (target.key.topic.as_str(), target.key.topic_id);
        if last_key != Some(topic_key) {
            topics.push(FetchableTopicResponse {
                topic: target.topic.clone(),
                topic_id: target.key.topic_id,
                partitions: Vec::new(),
            });
            last_key = Some(topic_key);
        }
        if let Some(topic) = topics.last_mut() {
            topic.partitions.push(data);
        }
    }
    FetchResponse {
        error_code: 0,
        session_id: plan.session_id,
        responses: topics,
        ..Default::default()
    }
}

/// Reads every target: one request per owner shard, which reads its partitions in request
/// order within `max_bytes` (so a fetch of many partitions does not read each one's
/// max.partition.fetch.bytes only to drop most of it).
async fn read_all(
    shard: &Rc<Shard>,
    targets: &[Target],
    max_bytes: usize,
    read_committed: bool,
) -> Vec<Result<ReadSlice, ErrorCode>> {
    let mut by_owner: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut slices: Vec<Result<ReadSlice, ErrorCode>> = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        match target.location {
            Ok((owner, _)) => {
                match by_owner.iter_mut().find(|(o, _)| *o == owner) {
                    Some((_, indices)) => indices.push(index),
                    None => by_owner.push((owner, vec![index])),
                }
                slices.push(Err(ErrorCode::UnknownServerError));
            }
            Err(code) => slices.push(Err(code)),
        }
    }
    let asks = by_owner.iter().map(|(owner, indices)| async move {
        let reads = indices
            .iter()
            .filter_map(|&i| {
                let (_, stream_id) = targets[i].location.ok()?;
                Some(PartitionRead {
                    stream_id,
                    offset: targets[i].fetch_offset,
                    max_bytes: targets[i].partition_max_bytes,
                })
            })
            .collect();
        let answer = shard
            .mesh
            .ask(*owner, |reply| {
                ShardRequest::Partition(PartitionRequest::Read {
                    reads,
                    max_bytes,
                    read_committed,
                    reply,
                })
            })
            .await;
        answer.await.unwrap_or_default()
    });
    for ((_, indices), answers) in by_owner.iter().zip(join_all(asks).await) {
        for (&index, answer) in indices.iter().zip(answers) {
            slices[index] = answer;
        }
    }
    slices
}

/// Waits until any partition that returned nothing gets data, or for `wait`.
async fn wait_for_any(
    shard: &Rc<Shard>,
    targets: &[Target],
    reads: &[Result<ReadSlice, ErrorCode>],
    wait: Duration,
) {
    let mut waits = Vec::new();
    for (target, read) in targets.iter().zip(reads) {
        let (Ok((owner, stream_id)), Ok(slice)) = (target.location, read) else {
            continue;
        };
        // Anything past the current high watermark is new data.
        let offset = slice.high_watermark;
        let answer = shard
            .mesh
            .ask(owner, |reply| {
                ShardRequest::Partition(PartitionRequest::WaitForData {
                    stream_id,
                    offset,
                    wait,
                    reply,
                })
            })
            .await;
        waits.push(answer);
    }
    if waits.is_empty() {
        glommio::timer::sleep(wait).await;
        return;
    }
    let _ = futures::future::select_all(waits).await;
}
