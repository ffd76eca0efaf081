//! The aborted transactions of one partition (Kafka's `.txnindex`): for each abort marker, the
//! producer and the offsets its transaction spans, so read_committed fetches can tell clients
//! which batches to drop.
//!
//! Entries are appended in marker order, so they are sorted by `last_offset`; they are dropped
//! with the log below the log start offset, so the index is bounded by the retained log.

use std::collections::VecDeque;

/// One aborted transaction on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose transaction was aborted.
    pub producer_id: i64,
    /// The transaction's first offset on this partition.
    pub first_offset: i64,
    /// The offset of its abort marker.
    pub last_offset: i64,
}

/// The aborted transactions of one partition, in marker order.
#[derive(Debug, Default)]
pub struct AbortedIndex {
    entries: VecDeque<AbortedTxn>,
}

impl AbortedIndex {
    /// Records an abort marker; markers come in offset order. At start-up a marker can be
    /// seen twice (its index entry, then its batch in the WAL): the second is ignored.
    pub fn push(&mut self, txn: AbortedTxn) {
        debug_assert!(txn.first_offset <= txn.last_offset);
        if self
            .entries
            .back()
            .is_some_and(|last| last.last_offset >= txn.last_offset)
        {
            return;
        }
        self.entries.push_back(txn);
    }

    /// The aborted transactions with data in `[from, upper)`: their marker is at or after
    /// `from` and they began before `upper` (Kafka's `collectAbortedTxns`).
    pub fn overlapping(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let first = self.entries.partition_point(|t| t.last_offset < from);
        self.entries
            .range(first..)
            .filter(|t| t.first_offset < upper)
            .copied()
            .collect()
    }

    /// Forgets transactions that ended below the log start offset.
    pub fn trim_below(&mut self, log_start_offset: i64) {
        while self
            .entries
            .front()
            .is_some_and(|t| t.last_offset < log_start_offset)
        {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aborted(producer_id: i64, first_offset: i64, last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset,
            last_offset,
        }
    }

    #[test]
    fn overlapping_returns_the_transactions_with_data_in_the_range() {
        let mut index = AbortedIndex::default();
        index.push(aborted(1, 0, 5));
        index.push(aborted(2, 3, 9));
        index.push(aborted(1, 10, 12));
        assert_eq!(index.overlapping(0, 3), vec![aborted(1, 0, 5)]);
        assert_eq!(
            index.overlapping(6, 100),
            vec![aborted(2, 3, 9), aborted(1, 10, 12)]
        );
        assert_eq!(index.overlapping(13, 100), Vec::new());
        index.trim_below(6);
        assert_eq!(
            index.overlapping(0, 100),
            vec![aborted(2, 3, 9), aborted(1, 10, 12)]
        );
        index.trim_below(13);
        assert_eq!(index.overlapping(0, 100), Vec::new());
    }
}
