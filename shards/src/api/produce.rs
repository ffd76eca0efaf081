//! Produce: validate batches on the connection's shard, order them on the owner shards,
//! answer once every partition's batch is durable.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use sluice_net::messages::produce_request::ProduceRequest;
use sluice_net::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use sluice_net::record_batch::{BatchError, RecordBatchHeader};
use sluice_net::{ErrorCode, Response};

use crate::partition::AppendOutcome;
use crate::shard::{Shard, ShardRequest};

/// Where one partition's answer comes from.
enum Pending {
    Refused(ErrorCode),
    Ordered(oneshot::Receiver<Result<AppendOutcome, ErrorCode>>),
}

/// The parse and order stages; the returned future waits for durability and builds the
/// response (None for acks=0, which gets no response).
pub async fn order(
    shard: &Rc<Shard>,
    version: i16,
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
                    Some(part) => match validate(version, transactional, data.records) {
                        Err(code) => Pending::Refused(code),
                        Ok(batch) => {
                            let owner = shard.owner_of(part);
                            let stream_id = part.stream_id;
                            let answer = super::ask(shard, owner, |reply| ShardRequest::Produce {
                                stream_id,
                                batch,
                                reply,
                            })
                            .await;
                            Pending::Ordered(answer)
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
                let result = match pending {
                    Pending::Refused(code) => Err(code),
                    Pending::Ordered(answer) => {
                        match glommio::timer::timeout(timeout, async move { Ok(answer.await) })
                            .await
                        {
                            Ok(Ok(result)) => result,
                            Ok(Err(_)) => Err(ErrorCode::UnknownServerError),
                            Err(_) => Err(ErrorCode::RequestTimedOut),
                        }
                    }
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
                        ..Default::default()
                    },
                });
            }
            responses.push(TopicProduceResponse {
                name,
                partition_responses,
            });
        }
        if acks == 0 {
            return None;
        }
        Some(Response::Produce(ProduceResponse {
            responses,
            ..Default::default()
        }))
    }
    .boxed_local()
}

/// The parse stage's checks of one partition's records: exactly one v2 batch (as Kafka
/// requires from Produce v3 on), whole, with a valid CRC and a sane record count; no control
/// batch (only coordinators write markers); a transactional batch only from an idempotent
/// producer naming its transactional id.
fn validate(version: i16, transactional: bool, records: Option<Bytes>) -> Result<Bytes, ErrorCode> {
    let records = records.ok_or(ErrorCode::InvalidRecord)?;
    let header = RecordBatchHeader::validate(&records).map_err(|error| match error {
        BatchError::UnsupportedMagic(_) => ErrorCode::UnsupportedForMessageFormat,
        // More bytes than the first batch: a second batch, which Kafka refuses from v3 on.
        BatchError::LengthMismatch { declared, actual } if declared < actual && version >= 3 => {
            ErrorCode::InvalidRecord
        }
        BatchError::UnknownCompression(_) => ErrorCode::UnsupportedCompressionType,
        BatchError::InvalidRecordCount(_) => ErrorCode::InvalidRecord,
        _ => ErrorCode::CorruptMessage,
    })?;
    if header.records_count() <= 0 || header.last_offset_delta() != header.records_count() - 1 {
        return Err(ErrorCode::InvalidRecord);
    }
    if header.is_control() || (header.is_transactional() && header.producer_id() < 0) {
        return Err(ErrorCode::InvalidRecord);
    }
    if header.is_transactional() && !transactional {
        // Kafka authorizes the (missing) transactional id and refuses.
        return Err(ErrorCode::TransactionalIdAuthorizationFailed);
    }
    Ok(records)
}
