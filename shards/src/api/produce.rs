//! Produce: validate batches on the connection's shard (`storage/validated_batch.rs`), send
//! them to their owner shards in request order (`router.rs` orders them there), answer once
//! every partition's batch is durable.

use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use sluice_net::messages::produce_request::ProduceRequest;
use sluice_net::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
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
    Ordered(oneshot::Receiver<Result<AppendOutcome, ErrorCode>>),
}

/// The parse and order stages; the returned future waits for durability and builds the
/// response (None for acks=0, which gets no response).
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
