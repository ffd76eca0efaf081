//! What another shard (or this one) asks of the partition store that owns a partition.

use std::time::Duration;

use futures::channel::oneshot;
use sluice_net::ErrorCode;

use super::partition::AppendOutcome;
use super::partition_log::ReadSlice;
use super::validated_batch::ValidatedBatch;

/// One partition of a [`PartitionRequest::Read`].
pub struct PartitionRead {
    /// The partition's stream.
    pub stream_id: u64,
    /// The first offset wanted.
    pub offset: i64,
    /// The partition's own byte limit (max.partition.fetch.bytes).
    pub max_bytes: usize,
}

/// A request for the owner of a partition.
pub enum PartitionRequest {
    /// Order and persist one batch; the reply comes once it is durable.
    Produce {
        /// The partition's stream.
        stream_id: u64,
        /// The batch, checked once by the shard that parsed the request.
        batch: ValidatedBatch,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<AppendOutcome, ErrorCode>>,
    },
    /// Read partitions in this order (read_committed: up to the last stable offset), as Kafka
    /// does for a fetch: each reads at most what `max_bytes` has left after those before it,
    /// and only the first one with data may go past it (by its first batch).
    Read {
        /// The partitions, in the fetch's order.
        reads: Vec<PartitionRead>,
        /// The response's byte limit (fetch.max.bytes) shared by all of them.
        max_bytes: usize,
        /// Read only committed data.
        read_committed: bool,
        /// One result per read, in order.
        reply: oneshot::Sender<Vec<Result<ReadSlice, ErrorCode>>>,
    },
    /// Resolve once data past `offset` exists, or after `wait`.
    WaitForData {
        /// The partition's stream.
        stream_id: u64,
        /// The offset the consumer has read up to.
        offset: i64,
        /// The longest wait (fetch.max.wait.ms).
        wait: Duration,
        /// Resolved on data or time-out.
        reply: oneshot::Sender<()>,
    },
    /// Resolve a ListOffsets query (a timestamp or one of Kafka's special values).
    ListOffset {
        /// The partition's stream.
        stream_id: u64,
        /// The timestamp or special value.
        timestamp: i64,
        /// read_committed's latest is the last stable offset.
        read_committed: bool,
        /// (offset, timestamp).
        reply: oneshot::Sender<Result<(i64, i64), ErrorCode>>,
    },
    /// Move the log start offset (DeleteRecords).
    DeleteRecords {
        /// The partition's stream.
        stream_id: u64,
        /// The new log start (-1: the high watermark).
        offset: i64,
        /// The log start offset after the move.
        reply: oneshot::Sender<Result<i64, ErrorCode>>,
    },
    /// Size of the partition's log in bytes (DescribeLogDirs).
    Size {
        /// The partition's stream.
        stream_id: u64,
        /// The size.
        reply: oneshot::Sender<Result<u64, ErrorCode>>,
    },
}
