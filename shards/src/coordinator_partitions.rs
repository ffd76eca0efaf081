//! Coordinator partitions: consumer groups and transactional ids are placed by partition, as
//! Kafka places them by partition of `__consumer_offsets` and `__transaction_state`, not by
//! shard. An id's partition is a stable hash of it; each partition's group log and
//! transaction log are internal streams of their own (`internal_stream.rs`), written by the
//! shard that serves the partition on the coordinating broker.
//!
//! The logs do not depend on which broker or shard wrote them, so when the coordinator moves
//! (its broker failed and a survivor took its WAL over, uploading the logs' tail), the new
//! coordinator reads them from objects (`coordinator_move.rs`), whatever its shard count.
//!
//! A single node has as many partitions as shards, partition `n` on shard `n`: that keeps the
//! logs it wrote before partitions existed (one per shard, `internal_stream::shard_key` of
//! slot 0) where it reads them. A cluster has [`CLUSTER_COORDINATOR_PARTITIONS`] whatever
//! its brokers' shard counts, spread over the coordinator's shards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sluice_metadata::MetadataImage;
use sluice_net::ErrorCode;
use sluice_wal::{WalError, WhenFull};

use crate::storage::shard_wal::ShardWal;
use crate::storage::turnstile::Turnstile;

/// Coordinator partitions of a cluster: Kafka's default `offsets.topic.num.partitions`.
pub const CLUSTER_COORDINATOR_PARTITIONS: usize = 50;

/// Which coordinator partition, and which shard of the coordinating broker, an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorPlacement {
    partitions: usize,
    shards: usize,
}

impl CoordinatorPlacement {
    /// The placement of a broker with `shards` shards: one partition per shard for a single
    /// node (no broker registered in `image`), [`CLUSTER_COORDINATOR_PARTITIONS`] in a cluster.
    pub fn of(image: &MetadataImage, shards: usize) -> CoordinatorPlacement {
        let shards = shards.max(1);
        let partitions = if image.brokers().is_empty() {
            shards
        } else {
            CLUSTER_COORDINATOR_PARTITIONS
        };
        CoordinatorPlacement { partitions, shards }
    }

    /// The coordinator partition of group or transactional id `id`.
    pub fn partition(&self, id: &str) -> usize {
        (crc32c::crc32c(id.as_bytes()) as usize) % self.partitions
    }

    /// The shard coordinating `id`.
    pub fn shard(&self, id: &str) -> usize {
        self.partition(id) % self.shards
    }

    /// The coordinator partitions shard `shard` serves.
    pub fn partitions_of(&self, shard: usize) -> impl Iterator<Item = usize> {
        (shard..self.partitions).step_by(self.shards)
    }
}

/// The logs of one kind (group or transaction) of the coordinator partitions one shard
/// serves: one internal stream per partition, each record at the next offset of its stream.
pub struct CoordinatorLogs {
    wal: Rc<ShardWal>,
    placement: CoordinatorPlacement,
    /// The stream id of a partition's log (`internal_stream::group_log_stream` or
    /// `txn_log_stream`).
    stream_of: fn(usize) -> u64,
    /// What the logs are, for error lines.
    name: &'static str,
    /// Per stream, the offset of its next record.
    next: RefCell<HashMap<u64, u64>>,
    /// One append at a time takes its offset and places its record in the WAL: the WAL does
    /// not keep waiting appends in order, and the uploader skips a stream's records from the
    /// first one out of order; a refused append then gives its offset back.
    order: Turnstile,
}

impl CoordinatorLogs {
    /// The logs of partitions placed by `placement`, written through `wal` as `stream_of`
    /// of their partition.
    pub fn new(
        wal: Rc<ShardWal>,
        placement: CoordinatorPlacement,
        stream_of: fn(usize) -> u64,
        name: &'static str,
    ) -> CoordinatorLogs {
        CoordinatorLogs {
            wal,
            placement,
            stream_of,
            name,
            next: RefCell::new(HashMap::new()),
            order: Turnstile::default(),
        }
    }

    /// The stream ids of the logs of every partition shard `shard` serves.
    pub fn streams_of(&self, shard: usize) -> Vec<u64> {
        self.placement
            .partitions_of(shard)
            .map(self.stream_of)
            .collect()
    }

    /// Appends `payload` (one encoded record) to the log of `id`'s partition and waits until
    /// it is durable; COORDINATOR_NOT_AVAILABLE (retriable) when the WAL fails, or is full
    /// while no upload can trim it (the store's puts fail, or the shard is stopping).
    pub async fn append(&self, id: &str, payload: &[u8]) -> Result<(), ErrorCode> {
        let stream_id = (self.stream_of)(self.placement.partition(id));
        let position = {
            let _turn = self.order.ticket().turn().await;
            let offset = self.next.borrow().get(&stream_id).copied().unwrap_or(0);
            let framed = crate::internal_stream::frame(offset, payload);
            let appended = self
                .wal
                .append(
                    stream_id,
                    offset as i64,
                    offset as i64,
                    framed,
                    WhenFull::WaitUnlessRefused,
                )
                .await;
            match appended {
                Ok(position) => {
                    self.resume(stream_id, offset + 1);
                    position
                }
                Err(error @ WalError::Full { .. }) => {
                    // Not an ERROR: the upload task's WARN or the stop says why.
                    tracing::debug!(%error, log = self.name, "coordinator log append refused");
                    return Err(ErrorCode::CoordinatorNotAvailable);
                }
                Err(error) => {
                    tracing::error!(%error, log = self.name, "coordinator log append failed");
                    return Err(ErrorCode::CoordinatorNotAvailable);
                }
            }
        };
        self.wal.wait_durable(position).await.map_err(|error| {
            tracing::error!(%error, log = self.name, "coordinator log write failed");
            ErrorCode::CoordinatorNotAvailable
        })
    }

    /// Continues the log of `stream_id` at `next` (its records found in objects or the WAL),
    /// so a new record never reuses an offset.
    pub fn resume(&self, stream_id: u64, next: u64) {
        let mut streams = self.next.borrow_mut();
        let at = streams.entry(stream_id).or_insert(0);
        *at = (*at).max(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_wal;

    fn image_with_brokers(registered: bool) -> MetadataImage {
        let image = MetadataImage::empty("c".into(), 1);
        if !registered {
            return image;
        }
        let record = sluice_metadata::MetadataRecord::RegisterBroker {
            node_id: 1,
            endpoint: "h:1".into(),
        };
        image.apply(1, &record).unwrap().0
    }

    #[test]
    fn a_single_node_keeps_one_partition_per_shard_as_before_partitions() {
        let placement = CoordinatorPlacement::of(&image_with_brokers(false), 3);
        for id in ["a", "group-1", "txn-7", ""] {
            let legacy = (crc32c::crc32c(id.as_bytes()) as usize) % 3;
            assert_eq!(placement.partition(id), legacy);
            assert_eq!(placement.shard(id), legacy);
        }
        assert_eq!(placement.partitions_of(1).collect::<Vec<_>>(), vec![1]);
    }

    /// Concurrent appends of one log while the WAL's write window is often full: the records
    /// must reach the WAL in offset order, or the uploader skips the log from the first one
    /// out of order.
    #[test]
    fn concurrent_appends_reach_the_wal_in_offset_order() {
        test_wal::for_each_seed(|seed, wal| async move {
            let logs = Rc::new(CoordinatorLogs::new(
                wal.clone(),
                CoordinatorPlacement::of(&image_with_brokers(false), 1),
                |partition| 100 + partition as u64,
                "test",
            ));
            let writers = (0..8u8).map(|writer| {
                let logs = logs.clone();
                glommio::spawn_local(async move {
                    for record in 0..16 {
                        let payload = vec![writer; 1000 + 97 * record];
                        logs.append("group", &payload).await.expect("appended");
                    }
                })
            });
            futures::future::join_all(writers).await;
            let expected: Vec<i64> = (0..128).collect();
            assert_eq!(
                test_wal::take_first_offsets(&wal).await,
                expected,
                "seed {seed}: WAL order is offset order"
            );
        });
    }

    #[test]
    fn a_cluster_spreads_its_partitions_over_the_shards() {
        let placement = CoordinatorPlacement::of(&image_with_brokers(true), 4);
        let served: Vec<Vec<usize>> = (0..4)
            .map(|s| placement.partitions_of(s).collect())
            .collect();
        assert_eq!(
            served.iter().map(Vec::len).sum::<usize>(),
            CLUSTER_COORDINATOR_PARTITIONS
        );
        for (shard, partitions) in served.iter().enumerate() {
            assert!(partitions.iter().all(|p| p % 4 == shard));
        }
        for id in ["a", "group-1", "txn-7"] {
            assert!(served[placement.shard(id)].contains(&placement.partition(id)));
        }
    }
}
