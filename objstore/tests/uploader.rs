//! The uploader's rules on the local backend: triggers, back-pressure, one
//! upload in flight, Stream Objects for large runs, resumption after a
//! refused commit, shared block fetches.

mod common;

use std::time::{Duration, Instant};

use common::batch;
use sluice_metadata::{MetadataCommand, ObjectKind};
use sluice_objstore::{
    AppendedRecord, BlockCache, ColdReader, ObjectStore, StreamRoll, UploadError, UploadReport,
    Uploader, UploaderConfig,
};

fn record(stream_id: u64, first: i64, count: i64, body: usize, wal: u64) -> AppendedRecord {
    let payload = batch(stream_id, first, count, body);
    AppendedRecord {
        stream_id,
        first_offset: first,
        last_offset: first + count - 1,
        payload_crc: crc32c::crc32c(&payload),
        payload,
        wal_end_position: wal,
    }
}

/// Each object of an upload: its kind and how many streams it holds.
fn object_kinds(report: &UploadReport) -> Vec<(ObjectKind, usize)> {
    report
        .objects
        .iter()
        .map(|o| (o.kind, o.ranges.len()))
        .collect()
}

#[test]
fn triggers_backpressure_and_one_upload_in_flight() {
    let t0 = Instant::now();
    let mut u = Uploader::new(UploaderConfig {
        upload_bytes: 10_000,
        upload_interval: Duration::from_secs(1),
        buffer_bytes_max: 20_000,
        ..UploaderConfig::default()
    });
    assert!(!u.should_seal(t0) && u.next_deadline().is_none());
    u.append(record(1, 0, 1, 1000, 100), t0, StreamRoll::NONE)
        .unwrap();
    assert!(!u.should_seal(t0));
    assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(1)));
    assert!(u.should_seal(t0 + Duration::from_secs(1)));
    u.append(record(1, 1, 1, 9000, 200), t0, StreamRoll::NONE)
        .unwrap();
    assert!(u.should_seal(t0));
    // Discontinuous offsets and a WAL position going back are refused.
    assert!(matches!(
        u.append(record(1, 5, 1, 10, 300), t0, StreamRoll::NONE),
        Err(UploadError::Build(_))
    ));
    assert!(matches!(
        u.append(record(2, 0, 1, 10, 150), t0, StreamRoll::NONE),
        Err(UploadError::WalPositionBackwards { .. })
    ));
    // Back-pressure above the buffer cap.
    assert!(matches!(
        u.append(record(2, 0, 1, 15_000, 300), t0, StreamRoll::NONE),
        Err(UploadError::Full { .. })
    ));
    let sealed = u.seal().unwrap();
    assert_eq!(sealed.wal_end_position(), 200);
    assert_eq!(
        sealed.stream_end_offsets(),
        vec![(1, 2)],
        "stream 1's offsets 0 and 1: its end is 2, exclusive"
    );
    assert_eq!(u.buffered_bytes(), 0);
    // One upload in flight: the next one waits for `completed`.
    u.append(record(1, 2, 1, 20_000, 400), t0, StreamRoll::NONE)
        .unwrap();
    assert!(!u.should_seal(t0));
    assert!(u.seal().is_none());
    u.completed();
    assert!(u.should_seal(t0));
    assert_eq!(u.seal().unwrap().wal_end_position(), 400);
}

#[test]
fn large_runs_get_stream_objects_and_refused_commits_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("objects")).unwrap();
    let registry = common::registry(&dir.path().join("metadata"), 3);
    let mut u = Uploader::new(UploaderConfig {
        stream_object_min_bytes: 50_000,
        block_bytes: 8 * 1024,
        ..UploaderConfig::default()
    });
    let t0 = Instant::now();
    let mut wal = 0;
    let mut next = [0i64; 4];
    for i in 0..40 {
        for (stream_id, body) in [(1u64, 3000usize), (2, 100), (3, 50)] {
            wal += body as u64 + 12;
            let count = 1 + i % 3;
            u.append(
                record(stream_id, next[stream_id as usize], count, body, wal),
                t0,
                StreamRoll::NONE,
            )
            .unwrap();
            next[stream_id as usize] += count;
        }
    }
    let mut sealed = u.seal().unwrap();
    futures::executor::block_on(async {
        // The metadata is unreachable when the objects are put: run fails,
        // nothing is reported; run again resumes with the same ids and
        // objects (no new allocation, no new put).
        let refusing = RefuseCommit(&registry);
        let err = sealed.run(&store, &refusing).await.unwrap_err();
        assert!(matches!(err, UploadError::Metadata(_)), "{err}");
        let next_id = registry.image().next_object_id();
        let puts = store.stats().snapshot().objects_uploaded;
        assert_eq!(puts, 2);
        assert!(registry.image().objects().next().is_none());
        let report = sealed.run(&store, &registry).await.unwrap();
        assert_eq!(registry.image().next_object_id(), next_id);
        assert_eq!(store.stats().snapshot().objects_uploaded, puts);
        u.completed();
        assert_eq!(report.wal_end_position, wal);
        assert_eq!(
            object_kinds(&report),
            [(ObjectKind::StreamSet, 2), (ObjectKind::Stream, 1)]
        );
        assert_eq!(report.objects[1].ranges[0].stream_id, 1);
        // Running a finished upload again commits nothing new.
        let epoch = registry.image().epoch;
        sealed.run(&store, &registry).await.unwrap();
        assert_eq!(registry.image().epoch, epoch);
        // Concurrent readers of one block share one GET.
        let image = registry.image();
        let cache = BlockCache::new(store.clone(), 1 << 20);
        let reader = ColdReader::new(cache).with_read_ahead_blocks(0);
        let before = store.stats().snapshot();
        let reads = (0..8).map(|_| reader.read(&image, 1, 0, 1));
        let results = futures::future::join_all(reads).await;
        assert!(results.iter().all(|r| r.as_ref().unwrap().is_some()));
        let after = store.stats().snapshot();
        // One GET for the index, one for the block.
        assert_eq!(after.requests - before.requests, 2);
        assert_eq!(after.cache_misses - before.cache_misses, 2);
        assert_eq!(after.cache_hits - before.cache_hits, 14);
    });
}

/// Allocates ids, refuses commits (the controller stopped meanwhile).
struct RefuseCommit<'a>(&'a sluice_objstore::StoreRegistry);

impl sluice_objstore::Registry for RefuseCommit<'_> {
    async fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<
        (
            std::sync::Arc<sluice_metadata::MetadataImage>,
            sluice_metadata::CommandOutcome,
        ),
        sluice_objstore::RegistryError,
    > {
        match command {
            MetadataCommand::AllocateObjectIds { .. } => self.0.apply(command),
            _ => Err(sluice_objstore::RegistryError::Unconfirmed(
                "the controller stopped".to_string(),
            )),
        }
    }
}

/// Objects put but never committed (a crash before the commit) are found
/// and deleted; committed ones and ids at or above the watermark are not.
#[test]
fn orphans_are_found_and_deleted() {
    use sluice_objstore::{CompactionConfig, Compactor, object_key, parse_object_key};
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("objects")).unwrap();
    let registry = common::registry(&dir.path().join("metadata"), 1);
    let mut u = Uploader::new(UploaderConfig::default());
    u.append(record(1, 0, 1, 100, 112), Instant::now(), StreamRoll::NONE)
        .unwrap();
    futures::executor::block_on(async {
        let report = u.seal().unwrap().run(&store, &registry).await.unwrap();
        let committed = report.objects[0].key.clone();
        // A crashed upload: ids allocated, object put, never committed.
        let first = match registry
            .apply(MetadataCommand::AllocateObjectIds { count: 2 })
            .unwrap()
            .1
        {
            sluice_metadata::CommandOutcome::ObjectIdsAllocated {
                first_object_id, ..
            } => first_object_id,
            other => panic!("{other:?}"),
        };
        let orphan = object_key(ObjectKind::StreamSet, first);
        let in_flight = object_key(ObjectKind::Stream, first + 1);
        assert_eq!(
            parse_object_key(&orphan),
            Some((ObjectKind::StreamSet, first))
        );
        assert_eq!(parse_object_key("so/12"), None);
        for key in [&orphan, &in_flight] {
            store
                .put(key, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let compactor = Compactor::new(store.clone(), CompactionConfig::default());
        let deleted = compactor
            .delete_orphans(&registry.image(), first + 1)
            .await
            .unwrap();
        assert_eq!(deleted, vec![orphan]);
        let left: Vec<String> = store
            .list("s")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(left, vec![in_flight, committed]);
    });
}

#[test]
fn a_stream_roll_seals_before_the_shard_triggers() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut u = Uploader::new(UploaderConfig {
        upload_bytes: 1 << 20,
        upload_interval: Duration::from_secs(600),
        ..UploaderConfig::default()
    });
    // segment.ms: stream 2's bound runs from its first append, earlier than the shard's.
    let roll = StreamRoll {
        after: ms(200),
        bytes: usize::MAX,
    };
    u.append(record(1, 0, 1, 100, 200), t0, StreamRoll::NONE)
        .unwrap();
    assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(600)));
    u.append(record(2, 0, 1, 100, 400), t0 + ms(50), roll)
        .unwrap();
    u.append(record(2, 1, 1, 100, 600), t0 + ms(100), roll)
        .unwrap();
    assert_eq!(u.next_deadline(), Some(t0 + ms(250)));
    assert!(!u.should_seal(t0 + ms(249)));
    assert!(u.should_seal(t0 + ms(250)));
    assert!(u.seal().is_some());
    u.completed();
    assert_eq!(u.next_deadline(), None);

    // segment.bytes: sealed once one stream holds that many bytes, whatever the others hold.
    let first = record(3, 0, 1, 100, 800);
    let bytes = StreamRoll {
        after: Duration::MAX,
        bytes: 2 * first.payload.len(),
    };
    u.append(first, t0, bytes).unwrap();
    u.append(record(4, 0, 1, 100, 1000), t0, bytes).unwrap();
    assert!(!u.should_seal(t0));
    u.append(record(3, 1, 1, 100, 1200), t0, bytes).unwrap();
    assert!(u.should_seal(t0));
    assert!(u.seal().is_some());
    u.completed();
    assert!(!u.should_seal(t0));
}

#[test]
fn a_failing_put_is_counted_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    let store = ObjectStore::local(&root).unwrap();
    let registry = common::registry(&dir.path().join("metadata"), 1);
    let mut u = Uploader::new(UploaderConfig {
        backoff_max: Duration::from_millis(10),
        ..UploaderConfig::default()
    });
    u.append(record(1, 0, 1, 1000, 100), Instant::now(), StreamRoll::NONE)
        .unwrap();
    let mut sealed = u.seal().unwrap();
    // The store's directory is a file now: every put fails (as on a full disk).
    let away = dir.path().join("objects-away");
    std::fs::rename(&root, &away).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    let failing = || store.stats().snapshot().puts_failing;
    futures::executor::block_on(async {
        let run = sealed.run(&store, &registry);
        let repair = async {
            while failing() == 0 {
                store.sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(failing(), 1, "one put, failing");
            std::fs::remove_file(&root).unwrap();
            std::fs::rename(&away, &root).unwrap();
        };
        let (report, ()) = futures::future::join(run, repair).await;
        assert_eq!(report.unwrap().objects.len(), 1);
    });
    assert_eq!(failing(), 0, "the put succeeded");
    assert!(store.stats().snapshot().upload_retries >= 1);
}

/// A WAL segment as the WAL lays it out: records (a 64-byte header, then the payload) placed
/// back to back, never across a segment's end; bytes between them are not the uploader's.
struct FakeSegments {
    dir: std::path::PathBuf,
    segment_bytes: u64,
    position: u64,
}

impl FakeSegments {
    fn file(&self, segment: u64) -> std::path::PathBuf {
        self.dir.join(format!("segment-{segment}"))
    }

    /// Writes `record`'s payload where the WAL would and returns it with its WAL end.
    fn write(&mut self, mut record: AppendedRecord) -> AppendedRecord {
        use std::os::unix::fs::FileExt;
        let len = 64 + record.payload.len() as u64;
        let segment_end = self.position - self.position % self.segment_bytes + self.segment_bytes;
        if self.position + len > segment_end {
            self.position = segment_end;
        }
        let segment = self.position / self.segment_bytes;
        let path = self.file(segment);
        if !path.exists() {
            // Filler where no record is: a reader that strays off its blocks sees it.
            std::fs::write(&path, vec![0xAB; self.segment_bytes as usize]).unwrap();
        }
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let at = (self.position + 64) % self.segment_bytes;
        file.write_all_at(&record.payload, at).unwrap();
        self.position += len;
        record.wal_end_position = self.position;
        record
    }
}

#[test]
fn segments_become_objects_by_a_link_and_outlive_the_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::local(dir.path().join("objects")).unwrap();
    let registry = common::registry(&dir.path().join("metadata"), 3);
    let mut wal = FakeSegments {
        dir: dir.path().to_path_buf(),
        segment_bytes: 64 * 1024,
        position: 0,
    };
    let mut u = Uploader::new(UploaderConfig::default());
    let t0 = Instant::now();
    let mut next = [0i64; 3];
    let mut expected: Vec<Vec<u8>> = vec![Vec::new(); 3];
    // Streams 1 and 2 interleaved through segment 0, stream 1 alone in segment 1, then a
    // record in segment 2 that stays buffered.
    let mut last_end = 0;
    let mut i = 0;
    while wal.position < 2 * wal.segment_bytes - 3000 {
        i += 1;
        let stream_id = if wal.position < wal.segment_bytes && i % 2 == 0 {
            2
        } else {
            1
        };
        let s = stream_id as usize;
        let record = wal.write(record(stream_id, next[s], 2, 900 + s * 100, 0));
        next[s] += 2;
        expected[s].extend_from_slice(&record.payload);
        last_end = record.wal_end_position;
        u.append(record, t0, StreamRoll::NONE).unwrap();
    }
    assert!(last_end <= 2 * wal.segment_bytes);
    wal.position = 2 * wal.segment_bytes;
    let later = wal.write(record(1, next[1], 1, 500, 0));
    u.append(later, t0, StreamRoll::NONE).unwrap();
    let buffered = u.buffered_bytes();

    let mut sealed = u
        .seal_before(2 * wal.segment_bytes, t0 + Duration::from_secs(1))
        .unwrap();
    assert_eq!(sealed.wal_end_position(), last_end);
    assert_eq!(u.buffered_bytes(), buffered - sealed.bytes());
    assert_eq!(u.buffered_bytes(), 512, "the record in segment 2 stays");
    assert_eq!(
        u.next_deadline(),
        Some(t0 + Duration::from_secs(1) + UploaderConfig::default().upload_interval),
        "what stays counts its interval from the cut"
    );
    let files: Vec<_> = (0..3).map(|s| wal.file(s)).collect();
    sealed.link_segments(wal.segment_bytes, |end| {
        Some(files[((end - 1) / wal.segment_bytes) as usize].clone())
    });
    let report = futures::executor::block_on(sealed.run(&store, &registry)).unwrap();
    u.completed();
    assert_eq!(
        object_kinds(&report),
        [(ObjectKind::StreamSet, 2), (ObjectKind::Stream, 1)]
    );
    let snapshot = store.stats().snapshot();
    assert_eq!(snapshot.objects_uploaded, 2);
    assert_eq!(snapshot.objects_linked, 2);
    assert_eq!(snapshot.bytes_uploaded, 0, "no record's bytes were copied");

    // The WAL replaces its segment files once trimmed; the objects keep the bytes.
    for file in &files[..2] {
        std::fs::remove_file(file).unwrap();
        std::fs::write(file, vec![0u8; wal.segment_bytes as usize]).unwrap();
    }
    let image = registry.image();
    let reader = ColdReader::new(BlockCache::new(store.clone(), 1 << 20));
    for stream_id in [1u64, 2] {
        let mut got = Vec::new();
        let mut offset = 0;
        while let Some(read) =
            futures::executor::block_on(reader.read(&image, stream_id, offset, 1 << 20)).unwrap()
        {
            for chunk in &read.chunks {
                got.extend_from_slice(chunk);
            }
            offset = read.next_offset;
        }
        assert!(
            got == expected[stream_id as usize][..],
            "stream {stream_id} reads back from the linked objects"
        );
    }
    // Compaction splits the Stream Set Object, reading its blocks only.
    let compactor = sluice_objstore::Compactor::new(store.clone(), Default::default());
    let step = futures::executor::block_on(compactor.run_step(&image, &registry, common::now_ms()))
        .unwrap()
        .expect("a split");
    assert_eq!(
        step.bytes_read,
        image
            .objects()
            .next()
            .unwrap()
            .ranges
            .iter()
            .map(|r| r.len)
            .sum::<u64>()
    );
}
