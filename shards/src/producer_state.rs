//! Idempotent-producer state of one partition: the last batches of every producer id.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer for duplicate detection (Kafka's max.in.flight limit).
pub const BATCHES_REMEMBERED_PER_PRODUCER: usize = 5;

/// Producers remembered per partition; the least recently used is forgotten past this.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// What the sequence check decided for one incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// A new batch in order: append it.
    Append,
    /// The same batch was already appended at this base offset: answer with it, append nothing.
    Duplicate { base_offset: i64 },
    /// A gap or a reordering: OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder,
    /// The batch's epoch is older than the producer's current one: INVALID_PRODUCER_EPOCH.
    StaleEpoch,
}

/// One appended batch as the sequence check remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RememberedBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<RememberedBatch>,
    last_used: u64,
}

/// The sequence state of every producer that wrote to one partition.
#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

impl ProducerStateTable {
    /// Decides what to do with a batch of `record_count` records from (`producer_id`, `epoch`)
    /// starting at `first_sequence`. Nothing is recorded: call [`Self::record`] once appended.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        record_count: i32,
    ) -> SequenceVerdict {
        let Some(entry) = self.producers.get(&producer_id) else {
            // Kafka (since KIP-360) accepts an unknown producer at any sequence: its state may
            // have been expired by retention.
            return SequenceVerdict::Append;
        };
        if epoch < entry.epoch {
            return SequenceVerdict::StaleEpoch;
        }
        if epoch > entry.epoch {
            return if first_sequence == 0 {
                SequenceVerdict::Append
            } else {
                SequenceVerdict::OutOfOrder
            };
        }
        let last_sequence = last_sequence_of(first_sequence, record_count);
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
        {
            return SequenceVerdict::Duplicate {
                base_offset: seen.base_offset,
            };
        }
        match entry.batches.back() {
            Some(last) if next_sequence(last.last_sequence) != first_sequence => {
                SequenceVerdict::OutOfOrder
            }
            _ => SequenceVerdict::Append,
        }
    }

    /// Records an appended batch (also used when replaying the WAL at start-up).
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        record_count: i32,
        base_offset: i64,
    ) {
        self.clock += 1;
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.forget_least_recently_used();
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = epoch;
        }
        entry.last_used = self.clock;
        if entry.batches.len() == BATCHES_REMEMBERED_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(RememberedBatch {
            first_sequence,
            last_sequence: last_sequence_of(first_sequence, record_count),
            base_offset,
        });
    }

    /// Number of producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    fn forget_least_recently_used(&mut self) {
        if let Some((&oldest, _)) = self.producers.iter().min_by_key(|(_, e)| e.last_used) {
            self.producers.remove(&oldest);
        }
    }
}

/// Sequences wrap from i32::MAX to 0, as in Kafka.
fn last_sequence_of(first_sequence: i32, record_count: i32) -> i32 {
    let last = i64::from(first_sequence) + i64::from(record_count.max(1)) - 1;
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_batches_append_and_duplicates_answer_with_the_original_offset() {
        let mut table = ProducerStateTable::default();
        assert_eq!(table.check(7, 0, 0, 10), SequenceVerdict::Append);
        table.record(7, 0, 0, 10, 100);
        assert_eq!(table.check(7, 0, 10, 5), SequenceVerdict::Append);
        table.record(7, 0, 10, 5, 110);
        assert_eq!(
            table.check(7, 0, 0, 10),
            SequenceVerdict::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            table.check(7, 0, 10, 5),
            SequenceVerdict::Duplicate { base_offset: 110 }
        );
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut table = ProducerStateTable::default();
        table.record(1, 3, 0, 4, 0);
        assert_eq!(table.check(1, 3, 5, 1), SequenceVerdict::OutOfOrder);
        assert_eq!(table.check(1, 2, 4, 1), SequenceVerdict::StaleEpoch);
        assert_eq!(table.check(1, 4, 1, 1), SequenceVerdict::OutOfOrder);
        assert_eq!(table.check(1, 4, 0, 1), SequenceVerdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..7 {
            table.record(1, 0, i, 1, i64::from(i));
        }
        assert_eq!(table.check(1, 0, 0, 1), SequenceVerdict::OutOfOrder);
        assert_eq!(
            table.check(1, 0, 6, 1),
            SequenceVerdict::Duplicate { base_offset: 6 }
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut table = ProducerStateTable::default();
        table.record(1, 0, i32::MAX - 1, 2, 0);
        assert_eq!(table.check(1, 0, 0, 1), SequenceVerdict::Append);
    }
}
