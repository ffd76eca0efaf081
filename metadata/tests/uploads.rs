//! What uploads record of their streams (producer states, upload times): merged by producer,
//! kept across log replay and snapshots, trimmed with the log start, dropped with their topic.

mod common;

use common::{TempDir, create, open_every as open};
use sluice_metadata::{
    CommandOutcome, MetadataCommand, MetadataStore, ProducerBatch, ProducerSnapshot, StreamCleaned,
    StreamUpload, UploadTime,
};

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

fn record(
    store: &mut MetadataStore,
    stream_id: u64,
    end_offset: i64,
    producers: Vec<ProducerSnapshot>,
) {
    let outcome = store
        .apply(MetadataCommand::RecordUploads {
            streams: vec![StreamUpload {
                stream_id,
                end_offset,
                max_timestamp: 5_000 + end_offset,
                producers,
            }],
        })
        .unwrap()
        .1;
    assert_eq!(outcome, CommandOutcome::UploadsRecorded);
}

fn time(end_offset: i64) -> UploadTime {
    UploadTime {
        end_offset,
        max_timestamp: 5_000 + end_offset,
    }
}

#[test]
fn uploads_survive_replay_and_snapshots_and_go_with_their_topic() {
    for interval in [1_000, 2] {
        let dir = TempDir::new("uploads");
        let mut store = open(dir.path(), interval);
        store.apply(create("t", 2, 1)).unwrap();
        let stream = store.image().partition("t", 1).unwrap().stream_id;
        record(
            &mut store,
            stream,
            20,
            vec![producer(7, 0, 0), producer(8, 0, 10)],
        );
        // A later upload replaces producer 7's entry and leaves producer 8's.
        record(&mut store, stream, 30, vec![producer(7, 1, 20)]);
        record(&mut store, stream, 40, Vec::new());
        // A stream that is gone (or never was) is skipped, not an error.
        record(&mut store, 9_999, 10, vec![producer(1, 0, 0)]);
        store
            .apply(MetadataCommand::SetLogStartOffset {
                topic: "t".to_string(),
                partition: 1,
                offset: 25,
            })
            .unwrap();
        assert_eq!(
            store.image().upload_times(stream),
            &[time(30), time(40)],
            "the upload below the log start is gone"
        );
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
        assert_eq!(store.image().upload_times(stream), &[time(30), time(40)]);
        store
            .apply(MetadataCommand::DeleteTopic {
                name: "t".to_string(),
            })
            .unwrap();
        assert!(store.image().producer_states(stream).is_none());
        assert!(store.image().upload_times(stream).is_empty());
        drop(store);
        let store = open(dir.path(), interval);
        assert!(store.image().producer_states(stream).is_none());
    }
}

fn clean(store: &mut MetadataStore, stream_id: u64, cleaned_end_offset: i64) {
    let outcome = store
        .apply(MetadataCommand::RecordCleaning {
            streams: vec![StreamCleaned {
                stream_id,
                cleaned_end_offset,
                delete_horizon_ms: 9_000 + cleaned_end_offset,
            }],
        })
        .unwrap()
        .1;
    assert_eq!(outcome, CommandOutcome::CleaningRecorded);
}

/// The log cleaner's mark of a stream only moves forward, survives replay and snapshots, and
/// goes with its topic.
#[test]
fn cleaner_marks_move_forward_survive_restarts_and_go_with_their_topic() {
    for interval in [1_000, 2] {
        let dir = TempDir::new("cleaning");
        let mut store = open(dir.path(), interval);
        store.apply(create("t", 2, 1)).unwrap();
        let stream = store.image().partition("t", 0).unwrap().stream_id;
        assert_eq!(store.image().cleaned_end_offset(stream), 0);
        clean(&mut store, stream, 50);
        let epoch = store.image().epoch;
        clean(&mut store, stream, 40);
        assert_eq!(store.image().epoch, epoch, "a mark behind is not written");
        assert_eq!(store.image().cleaned_end_offset(stream), 50);
        assert_eq!(
            store.image().cleaned(stream).map(|c| c.delete_horizon_ms),
            Some(9_050)
        );
        clean(&mut store, 9_999, 10);
        clean(&mut store, stream, 70);
        drop(store);

        let mut store = open(dir.path(), interval);
        assert_eq!(
            store.image().cleaned(stream),
            Some(StreamCleaned {
                stream_id: stream,
                cleaned_end_offset: 70,
                delete_horizon_ms: 9_070,
            }),
            "interval {interval}"
        );
        assert!(
            store
                .apply(MetadataCommand::RecordCleaning {
                    streams: vec![StreamCleaned {
                        stream_id: stream,
                        cleaned_end_offset: -1,
                        delete_horizon_ms: i64::MAX,
                    }],
                })
                .is_err()
        );
        store
            .apply(MetadataCommand::DeleteTopic {
                name: "t".to_string(),
            })
            .unwrap();
        assert_eq!(store.image().cleaned_end_offset(stream), 0);
        drop(store);
        let store = open(dir.path(), interval);
        assert_eq!(store.image().cleaned_end_offset(stream), 0);
    }
}

#[test]
fn oversized_producer_states_are_refused() {
    let dir = TempDir::new("uploads-limits");
    let mut store = open(dir.path(), 1_000);
    store.apply(create("t", 1, 1)).unwrap();
    let stream = store.image().partition("t", 0).unwrap().stream_id;
    let mut long = producer(1, 0, 0);
    long.batches = vec![long.batches[0]; 6];
    let refused = store.apply(MetadataCommand::RecordUploads {
        streams: vec![StreamUpload {
            stream_id: stream,
            end_offset: 1,
            max_timestamp: -1,
            producers: vec![long],
        }],
    });
    assert!(refused.is_err(), "{refused:?}");
    assert!(store.image().producer_states(stream).is_none());
}
