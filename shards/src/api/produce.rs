//! Produce: validate batches on the connection's shard (`storage/validated_batch.rs`), send
//! them to their owner shards in request order (`router.rs` orders them there), answer once
//! every partition's batch is durable.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use sluice_net::messages::produce_request::ProduceRequest;
use sluice_net::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use sluice_net::{ErrorCode, Response};

use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::partition::AppendOutcome;
use crate::storage::request::PartitionRequest;
use crate::storage::validated_batch::ValidatedBatch;

/// Where one partition's answer comes from.
enum Pending {
    Refused(ErrorCode),
    /// Sent to the owner; the batch's bytes are kept to name the records it refuses.
    Ordered(oneshot::Receiver<Result<AppendOutcome, ErrorCode>>, Bytes),
}

/// The records a compacted topic refused (INVALID_RECORD) as Produce v8 names them
/// (KIP-467): each keyless record's index, with Kafka's texts, so that a client fails just
/// those records, not the whole batch.
fn keyless_record_errors(
    topic: &str,
    partition: i32,
    batch: &Bytes,
) -> (Vec<BatchIndexAndErrorMessage>, Option<String>) {
    let Ok(records) =
        sluice_net::record_batch::decode_records(batch, crate::DECOMPRESSED_BATCH_BYTES_MAX)
    else {
        return (Vec::new(), None);
    };
    let message = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
    );
    let errors: Vec<BatchIndexAndErrorMessage> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| BatchIndexAndErrorMessage {
            batch_index: i as i32,
            batch_index_error_message: Some(message.clone()),
        })
        .collect();
    if errors.is_empty() {
        return (errors, None);
    }
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| {
            format!(
                "RecordError(batchIndex={}, message='{message}')",
                e.batch_index
            )
        })
        .collect();
    let summary = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        errors.len(),
        shown.join(", ")
    );
    (errors, Some(summary))
}

/// The parse and order stages; the returned future waits for durability and builds the
/// response (built for acks=0 too: `response::reply` sends none, or closes the connection).
pub async fn order(
    shard: &Rc<Shard>,
    request: ProduceRequest,
) -> LocalBoxFuture<'static, Option<Response>> {
    let acks = request.acks;
    let image = shard.image();
    let mut topics: Vec<(String, Vec<(i32, Pending)>)> =
        Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let transactional = request.transactional_id.is_some();
            let pending = if !matches!(acks, -1..=1) {
                Pending::Refused(ErrorCode::InvalidRequiredAcks)
            } else {
                match (u32::try_from(data.index).ok())
                    .and_then(|index| image.partition(&topic.name, index))
                {
                    None => Pending::Refused(ErrorCode::UnknownTopicOrPartition),
                    Some(part) => match ValidatedBatch::validate(transactional, data.records) {
                        Err(code) => Pending::Refused(code),
                        Ok(batch) => {
                            let sent = batch.bytes().clone();
                            let owner = shard.owner_of(part);
                            let stream_id = part.stream_id;
                            let answer = shard
                                .mesh
                                .ask(owner, |reply| {
                                    ShardRequest::Partition(PartitionRequest::Produce {
                                        stream_id,
                                        batch,
                                        reply,
                                    })
                                })
                                .await;
                            Pending::Ordered(answer, sent)
                        }
                    },
                }
            };
            partitions.push((data.index, pending));
        }
        topics.push((topic.name, partitions));
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for (index, pending) in partitions {
                let mut sent = None;
                let result = match pending {
                    Pending::Refused(code) => Err(code),
                    Pending::Ordered(answer, batch) => {
                        sent = Some(batch);
                        match glommio::timer::timeout(timeout, async move { Ok(answer.await) })
                            .await
                        {
                            Ok(Ok(result)) => result,
                            Ok(Err(_)) => Err(ErrorCode::UnknownServerError),
                            Err(_) => Err(ErrorCode::RequestTimedOut),
                        }
                    }
                };
                let (record_errors, error_message) = match (&result, &sent) {
                    (Err(ErrorCode::InvalidRecord), Some(batch)) => {
                        keyless_record_errors(&name, index, batch)
                    }
                    _ => (Vec::new(), None),
                };
                partition_responses.push(match result {
                    Ok(outcome) => PartitionProduceResponse {
                        index,
                        error_code: 0,
                        base_offset: outcome.base_offset,
                        log_append_time_ms: outcome.log_append_time_ms,
                        log_start_offset: outcome.log_start_offset,
                        ..Default::default()
                    },
                    Err(code) => PartitionProduceResponse {
                        index,
                        error_code: code.code(),
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: -1,
                        record_errors,
                        error_message,
                        ..Default::default()
                    },
                });
            }
            responses.push(TopicProduceResponse {
                name,
                partition_responses,
            });
        }
        Some(Response::Produce(ProduceResponse {
            responses,
            ..Default::default()
        }))
    }
    .boxed_local()
}
