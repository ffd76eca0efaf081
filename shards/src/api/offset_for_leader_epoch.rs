//! OffsetForLeaderEpoch: where a leader epoch's records end, which a consumer asks after a
//! leader change to check that the log it was reading was not truncated (KIP-320).
//!
//! Kafka answers from its leader-epoch cache (`LeaderEpochFileCache.endOffsetFor`): the
//! current epoch ends at the log end offset, an older one where the next epoch starts, an
//! unknown newer one is (-1, -1). Sluice keeps no such cache, and needs none: it never
//! truncates a log. Storage is shared and holds one copy, a leader change moves a partition
//! to a broker that opens it from the same objects (after a takeover has uploaded its WAL),
//! and no acknowledged record is ever rewritten. So every offset below the high watermark was
//! written in an epoch at most the current one and is still there, and for any epoch up to
//! the current one the high watermark is an end offset no consumer position of that epoch can
//! pass: the consumer's check (its position at most the end offset) holds, as it holds on a
//! Kafka leader that truncated nothing. Kafka's end of an older epoch would be smaller, but
//! never below a position a consumer reached, which is all the answer is used for.
//!
//! The end offset is the high watermark, not the next offset to assign: records between the
//! two are not yet durable, no consumer has read them, and a failed write takes their offsets
//! back (`PartitionLog::truncate_to`, never below the high watermark). Kafka's leader answers its log end offset, which may include records its followers
//! have not copied yet; a consumer reads below the high watermark in both, so the check is
//! the same.
//!
//! Kafka ignores `replica_id` (v3+) here and answers every caller as the leader answers a
//! consumer; so does Sluice, which has no followers.

use std::rc::Rc;

use sluice_metadata::MetadataImage;
use sluice_net::ErrorCode;
use sluice_net::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition,
};
use sluice_net::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};

use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::request::PartitionRequest;

/// Kafka's "no epoch" (`RecordBatch.NO_PARTITION_LEADER_EPOCH`) and "no offset".
const UNDEFINED: i32 = -1;

/// ListOffsets' LATEST: the high watermark when read_uncommitted.
const LATEST_TIMESTAMP: i64 = -1;

/// Answers every partition of the request from its owner shard.
pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = shard.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            partitions.push(match end_offset(shard, &image, &topic.topic, p).await {
                Ok((leader_epoch, end_offset)) => EpochEndOffset {
                    error_code: 0,
                    partition: p.partition,
                    leader_epoch,
                    end_offset,
                },
                Err(code) => EpochEndOffset {
                    error_code: code.code(),
                    partition: p.partition,
                    leader_epoch: UNDEFINED,
                    end_offset: i64::from(UNDEFINED),
                },
            });
        }
        topics.push(OffsetForLeaderTopicResult {
            topic: topic.topic,
            partitions,
        });
    }
    OffsetForLeaderEpochResponse {
        topics,
        ..Default::default()
    }
}

/// (epoch, end offset) of `p.leader_epoch` in `topic`/`p.partition`, after the check of the
/// client's current leader epoch; (-1, -1) for no epoch or one newer than the partition's.
async fn end_offset(
    shard: &Rc<Shard>,
    image: &MetadataImage,
    topic: &str,
    p: &OffsetForLeaderPartition,
) -> Result<(i32, i64), ErrorCode> {
    let (high_watermark, _) = super::ask_partition(
        shard,
        image,
        topic,
        p.partition,
        p.current_leader_epoch,
        |stream_id, reply| {
            ShardRequest::Partition(PartitionRequest::ListOffset {
                stream_id,
                timestamp: LATEST_TIMESTAMP,
                read_committed: false,
                reply,
            })
        },
    )
    .await?;
    let current_epoch = super::leader_epoch(image, topic, p.partition).unwrap_or(UNDEFINED);
    Ok(epoch_end(p.leader_epoch, current_epoch, high_watermark))
}

/// The answer for `requested` on a partition at `current_epoch` whose log (never truncated)
/// ends at `high_watermark`: see the module's comment.
fn epoch_end(requested: i32, current_epoch: i32, high_watermark: i64) -> (i32, i64) {
    if requested < 0 || requested > current_epoch {
        (UNDEFINED, i64::from(UNDEFINED))
    } else {
        (requested, high_watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_up_to_the_current_one_end_at_the_high_watermark() {
        assert_eq!(epoch_end(0, 0, 10), (0, 10));
        assert_eq!(epoch_end(2, 3, 10), (2, 10));
        assert_eq!(epoch_end(3, 3, 0), (3, 0));
    }

    #[test]
    fn no_epoch_and_unknown_newer_epochs_are_undefined() {
        assert_eq!(epoch_end(-1, 3, 10), (-1, -1));
        assert_eq!(epoch_end(4, 3, 10), (-1, -1));
    }
}
