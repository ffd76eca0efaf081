//! Producer state of one partition: the last batches of every producer id (idempotence), its
//! epoch, and the first offset of its open transaction (the last stable offset is the lowest).

use std::collections::{BTreeSet, HashMap, VecDeque};

use sluice_net::ErrorCode;

/// Batches remembered per producer for duplicate detection (Kafka's max.in.flight limit).
pub const BATCHES_REMEMBERED_PER_PRODUCER: usize = 5;

/// Producers remembered per partition; the least recently used is forgotten past this. A
/// producer with an open transaction is never forgotten (its first offset holds the last stable
/// offset back); open transactions are bounded by the transactional ids, which expire.
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
    /// A non-transactional batch from a producer with an open transaction: INVALID_TXN_STATE.
    TransactionOpen,
}

/// One appended data batch, as the producer state records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedBatch {
    /// Producer id of the batch.
    pub producer_id: i64,
    /// Producer epoch of the batch.
    pub epoch: i16,
    /// Sequence of the batch's first record.
    pub first_sequence: i32,
    /// Records in the batch.
    pub record_count: i32,
    /// Offset given to the batch's first record.
    pub base_offset: i64,
    /// Largest timestamp of the batch.
    pub max_timestamp: i64,
    /// The batch belongs to a transaction.
    pub transactional: bool,
}

/// What DescribeProducers reports of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    /// Producer id.
    pub producer_id: i64,
    /// Current epoch.
    pub epoch: i16,
    /// Sequence of the last record appended, or -1.
    pub last_sequence: i32,
    /// Timestamp of the last batch or marker, or -1.
    pub last_timestamp: i64,
    /// Coordinator epoch of the last marker, or -1.
    pub coordinator_epoch: i32,
    /// First offset of the open transaction, or -1.
    pub current_txn_start_offset: i64,
}

/// One appended batch as the sequence check remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RememberedBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<RememberedBatch>,
    last_used: u64,
    last_timestamp: i64,
    coordinator_epoch: i32,
    open_txn_first_offset: Option<i64>,
}

impl Default for ProducerEntry {
    fn default() -> ProducerEntry {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            last_used: 0,
            last_timestamp: -1,
            coordinator_epoch: -1,
            open_txn_first_offset: None,
        }
    }
}

impl ProducerEntry {
    /// A new epoch starts its sequences over.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
    }
}

/// The sequence and transaction state of every producer that wrote to one partition.
#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
    /// (first offset, producer id) of every open transaction, lowest first.
    open_transactions: BTreeSet<(i64, i64)>,
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
        transactional: bool,
    ) -> SequenceVerdict {
        let Some(entry) = self.producers.get(&producer_id) else {
            // Kafka (since KIP-360) accepts an unknown producer at any sequence: its state may
            // have been expired by retention.
            return SequenceVerdict::Append;
        };
        if epoch < entry.epoch {
            return SequenceVerdict::StaleEpoch;
        }
        if !transactional && entry.open_txn_first_offset.is_some() {
            return SequenceVerdict::TransactionOpen;
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

    /// Records an appended batch (also used when replaying the WAL at start-up); the first
    /// transactional batch of a producer opens its transaction on this partition (then true).
    pub fn record(&mut self, batch: AppendedBatch) -> bool {
        let entry = self.touch(batch.producer_id);
        entry.set_epoch(batch.epoch);
        entry.last_timestamp = batch.max_timestamp;
        if entry.batches.len() == BATCHES_REMEMBERED_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(RememberedBatch {
            first_sequence: batch.first_sequence,
            last_sequence: last_sequence_of(batch.first_sequence, batch.record_count),
            base_offset: batch.base_offset,
        });
        if batch.transactional && entry.open_txn_first_offset.is_none() {
            entry.open_txn_first_offset = Some(batch.base_offset);
            self.open_transactions
                .insert((batch.base_offset, batch.producer_id));
            return true;
        }
        false
    }

    /// Opens a producer's transaction at `first_offset` as the transaction index recorded it
    /// (its data is in object storage, not replayed); no-op when one is open.
    pub fn open_transaction(&mut self, producer_id: i64, epoch: i16, first_offset: i64) {
        let entry = self.touch(producer_id);
        entry.set_epoch(epoch);
        if entry.open_txn_first_offset.is_none() {
            entry.open_txn_first_offset = Some(first_offset);
            self.open_transactions.insert((first_offset, producer_id));
        }
    }

    /// Checks a transaction marker for (`producer_id`, `epoch`) written by a coordinator at
    /// `coordinator_epoch`: an older producer epoch or coordinator epoch is refused, as Kafka's
    /// ProducerAppendInfo does for markers of transaction version 1.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ErrorCode> {
        match self.producers.get(&producer_id) {
            Some(entry) if epoch < entry.epoch => Err(ErrorCode::InvalidProducerEpoch),
            Some(entry) if coordinator_epoch < entry.coordinator_epoch => {
                Err(ErrorCode::TransactionCoordinatorFenced)
            }
            _ => Ok(()),
        }
    }

    /// Records an appended marker: the producer's transaction on this partition ends and its
    /// epoch moves to the marker's (a fencing abort bumps it). Returns the first offset of the
    /// transaction it ended, if the producer had written to this partition in it.
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        timestamp: i64,
    ) -> Option<i64> {
        let entry = self.touch(producer_id);
        entry.set_epoch(epoch);
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_timestamp = timestamp;
        let first_offset = entry.open_txn_first_offset.take()?;
        self.open_transactions.remove(&(first_offset, producer_id));
        Some(first_offset)
    }

    /// The first offset of the oldest open transaction: nothing from it on is stable.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open_transactions.first().map(|&(offset, _)| offset)
    }

    /// Every producer remembered, for DescribeProducers.
    pub fn producers(&self) -> impl Iterator<Item = ProducerView> + '_ {
        self.producers
            .iter()
            .map(|(&producer_id, entry)| ProducerView {
                producer_id,
                epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |b| b.last_sequence),
                last_timestamp: entry.last_timestamp,
                coordinator_epoch: entry.coordinator_epoch,
                current_txn_start_offset: entry.open_txn_first_offset.unwrap_or(-1),
            })
    }

    /// Number of producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The entry of `producer_id`, created if new (making room first), marked as just used.
    fn touch(&mut self, producer_id: i64) -> &mut ProducerEntry {
        self.clock += 1;
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.forget_least_recently_used();
        }
        let entry = self.producers.entry(producer_id).or_default();
        entry.last_used = self.clock;
        entry
    }

    fn forget_least_recently_used(&mut self) {
        if let Some((&oldest, _)) = self
            .producers
            .iter()
            .filter(|(_, e)| e.open_txn_first_offset.is_none())
            .min_by_key(|(_, e)| e.last_used)
        {
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

    fn batch(
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        count: i32,
        base: i64,
    ) -> AppendedBatch {
        AppendedBatch {
            producer_id,
            epoch,
            first_sequence,
            record_count: count,
            base_offset: base,
            max_timestamp: base,
            transactional: false,
        }
    }

    fn transactional(
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        base: i64,
    ) -> AppendedBatch {
        AppendedBatch {
            transactional: true,
            ..batch(producer_id, epoch, first_sequence, 1, base)
        }
    }

    #[test]
    fn in_order_batches_append_and_duplicates_answer_with_the_original_offset() {
        let mut table = ProducerStateTable::default();
        assert_eq!(table.check(7, 0, 0, 10, false), SequenceVerdict::Append);
        table.record(batch(7, 0, 0, 10, 100));
        assert_eq!(table.check(7, 0, 10, 5, false), SequenceVerdict::Append);
        table.record(batch(7, 0, 10, 5, 110));
        assert_eq!(
            table.check(7, 0, 0, 10, false),
            SequenceVerdict::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            table.check(7, 0, 10, 5, false),
            SequenceVerdict::Duplicate { base_offset: 110 }
        );
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut table = ProducerStateTable::default();
        table.record(batch(1, 3, 0, 4, 0));
        assert_eq!(table.check(1, 3, 5, 1, false), SequenceVerdict::OutOfOrder);
        assert_eq!(table.check(1, 2, 4, 1, false), SequenceVerdict::StaleEpoch);
        assert_eq!(table.check(1, 4, 1, 1, false), SequenceVerdict::OutOfOrder);
        assert_eq!(table.check(1, 4, 0, 1, false), SequenceVerdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..7 {
            table.record(batch(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(table.check(1, 0, 0, 1, false), SequenceVerdict::OutOfOrder);
        assert_eq!(
            table.check(1, 0, 6, 1, false),
            SequenceVerdict::Duplicate { base_offset: 6 }
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut table = ProducerStateTable::default();
        table.record(batch(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(table.check(1, 0, 0, 1, false), SequenceVerdict::Append);
    }

    #[test]
    fn open_transactions_hold_the_first_unstable_offset_until_their_marker() {
        let mut table = ProducerStateTable::default();
        table.record(transactional(1, 0, 0, 10));
        table.record(transactional(2, 0, 0, 11));
        table.record(transactional(1, 0, 1, 12));
        assert_eq!(table.first_unstable_offset(), Some(10));
        assert_eq!(
            table.check(1, 0, 2, 1, false),
            SequenceVerdict::TransactionOpen
        );
        assert_eq!(table.record_marker(1, 0, 0, 13), Some(10));
        assert_eq!(table.first_unstable_offset(), Some(11));
        // A marker for a producer with nothing open on this partition ends nothing.
        assert_eq!(table.record_marker(1, 0, 0, 14), None);
        assert_eq!(table.record_marker(2, 0, 0, 15), Some(11));
        assert_eq!(table.first_unstable_offset(), None);
        // Sequences continue across transactions of one epoch.
        assert_eq!(table.check(1, 0, 2, 1, true), SequenceVerdict::Append);
    }

    #[test]
    fn a_fencing_marker_bumps_the_epoch_and_stale_markers_are_refused() {
        let mut table = ProducerStateTable::default();
        table.record(transactional(1, 4, 0, 0));
        assert_eq!(table.check_marker(1, 5, 0), Ok(()));
        assert_eq!(table.record_marker(1, 5, 0, 1), Some(0));
        assert_eq!(table.check(1, 4, 1, 1, true), SequenceVerdict::StaleEpoch);
        assert_eq!(
            table.check_marker(1, 4, 0),
            Err(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            table.check_marker(1, 5, -1),
            Err(ErrorCode::TransactionCoordinatorFenced)
        );
        assert_eq!(table.check(1, 6, 0, 1, true), SequenceVerdict::Append);
    }
}
