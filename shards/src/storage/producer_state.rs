//! Producer state of one partition: the last batches of every producer id (idempotence), its
//! epoch, and the first offset of its open transaction (the last stable offset is the lowest).
//!
//! It survives the WAL through the metadata: each upload records, for the partitions it
//! uploads, the state of the producers it wrote as of the upload's end (`states_at`), and a
//! partition starts from that state (`restored`) before the WAL's records are replayed into
//! it. Replay may meet batches the restored state holds already (the state is recorded just
//! before its objects are committed); [`ProducerStateTable::record`] skips those.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use sluice_metadata::{ProducerBatch, ProducerSnapshot, ProducerStates};
use sluice_net::ErrorCode;

/// Batches remembered per producer for duplicate detection (Kafka's max.in.flight limit).
pub const BATCHES_REMEMBERED_PER_PRODUCER: usize =
    sluice_metadata::limits::BATCHES_PER_PRODUCER_MAX;

/// Producers remembered per partition; the least recently used is forgotten past this. A
/// producer with an open transaction is never forgotten (its first offset holds the last stable
/// offset back); open transactions are bounded by the transactional ids, which expire.
pub const PRODUCERS_PER_PARTITION_MAX: usize = sluice_metadata::limits::PRODUCERS_PER_STREAM_MAX;

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

/// A change to a partition's producer state, kept until it is in objects (see `states_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerEvent {
    /// A data batch of an idempotent or transactional producer.
    Batch(AppendedBatch),
    /// A transaction marker.
    Marker {
        /// Producer id of the marker.
        producer_id: i64,
        /// Producer epoch of the marker.
        epoch: i16,
        /// Coordinator epoch of the marker.
        coordinator_epoch: i32,
        /// Timestamp of the marker.
        timestamp: i64,
        /// Offset of the marker.
        offset: i64,
    },
}

impl ProducerEvent {
    /// The offset the event is at.
    pub fn offset(&self) -> i64 {
        match self {
            ProducerEvent::Batch(batch) => batch.base_offset,
            ProducerEvent::Marker { offset, .. } => *offset,
        }
    }

    fn producer_id(&self) -> i64 {
        match self {
            ProducerEvent::Batch(batch) => batch.producer_id,
            ProducerEvent::Marker { producer_id, .. } => *producer_id,
        }
    }
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<RememberedBatch>,
    last_used: u64,
    last_timestamp: i64,
    coordinator_epoch: i32,
    open_txn_first_offset: Option<i64>,
    /// Offset of the last batch or marker recorded, or -1.
    last_offset: i64,
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
            last_offset: -1,
        }
    }
}

impl ProducerEntry {
    /// A new epoch starts its sequences over. Epochs only move forward: replay at start-up
    /// may apply an older marker (from the transaction index) after a newer restored state.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch > self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
    }

    /// True for a batch this entry does not hold yet: a newer epoch, or a later offset in
    /// its epoch. Replay over a restored state meets older ones.
    fn is_new(&self, batch: &AppendedBatch) -> bool {
        batch.epoch > self.epoch
            || (batch.epoch == self.epoch
                && self
                    .batches
                    .back()
                    .is_none_or(|last| batch.base_offset > last.base_offset))
    }

    /// The entry a snapshot describes (no open transaction: the transaction index has those).
    fn from_snapshot(snapshot: &ProducerSnapshot) -> ProducerEntry {
        ProducerEntry {
            epoch: snapshot.epoch,
            last_timestamp: snapshot.last_timestamp,
            coordinator_epoch: snapshot.coordinator_epoch,
            last_offset: snapshot.last_offset,
            batches: snapshot
                .batches
                .iter()
                .rev()
                .take(BATCHES_REMEMBERED_PER_PRODUCER)
                .rev()
                .map(|b| RememberedBatch {
                    first_sequence: b.first_sequence,
                    last_sequence: b.last_sequence,
                    base_offset: b.base_offset,
                })
                .collect(),
            ..ProducerEntry::default()
        }
    }

    fn snapshot(&self, producer_id: i64) -> ProducerSnapshot {
        ProducerSnapshot {
            producer_id,
            epoch: self.epoch,
            last_timestamp: self.last_timestamp,
            coordinator_epoch: self.coordinator_epoch,
            last_offset: self.last_offset,
            batches: self
                .batches
                .iter()
                .map(|b| ProducerBatch {
                    first_sequence: b.first_sequence,
                    last_sequence: b.last_sequence,
                    base_offset: b.base_offset,
                })
                .collect(),
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

    /// The table of a partition starting from `states` (what the metadata holds of its
    /// producers as of its objects' end).
    pub fn restored(states: &ProducerStates) -> ProducerStateTable {
        let mut table = ProducerStateTable::default();
        let mut by_age: Vec<&ProducerSnapshot> = states.values().collect();
        by_age.sort_unstable_by_key(|p| (p.last_offset, p.producer_id));
        for snapshot in by_age {
            table.restore(snapshot);
        }
        table
    }

    /// Replaces the entry of the snapshot's producer by the snapshot.
    fn restore(&mut self, snapshot: &ProducerSnapshot) {
        let entry = self.touch(snapshot.producer_id);
        *entry = ProducerEntry {
            last_used: entry.last_used,
            ..ProducerEntry::from_snapshot(snapshot)
        };
    }

    /// Applies one event, as it was first applied (`record` or `record_marker`).
    pub fn apply(&mut self, event: &ProducerEvent) {
        match *event {
            ProducerEvent::Batch(batch) => {
                self.record(batch);
            }
            ProducerEvent::Marker {
                producer_id,
                epoch,
                coordinator_epoch,
                timestamp,
                offset,
            } => {
                self.record_marker(producer_id, epoch, coordinator_epoch, timestamp, offset);
            }
        }
    }

    /// Records an appended batch (also used when replaying the WAL at start-up); the first
    /// transactional batch of a producer opens its transaction on this partition (then true).
    /// A batch the producer's entry holds already (replayed over a restored state) changes
    /// only the transaction state.
    pub fn record(&mut self, batch: AppendedBatch) -> bool {
        let entry = self.touch(batch.producer_id);
        if entry.is_new(&batch) {
            entry.set_epoch(batch.epoch);
            entry.last_timestamp = batch.max_timestamp;
            entry.last_offset = entry.last_offset.max(batch.base_offset);
            if entry.batches.len() == BATCHES_REMEMBERED_PER_PRODUCER {
                entry.batches.pop_front();
            }
            entry.batches.push_back(RememberedBatch {
                first_sequence: batch.first_sequence,
                last_sequence: last_sequence_of(batch.first_sequence, batch.record_count),
                base_offset: batch.base_offset,
            });
        }
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

    /// Records an appended marker at `offset`: the producer's transaction on this partition
    /// ends and its epoch moves to the marker's (a fencing abort bumps it). Returns the first
    /// offset of the transaction it ended, if the producer had written to this partition in it.
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        timestamp: i64,
        offset: i64,
    ) -> Option<i64> {
        let entry = self.touch(producer_id);
        entry.set_epoch(epoch);
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        if offset > entry.last_offset {
            entry.last_offset = offset;
            entry.last_timestamp = timestamp;
        }
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

    /// What the metadata records of `producer_id`, if it is remembered.
    pub fn snapshot(&self, producer_id: i64) -> Option<ProducerSnapshot> {
        self.producers
            .get(&producer_id)
            .map(|entry| entry.snapshot(producer_id))
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

/// The state of every producer that `events` touch, after `events` (in offset order) were
/// applied to `base` (the state before the first of them): what an upload records of the
/// partition it uploads up to the end of `events`.
pub fn states_at<'a>(
    base: Option<&ProducerStates>,
    events: impl IntoIterator<Item = &'a ProducerEvent>,
) -> Vec<ProducerSnapshot> {
    let mut touched = HashSet::new();
    let mut order = Vec::new();
    let mut scratch = ProducerStateTable::default();
    for event in events {
        let producer_id = event.producer_id();
        if touched.insert(producer_id) {
            order.push(producer_id);
            if let Some(before) = base.and_then(|b| b.get(&producer_id)) {
                scratch.restore(before);
            }
        }
        scratch.apply(event);
    }
    order
        .into_iter()
        .filter_map(|producer_id| scratch.snapshot(producer_id))
        .collect()
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
        assert_eq!(table.record_marker(1, 0, 0, 13, 13), Some(10));
        assert_eq!(table.first_unstable_offset(), Some(11));
        // A marker for a producer with nothing open on this partition ends nothing.
        assert_eq!(table.record_marker(1, 0, 0, 14, 14), None);
        assert_eq!(table.record_marker(2, 0, 0, 15, 15), Some(11));
        assert_eq!(table.first_unstable_offset(), None);
        // Sequences continue across transactions of one epoch.
        assert_eq!(table.check(1, 0, 2, 1, true), SequenceVerdict::Append);
    }

    #[test]
    fn a_fencing_marker_bumps_the_epoch_and_stale_markers_are_refused() {
        let mut table = ProducerStateTable::default();
        table.record(transactional(1, 4, 0, 0));
        assert_eq!(table.check_marker(1, 5, 0), Ok(()));
        assert_eq!(table.record_marker(1, 5, 0, 1, 1), Some(0));
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

    fn as_states(snapshots: Vec<ProducerSnapshot>) -> ProducerStates {
        snapshots.into_iter().map(|p| (p.producer_id, p)).collect()
    }

    /// What uploads record, chained (each on top of the one before), is what the live table
    /// holds: a restart from it answers every producer as before.
    #[test]
    fn recorded_states_chained_over_uploads_restore_the_live_table() {
        let mut live = ProducerStateTable::default();
        let mut events = Vec::new();
        for i in 0..9 {
            let appended = batch(1 + i64::from(i % 2), 0, i / 2, 1, i64::from(i));
            live.record(appended);
            events.push(ProducerEvent::Batch(appended));
        }
        live.record_marker(3, 2, 5, 100, 9);
        events.push(ProducerEvent::Marker {
            producer_id: 3,
            epoch: 2,
            coordinator_epoch: 5,
            timestamp: 100,
            offset: 9,
        });
        let mut recorded = ProducerStates::new();
        for upload in events.chunk_by(|a, b| a.offset() / 4 == b.offset() / 4) {
            let changed = states_at(Some(&recorded), upload);
            recorded.extend(as_states(changed));
        }
        let restored = ProducerStateTable::restored(&recorded);
        for producer_id in [1, 2, 3] {
            assert_eq!(
                restored.snapshot(producer_id),
                live.snapshot(producer_id),
                "producer {producer_id}"
            );
        }
        assert_eq!(
            restored.check(1, 0, 4, 1, false),
            SequenceVerdict::Duplicate { base_offset: 8 }
        );
        assert_eq!(restored.check(1, 0, 5, 1, false), SequenceVerdict::Append);
        assert_eq!(
            restored.check(2, 0, 5, 1, false),
            SequenceVerdict::OutOfOrder
        );
        assert_eq!(
            restored.check(3, 1, 0, 1, false),
            SequenceVerdict::StaleEpoch
        );
    }

    /// The state is recorded just before its objects are committed: after a crash between
    /// the two, the WAL replays batches the restored state already holds.
    #[test]
    fn replay_over_a_newer_restored_state_changes_nothing() {
        let mut live = ProducerStateTable::default();
        for i in 0..8 {
            live.record(batch(1, 0, i, 1, i64::from(i)));
        }
        let restored_from = as_states(vec![live.snapshot(1).unwrap()]);
        let mut restarted = ProducerStateTable::restored(&restored_from);
        for i in 4..8 {
            restarted.record(batch(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(restarted.snapshot(1), live.snapshot(1));
        assert_eq!(
            restarted.check(1, 0, 3, 1, false),
            SequenceVerdict::Duplicate { base_offset: 3 }
        );
        assert_eq!(restarted.check(1, 0, 8, 1, false), SequenceVerdict::Append);
    }

    /// The transaction index's markers are applied at start-up after the restored state,
    /// older ones included: epochs never move back, so the remembered batches stay.
    #[test]
    fn an_older_marker_neither_moves_the_epoch_back_nor_drops_batches() {
        let mut table = ProducerStateTable::default();
        table.record(batch(1, 3, 0, 1, 10));
        assert_eq!(table.record_marker(1, 2, 0, 5, 4), None);
        assert_eq!(
            table.check(1, 3, 0, 1, false),
            SequenceVerdict::Duplicate { base_offset: 10 }
        );
        assert_eq!(table.check(1, 2, 1, 1, false), SequenceVerdict::StaleEpoch);
    }
}
