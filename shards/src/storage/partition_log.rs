//! The in-memory log of one partition (the log cache): its recent batches, offsets and high
//! watermark. Batches that are in object storage may be evicted; reads below the first cached
//! batch are then served from objects.
//!
//! Owned by one shard and touched only from that shard's executor, so it needs no lock.

use std::collections::VecDeque;

use bytes::Bytes;
use sluice_metadata::UploadTime;

use crate::chunk_pool::ChunkPool;

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
    /// The offset is in the log but not in the cache: read it from object storage.
    NotCached,
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

impl ReadSlice {
    /// Keeps only the whole batches within the first `max_bytes` bytes of the records.
    pub fn keep_within(&mut self, max_bytes: usize) {
        if self.records.len() <= max_bytes {
            return;
        }
        let mut kept = 0;
        for batch in sluice_net::record_batch::batches(&self.records) {
            match batch {
                Ok(batch) if kept + batch.len() <= max_bytes => kept += batch.len(),
                _ => break,
            }
        }
        self.records.truncate(kept);
    }
}

/// The batches and offsets of one partition.
#[derive(Debug, Default)]
pub struct PartitionLog {
    batches: VecDeque<StoredBatch>,
    log_start_offset: i64,
    next_offset: i64,
    high_watermark: i64,
    bytes: u64,
    /// Offsets below this are in committed objects.
    uploaded_end: i64,
    /// Per upload: (end offset, largest timestamp of the uploaded records), oldest first; what
    /// time-based retention goes by.
    uploads: VecDeque<(i64, i64)>,
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

    /// A log whose offsets below `next_offset` are in object storage only (after a restart),
    /// written at `upload_times` (the metadata's record). Times recorded ahead of the objects
    /// (a crash between the record and the commit) come again with the next upload; objects
    /// without a time (written before times were recorded) are stamped `now_ms`, so
    /// time-based retention removes them late, never early.
    pub fn resumed(
        log_start_offset: i64,
        next_offset: i64,
        upload_times: &[UploadTime],
        now_ms: i64,
    ) -> PartitionLog {
        let next_offset = next_offset.max(log_start_offset);
        let mut uploads: VecDeque<(i64, i64)> = upload_times
            .iter()
            .filter(|t| t.end_offset > log_start_offset && t.end_offset <= next_offset)
            .map(|t| (t.end_offset, t.max_timestamp))
            .collect();
        if next_offset > uploads.back().map_or(log_start_offset, |u| u.0) {
            uploads.push_back((next_offset, now_ms));
        }
        PartitionLog {
            log_start_offset,
            next_offset,
            high_watermark: next_offset,
            uploaded_end: next_offset,
            uploads,
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

    /// Records that every offset below `offset` is in committed objects.
    pub fn mark_uploaded(&mut self, offset: i64) {
        if offset <= self.uploaded_end {
            return;
        }
        // None cached (none expected): never expire by time rather than at once.
        let max_timestamp = self.max_timestamp_to_upload(offset).unwrap_or(i64::MAX);
        self.uploads.push_back((offset, max_timestamp));
        self.uploaded_end = offset;
    }

    /// The largest timestamp of the cached batches from the end of the objects up to
    /// `end_offset`, if any is cached.
    pub fn max_timestamp_to_upload(&self, end_offset: i64) -> Option<i64> {
        let from = self.uploaded_end;
        let first = self.batches.partition_point(|b| b.last_offset < from);
        self.batches
            .range(first..)
            .take_while(|b| b.base_offset < end_offset)
            .map(|b| b.max_timestamp)
            .max()
    }

    /// The log start offset time-based retention asks for: the end of the last upload, in
    /// order, whose records are all older than `cutoff_ms`.
    pub fn expired_before(&self, cutoff_ms: i64) -> Option<i64> {
        self.uploads
            .iter()
            .take_while(|(_, max_timestamp)| *max_timestamp < cutoff_ms)
            .map(|(end, _)| *end)
            .last()
    }

    /// The start of the first upload, in order, holding a record at or after `timestamp`, if
    /// it lies below the first cached batch (a search by time must read objects from there).
    pub fn cold_search_start(&self, timestamp: i64) -> Option<i64> {
        let cache_start = self
            .batches
            .front()
            .map_or(self.next_offset, |b| b.base_offset);
        let mut start = self.log_start_offset;
        for &(end, max_timestamp) in &self.uploads {
            if end <= start {
                continue;
            }
            if start >= cache_start {
                return None;
            }
            if max_timestamp >= timestamp {
                return Some(start);
            }
            start = end;
        }
        None
    }

    /// The upload below the first cached batch holding the largest timestamp (the earliest
    /// of equals), as (its start offset, that timestamp): where ListOffsets MAX_TIMESTAMP must
    /// search objects. Uploads without a known time (i64::MAX) are passed over.
    pub fn max_timestamp_upload(&self) -> Option<(i64, i64)> {
        let cache_start = self
            .batches
            .front()
            .map_or(self.next_offset, |b| b.base_offset);
        let mut start = self.log_start_offset;
        let mut found: Option<(i64, i64)> = None;
        for &(end, max_timestamp) in &self.uploads {
            if end <= start {
                continue;
            }
            if start >= cache_start {
                break;
            }
            if max_timestamp != i64::MAX && found.is_none_or(|(_, best)| max_timestamp > best) {
                found = Some((start, max_timestamp));
            }
            start = end;
        }
        found
    }

    /// Bytes of cached batches that end at or after `offset`.
    pub fn cached_bytes_from(&self, offset: i64) -> u64 {
        let first = self.batches.partition_point(|b| b.last_offset < offset);
        self.batches
            .range(first..)
            .map(|b| b.data.len() as u64)
            .sum()
    }

    /// Drops the oldest batches that are in object storage until `bytes_to_free` bytes are
    /// freed or none is left to drop; returns the bytes freed.
    pub fn evict_uploaded(&mut self, bytes_to_free: u64) -> u64 {
        let mut freed = 0;
        while freed < bytes_to_free {
            match self.batches.front() {
                Some(first) if first.last_offset < self.uploaded_end => {
                    freed += first.data.len() as u64;
                    self.bytes -= first.data.len() as u64;
                    self.batches.pop_front();
                }
                _ => break,
            }
        }
        freed
    }

    /// Drops the cached batches below `offset` that are in object storage: the log cleaner
    /// rewrote the objects below it, and readers must see the cleaned records, not these.
    pub fn evict_cleaned(&mut self, offset: i64) {
        let end = offset.min(self.uploaded_end);
        while let Some(first) = self.batches.front() {
            if first.last_offset >= end {
                break;
            }
            self.bytes -= first.data.len() as u64;
            self.batches.pop_front();
        }
    }

    /// Bytes of cached batches that are also in object storage (the evictable ones).
    pub fn uploaded_cached_bytes(&self) -> u64 {
        self.batches
            .iter()
            .take_while(|b| b.last_offset < self.uploaded_end)
            .map(|b| b.data.len() as u64)
            .sum()
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
        while self
            .uploads
            .front()
            .is_some_and(|(end, _)| *end <= self.log_start_offset)
        {
            self.uploads.pop_front();
        }
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
    /// Several batches are joined in a chunk of `pool` (on the heap when it is short).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: i64,
        pool: &ChunkPool,
    ) -> Result<ReadSlice, ReadError> {
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
        let cache_start = self
            .batches
            .front()
            .map_or(self.next_offset, |b| b.base_offset);
        if offset < cache_start {
            return Err(ReadError::NotCached);
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
            _ => pool.concat(&chosen, total),
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

    fn pool() -> ChunkPool {
        ChunkPool::new(1 << 20)
    }

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
        assert_eq!(
            log.read(0, 1000, i64::MAX, &pool()).unwrap().records.len(),
            0
        );
        log.advance_high_watermark(10);
        assert_eq!(
            log.read(0, 1000, i64::MAX, &pool()).unwrap().records.len(),
            100
        );
        log.advance_high_watermark(20);
        assert_eq!(
            log.read(5, 1000, i64::MAX, &pool()).unwrap().records.len(),
            200
        );
        assert_eq!(
            log.read(5, 1, i64::MAX, &pool()).unwrap().records.len(),
            100
        );
        assert_eq!(
            log.read(20, 1000, i64::MAX, &pool()).unwrap().records.len(),
            0
        );
        assert_eq!(
            log.read(21, 1000, i64::MAX, &pool()),
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
            log.read(3, 1000, i64::MAX, &pool()),
            Err(ReadError::OffsetOutOfRange)
        );
        assert_eq!(
            log.read(15, 1000, i64::MAX, &pool()).unwrap().records.len(),
            100
        );
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
    fn only_uploaded_batches_are_evicted_and_reads_below_the_cache_go_cold() {
        let mut log = PartitionLog::new(0);
        log.append(batch(0, 10, 100));
        log.append(batch(10, 10, 100));
        log.advance_high_watermark(20);
        assert_eq!(log.evict_uploaded(1000), 0);
        log.mark_uploaded(10);
        assert_eq!(log.uploaded_cached_bytes(), 100);
        assert_eq!(log.evict_uploaded(1000), 100);
        assert_eq!(
            log.read(5, 1000, i64::MAX, &pool()),
            Err(ReadError::NotCached)
        );
        assert_eq!(
            log.read(10, 1000, i64::MAX, &pool()).unwrap().records.len(),
            100
        );
        let resumed = PartitionLog::resumed(0, 20, &[], 0);
        assert_eq!(resumed.high_watermark(), 20);
        assert_eq!(
            resumed.read(3, 1000, i64::MAX, &pool()),
            Err(ReadError::NotCached)
        );
        assert_eq!(
            resumed
                .read(20, 1000, i64::MAX, &pool())
                .unwrap()
                .records
                .len(),
            0
        );
    }

    #[test]
    fn time_retention_goes_by_uploads_in_order() {
        let mut log = PartitionLog::new(0);
        log.append(batch(0, 10, 100)); // max_timestamp 0
        log.append(batch(10, 10, 100)); // 10
        log.append(batch(20, 10, 100)); // 20
        log.advance_high_watermark(30);
        log.mark_uploaded(10);
        log.mark_uploaded(30);
        assert_eq!(log.expired_before(0), None);
        assert_eq!(log.expired_before(5), Some(10));
        assert_eq!(log.expired_before(21), Some(30));
        log.advance_log_start(10);
        assert_eq!(log.expired_before(5), None);
        assert_eq!(
            PartitionLog::resumed(0, 50, &[], 1000).expired_before(1001),
            Some(50)
        );
    }

    /// After a restart, retention goes by the times the metadata recorded, not the restart's.
    #[test]
    fn a_resumed_log_keeps_its_recorded_upload_times() {
        let time = |end_offset, max_timestamp| UploadTime {
            end_offset,
            max_timestamp,
        };
        // Below the log start, up to the objects' end, ahead of the objects (not committed).
        let times = [time(10, 100), time(30, 300), time(50, 500), time(70, 700)];
        let resumed = PartitionLog::resumed(10, 50, &times, 10_000);
        assert_eq!(resumed.expired_before(100), None);
        assert_eq!(resumed.expired_before(301), Some(30));
        assert_eq!(resumed.expired_before(501), Some(50));
        // Objects past the last recorded time (written before times were recorded) count from
        // the restart.
        let resumed = PartitionLog::resumed(0, 60, &times[..2], 10_000);
        assert_eq!(resumed.expired_before(9_999), Some(30));
        assert_eq!(resumed.expired_before(10_001), Some(60));
    }

    #[test]
    fn the_upload_with_the_largest_timestamp_is_the_earliest_of_equals_below_the_cache() {
        let time = |end_offset, max_timestamp| UploadTime {
            end_offset,
            max_timestamp,
        };
        let times = [
            time(10, 500),
            time(20, 900),
            time(30, 900),
            time(40, i64::MAX),
        ];
        let resumed = PartitionLog::resumed(5, 40, &times, 100);
        assert_eq!(resumed.max_timestamp_upload(), Some((10, 900)));
        assert_eq!(
            PartitionLog::resumed(0, 0, &[], 100).max_timestamp_upload(),
            None
        );
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
