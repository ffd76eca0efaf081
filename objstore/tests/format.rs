//! The object format: build / parse round trips, ranged reads of the index,
//! and detection of every corruption of the footer and index.

mod common;

use bytes::Bytes;
use common::batch;
use sluice_metadata::ObjectKind;
use sluice_objstore::ObjectStore;
use sluice_objstore::format::{
    BuildError, FOOTER_BYTES, ObjectBuilder, ObjectIndex, StreamSetObjectBuilder, read_stream,
};

/// Streams 3, 1, 2 interleaved; returns the builder and the appends (stream, first offset,
/// payload, last offset).
fn sample(block_bytes: usize, appends: i64) -> (ObjectBuilder, Vec<(u64, i64, Bytes, i64)>) {
    let mut builder =
        StreamSetObjectBuilder::new(ObjectKind::StreamSet).with_block_bytes(block_bytes);
    let mut all = Vec::new();
    let mut next = [0i64, 100, 0, 7];
    for i in 0..appends {
        for stream in [3u64, 1, 2] {
            let count = 1 + (i % 3);
            let payload = batch(
                stream,
                next[stream as usize],
                count,
                50 + (i as usize * 13) % 400,
            );
            builder
                .add(
                    stream,
                    next[stream as usize],
                    next[stream as usize] + count - 1,
                    payload.clone(),
                )
                .unwrap();
            all.push((
                stream,
                next[stream as usize],
                payload,
                next[stream as usize] + count - 1,
            ));
            next[stream as usize] += count;
        }
    }
    (builder, all)
}

#[test]
fn round_trip() {
    let (builder, appends) = sample(1000, 50);
    let data_bytes = builder.data_bytes();
    let (object, ranges) = builder.finish();
    let index = ObjectIndex::parse("o", &object).unwrap();
    assert_eq!(index.kind, ObjectKind::StreamSet);
    assert_eq!(index.ranges(), ranges);
    // Streams ordered by id; each stream's data contiguous, in order.
    assert_eq!(
        ranges.iter().map(|r| r.stream_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(ranges[0].start_offset, 100);
    assert_eq!(ranges.iter().map(|r| r.len).sum::<u64>(), data_bytes as u64);
    assert!(index.blocks.len() > 3, "blocks are cut at about 1000 bytes");
    for r in &ranges {
        let want: Vec<u8> = appends
            .iter()
            .filter(|a| a.0 == r.stream_id)
            .flat_map(|a| a.2.iter().copied())
            .collect();
        assert_eq!(
            &object[r.position as usize..(r.position + r.len) as usize],
            &want[..]
        );
        // Every offset finds the block that holds it.
        for offset in r.start_offset..r.end_offset {
            let b = index.blocks[index.block_for(r.stream_id, offset).unwrap()];
            assert!(
                b.stream_id == r.stream_id && b.start_offset <= offset && offset < b.end_offset
            );
        }
        assert!(index.block_for(r.stream_id, r.end_offset).is_none());
        assert!(index.block_for(r.stream_id, r.start_offset - 1).is_none());
    }
}

#[test]
fn block_crcs_combined_from_the_payloads_crcs_equal_a_pass_over_the_blocks() {
    let (builder, appends) = sample(1000, 50);
    let (expected, _) = builder.finish();
    // Every payload's CRC known, and every other one (blocks mixing both take the pass).
    for known_every in [1, 2] {
        let mut with_crcs = ObjectBuilder::new(ObjectKind::StreamSet).with_block_bytes(1000);
        for (i, (stream, first, payload, last)) in appends.iter().enumerate() {
            let (stream, first, last) = (*stream, *first, *last);
            if i % known_every == 0 {
                let crc = crc32c::crc32c(payload);
                with_crcs
                    .add_with_crc(stream, first, last, payload.clone(), crc)
                    .unwrap();
            } else {
                with_crcs.add(stream, first, last, payload.clone()).unwrap();
            }
        }
        let (object, _) = with_crcs.finish();
        assert!(object == expected, "known every {known_every}");
    }
}

#[test]
fn builder_refuses_what_breaks_the_format() {
    let mut b = ObjectBuilder::new(ObjectKind::StreamSet);
    b.add(1, 0, 4, batch(1, 0, 5, 10)).unwrap();
    assert!(matches!(
        b.add(1, 6, 7, batch(1, 6, 2, 10)),
        Err(BuildError::Discontinuous { .. })
    ));
    assert!(matches!(
        b.add(1, 5, 4, batch(1, 5, 1, 10)),
        Err(BuildError::BadOffsets { .. })
    ));
    assert!(matches!(
        b.add(1, 5, 5, Bytes::new()),
        Err(BuildError::BadPayload(0))
    ));
    let mut so = ObjectBuilder::new(ObjectKind::Stream);
    so.add(1, 0, 0, batch(1, 0, 1, 10)).unwrap();
    assert!(matches!(
        so.add(2, 0, 0, batch(2, 0, 1, 10)),
        Err(BuildError::SecondStream { .. })
    ));
    let (object, ranges) = so.finish();
    assert_eq!(
        ObjectIndex::parse("so", &object).unwrap().kind,
        ObjectKind::Stream
    );
    assert_eq!(ranges.len(), 1);
}

/// Any single flipped bit in the index or footer is detected; so are a
/// truncated object and a wrong size.
#[test]
fn corruption_is_detected() {
    let (builder, _) = sample(500, 20);
    let (object, _) = builder.finish();
    let index = ObjectIndex::parse("o", &object).unwrap();
    let index_start = index
        .blocks
        .last()
        .map(|b| b.position as usize + b.len as usize)
        .unwrap();
    for i in index_start..object.len() {
        for bit in [0, 3, 7] {
            let mut bad = object.to_vec();
            bad[i] ^= 1 << bit;
            assert!(
                ObjectIndex::parse("o", &bad).is_err(),
                "flip at byte {i} bit {bit}"
            );
        }
    }
    assert!(ObjectIndex::parse("o", &object[..object.len() - 1]).is_err());
    assert!(ObjectIndex::parse("o", &object[1..]).is_err());
    assert!(ObjectIndex::parse("o", &object[..FOOTER_BYTES - 1]).is_err());
    let mut appended = object.to_vec();
    appended.push(0);
    assert!(ObjectIndex::parse("o", &appended).is_err());
    // A flipped data byte passes the index but fails the block CRC.
    let mut bad = object.to_vec();
    bad[10] ^= 1;
    let bad = Bytes::from(bad);
    let parsed = ObjectIndex::parse("o", &bad).unwrap();
    let b = parsed.blocks[0];
    assert!(
        sluice_objstore::format::check_block(
            "o",
            &b,
            &bad[b.position as usize..][..b.len as usize]
        )
        .is_err()
    );
}

/// Through a store: the index comes from ranged GETs of the tail, in one
/// request when small and two when it is larger than the tail read.
#[test]
fn index_and_stream_through_ranged_gets() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path()).unwrap();
    futures::executor::block_on(async {
        for (block_bytes, appends) in [(1 << 20, 10), (1, 800)] {
            let (builder, appends) = sample(block_bytes, appends);
            let (object, ranges) = builder.finish();
            store.put("x/o", object.clone()).await.unwrap();
            let before = store.stats().snapshot().requests;
            let index = ObjectIndex::read(&store, "x/o", object.len() as u64)
                .await
                .unwrap();
            let requests = store.stats().snapshot().requests - before;
            let index_bytes = index.blocks.len() * 40;
            assert_eq!(
                requests,
                if index_bytes + FOOTER_BYTES > 64 * 1024 {
                    2
                } else {
                    1
                }
            );
            assert_eq!(index.ranges(), ranges);
            for r in &ranges {
                let blocks = read_stream(&store, "x/o", &index, r.stream_id)
                    .await
                    .unwrap();
                let got: Vec<u8> = blocks.iter().flat_map(|(_, b)| b.iter().copied()).collect();
                let want: Vec<u8> = appends
                    .iter()
                    .filter(|a| a.0 == r.stream_id)
                    .flat_map(|a| a.2.iter().copied())
                    .collect();
                assert_eq!(got, want);
            }
            // A size that is not the object's is refused.
            assert!(
                ObjectIndex::read(&store, "x/o", object.len() as u64 + 1)
                    .await
                    .is_err()
            );
            assert!(
                ObjectIndex::read(&store, "x/o", object.len() as u64 - 1)
                    .await
                    .is_err()
            );
        }
    });
}
