//! Producer states in the metadata: recorded per stream, merged by producer, kept across
//! log replay and snapshots, dropped with their topic.

mod common;

use std::path::Path;

use common::{TempDir, create};
use sluice_metadata::{
    CommandOutcome, MetadataCommand, MetadataStore, ProducerBatch, ProducerSnapshot, StoreOptions,
    StreamProducers,
};

fn open(dir: &Path, interval: u64) -> MetadataStore {
    MetadataStore::open_with_options(
        dir,
        1,
        StoreOptions {
            snapshot_interval_records: interval,
        },
    )
    .unwrap()
}

fn producer(producer_id: i64, epoch: i16, base_offset: i64) -> ProducerSnapshot {
    ProducerSnapshot {
        producer_id,
        epoch,
        last_timestamp: 1_000 + base_offset,
        coordinator_epoch: -1,
        last_offset: base_offset + 9,
        batches: vec![ProducerBatch {
            first_sequence: base_offset as i32,
            last_sequence: base_offset as i32 + 9,
            base_offset,
        }],
    }
}

fn record(store: &mut MetadataStore, stream_id: u64, producers: Vec<ProducerSnapshot>) {
    let outcome = store
        .apply(MetadataCommand::RecordProducerStates {
            streams: vec![StreamProducers {
                stream_id,
                producers,
            }],
        })
        .unwrap()
        .1;
    assert_eq!(outcome, CommandOutcome::ProducerStatesRecorded);
}

#[test]
fn producer_states_survive_replay_and_snapshots_and_go_with_their_topic() {
    for interval in [1_000, 2] {
        let dir = TempDir::new("producers");
        let mut store = open(dir.path(), interval);
        store.apply(create("t", 2, 1)).unwrap();
        let stream = store.image().partition("t", 1).unwrap().stream_id;
        record(
            &mut store,
            stream,
            vec![producer(7, 0, 0), producer(8, 0, 10)],
        );
        // A later upload replaces producer 7's entry and leaves producer 8's.
        record(&mut store, stream, vec![producer(7, 1, 20)]);
        // A stream that is gone (or never was) is skipped, not an error.
        record(&mut store, 9_999, vec![producer(1, 0, 0)]);
        let expected = store.image().producer_states(stream).unwrap().clone();
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[&7], producer(7, 1, 20));
        assert_eq!(expected[&8], producer(8, 0, 10));
        assert!(store.image().producer_states(9_999).is_none());
        drop(store);

        let mut store = open(dir.path(), interval);
        assert_eq!(
            store.image().producer_states(stream),
            Some(&expected),
            "interval {interval}"
        );
        store
            .apply(MetadataCommand::DeleteTopic {
                name: "t".to_string(),
            })
            .unwrap();
        assert!(store.image().producer_states(stream).is_none());
        drop(store);
        let store = open(dir.path(), interval);
        assert!(store.image().producer_states(stream).is_none());
    }
}

#[test]
fn oversized_producer_states_are_refused() {
    let dir = TempDir::new("producers-limits");
    let mut store = open(dir.path(), 1_000);
    store.apply(create("t", 1, 1)).unwrap();
    let stream = store.image().partition("t", 0).unwrap().stream_id;
    let mut long = producer(1, 0, 0);
    long.batches = vec![long.batches[0]; 6];
    let refused = store.apply(MetadataCommand::RecordProducerStates {
        streams: vec![StreamProducers {
            stream_id: stream,
            producers: vec![long],
        }],
    });
    assert!(refused.is_err(), "{refused:?}");
    assert!(store.image().producer_states(stream).is_none());
}
