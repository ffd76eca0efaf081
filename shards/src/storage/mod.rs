//! Partition storage of one shard: the partitions it owns (created on first use from the
//! metadata image), their order stage, reads from the log cache and objects, ListOffsets,
//! DeleteRecords, retention and log-cache eviction. It knows nothing of connections, other
//! shards or Kafka requests: [`PartitionStore::serve`] answers one [`PartitionRequest`].

pub mod fetch_budget;
pub mod partition;
pub mod partition_log;
pub mod producer_state;
pub mod request;
pub mod retention;
pub mod shard_wal;
#[cfg(test)]
pub mod test_wal;
pub mod turnstile;
pub mod txn_history;
pub mod validated_batch;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_metadata::{CompressionType, MetadataImage, PartitionImage, StreamUpload, TopicImage};
use sluice_net::ErrorCode;
use sluice_net::record_batch::Compression;
use sluice_objstore::StreamRoll;

use crate::chunk_pool::ChunkPool;
use crate::controller::ControllerHandle;
use crate::metrics::ShardMetrics;
use crate::metrics::produce_stages::ProduceStage;
use crate::tier::upload::UploadListener;
use crate::tier::{ColdReadError, ObjectTier};
use crate::txn::partition_index::TxnIndexLog;
use fetch_budget::FetchBudget;
use partition::{Partition, PartitionSettings};
use partition_log::{ReadError, ReadSlice};
use request::{PartitionRead, PartitionRequest};
use turnstile::Ticket;

/// The partitions of one shard and what they are stored in.
pub struct PartitionStore {
    /// This shard's index.
    pub id: usize,
    count: usize,
    /// Where metadata commands go (and the current image).
    pub controller: ControllerHandle,
    /// The shard's WAL and the records waiting for upload.
    pub wal: Rc<shard_wal::ShardWal>,
    /// Uploads, cold reads and the log-cache budget.
    pub tier: ObjectTier,
    /// Where this shard's partitions record their transactions' begin and end.
    pub txn_index: TxnIndexLog,
    /// The memory pool of request frames and produced batches (the log cache's chunks).
    pub memory_pool: ChunkPool,
    metrics: Arc<ShardMetrics>,
    partitions: RefCell<HashMap<u64, Rc<Partition>>>,
    /// The partitions whose transaction history this shard has: those it led at start-up
    /// (read then) and those moved here since, once `txn_history.rs` loaded it. Any other
    /// partition with data in objects is not served until then.
    txn_history_known: RefCell<HashSet<u64>>,
    /// The partitions whose history is being loaded.
    txn_history_loading: RefCell<HashSet<u64>>,
}

/// A produce batch with its place in the partition's order, taken on arrival.
pub struct OrderedProduce {
    partition: Rc<Partition>,
    ticket: Ticket,
    batch: validated_batch::ValidatedBatch,
    reply: futures::channel::oneshot::Sender<Result<partition::AppendOutcome, ErrorCode>>,
    arrived_at: Instant,
}

impl PartitionStore {
    /// The store of shard `id` of `count`, over its WAL and object tier.
    pub fn new(
        id: usize,
        count: usize,
        controller: ControllerHandle,
        wal: Rc<shard_wal::ShardWal>,
        tier: ObjectTier,
        memory_pool: ChunkPool,
        metrics: Arc<ShardMetrics>,
    ) -> PartitionStore {
        let image = controller.image();
        let key = crate::internal_stream::shard_key(image.broker_slot(), id);
        let led_here = led_partitions(&image, id, count).collect();
        PartitionStore {
            id,
            count,
            txn_index: TxnIndexLog::new(wal.clone(), crate::internal_stream::txn_index_stream(key)),
            controller,
            wal,
            tier,
            memory_pool,
            metrics,
            partitions: RefCell::new(HashMap::new()),
            txn_history_known: RefCell::new(led_here),
            txn_history_loading: RefCell::new(HashSet::new()),
        }
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    /// The shard owning a partition (placement wraps if the broker runs fewer shards).
    pub fn owner_of(&self, partition: &PartitionImage) -> usize {
        partition.shard as usize % self.count.max(1)
    }

    /// Takes a produce's place in its partition's order; the rest runs in
    /// [`PartitionStore::order`]. Called as the request arrives, in arrival order; `arrived_at`
    /// is when the router took it, where its order stage starts. None (after answering
    /// NOT_LEADER_OR_FOLLOWER) when this shard does not own the partition.
    pub fn arrive(
        &self,
        stream_id: u64,
        batch: validated_batch::ValidatedBatch,
        reply: futures::channel::oneshot::Sender<Result<partition::AppendOutcome, ErrorCode>>,
        arrived_at: Instant,
    ) -> Option<OrderedProduce> {
        let Some(partition) = self.partition(stream_id) else {
            let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
            return None;
        };
        Some(OrderedProduce {
            ticket: partition.ticket(),
            partition,
            batch,
            reply,
            arrived_at,
        })
    }

    /// The order stage of a produce that has arrived, then its wait for durability; the
    /// reply carries the outcome. The stages of a batch appended are recorded in
    /// `sluice_produce_stage_latency_seconds` (`order`, then `wal_write` and `sync` unless it
    /// was a duplicate).
    pub async fn order(&self, produce: OrderedProduce) {
        let OrderedProduce {
            partition,
            ticket,
            batch,
            reply,
            arrived_at,
        } = produce;
        let bytes = batch.len() as u64;
        let records = batch.facts().records_count.max(0) as u64;
        let ordered = partition
            .order(&self.wal, &self.txn_index, &self.memory_pool, ticket, batch)
            .await;
        match ordered {
            Ok(pending) => {
                self.metrics.produce_batches.add(1);
                self.metrics.produce_records.add(records);
                self.metrics.produce_bytes.add(bytes);
                partition.metrics.produce_batches.add(1);
                partition.metrics.produce_bytes.add(bytes);
                let stages = &self.metrics.produce_stages;
                let ordered_at = pending.ordered_at();
                stages.record(
                    ProduceStage::Order,
                    ordered_at.saturating_duration_since(arrived_at),
                );
                let durable = pending.durable().await;
                if let Ok(partition::Durable {
                    written_at: Some(written_at),
                    ..
                }) = &durable
                {
                    stages.record(
                        ProduceStage::WalWrite,
                        written_at.saturating_duration_since(ordered_at),
                    );
                    stages.record(ProduceStage::Sync, written_at.elapsed());
                }
                let _ = reply.send(durable.map(|d| d.outcome));
            }
            Err(code) => {
                let _ = reply.send(Err(code));
            }
        }
    }

    /// Serves one request other than a produce (see [`PartitionStore::arrive`]).
    pub async fn serve(self: &Rc<Self>, request: PartitionRequest) {
        match request {
            PartitionRequest::Produce { reply, .. } => {
                // Produces are ordered on arrival; one reaching here skipped that step.
                tracing::error!("a produce reached the partition store without a ticket");
                let _ = reply.send(Err(ErrorCode::UnknownServerError));
            }
            PartitionRequest::Read {
                reads,
                max_bytes,
                read_committed,
                reply,
            } => {
                let slices = self.read_in_order(reads, max_bytes, read_committed).await;
                let _ = reply.send(slices);
            }
            PartitionRequest::WaitForData {
                stream_id,
                offset,
                wait,
                reply,
            } => {
                if let Some(partition) = self.partition(stream_id) {
                    partition.wait_for_data(offset, wait).await;
                }
                let _ = reply.send(());
            }
            PartitionRequest::ListOffset {
                stream_id,
                timestamp,
                read_committed,
                reply,
            } => {
                let Some(partition) = self.partition(stream_id) else {
                    let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
                    return;
                };
                if timestamp == MAX_TIMESTAMP {
                    let found = self.max_timestamp_offset(&partition).await;
                    let _ = reply.send(found.map(|hit| hit.unwrap_or((-1, -1))));
                    return;
                }
                let cold_from = (timestamp >= 0)
                    .then(|| partition.cold_search_start(timestamp))
                    .flatten();
                let Some(from) = cold_from else {
                    let _ = reply.send(Ok(list_offset(&partition, timestamp, read_committed)));
                    return;
                };
                let found = self.search_objects(&partition, from, timestamp).await;
                let _ = reply.send(found.map(|hit| {
                    hit.unwrap_or_else(|| list_offset(&partition, timestamp, read_committed))
                }));
            }
            PartitionRequest::DeleteRecords {
                stream_id,
                offset,
                reply,
            } => {
                let Some(partition) = self.partition(stream_id) else {
                    let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
                    return;
                };
                let _ = reply.send(self.delete_records(&partition, offset).await);
            }
            PartitionRequest::Size { stream_id, reply } => {
                let result = self
                    .partition(stream_id)
                    .map(|p| self.log_size_bytes(&p))
                    .ok_or(ErrorCode::NotLeaderOrFollower);
                let _ = reply.send(result);
            }
        }
    }

    /// Notes that a partition's offsets below `end_offset` are in committed objects.
    pub fn mark_uploaded(&self, stream_id: u64, end_offset: i64) {
        if let Some(partition) = self.partitions.borrow().get(&stream_id) {
            partition.mark_uploaded(end_offset);
        }
    }

    /// Evicts uploaded batches from the log caches until they hold at most `budget` bytes,
    /// taking from each partition in proportion to what it could give.
    pub fn evict_log_cache(&self, budget: u64) {
        let held = self.log_cache_bytes();
        let partitions = self.partitions.borrow();
        if held <= budget {
            return;
        }
        let excess = held - budget;
        let evictable: Vec<(u64, &Rc<Partition>)> = partitions
            .values()
            .map(|p| (p.uploaded_cached_bytes(), p))
            .filter(|(bytes, _)| *bytes > 0)
            .collect();
        let total: u64 = evictable.iter().map(|(bytes, _)| bytes).sum();
        if total == 0 {
            return;
        }
        for (bytes, partition) in evictable {
            let share = (u128::from(excess) * u128::from(bytes)).div_ceil(u128::from(total));
            partition.evict_uploaded(share.min(u128::from(bytes)) as u64);
        }
    }

    /// Bytes of a partition's log: its object ranges above the log start and what is only in
    /// the log cache.
    fn log_size_bytes(&self, partition: &Partition) -> u64 {
        let (_, log_start, _) = partition.offsets();
        let image = self.image();
        let in_objects: u64 = image
            .stream_objects(partition.stream_id)
            .filter(|(_, r)| r.end_offset > log_start)
            .map(|(_, r)| r.len)
            .sum();
        let objects_end = image
            .stream_end_offset_in_objects(partition.stream_id)
            .unwrap_or(log_start);
        in_objects + partition.cached_bytes_from(objects_end)
    }

    /// The first record at or after `timestamp`, reading objects from offset `from` up to the
    /// log cache; None when every record there is earlier.
    async fn search_objects(
        &self,
        partition: &Partition,
        from: i64,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, ErrorCode> {
        const READ_BYTES: usize = 1 << 20;
        let mut offset = from;
        loop {
            let slice = match self.read_cold(partition, offset, READ_BYTES, false).await {
                Ok(slice) => slice,
                Err(ErrorCode::OffsetOutOfRange) => return Ok(None), // reached the log cache
                Err(code) => return Err(code),
            };
            let mut next = offset;
            for batch in sluice_net::record_batch::batches(&slice.records) {
                let batch = batch.map_err(|_| ErrorCode::CorruptMessage)?;
                if let Some(hit) = partition::record_at_or_after(&batch, timestamp, from) {
                    return Ok(Some(hit));
                }
                let header = sluice_net::record_batch::RecordBatchHeader::parse(&batch)
                    .map_err(|_| ErrorCode::CorruptMessage)?;
                next = header.base_offset() + i64::from(header.last_offset_delta()) + 1;
            }
            if next <= offset {
                return Ok(None);
            }
            offset = next;
        }
    }

    /// ListOffsets MAX_TIMESTAMP: the first record with the largest timestamp, in objects
    /// (searched from the upload that holds it) or in the log cache.
    async fn max_timestamp_offset(
        &self,
        partition: &Partition,
    ) -> Result<Option<(i64, i64)>, ErrorCode> {
        let cached = partition.max_timestamp_offset();
        if let Some((from, timestamp)) = partition.max_timestamp_upload()
            && cached.is_none_or(|(_, cached)| timestamp >= cached)
            && let Some(hit) = self.search_objects(partition, from, timestamp).await?
        {
            return Ok(Some(hit));
        }
        Ok(cached)
    }

    /// The reads of one [`PartitionRequest::Read`], in order, sharing `max_bytes`
    /// ([`FetchBudget`]).
    async fn read_in_order(
        &self,
        reads: Vec<PartitionRead>,
        max_bytes: usize,
        read_committed: bool,
    ) -> Vec<Result<ReadSlice, ErrorCode>> {
        let mut budget = FetchBudget::new(max_bytes);
        let mut slices = Vec::with_capacity(reads.len());
        for read in reads {
            self.metrics.fetch_reads.add(1);
            let slice = match self.partition(read.stream_id) {
                None => Err(ErrorCode::NotLeaderOrFollower),
                Some(partition) => {
                    let limit = budget.limit(read.max_bytes);
                    let mut slice = self
                        .read_partition(&partition, read.offset, limit, read_committed)
                        .await;
                    if let Ok(slice) = &mut slice {
                        budget.take(slice, read.max_bytes);
                        let bytes = slice.records.len() as u64;
                        self.metrics.fetch_bytes.add(bytes);
                        partition.metrics.fetch_bytes.add(bytes);
                    }
                    slice
                }
            };
            slices.push(slice);
        }
        slices
    }

    /// Batches of `partition` from `offset`, about `max_bytes` (at least one batch), from the
    /// log cache, else from objects.
    async fn read_partition(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<ReadSlice, ErrorCode> {
        match partition.read(offset, max_bytes, read_committed, &self.memory_pool) {
            Ok(slice) => Ok(slice),
            Err(ReadError::OffsetOutOfRange) => Err(ErrorCode::OffsetOutOfRange),
            Err(ReadError::NotCached) => {
                self.metrics.fetch_cold_reads.add(1);
                self.read_cold(partition, offset, max_bytes, read_committed)
                    .await
            }
        }
    }

    async fn read_cold(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<ReadSlice, ErrorCode> {
        let last_stable_offset = partition.last_stable_offset();
        let (high_watermark, log_start_offset, _) = partition.offsets();
        let mut slice = ReadSlice {
            records: Bytes::new(),
            high_watermark,
            log_start_offset,
            last_stable_offset,
            aborted_transactions: Vec::new(),
        };
        if read_committed && offset >= last_stable_offset {
            return Ok(slice);
        }
        let records = self
            .tier
            .read(
                &self.controller,
                &self.memory_pool,
                partition.stream_id,
                offset,
                max_bytes,
            )
            .await
            .map_err(|error| match error {
                ColdReadError::NotInObjects => ErrorCode::OffsetOutOfRange,
                ColdReadError::Store(error) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "cold read failed");
                    ErrorCode::KafkaStorageError
                }
            })?;
        slice.records = if read_committed {
            batches_below(&records, last_stable_offset)
        } else {
            records
        };
        if read_committed && !slice.records.is_empty() {
            let upper = partition::end_offset_of(&slice.records).unwrap_or(last_stable_offset);
            slice.aborted_transactions = partition.aborted_transactions(offset, upper);
        }
        Ok(slice)
    }

    /// Drops partitions that no longer exist or that another broker holds now (a takeover
    /// moved them; should they come back, they reopen from objects) and applies changed
    /// topic settings.
    pub fn apply_image(&self, image: &MetadataImage) {
        // A partition another broker holds now adds to its history there: read it again if
        // the partition comes back. A deleted one is forgotten.
        self.txn_history_known.borrow_mut().retain(|stream_id| {
            image.stream(*stream_id).is_some() && !image.held_by_another(*stream_id, image.node_id)
        });
        self.partitions.borrow_mut().retain(|stream_id, partition| {
            let kept = match image.stream(*stream_id) {
                Some(_) if image.held_by_another(*stream_id, image.node_id) => false,
                Some((topic, part)) => {
                    partition.set_settings(settings_of(topic, image));
                    let _ = partition.advance_log_start(part.log_start_offset);
                    partition.evict_cleaned(image.cleaned_end_offset(*stream_id));
                    true
                }
                None => false,
            };
            if !kept {
                self.tier.forget_stream(*stream_id);
            }
            kept
        });
    }

    /// Calls `each` with every record (offset, payload) of internal stream `stream_id` in
    /// objects, in order.
    pub async fn read_internal_stream(
        &self,
        stream_id: u64,
        mut each: impl FnMut(i64, Bytes) -> Result<(), String>,
    ) -> Result<(), String> {
        let image = self.image();
        let (Some(mut offset), Some(end)) = (
            image.stream_start_offset_in_objects(stream_id),
            image.stream_end_offset_in_objects(stream_id),
        ) else {
            return Ok(());
        };
        while offset < end {
            let data = self
                .tier
                .read(
                    &self.controller,
                    &self.memory_pool,
                    stream_id,
                    offset,
                    16 << 20,
                )
                .await
                .map_err(|e| format!("internal stream {stream_id} at {offset}: {e}"))?;
            let frames = crate::internal_stream::unframe(&data).map_err(|e| e.to_string())?;
            let Some(&(last, _)) = frames.last() else {
                return Err(format!(
                    "internal stream {stream_id} at {offset}: an empty read"
                ));
            };
            for (record_offset, payload) in frames {
                each(record_offset, payload)?;
            }
            offset = last + 1;
        }
        Ok(())
    }

    /// Every partition this shard holds, for shutdown reporting.
    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// Bytes the partitions' log caches hold.
    pub fn log_cache_bytes(&self) -> u64 {
        self.partitions
            .borrow()
            .values()
            .map(|p| p.size_bytes())
            .sum()
    }

    /// The partition with `stream_id` if this shard owns it and this broker leads it (a
    /// broker of a quorum serves nothing while fenced), created on first use.
    pub fn partition(&self, stream_id: u64) -> Option<Rc<Partition>> {
        if !self.controller.leads(stream_id) {
            return None;
        }
        if let Some(p) = self.partitions.borrow().get(&stream_id) {
            return Some(p.clone());
        }
        let image = self.image();
        let (topic, part) = image.stream(stream_id)?;
        if self.owner_of(part) != self.id {
            return None;
        }
        if !self.txn_history_known.borrow().contains(&stream_id) {
            if image.stream_end_offset_in_objects(stream_id).is_some() {
                // Moved here with data: served once `txn_history::load_due` read its history.
                return None;
            }
            // New: it has no history anywhere.
            self.txn_history_known.borrow_mut().insert(stream_id);
        }
        let partition = Rc::new(resumed_partition(&image, topic, part));
        self.metrics.register_partition(&partition.metrics);
        self.partitions
            .borrow_mut()
            .insert(stream_id, partition.clone());
        Some(partition)
    }
}

/// The partitions this broker leads that shard `id` of `count` owns.
fn led_partitions(image: &MetadataImage, id: usize, count: usize) -> impl Iterator<Item = u64> {
    image
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        .filter(move |part| part.shard as usize % count.max(1) == id && image.leads(part.stream_id))
        .map(|part| part.stream_id)
}

impl UploadListener for PartitionStore {
    fn uploaded(&self, stream_id: u64, end_offset: i64) {
        self.mark_uploaded(stream_id, end_offset);
    }

    fn committed(&self) {
        self.evict_log_cache(self.tier.log_cache_budget_bytes());
    }

    fn roll(&self, stream_id: u64) -> StreamRoll {
        let Some(settings) = self
            .partitions
            .borrow()
            .get(&stream_id)
            .map(|partition| partition.settings())
        else {
            return StreamRoll::NONE;
        };
        let jitter = roll_jitter(stream_id, settings.roll_jitter_ms, settings.roll.after);
        StreamRoll {
            after: settings.roll.after.saturating_sub(jitter),
            ..settings.roll
        }
    }

    fn stream_uploads(&self, stream_end_offsets: &[(u64, i64)]) -> Vec<StreamUpload> {
        let image = self.image();
        let partitions = self.partitions.borrow();
        stream_end_offsets
            .iter()
            .filter_map(|&(stream_id, end_offset)| {
                Some(
                    partitions
                        .get(&stream_id)?
                        .stream_upload(end_offset, &image),
                )
            })
            .collect()
    }
}

/// A partition of `topic` resuming from what `image` holds of it (its objects, its
/// producers' state there), with nothing of it in memory yet.
pub fn resumed_partition(
    image: &MetadataImage,
    topic: &TopicImage,
    part: &PartitionImage,
) -> Partition {
    let stream_id = part.stream_id;
    Partition::new(
        Rc::from(topic.name.as_str()),
        part.index,
        stream_id,
        partition::ResumedFrom {
            log_start_offset: part.log_start_offset,
            objects_end_offset: image
                .stream_end_offset_in_objects(stream_id)
                .unwrap_or(part.log_start_offset),
            producers: image.producer_states(stream_id),
            upload_times: image.upload_times(stream_id),
        },
        settings_of(topic, image),
    )
}

/// The settings of `topic` that the order stage applies.
pub fn settings_of(topic: &TopicImage, image: &MetadataImage) -> PartitionSettings {
    let effective = sluice_metadata::effective_topic_config(&topic.configs, &image.broker_configs);
    let delete = effective.cleanup_policy.delete;
    PartitionSettings {
        log_append_time: effective.timestamp_type == sluice_metadata::TimestampType::LogAppendTime,
        max_message_bytes: effective.max_message_bytes.max(0) as usize,
        // Without delete in cleanup.policy nothing is deleted by age or size; compaction is
        // the log cleaner's, in the object tier (`sluice_objstore::LogCleaner`).
        retention_ms: if delete { effective.retention_ms } else { -1 },
        retention_bytes: if delete {
            effective.retention_bytes
        } else {
            -1
        },
        keys_required: effective.cleanup_policy.compact,
        compression: match effective.compression_type {
            CompressionType::Producer => None,
            CompressionType::Uncompressed => Some(Compression::None),
            CompressionType::Gzip => Some(Compression::Gzip),
            CompressionType::Snappy => Some(Compression::Snappy),
            CompressionType::Lz4 => Some(Compression::Lz4),
            CompressionType::Zstd => Some(Compression::Zstd),
        },
        timestamp_before_max_ms: effective.timestamp_before_max_ms,
        timestamp_after_max_ms: effective.timestamp_after_max_ms,
        // Sluice's active segment is what waits in the WAL for an upload; an upload rolls it.
        roll: StreamRoll {
            after: Duration::from_millis(u64::try_from(effective.segment_ms).unwrap_or(1)),
            bytes: usize::try_from(effective.segment_bytes).unwrap_or(usize::MAX),
        },
        roll_jitter_ms: u64::try_from(effective.segment_jitter_ms).unwrap_or(0),
    }
}

/// How much of its roll interval partition `stream_id` gives up (segment.jitter.ms). Kafka
/// draws a random jitter below `min(segment.jitter.ms, segment.ms)` for each segment; a
/// fixed one per stream, drawn from its id, spreads rolls as well and keeps the broker
/// deterministic (the simulator replays it).
fn roll_jitter(stream_id: u64, jitter_ms: u64, roll_after: Duration) -> Duration {
    let bound_ms = jitter_ms.min(u64::try_from(roll_after.as_millis()).unwrap_or(u64::MAX));
    if bound_ms == 0 {
        return Duration::ZERO;
    }
    // SplitMix64's finalizer: consecutive stream ids land far apart.
    let mut x = stream_id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    Duration::from_millis(x % bound_ms)
}

/// Kafka's special ListOffsets timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// (offset, timestamp) for a ListOffsets query; (-1, -1) when no record qualifies.
/// read_committed's latest offset is the last stable offset.
fn list_offset(partition: &Partition, timestamp: i64, read_committed: bool) -> (i64, i64) {
    let (high_watermark, log_start, _) = partition.offsets();
    match timestamp {
        LATEST if read_committed => (partition.last_stable_offset(), -1),
        LATEST => (high_watermark, -1),
        EARLIEST | EARLIEST_LOCAL => (log_start, -1),
        LATEST_TIERED => (-1, -1),
        t if t >= 0 => partition.offset_for_timestamp(t).unwrap_or((-1, -1)),
        _ => (-1, -1),
    }
}

/// The leading whole batches of `records` that end below `end_offset` (read_committed stops
/// at the last stable offset).
fn batches_below(records: &Bytes, end_offset: i64) -> Bytes {
    let mut len = 0;
    for batch in sluice_net::record_batch::batches(records) {
        let Ok(batch) = batch else { break };
        let Ok(header) = sluice_net::record_batch::RecordBatchHeader::parse(&batch) else {
            break;
        };
        if header.base_offset() + i64::from(header.last_offset_delta()) >= end_offset {
            break;
        }
        len += batch.len();
    }
    records.slice(..len)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn topic(configs: &[(&str, &str)]) -> TopicImage {
        TopicImage {
            name: "t".to_string(),
            id: [1; 16],
            partitions: Vec::new(),
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn only_delete_policies_retain_by_age_and_size_and_compact_ones_need_keys() {
        let image = MetadataImage::empty("c".to_string(), 0);
        let retention = [("retention.ms", "1000"), ("retention.bytes", "1000")];
        let delete = settings_of(&topic(&retention), &image);
        assert_eq!((delete.retention_ms, delete.retention_bytes), (1000, 1000));
        assert!(!delete.keys_required);
        let compact = settings_of(
            &topic(&[retention[0], retention[1], ("cleanup.policy", "compact")]),
            &image,
        );
        assert_eq!((compact.retention_ms, compact.retention_bytes), (-1, -1));
        assert!(compact.keys_required);
        let both = settings_of(
            &topic(&[retention[0], ("cleanup.policy", "compact,delete")]),
            &image,
        );
        assert_eq!(both.retention_ms, 1000);
        assert!(both.keys_required);
    }

    #[test]
    fn segment_configs_bound_uploads_with_a_jitter_per_stream() {
        let image = MetadataImage::empty("c".to_string(), 0);
        let defaults = settings_of(&topic(&[]), &image);
        assert_eq!(defaults.roll.after, Duration::from_millis(604_800_000));
        assert_eq!(defaults.roll.bytes, 1_073_741_824);
        assert_eq!(defaults.roll_jitter_ms, 0);
        let rolled = settings_of(
            &topic(&[
                ("segment.ms", "1000"),
                ("segment.bytes", "4096"),
                ("segment.jitter.ms", "5000"),
            ]),
            &image,
        );
        assert_eq!(rolled.roll.after, Duration::from_millis(1000));
        assert_eq!(rolled.roll.bytes, 4096);
        assert_eq!(rolled.roll_jitter_ms, 5000);
        let second = Duration::from_secs(1);
        let jitters: Vec<Duration> = (0..8).map(|id| roll_jitter(id, 5000, second)).collect();
        // Bounded by min(segment.jitter.ms, segment.ms), and not one value for all.
        assert!(jitters.iter().all(|j| *j < second), "{jitters:?}");
        assert!(jitters.iter().any(|j| *j != jitters[0]), "{jitters:?}");
        assert_eq!(roll_jitter(3, 0, second), Duration::ZERO);
        assert_eq!(roll_jitter(3, 10, second), roll_jitter(3, 10, second));
    }
}
