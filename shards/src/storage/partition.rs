//! One partition on its owner shard: the order and persist stages of the produce pipeline,
//! transaction markers, and the reads and long-poll waits of fetch.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use sluice_metadata::{MetadataImage, ProducerSnapshot, ProducerStates, StreamUpload, UploadTime};
use sluice_net::ErrorCode;
use sluice_net::record_batch::RecordBatchHeader;
use sluice_wal::{WalError, WalPosition, WhenFull};

use super::turnstile::{Ticket, Turnstile};
use super::validated_batch::ValidatedBatch;
use crate::chunk_pool::{ChunkPool, PoolBuffer};
use crate::clock::now_ms;
use crate::storage::partition_log::{PartitionLog, ReadError, ReadSlice, StoredBatch};
use crate::storage::producer_state::{
    AppendedBatch, ProducerEvent, ProducerStateTable, ProducerView, SequenceVerdict,
};
use crate::storage::shard_wal::ShardWal;
use crate::txn::aborted_index::{AbortedIndex, AbortedTxn};
use crate::txn::marker::Marker;
use crate::txn::partition_index::{TxnIndexEntry, TxnIndexLog};

/// Waiters a partition holds before it sweeps out the cancelled ones; live waiters are
/// bounded by the connections' pipeline depth, so the list stays bounded.
const WAITERS_SWEEP_THRESHOLD: usize = 1024;

/// Topic settings the order stage applies to every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSettings {
    /// Stamp batches with the broker's clock (message.timestamp.type=LogAppendTime).
    pub log_append_time: bool,
    /// Largest batch accepted (max.message.bytes).
    pub max_message_bytes: usize,
    /// Records older than this many ms are deleted (retention.ms; negative: never).
    pub retention_ms: i64,
    /// The log is cut to about this many bytes (retention.bytes; negative: no limit).
    pub retention_bytes: i64,
    /// Every record needs a key (cleanup.policy has compact).
    pub keys_required: bool,
    /// Batches are stored compressed with this codec (compression.type; None: as the
    /// producer sent them).
    pub compression: Option<sluice_net::record_batch::Compression>,
    /// CreateTime records older than this many ms are refused
    /// (message.timestamp.before.max.ms; i64::MAX: no bound).
    pub timestamp_before_max_ms: i64,
    /// CreateTime records this many ms ahead of the broker's clock are refused
    /// (message.timestamp.after.max.ms; i64::MAX: no bound).
    pub timestamp_after_max_ms: i64,
    /// Uploaded no later than this (segment.ms, segment.bytes): an upload is Kafka's roll.
    pub roll: sluice_objstore::StreamRoll,
    /// Up to this much is taken from `roll.after`, differently for each partition
    /// (segment.jitter.ms), so that partitions created together do not all roll at once.
    pub roll_jitter_ms: u64,
}

/// The answer to one partition's part of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset given to the batch's first record.
    pub base_offset: i64,
    /// The broker's timestamp when LogAppendTime applies, else -1.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
}

/// A batch that has its offsets and a place in the WAL, waiting to become durable.
pub struct PendingAppend {
    partition: Rc<Partition>,
    wal: Rc<ShardWal>,
    position: Option<WalPosition>,
    outcome: AppendOutcome,
    end_offset: i64,
    ordered_at: Instant,
}

/// A batch made durable.
#[derive(Debug, Clone, Copy)]
pub struct Durable {
    /// The answer to its produce.
    pub outcome: AppendOutcome,
    /// When the WAL write holding it completed, before the sync that made it durable (the
    /// produce's `wal_write` and `sync` stages meet there); None for a duplicate, which wrote
    /// nothing.
    pub written_at: Option<Instant>,
}

impl PendingAppend {
    /// When the batch had its turn and its memory, and went to the WAL: the end of its order
    /// stage.
    pub fn ordered_at(&self) -> Instant {
        self.ordered_at
    }

    /// Waits until the batch is durable, then makes it visible to consumers.
    pub async fn durable(self) -> Result<Durable, ErrorCode> {
        let mut written_at = None;
        match self.position {
            Some(position) => {
                let durable = match self.wal.wait_written(position).await {
                    Ok(()) => {
                        written_at = Some(Instant::now());
                        self.wal.wait_durable(position).await
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = durable {
                    tracing::error!(%error, "WAL write failed");
                    return Err(ErrorCode::KafkaStorageError);
                }
                self.partition.advance_high_watermark(self.end_offset);
            }
            // A duplicate: wait until the original copy is durable.
            None => {
                self.partition
                    .wait_for_high_watermark(self.end_offset)
                    .await
            }
        }
        Ok(Durable {
            outcome: self.outcome,
            written_at,
        })
    }
}

/// A partition owned by this shard.
pub struct Partition {
    /// Topic name, for logs and errors.
    pub topic: Rc<str>,
    /// Partition index within the topic.
    pub index: u32,
    /// Cluster-unique stream id; the WAL's records name it.
    pub stream_id: u64,
    /// What the owner shard counts for this partition (read by the metrics exporter).
    pub metrics: std::sync::Arc<crate::metrics::PartitionMetrics>,
    log: RefCell<PartitionLog>,
    producers: RefCell<ProducerStateTable>,
    /// The producer-state changes of batches not in objects yet, in offset order: an upload
    /// records the state they lead to (see `producer_state.rs`). Bounded by the WAL, which
    /// holds their batches until they are uploaded.
    unuploaded_producer_events: RefCell<VecDeque<ProducerEvent>>,
    aborted: RefCell<AbortedIndex>,
    settings: Cell<PartitionSettings>,
    // Offsets are assigned and WAL space reserved in one step per batch, so WAL order is
    // offset order even when a full WAL makes an append wait; batches take their turns in
    // the order their requests arrived (tickets taken by the router).
    turnstile: Turnstile,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Moving to another broker (`partition_move.rs`): batches and markers that get their
    /// turn now are refused with NOT_LEADER_OR_FOLLOWER, and the client retries on the
    /// new leader.
    sealed: Cell<bool>,
}

/// Where a partition resumes from: what the metadata holds of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResumedFrom<'a> {
    /// Its log start offset.
    pub log_start_offset: i64,
    /// Its offsets below this are in object storage.
    pub objects_end_offset: i64,
    /// Its producers at the end of its objects.
    pub producers: Option<&'a ProducerStates>,
    /// When its uploads were written, oldest first.
    pub upload_times: &'a [UploadTime],
}

impl Partition {
    /// A partition resuming from `from`, with nothing of it in memory yet.
    pub fn new(
        topic: Rc<str>,
        index: u32,
        stream_id: u64,
        from: ResumedFrom,
        settings: PartitionSettings,
    ) -> Partition {
        Partition {
            metrics: std::sync::Arc::new(crate::metrics::PartitionMetrics::new(&topic, index)),
            topic,
            index,
            stream_id,
            log: RefCell::new(PartitionLog::resumed(
                from.log_start_offset,
                from.objects_end_offset,
                from.upload_times,
                now_ms(),
            )),
            producers: RefCell::new(
                from.producers
                    .map_or_else(ProducerStateTable::default, ProducerStateTable::restored),
            ),
            unuploaded_producer_events: RefCell::new(VecDeque::new()),
            aborted: RefCell::new(AbortedIndex::default()),
            settings: Cell::new(settings),
            turnstile: Turnstile::default(),
            waiters: RefCell::new(Vec::new()),
            sealed: Cell::new(false),
        }
    }

    /// Refuses every batch and marker that has not had its turn yet (a move away), until
    /// [`Partition::unseal`].
    pub fn seal(&self) {
        self.sealed.set(true);
    }

    /// Takes batches again (the move was cancelled).
    pub fn unseal(&self) {
        self.sealed.set(false);
    }

    /// Once sealed: waits until every batch that had its turn before the seal is durable,
    /// and returns the log end offset then, which nothing moves any more.
    pub async fn sealed_end_offset(&self) -> i64 {
        // Every earlier ticket has appended (or failed) when this one gets its turn.
        let _turn = self.turnstile.ticket().turn().await;
        let end = self.log.borrow().next_offset();
        self.wait_for_high_watermark(end).await;
        end
    }

    /// This partition's next place in the order stage: taken when a produce request arrives.
    pub fn ticket(&self) -> Ticket {
        self.turnstile.ticket()
    }

    /// Replaces the topic settings (after a config change).
    pub fn set_settings(&self, settings: PartitionSettings) {
        self.settings.set(settings);
    }

    /// Re-inserts a batch found in the WAL at start-up, with its producer and transaction state.
    pub fn recover(&self, data: Bytes) -> Result<(), sluice_net::record_batch::BatchError> {
        let header = RecordBatchHeader::parse(&data)?;
        let base_offset = header.base_offset();
        let last_offset = base_offset + i64::from(header.last_offset_delta());
        if last_offset < self.log.borrow().next_offset() {
            return Ok(()); // written twice: its state is recorded already
        }
        let max_timestamp = header.max_timestamp();
        let producer_id = header.producer_id();
        let epoch = header.producer_epoch();
        let control = header.is_control();
        let marker = control.then(|| crate::txn::marker::parse(&data)).flatten();
        let appended = AppendedBatch {
            producer_id,
            epoch,
            first_sequence: header.base_sequence(),
            record_count: header.records_count(),
            base_offset,
            max_timestamp,
            transactional: header.is_transactional(),
        };
        self.log.borrow_mut().append_recovered(StoredBatch {
            base_offset,
            last_offset,
            max_timestamp,
            data,
        });
        match marker {
            Some((commit, coordinator_epoch)) => self.record_marker(
                &Marker {
                    producer_id,
                    producer_epoch: epoch,
                    commit,
                    coordinator_epoch,
                },
                base_offset,
                max_timestamp,
                true,
            ),
            None if producer_id >= 0 && !control => {
                self.producers.borrow_mut().record(appended);
                self.unuploaded_producer_events
                    .borrow_mut()
                    .push_back(ProducerEvent::Batch(appended));
            }
            None => {}
        }
        Ok(())
    }

    /// The order stage: checks the producer's sequence, assigns offsets, patches the batch and
    /// queues it in the WAL. `batch` was validated (CRC, magic, size) by the parse stage.
    ///
    /// Batches are ordered in the order their calls reach the partition's FIFO permit, which
    /// is taken before the first await: callers keep a connection's batches in request order
    /// by calling this in that order from one task (see `router.rs`).
    pub async fn order(
        self: &Rc<Self>,
        wal: &Rc<ShardWal>,
        txn_index: &TxnIndexLog,
        memory_pool: &ChunkPool,
        ticket: Ticket,
        batch: ValidatedBatch,
    ) -> Result<PendingAppend, ErrorCode> {
        let settings = self.settings.get();
        // The WAL's limit too: a topic created before --wal-size was lowered may allow more.
        if batch.len() > settings.max_message_bytes.min(wal.batch_bytes_max()) {
            return Err(ErrorCode::MessageTooLarge);
        }
        if !settings.log_append_time {
            check_timestamps(&batch, &settings, now_ms())?;
        }
        if settings.keys_required {
            check_keys(&batch)?;
        }
        // Before the turn: recompressing is CPU work the partition's order need not wait for.
        let batch = match settings.compression {
            Some(compression) => batch.recompressed(compression)?,
            None => batch,
        };
        let header = batch.facts();
        let _turn = ticket.turn().await;
        if self.sealed.get() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let idempotent = header.producer_id >= 0;
        if idempotent {
            let verdict = self.producers.borrow().check(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.records_count,
                header.transactional,
            );
            match verdict {
                SequenceVerdict::Append => {}
                SequenceVerdict::Duplicate { base_offset } => {
                    let end_offset = base_offset + i64::from(header.last_offset_delta) + 1;
                    return Ok(PendingAppend {
                        partition: self.clone(),
                        wal: wal.clone(),
                        position: None,
                        outcome: AppendOutcome {
                            base_offset,
                            log_append_time_ms: -1,
                            log_start_offset: self.log.borrow().log_start_offset(),
                        },
                        end_offset,
                        // A duplicate takes no memory: its order stage ends at its turn.
                        ordered_at: Instant::now(),
                    });
                }
                SequenceVerdict::OutOfOrder => return Err(ErrorCode::OutOfOrderSequenceNumber),
                SequenceVerdict::StaleEpoch => return Err(ErrorCode::InvalidProducerEpoch),
                SequenceVerdict::TransactionOpen => return Err(ErrorCode::InvalidTxnState),
            }
        }
        let base_offset = self.log.borrow().next_offset();
        let last_offset = base_offset + i64::from(header.last_offset_delta);
        // One copy per batch: it detaches the batch from the request frame (which the log
        // cache must not keep alive) and gives the patch a buffer of its own, a chunk of the
        // shard's pool, so the log cache and the upload queue hold whole chunks (waiting here
        // while the pool is short is the back-pressure on producers). While no upload can
        // free the pool, a batch that does not fit is refused like one the WAL cannot take:
        // KAFKA_STORAGE_ERROR, no offset taken, and the client sends it again.
        let Some(mut data) = memory_pool
            .copy_unless_refused(batch.bytes(), || wal.refuses_space_waits())
            .await
        else {
            // Not an ERROR: the upload task's WARN or the stop says why.
            tracing::debug!(
                topic = %self.topic,
                partition = self.index,
                bytes = batch.len(),
                "append refused: memory pool short while uploads cannot free it"
            );
            return Err(ErrorCode::KafkaStorageError);
        };
        let ordered_at = Instant::now();
        let mut log_append_time_ms = -1;
        let mut max_timestamp = header.max_timestamp;
        if settings.log_append_time {
            log_append_time_ms = now_ms();
            max_timestamp = log_append_time_ms;
            sluice_net::record_batch::set_max_timestamp(
                data.as_mut(),
                sluice_net::record_batch::TimestampType::LogAppendTime,
                log_append_time_ms,
            )
            .map_err(|_| ErrorCode::CorruptMessage)?;
        }
        let mut position = self
            .append(wal, data, base_offset, last_offset, max_timestamp)
            .await?;
        if idempotent {
            let appended = AppendedBatch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                first_sequence: header.base_sequence,
                record_count: header.records_count,
                base_offset,
                max_timestamp,
                transactional: header.transactional,
            };
            let opened = self.producers.borrow_mut().record(appended);
            self.unuploaded_producer_events
                .borrow_mut()
                .push_back(ProducerEvent::Batch(appended));
            if opened {
                // Acked only once this is durable too: the batch may be uploaded and trimmed
                // from the WAL before its transaction ends.
                position = txn_index
                    .append(TxnIndexEntry::Begin {
                        stream_id: self.stream_id,
                        producer_id: header.producer_id,
                        producer_epoch: header.producer_epoch,
                        first_offset: base_offset,
                    })
                    .await?;
            }
        }
        Ok(PendingAppend {
            partition: self.clone(),
            wal: wal.clone(),
            position: Some(position),
            outcome: AppendOutcome {
                base_offset,
                log_append_time_ms,
                log_start_offset: self.log.borrow().log_start_offset(),
            },
            end_offset: last_offset + 1,
            ordered_at,
        })
    }

    /// Ends the producer's transaction on this partition: checks the marker's epochs, then
    /// orders and persists its control batch like a produced batch.
    pub async fn write_marker(
        self: &Rc<Self>,
        wal: &Rc<ShardWal>,
        txn_index: &TxnIndexLog,
        marker: Marker,
    ) -> Result<PendingAppend, ErrorCode> {
        let _turn = self.turnstile.ticket().turn().await;
        if self.sealed.get() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let ordered_at = Instant::now();
        self.producers.borrow().check_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.coordinator_epoch,
        )?;
        let timestamp_ms = now_ms();
        let offset = self.log.borrow().next_offset();
        let data = PoolBuffer::Heap(marker.batch(timestamp_ms).to_vec());
        // A refused marker is written again by its coordinator (txn/completion.rs).
        self.append(wal, data, offset, offset, timestamp_ms).await?;
        self.record_marker(&marker, offset, timestamp_ms, true);
        let position = txn_index
            .append(TxnIndexEntry::End {
                stream_id: self.stream_id,
                producer_id: marker.producer_id,
                producer_epoch: marker.producer_epoch,
                marker_offset: offset,
                coordinator_epoch: marker.coordinator_epoch,
                commit: marker.commit,
            })
            .await?;
        Ok(PendingAppend {
            partition: self.clone(),
            wal: wal.clone(),
            position: Some(position),
            outcome: AppendOutcome {
                base_offset: offset,
                log_append_time_ms: -1,
                log_start_offset: self.log.borrow().log_start_offset(),
            },
            end_offset: offset + 1,
            ordered_at,
        })
    }

    /// Reads whole batches from `offset` (see [`PartitionLog::read`]); read_committed reads stop
    /// at the last stable offset and name the aborted transactions among the batches returned.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
        pool: &ChunkPool,
    ) -> Result<ReadSlice, ReadError> {
        let last_stable_offset = self.last_stable_offset();
        let limit = if read_committed {
            last_stable_offset
        } else {
            i64::MAX
        };
        let mut slice = self.log.borrow().read(offset, max_bytes, limit, pool)?;
        slice.last_stable_offset = last_stable_offset;
        if read_committed && !slice.records.is_empty() {
            let upper = end_offset_of(&slice.records).unwrap_or(last_stable_offset);
            slice.aborted_transactions = self.aborted.borrow().overlapping(offset, upper);
        }
        Ok(slice)
    }

    /// The aborted transactions that overlap offsets `from..to`.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted.borrow().overlapping(from, to)
    }

    /// Everything below this offset is durable and no transaction is open in it.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.log.borrow().high_watermark();
        self.producers
            .borrow()
            .first_unstable_offset()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// The producers this partition remembers (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerView> {
        self.producers.borrow().producers().collect()
    }

    /// High watermark, log start offset and log end offset.
    pub fn offsets(&self) -> (i64, i64, i64) {
        let log = self.log.borrow();
        (
            log.high_watermark(),
            log.log_start_offset(),
            log.next_offset(),
        )
    }

    /// Bytes held by this partition's log cache.
    pub fn size_bytes(&self) -> u64 {
        self.log.borrow().size_bytes()
    }

    /// The largest timestamp of the batches from the end of the objects up to `end_offset`,
    /// or now when none is cached: what an upload of them records.
    fn max_timestamp_to_upload(&self, end_offset: i64) -> i64 {
        self.log
            .borrow()
            .max_timestamp_to_upload(end_offset)
            .unwrap_or_else(now_ms)
    }

    /// Records that offsets below `offset` are in committed objects (and the state of their
    /// producers in the metadata).
    pub fn mark_uploaded(&self, offset: i64) {
        self.log.borrow_mut().mark_uploaded(offset);
        let mut events = self.unuploaded_producer_events.borrow_mut();
        while events.front().is_some_and(|e| e.offset() < offset) {
            events.pop_front();
        }
    }

    /// Drops cached batches that are in object storage, oldest first; returns the bytes freed.
    pub fn evict_uploaded(&self, bytes_to_free: u64) -> u64 {
        self.log.borrow_mut().evict_uploaded(bytes_to_free)
    }

    /// Drops cached batches below the log cleaner's mark `offset` (see
    /// [`PartitionLog::evict_cleaned`]).
    pub fn evict_cleaned(&self, offset: i64) {
        self.log.borrow_mut().evict_cleaned(offset);
    }

    /// The topic settings in force.
    pub fn settings(&self) -> PartitionSettings {
        self.settings.get()
    }

    /// Where time-based retention would move the log start (see
    /// [`PartitionLog::expired_before`]).
    pub fn expired_before(&self, cutoff_ms: i64) -> Option<i64> {
        self.log.borrow().expired_before(cutoff_ms)
    }

    /// Bytes of cached batches from `offset` on.
    pub fn cached_bytes_from(&self, offset: i64) -> u64 {
        self.log.borrow().cached_bytes_from(offset)
    }

    /// Bytes of cached batches that could be evicted.
    pub fn uploaded_cached_bytes(&self) -> u64 {
        self.log.borrow().uploaded_cached_bytes()
    }

    /// The offset of the first cached record whose timestamp is at least `timestamp`, with
    /// that record's timestamp; `None` when no cached record is that late.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Option<(i64, i64)> {
        let log = self.log.borrow();
        let start = log.log_start_offset();
        log.visible_batches_from(start).find_map(|batch| {
            (batch.max_timestamp >= timestamp)
                .then(|| record_at_or_after(&batch.data, timestamp, start))
                .flatten()
        })
    }

    /// Where a search by timestamp must begin in object storage (the start of the first
    /// upload holding a record that late), when that lies below the log cache.
    pub fn cold_search_start(&self, timestamp: i64) -> Option<i64> {
        self.log.borrow().cold_search_start(timestamp)
    }

    /// The offset and timestamp of the first cached record with the largest timestamp of the
    /// cached records.
    pub fn max_timestamp_offset(&self) -> Option<(i64, i64)> {
        let log = self.log.borrow();
        let start = log.log_start_offset();
        let batch =
            log.visible_batches_from(start)
                .fold(None::<&StoredBatch>, |best, b| match best {
                    Some(best) if best.max_timestamp >= b.max_timestamp => Some(best),
                    _ => Some(b),
                })?;
        record_at_or_after(&batch.data, batch.max_timestamp, start)
    }

    /// Where the largest timestamp below the log cache is, if any: (the start of the upload
    /// holding it, the timestamp) (see [`PartitionLog::max_timestamp_upload`]).
    pub fn max_timestamp_upload(&self) -> Option<(i64, i64)> {
        self.log.borrow().max_timestamp_upload()
    }

    /// Moves the log start forward; refuses offsets above the high watermark.
    pub fn advance_log_start(&self, offset: i64) -> Result<i64, ErrorCode> {
        let mut log = self.log.borrow_mut();
        let target = if offset == -1 {
            log.high_watermark()
        } else {
            offset
        };
        if target > log.high_watermark() || target < 0 {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        log.advance_log_start(target);
        self.aborted.borrow_mut().trim_below(log.log_start_offset());
        Ok(log.log_start_offset())
    }

    /// Resolves once the high watermark passes `offset`, or after `wait`.
    pub async fn wait_for_data(&self, offset: i64, wait: Duration) {
        if self.log.borrow().high_watermark() > offset {
            return;
        }
        let receiver = self.register_waiter();
        let _ = glommio::timer::timeout(wait, async move {
            let _ = receiver.await;
            Ok(())
        })
        .await;
    }

    async fn wait_for_high_watermark(&self, offset: i64) {
        while self.log.borrow().high_watermark() < offset {
            let _ = self.register_waiter().await;
        }
    }

    fn register_waiter(&self) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        let mut waiters = self.waiters.borrow_mut();
        if waiters.len() >= WAITERS_SWEEP_THRESHOLD {
            waiters.retain(|w| !w.is_canceled());
        }
        waiters.push(sender);
        receiver
    }

    /// Patches `data` to `base_offset`, queues it in the WAL and appends it to the log: offsets
    /// are assigned and WAL space reserved in one step (the caller holds the order permit).
    /// While no upload can make room in a full WAL, the append is refused (KAFKA_STORAGE_ERROR)
    /// and takes no offset: a client sends a produce again, a coordinator its marker.
    async fn append(
        &self,
        wal: &ShardWal,
        mut data: PoolBuffer,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
    ) -> Result<WalPosition, ErrorCode> {
        sluice_net::record_batch::set_base_offset(data.as_mut(), base_offset)
            .map_err(|_| ErrorCode::CorruptMessage)?;
        let data = data.freeze();
        // Every batch here passed validation (produced) or was built here (markers), so its
        // stored CRC holds and the WAL's checksum needs no second pass over it.
        let crc = sluice_net::record_batch::whole_batch_crc32c(&data);
        let position = wal
            .append_with_crc(
                self.stream_id,
                base_offset,
                last_offset,
                data.clone(),
                crc,
                WhenFull::WaitUnlessRefused,
            )
            .await
            .map_err(|error| {
                if matches!(error, WalError::Full { .. }) {
                    // Not an ERROR: the upload task's WARN or the stop says why.
                    tracing::debug!(%error, topic = %self.topic, partition = self.index, "append refused: WAL full");
                } else {
                    tracing::error!(%error, topic = %self.topic, partition = self.index, "WAL append failed");
                }
                ErrorCode::KafkaStorageError
            })?;
        self.log.borrow_mut().append(StoredBatch {
            base_offset,
            last_offset,
            max_timestamp,
            data,
        });
        Ok(position)
    }

    /// Applies an appended marker to the producer state and, for an abort of a transaction
    /// that wrote here, to the aborted index; `in_log` for a marker of this partition's
    /// log (not one the transaction index names), whose change an upload records.
    fn record_marker(&self, marker: &Marker, offset: i64, timestamp_ms: i64, in_log: bool) {
        let first_offset = self.producers.borrow_mut().record_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.coordinator_epoch,
            timestamp_ms,
            offset,
        );
        if in_log {
            self.unuploaded_producer_events
                .borrow_mut()
                .push_back(ProducerEvent::Marker {
                    producer_id: marker.producer_id,
                    epoch: marker.producer_epoch,
                    coordinator_epoch: marker.coordinator_epoch,
                    timestamp: timestamp_ms,
                    offset,
                });
        }
        if let Some(first_offset) = first_offset
            && !marker.commit
        {
            self.aborted.borrow_mut().push(AbortedTxn {
                producer_id: marker.producer_id,
                first_offset,
                last_offset: offset,
            });
        }
    }

    /// Applies a transaction-index entry found at start-up (its data may be in objects only).
    pub fn apply_txn_index(&self, entry: TxnIndexEntry) {
        match entry {
            TxnIndexEntry::Begin {
                producer_id,
                producer_epoch,
                first_offset,
                ..
            } => self.producers.borrow_mut().open_transaction(
                producer_id,
                producer_epoch,
                first_offset,
            ),
            TxnIndexEntry::End {
                producer_id,
                producer_epoch,
                marker_offset,
                coordinator_epoch,
                commit,
                ..
            } => self.record_marker(
                &Marker {
                    producer_id,
                    producer_epoch,
                    commit,
                    coordinator_epoch,
                },
                marker_offset,
                now_ms(),
                false,
            ),
        }
    }

    /// What an upload of this partition up to `end_offset` records of it: its largest
    /// timestamp there and its producers' state, on top of what `image` holds.
    pub fn stream_upload(&self, end_offset: i64, image: &MetadataImage) -> StreamUpload {
        StreamUpload {
            stream_id: self.stream_id,
            end_offset,
            max_timestamp: self.max_timestamp_to_upload(end_offset),
            producers: self
                .producer_states_until(end_offset, image.producer_states(self.stream_id)),
        }
    }

    /// The state of the producers that wrote below `end_offset` since the last upload, on top
    /// of `before` (the metadata's record as of the objects' end): what an upload of this
    /// partition up to `end_offset` records.
    fn producer_states_until(
        &self,
        end_offset: i64,
        before: Option<&ProducerStates>,
    ) -> Vec<ProducerSnapshot> {
        let events = self.unuploaded_producer_events.borrow();
        crate::storage::producer_state::states_at(
            before,
            events.iter().take_while(|e| e.offset() < end_offset),
        )
    }

    fn advance_high_watermark(&self, offset: i64) {
        let moved = {
            let mut log = self.log.borrow_mut();
            let before = log.high_watermark();
            log.advance_high_watermark(offset);
            log.high_watermark() > before
        };
        if moved {
            for waiter in self.waiters.borrow_mut().drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// The first record of `batch` (whole, base offset patched) at or after `timestamp` and at or
/// above offset `start`, with its timestamp. A batch whose records cannot be decoded answers
/// with its base offset.
pub fn record_at_or_after(batch: &Bytes, timestamp: i64, start: i64) -> Option<(i64, i64)> {
    let header = RecordBatchHeader::parse(batch).ok()?;
    if header.max_timestamp() < timestamp {
        return None;
    }
    let Ok(records) =
        sluice_net::record_batch::decode_records(batch, crate::DECOMPRESSED_BATCH_BYTES_MAX)
    else {
        return Some((header.base_offset(), header.max_timestamp()));
    };
    let log_append_time =
        header.timestamp_type() == sluice_net::record_batch::TimestampType::LogAppendTime;
    records.iter().find_map(|record| {
        let record_timestamp = if log_append_time {
            header.max_timestamp()
        } else {
            header.base_timestamp() + record.timestamp_delta
        };
        let offset = header.base_offset() + i64::from(record.offset_delta);
        (record_timestamp >= timestamp && offset >= start).then_some((offset, record_timestamp))
    })
}

/// A compacted topic keeps the latest record per key: Kafka refuses a record without one
/// (INVALID_RECORD, "Compacted topic cannot accept message without key").
fn check_keys(batch: &ValidatedBatch) -> Result<(), ErrorCode> {
    let records = sluice_net::record_batch::decode_records(
        batch.bytes(),
        crate::DECOMPRESSED_BATCH_BYTES_MAX,
    )
    .map_err(|_| ErrorCode::CorruptMessage)?;
    if records.iter().any(|r| r.key.is_none()) {
        return Err(ErrorCode::InvalidRecord);
    }
    Ok(())
}

/// Kafka's timestamp bounds for CreateTime records (KIP-937): INVALID_TIMESTAMP when a record
/// is more than `timestamp_before_max_ms` older or `timestamp_after_max_ms` newer than `now`.
/// The batch header bounds the newest record; the oldest needs the records decoded, which
/// only a finite `timestamp_before_max_ms` asks for.
fn check_timestamps(
    batch: &ValidatedBatch,
    settings: &PartitionSettings,
    now: i64,
) -> Result<(), ErrorCode> {
    if settings.timestamp_after_max_ms != i64::MAX
        && batch.facts().max_timestamp > now.saturating_add(settings.timestamp_after_max_ms)
    {
        return Err(ErrorCode::InvalidTimestamp);
    }
    if settings.timestamp_before_max_ms != i64::MAX {
        let oldest_allowed = now.saturating_sub(settings.timestamp_before_max_ms);
        let header =
            RecordBatchHeader::parse(batch.bytes()).map_err(|_| ErrorCode::CorruptMessage)?;
        let records = sluice_net::record_batch::decode_records(
            batch.bytes(),
            crate::DECOMPRESSED_BATCH_BYTES_MAX,
        )
        .map_err(|_| ErrorCode::CorruptMessage)?;
        if records
            .iter()
            .any(|r| header.base_timestamp().saturating_add(r.timestamp_delta) < oldest_allowed)
        {
            return Err(ErrorCode::InvalidTimestamp);
        }
    }
    Ok(())
}

/// The offset after the last batch of `records` (whole batches, as reads return them).
pub(crate) fn end_offset_of(records: &Bytes) -> Option<i64> {
    sluice_net::record_batch::batches(records)
        .filter_map(Result::ok)
        .last()
        .and_then(|batch| {
            let header = RecordBatchHeader::parse(&batch).ok()?;
            Some(header.base_offset() + i64::from(header.last_offset_delta()) + 1)
        })
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn settings() -> PartitionSettings {
        PartitionSettings {
            log_append_time: false,
            max_message_bytes: 1 << 20,
            retention_ms: -1,
            retention_bytes: -1,
            keys_required: false,
            compression: None,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            roll: sluice_objstore::StreamRoll::NONE,
            roll_jitter_ms: 0,
        }
    }

    #[test]
    fn create_time_bounds_refuse_records_too_old_or_too_new() {
        let mut builder = sluice_net::record_batch::RecordBatchBuilder::new(
            sluice_net::record_batch::Compression::None,
        );
        // The oldest record is not the first: the bound needs every record.
        builder.append(1_000, None, Some(b"a"), &[]);
        builder.append(500, None, Some(b"b"), &[]);
        let batch = ValidatedBatch::validate(false, Some(builder.build().unwrap())).unwrap();
        let bounded = |before, after| PartitionSettings {
            timestamp_before_max_ms: before,
            timestamp_after_max_ms: after,
            ..settings()
        };
        assert_eq!(check_timestamps(&batch, &settings(), 1_000_000), Ok(()));
        assert_eq!(check_timestamps(&batch, &bounded(500, 0), 1_000), Ok(()));
        assert_eq!(
            check_timestamps(&batch, &bounded(499, i64::MAX), 1_000),
            Err(ErrorCode::InvalidTimestamp)
        );
        assert_eq!(
            check_timestamps(&batch, &bounded(i64::MAX, 99), 900),
            Err(ErrorCode::InvalidTimestamp)
        );
    }

    #[test]
    fn compacted_topics_refuse_records_without_a_key() {
        let batch = |key: Option<&[u8]>| {
            let mut builder = sluice_net::record_batch::RecordBatchBuilder::new(
                sluice_net::record_batch::Compression::Lz4,
            );
            builder.append(1, Some(b"k"), Some(b"a"), &[]);
            builder.append(2, key, Some(b"b"), &[]);
            ValidatedBatch::validate(false, Some(builder.build().unwrap())).unwrap()
        };
        assert_eq!(check_keys(&batch(Some(b"k2"))), Ok(()));
        assert_eq!(check_keys(&batch(None)), Err(ErrorCode::InvalidRecord));
    }

    /// A one-record transactional batch of `producer_id` at `offset`, as the WAL holds it.
    fn transactional(producer_id: i64, sequence: i32, offset: i64) -> Bytes {
        let mut builder = sluice_net::record_batch::RecordBatchBuilder::new(
            sluice_net::record_batch::Compression::None,
        )
        .base_offset(offset)
        .producer(producer_id, 0, sequence)
        .transactional(true);
        builder.append(0, None, Some(b"v"), &[]);
        builder.build().unwrap()
    }

    fn marker(producer_id: i64, commit: bool, offset: i64) -> Bytes {
        let batch = Marker {
            producer_id,
            producer_epoch: 0,
            commit,
            coordinator_epoch: 0,
        }
        .batch(0);
        let mut data = BytesMut::from(&batch[..]);
        sluice_net::record_batch::set_base_offset(&mut data, offset).unwrap();
        data.freeze()
    }

    #[test]
    fn replayed_transactions_rebuild_the_last_stable_offset_and_the_aborted_ranges() {
        let partition = Partition::new(Rc::from("t"), 0, 1, ResumedFrom::default(), settings());
        partition.recover(transactional(1, 0, 0)).unwrap();
        partition.recover(transactional(2, 0, 1)).unwrap();
        partition.recover(transactional(1, 1, 2)).unwrap();
        partition.recover(marker(1, false, 3)).unwrap();
        assert_eq!(
            partition.last_stable_offset(),
            1,
            "producer 2 is still open"
        );
        let open = partition
            .read(0, 1 << 20, true, &ChunkPool::new(1 << 20))
            .unwrap();
        assert!(!open.records.is_empty(), "offset 0 is stable");
        assert_eq!(
            open.aborted_transactions,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 3
            }]
        );
        partition.recover(marker(2, true, 4)).unwrap();
        assert_eq!(partition.last_stable_offset(), 5);
        // Replayed twice (a WAL record written again): nothing reopens.
        partition.recover(transactional(2, 0, 1)).unwrap();
        assert_eq!(partition.last_stable_offset(), 5);
        let uncommitted = partition
            .read(0, 1 << 20, false, &ChunkPool::new(1 << 20))
            .unwrap();
        assert!(uncommitted.aborted_transactions.is_empty());
    }
}
