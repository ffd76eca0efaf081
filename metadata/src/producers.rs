//! Producer state in the metadata: per stream, what idempotence needs of every producer as of
//! the end of the stream's data in objects (Kafka's producer-state snapshot, kept here with the
//! object index rather than beside log segments).
//!
//! A broker rebuilds a partition's producer state from this and the WAL records after the
//! objects' end. Without it, state lived only in the WAL: once a producer's batches were
//! uploaded and trimmed, a restart forgot it, and its retry of an acked batch was stored twice.
//! Uploads record it (`uploads.rs`).

use std::collections::BTreeMap;

use crate::limits::{BATCHES_PER_PRODUCER_MAX, PRODUCERS_PER_STREAM_MAX};
use crate::uploads::StreamUpload;

/// One batch a producer appended, as duplicate detection remembers it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
}

/// What a stream remembers of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub epoch: i16,
    /// Timestamp of the producer's last batch or marker, or -1.
    pub last_timestamp: i64,
    /// Coordinator epoch of its last transaction marker, or -1.
    pub coordinator_epoch: i32,
    /// Offset of its last batch or marker: the oldest is forgotten first past the limit.
    pub last_offset: i64,
    /// Its last batches of `epoch`, oldest first, at most `BATCHES_PER_PRODUCER_MAX`.
    pub batches: Vec<ProducerBatch>,
}

/// The producers of one stream, by producer id.
pub type ProducerStates = BTreeMap<i64, ProducerSnapshot>;

/// Checks what a command may carry: a bounded number of producers and batches.
pub(crate) fn validate(streams: &[StreamUpload]) -> Result<(), String> {
    for stream in streams {
        if stream.producers.len() > PRODUCERS_PER_STREAM_MAX {
            return Err(format!(
                "{} producers of stream {} is over {PRODUCERS_PER_STREAM_MAX} (PRODUCERS_PER_STREAM_MAX)",
                stream.producers.len(),
                stream.stream_id
            ));
        }
        for producer in &stream.producers {
            if producer.batches.len() > BATCHES_PER_PRODUCER_MAX || producer.producer_id < 0 {
                return Err(format!(
                    "producer {} of stream {} has {} batches (at most {BATCHES_PER_PRODUCER_MAX}, BATCHES_PER_PRODUCER_MAX)",
                    producer.producer_id,
                    stream.stream_id,
                    producer.batches.len()
                ));
            }
        }
    }
    Ok(())
}

/// Merges `changed` into the states of a stream: each producer's entry is replaced; past
/// `PRODUCERS_PER_STREAM_MAX` the producers with the oldest last offset are forgotten (a
/// deterministic choice, as every replica applies it).
pub(crate) fn merge(states: &mut ProducerStates, changed: &[ProducerSnapshot]) {
    for producer in changed {
        states.insert(producer.producer_id, producer.clone());
    }
    if states.len() > PRODUCERS_PER_STREAM_MAX {
        let mut by_age: Vec<(i64, i64)> = states
            .values()
            .map(|p| (p.last_offset, p.producer_id))
            .collect();
        by_age.sort_unstable();
        let excess = states.len() - PRODUCERS_PER_STREAM_MAX;
        for (_, producer_id) in by_age.into_iter().take(excess) {
            states.remove(&producer_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(producer_id: i64, last_offset: i64) -> ProducerSnapshot {
        ProducerSnapshot {
            producer_id,
            epoch: 0,
            last_timestamp: -1,
            coordinator_epoch: -1,
            last_offset,
            batches: vec![ProducerBatch {
                first_sequence: 0,
                last_sequence: 0,
                base_offset: last_offset,
            }],
        }
    }

    #[test]
    fn merge_replaces_entries_and_forgets_the_oldest_past_the_limit() {
        let mut states = ProducerStates::new();
        let all: Vec<ProducerSnapshot> = (0..PRODUCERS_PER_STREAM_MAX as i64)
            .map(|id| producer(id, 1000 + id))
            .collect();
        merge(&mut states, &all);
        merge(&mut states, &[producer(5, 1)]);
        assert_eq!(states[&5].last_offset, 1, "the entry is replaced");
        merge(&mut states, &[producer(20_000, 50_000)]);
        assert_eq!(states.len(), PRODUCERS_PER_STREAM_MAX);
        assert!(
            !states.contains_key(&5),
            "the oldest last offset goes first"
        );
        assert!(states.contains_key(&20_000));
    }

    #[test]
    fn commands_over_the_limits_are_refused() {
        let mut many_batches = producer(1, 0);
        many_batches.batches = vec![many_batches.batches[0]; BATCHES_PER_PRODUCER_MAX + 1];
        let stream = |producers| StreamUpload {
            stream_id: 1,
            end_offset: 1,
            max_timestamp: -1,
            producers,
        };
        assert!(validate(&[stream(vec![producer(1, 0)])]).is_ok());
        assert!(validate(&[stream(vec![many_batches])]).is_err());
        assert!(validate(&[stream(vec![producer(-1, 0)])]).is_err());
        let too_many = (0..=PRODUCERS_PER_STREAM_MAX as i64)
            .map(|id| producer(id, id))
            .collect();
        assert!(validate(&[stream(too_many)]).is_err());
    }
}
