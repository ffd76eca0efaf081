//! One shard: its partitions, its WAL, and the messages other shards send it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::shared_channel::ConnectedSender;
use sluice_metadata::{MetadataCommand, MetadataImage, PartitionImage, TopicImage};
use sluice_net::ErrorCode;

use crate::chunk_pool::ChunkPool;
use crate::config::BrokerConfig;
use crate::controller::ControllerHandle;
use crate::group::GroupCoordinator;
use crate::group::call::{GroupCall, GroupReply};
use crate::group::log::GroupLogEntry;
use crate::internal_stream;
use crate::metrics::ShardMetrics;
use crate::partition::{AppendOutcome, Partition, PartitionSettings};
use crate::partition_log::{ReadError, ReadSlice};
use crate::shard_wal::ShardWal;
use crate::tier::{ColdReadError, ObjectTier};
use crate::txn::TxnCoordinator;
use crate::txn::call::{TxnCall, TxnReply};
use crate::txn::partition_index::{TxnIndexEntry, TxnIndexLog};

/// Producer ids a shard takes from the controller at once.
const PRODUCER_ID_BLOCK: u32 = 1000;

/// One partition of a [`ShardRequest::Read`].
pub struct PartitionRead {
    /// The partition's stream.
    pub stream_id: u64,
    /// The first offset wanted.
    pub offset: i64,
    /// The partition's own byte limit (max.partition.fetch.bytes).
    pub max_bytes: usize,
}

/// Work for the shard that owns a partition, sent by the shard that parsed the request.
pub enum ShardRequest {
    /// Serve this client connection here: its partitions live on this shard (see `affinity`).
    AdoptConnection { socket: std::os::fd::OwnedFd },
    /// Order and persist one batch; the reply comes once it is durable.
    Produce {
        stream_id: u64,
        batch: Bytes,
        reply: oneshot::Sender<Result<AppendOutcome, ErrorCode>>,
    },
    /// Read partitions in this order (read_committed: up to the last stable offset), as Kafka
    /// does for a fetch: each reads at most what `max_bytes` has left after those before it,
    /// and only the first one with data may go past it (by its first batch).
    Read {
        reads: Vec<PartitionRead>,
        max_bytes: usize,
        read_committed: bool,
        reply: oneshot::Sender<Vec<Result<ReadSlice, ErrorCode>>>,
    },
    /// Resolve once data past `offset` exists, or after `wait`.
    WaitForData {
        stream_id: u64,
        offset: i64,
        wait: Duration,
        reply: oneshot::Sender<()>,
    },
    /// Resolve a ListOffsets query (a timestamp or one of Kafka's special values).
    ListOffset {
        stream_id: u64,
        timestamp: i64,
        read_committed: bool,
        reply: oneshot::Sender<Result<(i64, i64), ErrorCode>>,
    },
    /// Move the log start offset (DeleteRecords).
    DeleteRecords {
        stream_id: u64,
        offset: i64,
        reply: oneshot::Sender<Result<i64, ErrorCode>>,
    },
    /// Size of the partition's log in bytes (DescribeLogDirs).
    Size {
        stream_id: u64,
        reply: oneshot::Sender<Result<u64, ErrorCode>>,
    },
    /// A request for the group coordinator of this shard.
    Group {
        call: GroupCall,
        reply: oneshot::Sender<GroupReply>,
    },
    /// Transaction work for this shard (coordinator, group coordinator or partition owner).
    Txn {
        call: TxnCall,
        reply: oneshot::Sender<TxnReply>,
    },
}

/// The state of one shard, shared by its tasks (never across threads).
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Number of shards in the broker.
    pub count: usize,
    /// Start-up configuration.
    pub config: Arc<BrokerConfig>,
    /// Where metadata commands go.
    pub controller: ControllerHandle,
    /// Host and port clients are told to use.
    pub advertised: (String, i32),
    /// What this shard counts, for the metrics exporter.
    pub metrics: Arc<ShardMetrics>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The shard's WAL and the records waiting for upload.
    pub wal: Rc<ShardWal>,
    /// Uploads, cold reads and the log-cache budget.
    pub tier: ObjectTier,
    /// The transactional ids this shard coordinates.
    pub txns: TxnCoordinator,
    /// Where this shard's partitions record their transactions' begin and end.
    pub txn_index: TxnIndexLog,
    /// The memory pool of request frames and produced batches (the log cache's chunks).
    pub memory_pool: ChunkPool,
    partitions: RefCell<HashMap<u64, Rc<Partition>>>,
    peers: Vec<Option<ConnectedSender<ShardRequest>>>,
    producer_ids: Cell<(i64, i64)>,
}

impl Shard {
    /// A shard over an opened WAL, with a sender to every other shard (`None` at its own index).
    #[allow(clippy::too_many_arguments)] // each is a separate piece the runtime built for it
    pub fn new(
        id: usize,
        config: Arc<BrokerConfig>,
        controller: ControllerHandle,
        advertised: (String, i32),
        wal: Rc<ShardWal>,
        tier: ObjectTier,
        peers: Vec<Option<ConnectedSender<ShardRequest>>>,
        metrics: Arc<ShardMetrics>,
        memory_pool: ChunkPool,
    ) -> Shard {
        Shard {
            id,
            count: peers.len(),
            config,
            controller,
            advertised,
            metrics,
            groups: GroupCoordinator::new(wal.clone(), internal_stream::group_log_stream(id)),
            txns: TxnCoordinator::new(wal.clone(), internal_stream::txn_log_stream(id)),
            txn_index: TxnIndexLog::new(wal.clone(), internal_stream::txn_index_stream(id)),
            wal,
            tier,
            memory_pool,
            partitions: RefCell::new(HashMap::new()),
            peers,
            producer_ids: Cell::new((0, 0)),
        }
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.controller.image()
    }

    /// The shard owning a partition (placement wraps if the broker runs fewer shards).
    pub fn owner_of(&self, partition: &PartitionImage) -> usize {
        partition.shard as usize % self.count
    }

    /// The owner shard and stream id of `topic`/`partition`, if that partition exists.
    pub fn locate(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Option<(usize, u64)> {
        let part = image.partition(topic, u32::try_from(partition).ok()?)?;
        Some((self.owner_of(part), part.stream_id))
    }

    /// Sends `request` to shard `owner`, or handles it here when that is this shard. Returns
    /// once the request is ordered there (produce) or accepted (the rest); answers come on the
    /// request's reply channel.
    pub async fn deliver(self: &Rc<Self>, owner: usize, request: ShardRequest) {
        if owner == self.id {
            self.handle(request).await;
            return;
        }
        if let Some(Some(peer)) = self.peers.get(owner)
            && peer.send(request).await.is_err()
        {
            tracing::warn!(owner, "shard channel closed");
        }
    }

    /// Handles one request as the owner of its partition.
    pub async fn handle(self: &Rc<Self>, request: ShardRequest) {
        match request {
            ShardRequest::AdoptConnection { .. } => {
                // Connections are adopted by the runtime's mesh loop, which holds the shard's
                // request memory and stop signal; one that reaches here is closed on drop.
                tracing::warn!("connection handed to a shard outside its mesh loop; closed");
            }
            ShardRequest::Produce {
                stream_id,
                batch,
                reply,
            } => {
                let Some(partition) = self.partition(stream_id) else {
                    let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
                    return;
                };
                let bytes = batch.len() as u64;
                let records = sluice_net::record_batch::RecordBatchHeader::parse(&batch)
                    .map_or(0, |header| header.records_count().max(0) as u64);
                match partition
                    .order(&self.wal, &self.txn_index, &self.memory_pool, batch)
                    .await
                {
                    Ok(pending) => {
                        self.metrics.produce_batches.add(1);
                        self.metrics.produce_records.add(records);
                        self.metrics.produce_bytes.add(bytes);
                        partition.metrics.produce_batches.add(1);
                        partition.metrics.produce_bytes.add(bytes);
                        glommio::spawn_local(async move {
                            let _ = reply.send(pending.durable().await);
                        })
                        .detach();
                    }
                    Err(code) => {
                        let _ = reply.send(Err(code));
                    }
                }
            }
            ShardRequest::Read {
                reads,
                max_bytes,
                read_committed,
                reply,
            } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let slices = shard.read_in_order(reads, max_bytes, read_committed).await;
                    let _ = reply.send(slices);
                })
                .detach();
            }
            ShardRequest::WaitForData {
                stream_id,
                offset,
                wait,
                reply,
            } => {
                if let Some(partition) = self.partition(stream_id) {
                    glommio::spawn_local(async move {
                        partition.wait_for_data(offset, wait).await;
                        let _ = reply.send(());
                    })
                    .detach();
                } else {
                    let _ = reply.send(());
                }
            }
            ShardRequest::ListOffset {
                stream_id,
                timestamp,
                read_committed,
                reply,
            } => {
                let Some(partition) = self.partition(stream_id) else {
                    let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
                    return;
                };
                let cold_from = (timestamp >= 0)
                    .then(|| partition.cold_search_start(timestamp))
                    .flatten();
                let Some(from) = cold_from else {
                    let _ = reply.send(Ok(list_offset(&partition, timestamp, read_committed)));
                    return;
                };
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let found = shard.search_objects(&partition, from, timestamp).await;
                    let _ = reply.send(found.map(|hit| {
                        hit.unwrap_or_else(|| list_offset(&partition, timestamp, read_committed))
                    }));
                })
                .detach();
            }
            ShardRequest::DeleteRecords {
                stream_id,
                offset,
                reply,
            } => {
                let Some(partition) = self.partition(stream_id) else {
                    let _ = reply.send(Err(ErrorCode::NotLeaderOrFollower));
                    return;
                };
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.delete_records(&partition, offset).await);
                })
                .detach();
            }
            ShardRequest::Size { stream_id, reply } => {
                let result = self
                    .partition(stream_id)
                    .map(|p| self.log_size_bytes(&p))
                    .ok_or(ErrorCode::NotLeaderOrFollower);
                let _ = reply.send(result);
            }
            ShardRequest::Group { call, reply } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let image = shard.image();
                    let _ = reply.send(shard.groups.call(call, &image).await);
                })
                .detach();
            }
            ShardRequest::Txn { call, reply } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(crate::txn::call::serve(&shard, call).await);
                })
                .detach();
            }
        }
    }

    /// Takes the next producer id, fetching a new block from the controller when needed.
    pub async fn next_producer_id(&self) -> Result<i64, ErrorCode> {
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let (_, outcome) = self
            .controller
            .submit(MetadataCommand::AllocateProducerIds {
                count: PRODUCER_ID_BLOCK,
            })
            .await
            .map_err(|e| crate::errors::controller_error_code(&e))?;
        let sluice_metadata::CommandOutcome::ProducerIdsAllocated {
            first_producer_id: first,
            ..
        } = outcome
        else {
            return Err(ErrorCode::UnknownServerError);
        };
        self.producer_ids
            .set((first + 1, first + i64::from(PRODUCER_ID_BLOCK)));
        Ok(first)
    }

    /// Replays WAL records into this shard's partitions at start-up and queues those not in
    /// object storage yet for upload; returns how many batches were replayed and the group-log
    /// entries found, in WAL order, after those already in objects.
    pub fn recover(
        &self,
        records: Vec<sluice_wal::RecoveredRecord>,
    ) -> (usize, Vec<GroupLogEntry>) {
        let image = self.image();
        let mut recovered = 0;
        let mut group_entries = Vec::new();
        // Per stream, the next offset the uploader expects: records must continue it.
        let mut upload_next: HashMap<u64, i64> = HashMap::new();
        for record in records {
            let first_offset = record.first_offset as i64;
            let last_offset = record.last_offset as i64;
            let next = upload_next.entry(record.stream_id).or_insert_with(|| {
                image
                    .stream_end_offset_in_objects(record.stream_id)
                    .unwrap_or(first_offset)
            });
            if last_offset < *next {
                continue; // in objects already
            }
            let is_group_log = internal_stream::is_group_log_stream(record.stream_id);
            let is_txn_log = internal_stream::is_txn_log_stream(record.stream_id);
            let is_txn_index = internal_stream::is_txn_index_stream(record.stream_id);
            if !is_group_log
                && !is_txn_log
                && !is_txn_index
                && image.stream(record.stream_id).is_none()
            {
                continue; // a deleted topic
            }
            if first_offset != *next {
                tracing::error!(
                    stream_id = record.stream_id,
                    first_offset,
                    expected = *next,
                    "a WAL record does not continue its stream; skipped"
                );
                continue;
            }
            *next = last_offset + 1;
            self.wal.queue_recovered(sluice_objstore::AppendedRecord {
                stream_id: record.stream_id,
                first_offset,
                last_offset,
                payload: record.payload.clone(),
                payload_crc: record.payload_crc,
                wal_end_position: record.end_position.0,
            });
            if is_group_log || is_txn_log || is_txn_index {
                self.resume_internal_sequence(record.stream_id, record.last_offset + 1);
                let replayed = internal_stream::unframe(&record.payload)
                    .map_err(|e| e.to_string())
                    .and_then(|frames| {
                        frames.into_iter().try_for_each(|(offset, payload)| {
                            self.replay_internal(
                                record.stream_id,
                                offset,
                                payload,
                                &mut group_entries,
                            )
                        })
                    });
                if let Err(error) = replayed {
                    tracing::error!(
                        %error,
                        stream_id = record.stream_id,
                        "an internal-stream record in the WAL is malformed; skipped"
                    );
                }
                continue;
            }
            let Some(partition) = self.partition(record.stream_id) else {
                continue; // a stream another shard owns now
            };
            match partition.recover(record.payload) {
                Ok(()) => recovered += 1,
                Err(error) => tracing::error!(
                    %error,
                    stream_id = record.stream_id,
                    "a WAL record does not hold a valid batch; skipped"
                ),
            }
        }
        (recovered, group_entries)
    }

    /// The group-log entries of this shard that are in object storage, oldest first; on the
    /// way, applies its partitions' transaction index and hands its transaction-log records
    /// to the transaction coordinator, and continues every internal stream's sequence.
    pub async fn internal_state_in_objects(&self) -> Result<Vec<GroupLogEntry>, String> {
        let mut group_entries = Vec::new();
        for stream_id in [
            internal_stream::group_log_stream(self.id),
            internal_stream::txn_index_stream(self.id),
            internal_stream::txn_log_stream(self.id),
        ] {
            self.for_each_in_objects(stream_id, |offset, payload| {
                self.replay_internal(stream_id, offset, payload, &mut group_entries)
            })
            .await?;
        }
        Ok(group_entries)
    }

    /// Replays one record (unframed, at `offset`) of one of this shard's internal streams
    /// found at start-up: the group log's entries are collected into `group_entries` (for
    /// their coordinators), the transaction log's go to the transaction coordinator, the
    /// transaction index's to the partitions; the stream's sequence continues after it.
    fn replay_internal(
        &self,
        stream_id: u64,
        offset: i64,
        payload: Bytes,
        group_entries: &mut Vec<GroupLogEntry>,
    ) -> Result<(), String> {
        let next = offset as u64 + 1;
        self.resume_internal_sequence(stream_id, next);
        if internal_stream::is_group_log_stream(stream_id) {
            group_entries.extend(crate::group::log::decode(payload).map_err(|e| e.to_string())?);
        } else if internal_stream::is_txn_log_stream(stream_id) {
            self.txns.replay(next, payload);
        } else if internal_stream::is_txn_index_stream(stream_id) {
            match TxnIndexEntry::decode(payload) {
                Ok(entry) => {
                    if let Some(partition) = self.partition(entry.stream_id()) {
                        partition.apply_txn_index(entry);
                    }
                }
                Err(error) => tracing::error!(%error, "a transaction-index entry is malformed"),
            }
        }
        Ok(())
    }

    /// Continues the group log's or the transaction index's sequence at `next`, so a new
    /// record never reuses the offset of one found at start-up.
    fn resume_internal_sequence(&self, stream_id: u64, next: u64) {
        if internal_stream::is_group_log_stream(stream_id) {
            self.groups.resume_sequence(next);
        } else if internal_stream::is_txn_index_stream(stream_id) {
            self.txn_index.resume_sequence(next);
        }
    }

    /// Calls `each` with every record (offset, payload) of internal stream `stream_id` in
    /// objects, in order.
    async fn for_each_in_objects(
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
            let frames = internal_stream::unframe(&data).map_err(|e| e.to_string())?;
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

    /// Applies retention.ms and retention.bytes to this shard's partitions: moves their log
    /// start past whole uploads that are too old, and past the oldest objects while the log
    /// is over its size limit. Shard 0's maintenance then deletes the objects below it.
    pub async fn apply_retention(&self) {
        let image = self.image();
        let now = crate::partition::now_ms();
        let partitions: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for partition in partitions {
            let settings = partition.settings();
            let (_, log_start, _) = partition.offsets();
            let mut target = None;
            if settings.retention_ms >= 0 {
                target = partition.expired_before(now.saturating_sub(settings.retention_ms));
            }
            if settings.retention_bytes >= 0 {
                let ranges: Vec<(i64, u64)> = image
                    .stream_objects(partition.stream_id)
                    .filter(|(_, r)| r.end_offset > log_start)
                    .map(|(_, r)| (r.end_offset, r.len))
                    .collect();
                // Measured against this image's objects, so no byte counts twice.
                let objects_end = image
                    .stream_end_offset_in_objects(partition.stream_id)
                    .unwrap_or(log_start);
                let mut size = partition.cached_bytes_from(objects_end)
                    + ranges.iter().map(|r| r.1).sum::<u64>();
                // As Kafka deletes segments: a range goes only if what stays after it is
                // still at least retention.bytes, so the log keeps its newest records.
                for (end, len) in ranges {
                    if size.saturating_sub(len) < settings.retention_bytes as u64 {
                        break;
                    }
                    size -= len;
                    target = target.max(Some(end));
                }
            }
            let Some(target) = target.filter(|t| *t > log_start) else {
                continue;
            };
            match self.delete_records(&partition, target).await {
                Ok(start) => {
                    tracing::info!(topic = %partition.topic, partition = partition.index, log_start_offset = start, "retention moved the log start")
                }
                Err(code) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, ?code, "retention could not move the log start")
                }
            }
        }
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
                if let Some(hit) = crate::partition::record_at_or_after(&batch, timestamp, from) {
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

    /// The reads of one [`ShardRequest::Read`], in order, sharing `max_bytes`.
    async fn read_in_order(
        &self,
        reads: Vec<PartitionRead>,
        max_bytes: usize,
        read_committed: bool,
    ) -> Vec<Result<ReadSlice, ErrorCode>> {
        let mut left = max_bytes;
        let mut first_data = true;
        let mut slices = Vec::with_capacity(reads.len());
        for read in reads {
            let max_bytes = read.max_bytes.min(left);
            let slice = self
                .read_partition(&read, max_bytes, first_data, read_committed)
                .await;
            if let Ok(slice) = &slice {
                if !slice.records.is_empty() {
                    first_data = false;
                }
                left = left.saturating_sub(slice.records.len());
            }
            slices.push(slice);
        }
        slices
    }

    /// Batches of `read`'s partition up to `max_bytes`, from the log cache, else from objects;
    /// at least one batch when `at_least_one`.
    async fn read_partition(
        &self,
        read: &PartitionRead,
        max_bytes: usize,
        at_least_one: bool,
        read_committed: bool,
    ) -> Result<ReadSlice, ErrorCode> {
        self.metrics.fetch_reads.add(1);
        let partition = self
            .partition(read.stream_id)
            .ok_or(ErrorCode::NotLeaderOrFollower)?;
        let offset = read.offset;
        let mut slice = match partition.read(offset, max_bytes, read_committed, &self.memory_pool) {
            Ok(slice) => slice,
            Err(ReadError::OffsetOutOfRange) => return Err(ErrorCode::OffsetOutOfRange),
            Err(ReadError::NotCached) => {
                self.metrics.fetch_cold_reads.add(1);
                self.read_cold(&partition, offset, max_bytes, read_committed)
                    .await?
            }
        };
        // Reads return at least one batch; one that does not fit waits for the next fetch.
        if !at_least_one {
            slice.keep_within(max_bytes);
        }
        self.count_read(&partition, &slice);
        Ok(slice)
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
            let upper =
                crate::partition::end_offset_of(&slice.records).unwrap_or(last_stable_offset);
            slice.aborted_transactions = partition.aborted_transactions(offset, upper);
        }
        Ok(slice)
    }

    /// Drops partitions that no longer exist and applies changed topic settings.
    pub fn apply_image(&self, image: &MetadataImage) {
        self.partitions.borrow_mut().retain(|stream_id, partition| {
            match image.stream(*stream_id) {
                Some((topic, part)) => {
                    partition.set_settings(settings_of(topic, image));
                    let _ = partition.advance_log_start(part.log_start_offset);
                    true
                }
                None => false,
            }
        });
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

    fn count_read(&self, partition: &Partition, slice: &ReadSlice) {
        let bytes = slice.records.len() as u64;
        self.metrics.fetch_bytes.add(bytes);
        partition.metrics.fetch_bytes.add(bytes);
    }

    /// The partition with `stream_id` if this shard owns it, created on first use.
    pub(crate) fn partition(&self, stream_id: u64) -> Option<Rc<Partition>> {
        if let Some(p) = self.partitions.borrow().get(&stream_id) {
            return Some(p.clone());
        }
        let image = self.image();
        let (topic, part) = image.stream(stream_id)?;
        if self.owner_of(part) != self.id {
            return None;
        }
        let partition = Rc::new(Partition::new(
            Rc::from(topic.name.as_str()),
            part.index,
            stream_id,
            part.log_start_offset,
            image
                .stream_end_offset_in_objects(stream_id)
                .unwrap_or(part.log_start_offset),
            settings_of(topic, &image),
        ));
        self.metrics.register_partition(&partition.metrics);
        self.partitions
            .borrow_mut()
            .insert(stream_id, partition.clone());
        Some(partition)
    }

    async fn delete_records(&self, partition: &Partition, offset: i64) -> Result<i64, ErrorCode> {
        let (high_watermark, _, _) = partition.offsets();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        self.controller
            .submit(MetadataCommand::SetLogStartOffset {
                topic: partition.topic.to_string(),
                partition: partition.index,
                offset: target,
            })
            .await
            .map_err(|e| crate::errors::controller_error_code(&e))?;
        partition.advance_log_start(target)
    }
}

/// The settings of `topic` that the order stage applies.
pub fn settings_of(topic: &TopicImage, image: &MetadataImage) -> PartitionSettings {
    let effective = sluice_metadata::effective_topic_config(&topic.configs, &image.broker_configs);
    PartitionSettings {
        log_append_time: effective.timestamp_type == sluice_metadata::TimestampType::LogAppendTime,
        max_message_bytes: effective.max_message_bytes.max(0) as usize,
        retention_ms: effective.retention_ms,
        retention_bytes: effective.retention_bytes,
    }
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
        MAX_TIMESTAMP => partition.max_timestamp_offset().unwrap_or((-1, -1)),
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
