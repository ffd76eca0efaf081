//! The object registry: commit, lookup, compaction, retention, deletion,
//! through the store's public API, across restarts and snapshots.

mod common;

use common::{TempDir, create, open_every as open};
use sluice_metadata::{
    CommandOutcome, MetadataCommand, MetadataError, MetadataImage, MetadataRecord, MetadataStore,
    ObjectImage, ObjectKind, StreamRange,
};

fn allocate(store: &mut MetadataStore, count: u32) -> u64 {
    match store
        .apply(MetadataCommand::AllocateObjectIds { count })
        .unwrap()
        .1
    {
        CommandOutcome::ObjectIdsAllocated {
            first_object_id, ..
        } => first_object_id,
        other => panic!("{other:?}"),
    }
}

/// An object with one range per (stream, start, end), laid out back to back
/// with 10 bytes per offset.
fn object(id: u64, kind: ObjectKind, ranges: &[(u64, i64, i64)]) -> ObjectImage {
    let mut position = 0;
    let ranges = ranges
        .iter()
        .map(|&(stream_id, start_offset, end_offset)| {
            let len = (end_offset - start_offset) as u64 * 10;
            let r = StreamRange {
                stream_id,
                start_offset,
                end_offset,
                position,
                len,
            };
            position += len;
            r
        })
        .collect();
    ObjectImage {
        id,
        key: format!("o/{id}"),
        size: position + 64,
        kind,
        ranges,
    }
}

fn commit(store: &mut MetadataStore, objects: Vec<ObjectImage>) -> Result<(), MetadataError> {
    store
        .apply(MetadataCommand::CommitObjects { objects })
        .map(|_| ())
}

fn holder(image: &MetadataImage, stream: u64, offset: i64) -> Option<u64> {
    image.objects_for(stream, offset).map(|(o, r)| {
        assert!(r.start_offset <= offset && offset < r.end_offset);
        assert_eq!(r.stream_id, stream);
        o.id
    })
}

/// Two partitions (streams 1 and 2), three SSOs and an SO.
fn populated(store: &mut MetadataStore) {
    store.apply(create("t", 2, 1)).unwrap();
    let first = allocate(store, 4);
    assert_eq!(first, 1);
    commit(
        store,
        vec![object(1, ObjectKind::StreamSet, &[(1, 0, 10), (2, 0, 5)])],
    )
    .unwrap();
    commit(
        store,
        vec![
            object(2, ObjectKind::StreamSet, &[(2, 5, 7)]),
            object(3, ObjectKind::Stream, &[(1, 10, 100)]),
        ],
    )
    .unwrap();
    commit(
        store,
        vec![object(
            4,
            ObjectKind::StreamSet,
            &[(1, 100, 101), (2, 7, 9)],
        )],
    )
    .unwrap();
}

#[test]
fn commit_and_lookup() {
    let dir = TempDir::new("objects-lookup");
    let mut store = open(dir.path(), 1000);
    populated(&mut store);
    let image = store.image();
    assert_eq!(holder(&image, 1, 0), Some(1));
    assert_eq!(holder(&image, 1, 9), Some(1));
    assert_eq!(holder(&image, 1, 10), Some(3));
    assert_eq!(holder(&image, 1, 99), Some(3));
    assert_eq!(holder(&image, 1, 100), Some(4));
    assert_eq!(holder(&image, 1, 101), None);
    assert_eq!(holder(&image, 2, 6), Some(2));
    assert_eq!(holder(&image, 2, 9), None);
    assert_eq!(holder(&image, 3, 0), None);
    assert_eq!(image.stream_end_offset_in_objects(1), Some(101));
    assert_eq!(image.stream_end_offset_in_objects(2), Some(9));
    assert_eq!(image.stream_end_offset_in_objects(3), None);
    assert_eq!(image.stream_start_offset_in_objects(2), Some(0));
    let ids: Vec<u64> = image.stream_objects(1).map(|(o, _)| o.id).collect();
    assert_eq!(ids, vec![1, 3, 4]);

    // A retried commit of the same objects is a no-op; a gap, an overlap,
    // an unallocated id or an unknown stream is refused, writing nothing.
    let epoch = image.epoch;
    commit(
        &mut store,
        vec![object(
            4,
            ObjectKind::StreamSet,
            &[(1, 100, 101), (2, 7, 9)],
        )],
    )
    .unwrap();
    assert_eq!(store.image().epoch, epoch);
    let next = allocate(&mut store, 3);
    for bad in [
        object(next, ObjectKind::StreamSet, &[(1, 102, 110)]),
        object(next, ObjectKind::StreamSet, &[(1, 100, 110)]),
        object(next + 3, ObjectKind::StreamSet, &[(1, 101, 110)]),
        object(next, ObjectKind::StreamSet, &[(9, 0, 1)]),
        object(next, ObjectKind::Stream, &[(1, 101, 110), (2, 9, 10)]),
    ] {
        let err = commit(&mut store, vec![bad.clone()]).unwrap_err();
        assert_eq!(err.kafka_error_code(), 42, "{bad:?}: {err}");
    }
    assert_eq!(store.image().epoch, epoch + 1);
    // All or none: a good object with a bad one commits neither.
    let err = commit(
        &mut store,
        vec![
            object(next, ObjectKind::StreamSet, &[(1, 101, 110)]),
            object(next + 1, ObjectKind::StreamSet, &[(2, 10, 11)]),
        ],
    )
    .unwrap_err();
    assert_eq!(err.kafka_error_code(), 42, "{err}");
    assert!(store.image().object(next).is_none());
}

#[test]
fn compaction_replaces_atomically_and_keeps_coverage() {
    let dir = TempDir::new("objects-compact");
    let mut store = open(dir.path(), 1000);
    populated(&mut store);
    let first = allocate(&mut store, 4);
    // Stream 1 of SSOs 1 and 4 with SO 3 into one SO; stream 2 of SSOs 1, 2,
    // 4 into one SO.
    let compact = MetadataCommand::CompactObjects {
        removed: vec![1, 2, 3, 4],
        added: vec![
            object(first, ObjectKind::Stream, &[(1, 0, 101)]),
            object(first + 1, ObjectKind::Stream, &[(2, 0, 9)]),
        ],
        now_ms: 1_000,
    };
    // Coverage must stay exactly the same.
    for bad in [
        vec![object(first, ObjectKind::Stream, &[(1, 0, 101)])],
        vec![
            object(first, ObjectKind::Stream, &[(1, 0, 100)]),
            object(first + 1, ObjectKind::Stream, &[(2, 0, 9)]),
        ],
        vec![
            object(first, ObjectKind::Stream, &[(1, 1, 101)]),
            object(first + 1, ObjectKind::Stream, &[(2, 0, 9)]),
        ],
    ] {
        let err = store
            .apply(MetadataCommand::CompactObjects {
                removed: vec![1, 2, 3, 4],
                added: bad,
                now_ms: 1_000,
            })
            .unwrap_err();
        assert_eq!(err.kafka_error_code(), 42, "{err}");
    }
    store.apply(compact.clone()).unwrap();
    // The same compaction again (a forwarded command whose answer was lost is sent again):
    // answered as done, changing nothing; a refusal would make the compactor delete the
    // objects it added, live now.
    let epoch = store.image().epoch;
    assert_eq!(
        store.apply(compact).unwrap().1,
        CommandOutcome::ObjectsCompacted
    );
    assert_eq!(
        store.image().epoch,
        epoch,
        "a repeated compaction is a no-op"
    );
    // Other objects in place of the same removed ones: refused.
    let err = store
        .apply(MetadataCommand::CompactObjects {
            removed: vec![1, 2, 3, 4],
            added: vec![object(first + 2, ObjectKind::Stream, &[(1, 0, 101)])],
            now_ms: 1_000,
        })
        .unwrap_err();
    assert_eq!(err.kafka_error_code(), 42, "{err}");
    let image = store.image();
    for offset in 0..101 {
        assert_eq!(holder(&image, 1, offset), Some(first));
    }
    for offset in 0..9 {
        assert_eq!(holder(&image, 2, offset), Some(first + 1));
    }
    assert_eq!(image.objects().count(), 2);
    let tombstones: Vec<(u64, u64)> = image.tombstones().map(|t| (t.id, t.marked_at_ms)).collect();
    assert_eq!(tombstones, vec![(1, 1000), (2, 1000), (3, 1000), (4, 1000)]);

    // Deleted from the store after the grace period: forgotten.
    store
        .apply(MetadataCommand::DeleteObjects { ids: vec![1, 2] })
        .unwrap();
    let err = store
        .apply(MetadataCommand::DeleteObjects { ids: vec![first] })
        .unwrap_err();
    assert_eq!(err.kafka_error_code(), 42);
    let epoch = store.image().epoch;
    store
        .apply(MetadataCommand::DeleteObjects { ids: vec![1] })
        .unwrap();
    assert_eq!(store.image().epoch, epoch, "a repeated delete is a no-op");
    assert_eq!(store.image().tombstones().count(), 2);
}

#[test]
fn retention_marks_only_dead_objects() {
    let dir = TempDir::new("objects-retention");
    let mut store = open(dir.path(), 1000);
    populated(&mut store);
    let mark = |store: &mut MetadataStore, ids: Vec<u64>| {
        store.apply(MetadataCommand::MarkObjectsForDeletion { ids, now_ms: 5 })
    };
    // Nothing is dead yet.
    assert_eq!(
        mark(&mut store, vec![1]).unwrap_err().kafka_error_code(),
        42
    );
    store
        .apply(MetadataCommand::SetLogStartOffset {
            topic: "t".into(),
            partition: 0,
            offset: 100,
        })
        .unwrap();
    // SSO 1 still holds stream 2's data; SO 3 ([10, 100)) is dead.
    assert_eq!(
        mark(&mut store, vec![1]).unwrap_err().kafka_error_code(),
        42
    );
    let image = store.image();
    assert!(image.is_object_dead(image.object(3).unwrap()));
    mark(&mut store, vec![3]).unwrap();
    let epoch = store.image().epoch;
    mark(&mut store, vec![3]).expect("marking again is a no-op");
    assert_eq!(store.image().epoch, epoch);
    let image = store.image();
    assert_eq!(holder(&image, 1, 50), None);
    assert_eq!(holder(&image, 1, 100), Some(4));
    assert_eq!(image.stream_end_offset_in_objects(1), Some(101));

    // Deleting the topic makes every object dead; the index goes with it.
    store
        .apply(MetadataCommand::DeleteTopic { name: "t".into() })
        .unwrap();
    let image = store.image();
    assert_eq!(holder(&image, 1, 100), None);
    assert!(image.objects().all(|o| image.is_object_dead(o)));
    mark(&mut store, vec![1, 2, 4]).unwrap();
    assert_eq!(store.image().objects().count(), 0);
}

#[test]
fn registry_survives_restart_and_snapshots() {
    for interval in [1, 3, 1000] {
        let dir = TempDir::new("objects-restart");
        let mut store = open(dir.path(), interval);
        populated(&mut store);
        let first = allocate(&mut store, 2);
        store
            .apply(MetadataCommand::CompactObjects {
                removed: vec![1, 3],
                added: vec![
                    object(first, ObjectKind::Stream, &[(1, 0, 100)]),
                    object(first + 1, ObjectKind::Stream, &[(2, 0, 5)]),
                ],
                now_ms: 77,
            })
            .unwrap();
        store.apply(create("u", 1, 1)).unwrap();
        store
            .apply(MetadataCommand::DeleteTopic { name: "u".into() })
            .unwrap();
        let before = store.image();
        drop(store);
        let store = open(dir.path(), interval);
        let after = store.image();
        assert_eq!(*after, *before, "interval {interval}");
        assert_eq!(after.next_object_id(), first + 2);
        assert_eq!(holder(&after, 1, 5), Some(first));
        assert_eq!(holder(&after, 2, 6), Some(2));
        assert_eq!(after.tombstone(1).unwrap().marked_at_ms, 77);
        if interval == 1 {
            assert_eq!(store.recovery().replayed_records, 0);
        }
    }
}

/// New records must not make the archived record larger, or records
/// already in logs would no longer decode (rkyv finds the root by size).
#[test]
fn archived_record_size_is_unchanged() {
    assert_eq!(
        std::mem::size_of::<<MetadataRecord as rkyv::Archive>::Archived>(),
        48
    );
}

/// Seeded random sequences of commits, merges, splits, retention and
/// deletions: after each, every offset of every stream from its first
/// indexed offset to its end is found in an object whose range holds it
/// (the image also checks all its invariants after every apply in debug
/// builds); then a restart restores the same image.
#[test]
fn random_sequences_keep_every_offset_findable() {
    let seed = std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42u64);
    for run in 0..4u64 {
        let seed = seed.wrapping_add(run);
        let mut rng = common::Rng::new(seed);
        let dir = TempDir::new("objects-random");
        let mut store = open(dir.path(), 7);
        store.apply(create("t", 3, 1)).unwrap();
        let mut ends = [0i64; 4];
        for step in 0..150 {
            let image = store.image();
            match rng.below(6) {
                0 | 1 => {
                    let id = allocate(&mut store, 1);
                    let stream_set = rng.below(2) == 0;
                    let mut ranges = Vec::new();
                    for s in 1..=3u64 {
                        if (stream_set && rng.below(3) > 0)
                            || (!stream_set && ranges.is_empty() && (s == 3 || rng.below(2) == 0))
                        {
                            let n = 1 + rng.below(20) as i64;
                            ranges.push((s, ends[s as usize], ends[s as usize] + n));
                            ends[s as usize] += n;
                        }
                    }
                    if ranges.is_empty() {
                        continue;
                    }
                    let kind = if stream_set {
                        ObjectKind::StreamSet
                    } else {
                        ObjectKind::Stream
                    };
                    commit(&mut store, vec![object(id, kind, &ranges)]).unwrap();
                }
                2 => {
                    // Merge two adjacent Stream Objects of a stream.
                    let s = 1 + rng.below(3);
                    let list: Vec<(u64, ObjectKind, i64, i64)> = image
                        .stream_objects(s)
                        .map(|(o, r)| (o.id, o.kind, r.start_offset, r.end_offset))
                        .collect();
                    let Some(pair) = list
                        .windows(2)
                        .find(|w| w[0].1 == ObjectKind::Stream && w[1].1 == ObjectKind::Stream)
                    else {
                        continue;
                    };
                    let id = allocate(&mut store, 1);
                    store
                        .apply(MetadataCommand::CompactObjects {
                            removed: vec![pair[0].0, pair[1].0],
                            added: vec![object(
                                id,
                                ObjectKind::Stream,
                                &[(s, pair[0].2, pair[1].3)],
                            )],
                            now_ms: step,
                        })
                        .unwrap();
                }
                3 => {
                    // Split a Stream Set Object into one SO per indexed range.
                    let Some(sso) = image
                        .objects()
                        .find(|o| o.kind == ObjectKind::StreamSet)
                        .cloned()
                    else {
                        continue;
                    };
                    let kept: Vec<_> = sso
                        .ranges
                        .iter()
                        .filter(|r| {
                            image
                                .objects_for(r.stream_id, r.start_offset)
                                .is_some_and(|(o, _)| o.id == sso.id)
                        })
                        .copied()
                        .collect();
                    let first = if kept.is_empty() {
                        0
                    } else {
                        allocate(&mut store, kept.len() as u32)
                    };
                    let added = kept
                        .iter()
                        .zip(first..)
                        .map(|(r, id)| {
                            object(
                                id,
                                ObjectKind::Stream,
                                &[(r.stream_id, r.start_offset, r.end_offset)],
                            )
                        })
                        .collect();
                    store
                        .apply(MetadataCommand::CompactObjects {
                            removed: vec![sso.id],
                            added,
                            now_ms: step,
                        })
                        .unwrap();
                }
                4 => {
                    // Retention: move a log start offset, mark what died.
                    let s = 1 + rng.below(3);
                    let offset = rng.below(ends[s as usize] as u64 + 1) as i64;
                    store
                        .apply(MetadataCommand::SetLogStartOffset {
                            topic: "t".into(),
                            partition: (s - 1) as u32,
                            offset,
                        })
                        .unwrap();
                    let image = store.image();
                    let dead: Vec<u64> = image
                        .objects()
                        .filter(|o| image.is_object_dead(o))
                        .map(|o| o.id)
                        .collect();
                    if !dead.is_empty() {
                        store
                            .apply(MetadataCommand::MarkObjectsForDeletion {
                                ids: dead,
                                now_ms: step,
                            })
                            .unwrap();
                    }
                }
                _ => {
                    let ids: Vec<u64> = image.tombstones().map(|t| t.id).collect();
                    if !ids.is_empty() {
                        store.apply(MetadataCommand::DeleteObjects { ids }).unwrap();
                    }
                }
            }
            let image = store.image();
            for s in 1..=3u64 {
                let end = ends[s as usize];
                let Some(start) = image.stream_start_offset_in_objects(s) else {
                    continue;
                };
                assert_eq!(
                    image.stream_end_offset_in_objects(s),
                    Some(end),
                    "seed {seed} step {step}"
                );
                for offset in start..end {
                    assert!(
                        holder(&image, s, offset).is_some(),
                        "seed {seed} step {step}: stream {s} offset {offset}"
                    );
                }
                assert_eq!(holder(&image, s, end), None);
            }
        }
        let before = store.image();
        drop(store);
        assert_eq!(*open(dir.path(), 7).image(), *before, "seed {seed}");
    }
}
