//! The in-memory log of one partition: its batches, offsets and high watermark.
//!
//! Owned by one shard and touched only from that shard's executor, so it needs no lock.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// One stored record batch with the figures the read paths need without parsing it again.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
    /// Largest timestamp in the batch (after LogAppendTime was applied).
    pub max_timestamp: i64,
    /// The whole batch as it goes on the wire, base offset patched.
    pub data: Bytes,
}

/// Why a read was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The offset lies below the log start or above the high watermark.
    OffsetOutOfRange,
}

/// What a read returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadSlice {
    /// Whole batches concatenated, or empty.
    pub records: Bytes,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Last stable offset at the time of the read (the partition fills it in).
    pub last_stable_offset: i64,
    /// Aborted transactions among the batches returned, for read_committed reads.
    pub aborted_transactions: Vec<crate::txn::aborted_index::AbortedTxn>,
}

/// The batches and offsets of one partition.
#[derive(Debug, Default)]
pub struct PartitionLog {
    batches: VecDeque<StoredBatch>,
    log_start_offset: i64,
    next_offset: i64,
    high_watermark: i64,
    bytes: u64,
}

impl PartitionLog {
    /// An empty log whose first offset is `log_start_offset`.
    pub fn new(log_start_offset: i64) -> PartitionLog {
        PartitionLog {
            log_start_offset,
            next_offset: log_start_offset,
            high_watermark: log_start_offset,
            ..PartitionLog::default()
        }
    }

    /// Offset the next appended record gets (the log end offset).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Everything below this offset is durable and visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The first offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Bytes of batch data held.
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a batch whose base offset must equal [`Self::next_offset`]; it stays
    /// invisible until [`Self::advance_high_watermark`] passes it.
    pub fn append(&mut self, batch: StoredBatch) {
        assert_eq!(
            batch.base_offset, self.next_offset,
            "batches must be appended at the log end"
        );
        assert!(batch.last_offset >= batch.base_offset);
        self.next_offset = batch.last_offset + 1;
        self.bytes += batch.data.len() as u64;
        self.batches.push_back(batch);
    }

    /// Appends a batch found in the WAL at start-up: it is durable already. Batches at or below
    /// the current end (written twice) are skipped; a gap moves the log forward.
    pub fn append_recovered(&mut self, batch: StoredBatch) {
        if batch.last_offset < self.next_offset {
            return;
        }
        if batch.base_offset > self.next_offset && self.batches.is_empty() {
            self.log_start_offset = self.log_start_offset.max(batch.base_offset);
        }
        self.next_offset = batch.base_offset;
        self.append(batch);
        self.high_watermark = self.next_offset;
    }

    /// Makes every offset below `offset` visible; never moves backwards.
    pub fn advance_high_watermark(&mut self, offset: i64) {
        debug_assert!(offset <= self.next_offset);
        self.high_watermark = self.high_watermark.max(offset.min(self.next_offset));
    }

    /// Takes back the batches above `offset` that never became durable (a failed WAL write).
    pub fn truncate_to(&mut self, offset: i64) {
        while let Some(last) = self.batches.back() {
            if last.base_offset < offset {
                break;
            }
            self.bytes -= last.data.len() as u64;
            self.batches.pop_back();
        }
        self.next_offset = offset.max(self.high_watermark);
    }

    /// Moves the log start forward (DeleteRecords, retention) and drops whole batches below it.
    pub fn advance_log_start(&mut self, offset: i64) {
        if offset <= self.log_start_offset {
            return;
        }
        self.log_start_offset = offset.min(self.high_watermark);
        while let Some(first) = self.batches.front() {
            if first.last_offset >= self.log_start_offset {
                break;
            }
            self.bytes -= first.data.len() as u64;
            self.batches.pop_front();
        }
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes` — but at least one
    /// batch, however large, as Kafka does — and never past `limit` (the high watermark or LSO).
    pub fn read(&self, offset: i64, max_bytes: usize, limit: i64) -> Result<ReadSlice, ReadError> {
        let mut slice = ReadSlice {
            records: Bytes::new(),
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            last_stable_offset: self.high_watermark,
            aborted_transactions: Vec::new(),
        };
        if offset < self.log_start_offset || offset > self.high_watermark {
            return Err(ReadError::OffsetOutOfRange);
        }
        let limit = limit.min(self.high_watermark);
        let first = self.batches.partition_point(|b| b.last_offset < offset);
        let mut chosen: Vec<&Bytes> = Vec::new();
        let mut total = 0usize;
        for batch in self.batches.range(first..) {
            if batch.last_offset >= limit {
                break;
            }
            if !chosen.is_empty() && total + batch.data.len() > max_bytes {
                break;
            }
            total += batch.data.len();
            chosen.push(&batch.data);
            if total >= max_bytes {
                break;
            }
        }
        slice.records = match chosen.len() {
            0 => Bytes::new(),
            1 => chosen[0].clone(),
            _ => {
                let mut out = BytesMut::with_capacity(total);
                for data in chosen {
                    out.extend_from_slice(data);
                }
                out.freeze()
            }
        };
        Ok(slice)
    }

    /// The batches holding offsets from `offset` on, visible ones only (for ListOffsets by time).
    pub fn visible_batches_from(&self, offset: i64) -> impl Iterator<Item = &StoredBatch> {
        let first = self.batches.partition_point(|b| b.last_offset < offset);
        let hw = self.high_watermark;
        self.batches
            .range(first..)
            .take_while(move |b| b.last_offset < hw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, count: i64, len: usize) -> StoredBatch {
        StoredBatch {
            base_offset: base,
            last_offset: base + count - 1,
            max_timestamp: base,
            data: Bytes::from(vec![base as u8; len]),
        }
    }

    #[test]
    fn reads_stop_at_the_high_watermark_and_return_at_least_one_batch() {
        let mut log = PartitionLog::new(0);
        log.append(batch(0, 10, 100));
        log.append(batch(10, 10, 100));
        assert_eq!(log.read(0, 1000, i64::MAX).unwrap().records.len(), 0);
        log.advance_high_watermark(10);
        assert_eq!(log.read(0, 1000, i64::MAX).unwrap().records.len(), 100);
        log.advance_high_watermark(20);
        assert_eq!(log.read(5, 1000, i64::MAX).unwrap().records.len(), 200);
        assert_eq!(log.read(5, 1, i64::MAX).unwrap().records.len(), 100);
        assert_eq!(log.read(20, 1000, i64::MAX).unwrap().records.len(), 0);
        assert_eq!(
            log.read(21, 1000, i64::MAX),
            Err(ReadError::OffsetOutOfRange)
        );
    }

    #[test]
    fn log_start_drops_whole_batches_below_it() {
        let mut log = PartitionLog::new(0);
        log.append(batch(0, 10, 100));
        log.append(batch(10, 10, 100));
        log.advance_high_watermark(20);
        log.advance_log_start(15);
        assert_eq!(log.log_start_offset(), 15);
        assert_eq!(log.size_bytes(), 100);
        assert_eq!(
            log.read(3, 1000, i64::MAX),
            Err(ReadError::OffsetOutOfRange)
        );
        assert_eq!(log.read(15, 1000, i64::MAX).unwrap().records.len(), 100);
    }

    #[test]
    fn truncation_takes_back_undurable_batches() {
        let mut log = PartitionLog::new(0);
        log.append(batch(0, 10, 100));
        log.advance_high_watermark(10);
        log.append(batch(10, 10, 100));
        log.truncate_to(10);
        assert_eq!(log.next_offset(), 10);
        assert_eq!(log.size_bytes(), 100);
    }

    #[test]
    fn recovered_batches_skip_repeats() {
        let mut log = PartitionLog::new(0);
        log.append_recovered(batch(0, 10, 100));
        log.append_recovered(batch(0, 10, 100));
        log.append_recovered(batch(10, 5, 100));
        assert_eq!(log.high_watermark(), 15);
        assert_eq!(log.size_bytes(), 200);
    }
}
