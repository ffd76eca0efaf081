//! Kafka's rule for a fetch response's `max_bytes`, in one place: partitions are read in
//! request order, each within what the ones before it left (and its own
//! `partition_max_bytes`); only the first partition with data may go past it, by its first
//! batch, so an oversized batch cannot stall a consumer. Each owner shard applies it to its
//! own partitions, and the fetch handler again across owners.

use super::partition_log::ReadSlice;

/// What is left of a fetch response's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchBudget {
    left: usize,
    first_data: bool,
}

impl FetchBudget {
    /// A response of at most `max_bytes` (but for the first data).
    pub fn new(max_bytes: usize) -> FetchBudget {
        FetchBudget {
            left: max_bytes,
            first_data: true,
        }
    }

    /// The most the next partition should read, given its own limit.
    pub fn limit(&self, partition_max_bytes: usize) -> usize {
        partition_max_bytes.min(self.left)
    }

    /// Whether the next partition's read must return at least one batch (no data yet).
    pub fn at_least_one(&self) -> bool {
        self.first_data
    }

    /// Trims `slice` (the next partition's read) to whole batches within the budget unless it
    /// is the first data, and counts what is left.
    pub fn take(&mut self, slice: &mut ReadSlice, partition_max_bytes: usize) {
        if !self.first_data {
            slice.keep_within(self.limit(partition_max_bytes));
        }
        let len = slice.records.len();
        self.left = self.left.saturating_sub(len);
        if len > 0 {
            self.first_data = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use sluice_net::record_batch::{Compression, RecordBatchBuilder};

    /// `count` batches of one record of `value_bytes` each, concatenated.
    fn slice(count: usize, value_bytes: usize) -> (ReadSlice, usize) {
        let mut records = BytesMut::new();
        let mut batch_len = 0;
        for _ in 0..count {
            let mut builder = RecordBatchBuilder::new(Compression::None);
            builder.append(0, None, Some(&vec![b'x'; value_bytes]), &[]);
            let batch: Bytes = builder.build().expect("builds");
            batch_len = batch.len();
            records.extend_from_slice(&batch);
        }
        let slice = ReadSlice {
            records: records.freeze(),
            high_watermark: 0,
            log_start_offset: 0,
            last_stable_offset: 0,
            aborted_transactions: Vec::new(),
        };
        (slice, batch_len)
    }

    #[test]
    fn the_first_data_may_pass_the_budget_and_the_rest_fits_it() {
        let (mut big, batch) = slice(3, 1000);
        let mut budget = FetchBudget::new(batch);
        assert!(budget.at_least_one());
        let mut empty = slice(0, 0).0;
        budget.take(&mut empty, usize::MAX);
        assert!(budget.at_least_one(), "no data yet");
        budget.take(&mut big, usize::MAX);
        assert_eq!(big.records.len(), 3 * batch, "first data is kept whole");
        assert!(!budget.at_least_one());
        assert_eq!(budget.limit(usize::MAX), 0);
        let (mut next, _) = slice(2, 1000);
        budget.take(&mut next, usize::MAX);
        assert!(next.records.is_empty(), "nothing left for the next");
    }

    #[test]
    fn later_partitions_keep_whole_batches_within_both_limits() {
        let (mut first, batch) = slice(1, 100);
        let mut budget = FetchBudget::new(10 * batch);
        budget.take(&mut first, usize::MAX);
        let (mut second, _) = slice(5, 100);
        budget.take(&mut second, 2 * batch + 1);
        assert_eq!(second.records.len(), 2 * batch, "its own limit");
        let (mut third, _) = slice(9, 100);
        budget.take(&mut third, usize::MAX);
        assert_eq!(third.records.len(), 7 * batch, "what the others left");
    }
}
