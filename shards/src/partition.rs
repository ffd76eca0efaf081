//! One partition on its owner shard: the order and persist stages of the produce pipeline,
//! and the reads and long-poll waits of fetch.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use glommio::sync::Semaphore;
use sluice_net::ErrorCode;
use sluice_net::record_batch::RecordBatchHeader;
use sluice_wal::WalPosition;

use crate::partition_log::{PartitionLog, ReadError, ReadSlice, StoredBatch};
use crate::producer_state::{ProducerStateTable, SequenceVerdict};
use crate::shard_wal::ShardWal;

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
}

impl PendingAppend {
    /// Waits until the batch is durable, then makes it visible to consumers.
    pub async fn durable(self) -> Result<AppendOutcome, ErrorCode> {
        match self.position {
            Some(position) => {
                if let Err(error) = self.wal.wait_durable(position).await {
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
        Ok(self.outcome)
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
    settings: Cell<PartitionSettings>,
    // Offsets are assigned and WAL space reserved in one step per batch, so WAL order is
    // offset order even when a full WAL makes an append wait.
    order: Semaphore,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Partition {
    /// A partition whose log starts at `log_start_offset` and whose offsets below
    /// `objects_end_offset` are in object storage.
    pub fn new(
        topic: Rc<str>,
        index: u32,
        stream_id: u64,
        log_start_offset: i64,
        objects_end_offset: i64,
        settings: PartitionSettings,
    ) -> Partition {
        Partition {
            metrics: std::sync::Arc::new(crate::metrics::PartitionMetrics::new(&topic, index)),
            topic,
            index,
            stream_id,
            log: RefCell::new(PartitionLog::resumed(
                log_start_offset,
                objects_end_offset,
                now_ms(),
            )),
            producers: RefCell::new(ProducerStateTable::default()),
            settings: Cell::new(settings),
            order: Semaphore::new(1),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// Replaces the topic settings (after a config change).
    pub fn set_settings(&self, settings: PartitionSettings) {
        self.settings.set(settings);
    }

    /// Re-inserts a batch found in the WAL at start-up, with its producer state.
    pub fn recover(&self, data: Bytes) -> Result<(), sluice_net::record_batch::BatchError> {
        let header = RecordBatchHeader::parse(&data)?;
        let base_offset = header.base_offset();
        let last_offset = base_offset + i64::from(header.last_offset_delta());
        let max_timestamp = header.max_timestamp();
        let producer = (
            header.producer_id(),
            header.producer_epoch(),
            header.base_sequence(),
            header.records_count(),
        );
        self.log.borrow_mut().append_recovered(StoredBatch {
            base_offset,
            last_offset,
            max_timestamp,
            data,
        });
        let (producer_id, epoch, first_sequence, count) = producer;
        if producer_id >= 0 {
            self.producers.borrow_mut().record(
                producer_id,
                epoch,
                first_sequence,
                count,
                base_offset,
            );
        }
        Ok(())
    }

    /// The order stage: checks the producer's sequence, assigns offsets, patches the batch and
    /// queues it in the WAL. `batch` was validated (CRC, magic, size) by the parse stage.
    pub async fn order(
        self: &Rc<Self>,
        wal: &Rc<ShardWal>,
        batch: Bytes,
    ) -> Result<PendingAppend, ErrorCode> {
        let settings = self.settings.get();
        if batch.len() > settings.max_message_bytes {
            return Err(ErrorCode::MessageTooLarge);
        }
        let header = RecordBatchHeader::parse(&batch).map_err(|_| ErrorCode::CorruptMessage)?;
        let _turn = self
            .order
            .acquire_permit(1)
            .await
            .map_err(|_| ErrorCode::NotLeaderOrFollower)?;
        let idempotent = header.producer_id() >= 0;
        if idempotent {
            let verdict = self.producers.borrow().check(
                header.producer_id(),
                header.producer_epoch(),
                header.base_sequence(),
                header.records_count(),
            );
            match verdict {
                SequenceVerdict::Append => {}
                SequenceVerdict::Duplicate { base_offset } => {
                    let end_offset = base_offset + i64::from(header.last_offset_delta()) + 1;
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
                    });
                }
                SequenceVerdict::OutOfOrder => return Err(ErrorCode::OutOfOrderSequenceNumber),
                SequenceVerdict::StaleEpoch => return Err(ErrorCode::InvalidProducerEpoch),
            }
        }
        let base_offset = self.log.borrow().next_offset();
        let last_offset = base_offset + i64::from(header.last_offset_delta());
        // One copy per batch: it detaches the batch from the request frame (which the log
        // cache must not keep alive) and gives the patch a buffer of its own.
        let mut data = BytesMut::from(&batch[..]);
        sluice_net::record_batch::set_base_offset(&mut data, base_offset)
            .map_err(|_| ErrorCode::CorruptMessage)?;
        let mut log_append_time_ms = -1;
        let mut max_timestamp = header.max_timestamp();
        if settings.log_append_time {
            log_append_time_ms = now_ms();
            max_timestamp = log_append_time_ms;
            sluice_net::record_batch::set_max_timestamp(
                &mut data,
                sluice_net::record_batch::TimestampType::LogAppendTime,
                log_append_time_ms,
            )
            .map_err(|_| ErrorCode::CorruptMessage)?;
        }
        let data = data.freeze();
        let position = wal
            .append(self.stream_id, base_offset, last_offset, data.clone())
            .await
            .map_err(|error| {
                tracing::error!(%error, topic = %self.topic, partition = self.index, "WAL append failed");
                ErrorCode::KafkaStorageError
            })?;
        self.log.borrow_mut().append(StoredBatch {
            base_offset,
            last_offset,
            max_timestamp,
            data,
        });
        if idempotent {
            self.producers.borrow_mut().record(
                header.producer_id(),
                header.producer_epoch(),
                header.base_sequence(),
                header.records_count(),
                base_offset,
            );
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
        })
    }

    /// Reads whole batches from `offset` (see [`PartitionLog::read`]).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadSlice, ReadError> {
        self.log.borrow().read(offset, max_bytes, i64::MAX)
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

    /// Records that offsets below `offset` are in committed objects.
    pub fn mark_uploaded(&self, offset: i64) {
        self.log.borrow_mut().mark_uploaded(offset);
    }

    /// Drops cached batches that are in object storage, oldest first; returns the bytes freed.
    pub fn evict_uploaded(&self, bytes_to_free: u64) -> u64 {
        self.log.borrow_mut().evict_uploaded(bytes_to_free)
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

    /// Bytes of cached batches not in object storage yet.
    pub fn unuploaded_bytes(&self) -> u64 {
        self.log.borrow().unuploaded_bytes()
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

    /// The offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp_offset(&self) -> Option<(i64, i64)> {
        let log = self.log.borrow();
        let batch = log
            .visible_batches_from(log.log_start_offset())
            .max_by_key(|b| b.max_timestamp)?;
        Some((batch.last_offset, batch.max_timestamp))
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

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
