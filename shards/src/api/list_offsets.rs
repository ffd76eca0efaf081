//! ListOffsets: earliest, latest (the last stable offset for read_committed), max timestamp,
//! and by timestamp.

use std::rc::Rc;

use sluice_net::messages::list_offsets_request::ListOffsetsRequest;
use sluice_net::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::request::PartitionRequest;

/// Answers every partition of the request from its owner shard.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    // isolation_level 1 is read_committed.
    let read_committed = version >= 2 && request.isolation_level == 1;
    let image = shard.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let timestamp = p.timestamp;
            let result = super::ask_partition(
                shard,
                &image,
                &topic.name,
                p.partition_index,
                p.current_leader_epoch,
                |stream_id, reply| {
                    ShardRequest::Partition(PartitionRequest::ListOffset {
                        stream_id,
                        timestamp,
                        read_committed,
                        reply,
                    })
                },
            )
            .await;
            partitions.push(match result {
                Ok((offset, timestamp)) => ListOffsetsPartitionResponse {
                    partition_index: p.partition_index,
                    error_code: 0,
                    old_style_offsets: if version == 0 && offset >= 0 {
                        vec![offset]
                    } else {
                        Vec::new()
                    },
                    timestamp,
                    offset,
                    leader_epoch: super::leader_epoch(&image, &topic.name, p.partition_index)
                        .unwrap_or(0),
                },
                Err(code) => ListOffsetsPartitionResponse {
                    partition_index: p.partition_index,
                    error_code: code.code(),
                    timestamp: -1,
                    offset: -1,
                    leader_epoch: -1,
                    ..Default::default()
                },
            });
        }
        topics.push(ListOffsetsTopicResponse {
            name: topic.name,
            partitions,
        });
    }
    ListOffsetsResponse {
        topics,
        ..Default::default()
    }
}
