//! Helpers of the objstore tests: batches shaped like Kafka's, a metadata
//! store with topics, and a real s3s-fs server.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_metadata::{MetadataCommand, MetadataStore};
use sluice_objstore::StoreRegistry;

mod s3_server;
#[allow(unused_imports)] // not every test binary starts a server
pub use s3_server::*;

/// A record batch as the WAL holds it: Kafka's 12-byte prefix (base offset,
/// batch length, big endian) then `body_len` bytes derived from
/// (stream, base offset, count), so any misplaced byte shows, but for the last offset delta
/// (`count - 1`, where a v2 batch has it) when the body is as long as a v2 header.
pub fn batch(stream_id: u64, base_offset: i64, count: i64, body_len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(12 + body_len);
    b.put_i64(base_offset);
    b.put_i32(body_len as i32);
    let seed = stream_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (base_offset as u64)
        ^ ((count as u64) << 48);
    for i in 0..body_len {
        b.put_u8(
            (seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                >> 56) as u8,
        );
    }
    // A v2 batch says where it ends (last offset delta at byte 23); readers go by it.
    if b.len() >= 61 {
        b[23..27].copy_from_slice(&(count as i32 - 1).to_be_bytes());
    }
    b.freeze()
}

/// Splits concatenated batches into (base offset, batch bytes).
pub fn split_batches(bytes: &[u8]) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        out.push((base, Bytes::copy_from_slice(&bytes[pos..pos + 12 + len])));
        pos += 12 + len;
    }
    assert_eq!(pos, bytes.len());
    out
}

/// A metadata store in `dir` with topic `t` of `partitions` partitions
/// (streams 1..=partitions).
pub fn registry(dir: &Path, partitions: u32) -> StoreRegistry {
    let mut store = MetadataStore::open(dir, 1).unwrap();
    if store.image().topic("t").is_none() {
        store
            .apply(MetadataCommand::CreateTopic {
                name: "t".into(),
                partitions,
                configs: Default::default(),
                shards: 1,
            })
            .unwrap();
    }
    StoreRegistry::new(store)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

use sluice_objstore::{ObjectStore, ObjectStoreError};

/// Every operation of the `ObjectStore` contract, on any backend.
pub async fn store_contract(store: &ObjectStore) {
    let data = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    store.put("a/b/one", data.clone()).await.unwrap();
    assert_eq!(store.get("a/b/one").await.unwrap(), data);
    assert_eq!(store.head("a/b/one").await.unwrap(), 100_000);
    assert_eq!(
        store.get_range("a/b/one", 10..20).await.unwrap(),
        data.slice(10..20)
    );
    // The end is clamped; a start past the end is an error.
    assert_eq!(
        store.get_range("a/b/one", 99_990..200_000).await.unwrap(),
        data.slice(99_990..)
    );
    assert!(matches!(
        store.get_range("a/b/one", 100_000..100_010).await,
        Err(ObjectStoreError::InvalidRange { .. })
    ));
    assert!(store.get_range("a/b/one", 5..5).await.unwrap().is_empty());
    // Replace.
    store
        .put("a/b/one", Bytes::from_static(b"v2"))
        .await
        .unwrap();
    assert_eq!(&store.get("a/b/one").await.unwrap()[..], b"v2");
    // Conditional create.
    store
        .put_if_absent("a/c", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(matches!(
        store.put_if_absent("a/c", Bytes::from_static(b"y")).await,
        Err(ObjectStoreError::AlreadyExists { .. })
    ));
    assert_eq!(&store.get("a/c").await.unwrap()[..], b"x");
    // Missing keys.
    assert!(matches!(
        store.get("nope").await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.head("a/nope").await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_range("nope", 0..10).await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    // Keys that could escape are refused before any I/O.
    for bad in ["../x", "a/../../x", "/etc/passwd", "a/.tmp/x", ""] {
        assert!(matches!(
            store.put(bad, Bytes::from_static(b"x")).await,
            Err(ObjectStoreError::InvalidKey { .. })
        ));
    }
    // Large objects (multipart on S3, chunked writes locally).
    let big = Bytes::from(vec![7u8; 33 * 1024 * 1024 + 5]);
    store.put("big/one", big.clone()).await.unwrap();
    assert_eq!(store.head("big/one").await.unwrap(), big.len() as u64);
    let tail = store
        .get_range("big/one", big.len() as u64 - 10..big.len() as u64)
        .await
        .unwrap();
    assert_eq!(tail, big.slice(big.len() - 10..));
    // Listing by prefix, sorted, and batch delete (missing keys are fine).
    for i in 0..5 {
        store
            .put(&format!("list/k{i}"), Bytes::from(vec![1u8; i]))
            .await
            .unwrap();
    }
    store.put("listx", Bytes::from_static(b"x")).await.unwrap();
    let listed = store.list("list/").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        ["list/k0", "list/k1", "list/k2", "list/k3", "list/k4"]
    );
    assert_eq!(listed[3].size, 3);
    assert_eq!(store.list("list").await.unwrap().len(), 6);
    assert_eq!(store.list("a/").await.unwrap().len(), 2);
    store
        .delete(&[
            "list/k1".to_string(),
            "list/k3".to_string(),
            "never".to_string(),
        ])
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list("list/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["list/k0", "list/k2", "list/k4"]);
    store.delete(&["big/one".to_string()]).await.unwrap();
    assert!(store.list("big/").await.unwrap().is_empty());
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_metadata::{MetadataImage, ObjectKind};
use sluice_objstore::{
    AppendedRecord, BlockCache, ColdReader, CompactionConfig, Compactor, Registry, Uploader,
    UploaderConfig, falling_behind,
};

/// Every batch appended, per stream: (base offset, count, bytes).
pub type Expected = BTreeMap<u64, Vec<(i64, i64, Bytes)>>;

/// Appends `rounds` rounds of batches to `streams` streams (stream 1 is
/// heavy, so it gets Stream Objects), uploading whenever due; checks that
/// each reported trim position covers exactly what was sealed and is
/// committed. Returns what was appended.
pub async fn upload_rounds(
    store: &ObjectStore,
    registry: &StoreRegistry,
    uploader: &mut Uploader,
    expected: &mut Expected,
    wal_position: &mut u64,
    streams: u64,
    rounds: u64,
) {
    let start = Instant::now();
    for round in 0..rounds {
        for stream_id in 1..=streams {
            let next = expected
                .get(&stream_id)
                .and_then(|v| v.last())
                .map_or(0, |(base, count, _)| base + count);
            let count = 1 + ((round + stream_id) % 4) as i64;
            let body = if stream_id == 1 {
                6000
            } else {
                100 + ((round * 37 + stream_id * 11) % 1500) as usize
            };
            let payload = batch(stream_id, next, count, body);
            *wal_position += payload.len() as u64;
            uploader
                .append(
                    AppendedRecord {
                        stream_id,
                        first_offset: next,
                        last_offset: next + count - 1,
                        payload: payload.clone(),
                        payload_crc: crc32c::crc32c(&payload),
                        wal_end_position: *wal_position,
                    },
                    start,
                    sluice_objstore::StreamRoll::NONE,
                )
                .unwrap();
            expected
                .entry(stream_id)
                .or_default()
                .push((next, count, payload));
            if uploader.should_seal(start) {
                flush(store, registry, uploader, *wal_position, expected).await;
            }
        }
    }
}

/// Seals and runs an upload; checks the trim position and the registry.
pub async fn flush(
    store: &ObjectStore,
    registry: &StoreRegistry,
    uploader: &mut Uploader,
    wal_position: u64,
    expected: &Expected,
) {
    let Some(mut sealed) = uploader.seal() else {
        return;
    };
    let report = sealed.run(store, registry).await.unwrap();
    uploader.completed();
    assert_eq!(report.wal_end_position, wal_position);
    let image = registry.image();
    for object in &report.objects {
        assert_eq!(image.object(object.id), Some(object));
        assert_eq!(store.head(&object.key).await.unwrap(), object.size);
    }
    for (stream_id, batches) in expected {
        let (base, count, _) = batches.last().unwrap();
        assert_eq!(
            image.stream_end_offset_in_objects(*stream_id),
            Some(base + count)
        );
    }
}

/// Reads every stream back from objects from `from` (per stream) with a
/// cold reader and compares with what was appended; also reads from every
/// offset in a sample and checks the first batch holds it.
pub async fn verify_reads(
    reader: &ColdReader,
    image: &MetadataImage,
    expected: &Expected,
    from: &BTreeMap<u64, i64>,
) {
    for (stream_id, batches) in expected {
        let start = from.get(stream_id).copied().unwrap_or(0);
        let want: Vec<(i64, Bytes)> = batches
            .iter()
            .filter(|(base, count, _)| base + count > start)
            .map(|(base, _, b)| (*base, b.clone()))
            .collect();
        let mut got: Vec<(i64, Bytes)> = Vec::new();
        let mut offset = start;
        let mut max_bytes = 1;
        while let Some(read) = reader
            .read(image, *stream_id, offset, max_bytes)
            .await
            .unwrap()
        {
            let batches = split_batches(&concat(&read.chunks));
            assert_eq!(
                read.bytes,
                batches.iter().map(|(_, b)| b.len()).sum::<usize>()
            );
            // At most max_bytes, or a single batch when the first is larger.
            assert!(read.bytes <= max_bytes || batches.len() == 1);
            got.extend(batches);
            assert!(read.next_offset > offset);
            offset = read.next_offset;
            max_bytes = (max_bytes * 3 + 1000) % 200_000;
        }
        assert_eq!(got.len(), want.len(), "stream {stream_id}");
        assert!(got == want, "stream {stream_id}: batches differ");
        // Any offset: the first batch returned holds it.
        for (base, count, bytes) in batches.iter().filter(|(b, _, _)| *b >= start).step_by(7) {
            let x = base + count - 1;
            let read = reader.read(image, *stream_id, x, 0).await.unwrap().unwrap();
            let first = split_batches(&concat(&read.chunks));
            assert_eq!(first.len(), 1);
            assert_eq!(&first[0].1, bytes);
            assert_eq!(read.next_offset, base + count);
        }
    }
}

pub fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

/// Upload, cold reads, compaction until nothing is left to do, retention,
/// garbage collection and a restart of the metadata, on any backend.
pub async fn tier_scenario(
    store: ObjectStore,
    metadata_dir: &Path,
    rounds: u64,
    verify_each_compaction: bool,
) {
    let registry = registry(metadata_dir, 4);
    let mut uploader = Uploader::new(UploaderConfig {
        upload_bytes: 256 * 1024,
        stream_object_min_bytes: 100 * 1024,
        block_bytes: 16 * 1024,
        ..UploaderConfig::default()
    });
    let mut expected = Expected::new();
    let mut wal = 0u64;
    upload_rounds(
        &store,
        &registry,
        &mut uploader,
        &mut expected,
        &mut wal,
        4,
        rounds,
    )
    .await;
    flush(&store, &registry, &mut uploader, wal, &expected).await;
    let image = registry.image();
    eprintln!(
        "uploaded: {} objects, {} bytes",
        image.objects().count(),
        image.objects().map(|o| o.size).sum::<u64>()
    );
    assert!(image.objects().any(|o| o.kind == ObjectKind::StreamSet));
    assert!(image.objects().any(|o| o.kind == ObjectKind::Stream));

    // A cache smaller than the data: evictions, prefetches, hits.
    let cache = BlockCache::new(store.clone(), 128 * 1024);
    let reader = ColdReader::new(cache.clone());
    let none = BTreeMap::new();
    verify_reads(&reader, &image, &expected, &none).await;
    assert!(cache.bytes() <= 128 * 1024 + 64 * 1024);
    let stats = store.stats().snapshot();
    assert!(stats.cache_misses > 0 && stats.cache_hits > 0 && stats.cache_evictions > 0);
    assert!(stats.cache_prefetches > 0);

    // Compaction, at the lowest priority as the broker runs it: every record stays readable
    // at the same offsets.
    let config = CompactionConfig {
        step_bytes_max: 512 * 1024,
        small_stream_object_bytes: 200 * 1024,
        stream_object_target_bytes: 1024 * 1024,
        block_bytes: 32 * 1024,
        deletion_grace: Duration::from_secs(60),
    };
    let waiting: u64 = image
        .objects()
        .filter(|o| o.kind == ObjectKind::StreamSet)
        .map(|o| o.size)
        .sum();
    let behind_at = |step: u64| CompactionConfig {
        step_bytes_max: step as usize,
        ..config
    };
    assert!(falling_behind(&image, &behind_at(1)));
    assert!(!falling_behind(&image, &behind_at(waiting)));
    let behind = Arc::new(AtomicBool::new(false));
    let compactor = Compactor::new(store.background(behind.clone()), config);
    let mut steps = 0;
    loop {
        let image = registry.image();
        behind.store(
            falling_behind(&image, compactor.config()),
            Ordering::Relaxed,
        );
        let Some(report) = compactor.run_step(&image, &registry, 1_000).await.unwrap() else {
            break;
        };
        steps += 1;
        assert!(steps < 100, "compaction does not converge: {report:?}");
        if !verify_each_compaction {
            continue;
        }
        let image = registry.image();
        verify_reads(
            &ColdReader::new(BlockCache::new(store.clone(), 1 << 20)),
            &image,
            &expected,
            &none,
        )
        .await;
    }
    let image = registry.image();
    verify_reads(
        &ColdReader::new(BlockCache::new(store.clone(), 1 << 20)),
        &image,
        &expected,
        &none,
    )
    .await;
    eprintln!(
        "compaction: {steps} steps, {} objects left, {} tombstones",
        image.objects().count(),
        image.tombstones().count()
    );
    assert!(steps >= 2, "{steps}");
    assert!(image.objects().all(|o| o.kind == ObjectKind::Stream));
    assert!(!falling_behind(&image, &behind_at(1)));
    assert!(image.tombstones().count() > 0);
    let stats = store.stats().snapshot();
    assert!(stats.compaction_bytes_read > 0 && stats.compaction_steps == steps);

    // Retention: stream 2 starts at the middle of its data.
    let stream2 = &expected[&2];
    let (middle, _, _) = stream2[stream2.len() / 2];
    let doomed = sluice_objstore::deletable_objects(&image, 2, middle);
    registry
        .submit(sluice_metadata::MetadataCommand::SetLogStartOffset {
            topic: "t".into(),
            partition: 1,
            offset: middle,
        })
        .await
        .unwrap();
    let marked = compactor
        .apply_retention(&registry.image(), &registry, 2_000)
        .await
        .unwrap();
    assert_eq!(marked, doomed);
    let image = registry.image();
    let mut from = BTreeMap::new();
    from.insert(2, image.stream_start_offset_in_objects(2).unwrap_or(middle));
    assert!(from[&2] <= middle);
    verify_reads(&reader, &image, &expected, &from).await;

    // Garbage collection after the grace period: the store holds exactly
    // the live objects.
    assert!(
        compactor
            .collect_garbage(&image, &registry, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    let deleted = compactor
        .collect_garbage(&image, &registry, 100_000)
        .await
        .unwrap();
    assert!(!deleted.is_empty());
    let image = registry.image();
    assert_eq!(image.tombstones().count(), 0);
    let mut live: Vec<String> = image.objects().map(|o| o.key.clone()).collect();
    live.sort();
    let mut stored: Vec<String> = store
        .list("s")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    stored.sort();
    assert_eq!(stored, live);

    // Restart: the metadata reopens to the same image; reads still work.
    let before = registry.image();
    drop(registry.into_inner());
    let reopened = registry_reopen(metadata_dir);
    let after = reopened.image();
    assert_eq!(*after, *before);
    verify_reads(
        &ColdReader::new(BlockCache::new(store.clone(), 1 << 20)),
        &after,
        &expected,
        &from,
    )
    .await;
}

pub fn registry_reopen(dir: &Path) -> StoreRegistry {
    StoreRegistry::new(MetadataStore::open(dir, 1).unwrap())
}

pub fn image_arc(registry: &StoreRegistry) -> Arc<MetadataImage> {
    registry.image()
}
