//! The segmented WAL against real O_DIRECT files: records never cross a segment's end, a
//! closed segment linked elsewhere keeps its bytes while the ring laps, and recovery reads
//! across segment files.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{TestRecord, run, scratch_dir, test_record};
use sluice_wal::format::RECORD_HEADER_SIZE;
use sluice_wal::{RecoveredRecord, Wal, WalConfig, WalError, WalPosition};

const SEGMENT_BYTES: u64 = 4 << 20;
const CAPACITY_BYTES: u64 = 4 * SEGMENT_BYTES;

fn config(dir: &Path) -> WalConfig {
    let mut config = WalConfig::new(dir.join("wal"), CAPACITY_BYTES);
    config.group_commit_bytes_max = 256 << 10;
    config.inflight_writes_max = 4;
    config.segment_bytes = Some(SEGMENT_BYTES);
    config.preformat = false;
    config
}

async fn append(wal: &Wal, record: &TestRecord) -> WalPosition {
    wal.append(
        record.stream_id,
        record.first_offset,
        record.last_offset,
        &record.payload,
    )
    .await
    .expect("append")
}

/// Where a record ending at `end` with `payload_len` bytes starts its payload.
fn payload_start(end: WalPosition, payload_len: usize) -> u64 {
    end.0 - payload_len as u64
}

/// A closed segment linked the way the object tier links one: the link, and each record's
/// payload with its offset in the file.
struct Linked {
    path: PathBuf,
    records: Vec<(u64, Vec<u8>)>,
}

#[test]
fn linked_segments_keep_their_bytes_while_the_ring_laps_and_recovery_reads_across_files() {
    let dir = scratch_dir("segments-lap");
    let config = config(&dir);
    let seed = 0x5e6_u64;
    println!("seed {seed}");
    let (linked, live, trim) = run(async {
        let (wal, recovered) = Wal::open(config.clone()).await.expect("open");
        assert!(recovered.is_empty());
        assert_eq!(wal.segment_bytes(), Some(SEGMENT_BYTES));
        let mut linked: Vec<Linked> = Vec::new();
        // Appended, not yet trimmed: (record, end).
        let mut live: Vec<(TestRecord, WalPosition)> = Vec::new();
        let mut i = 0;
        while wal.stats().append_position.0 < 10 * CAPACITY_BYTES {
            let record = test_record(seed, i, 256 << 10);
            i += 1;
            let end = append(&wal, &record).await;
            let start = end.0 - record.payload.len() as u64 - RECORD_HEADER_SIZE;
            assert_eq!(
                start / SEGMENT_BYTES,
                (end.0 - 1) / SEGMENT_BYTES,
                "record {i} crosses a segment's end"
            );
            live.push((record, end));
            if i % 40 == 0 {
                // An upload: close the segment, link every closed one holding live records,
                // trim past them.
                let rolled = wal.roll().await.expect("roll");
                wal.wait_durable(rolled).await.expect("durable");
                let closed = wal.closed_segments_end().expect("segmented");
                assert!(closed >= rolled, "the roll closed everything appended");
                let cut = live.iter().take_while(|(_, end)| *end <= closed).count();
                let mut current: Option<(u64, Linked)> = None;
                for (record, end) in &live[..cut] {
                    let segment = (end.0 - 1) / SEGMENT_BYTES;
                    if current.as_ref().map(|(s, _)| *s) != Some(segment) {
                        linked.extend(current.take().map(|(_, l)| l));
                        let source = wal.segment_file(*end).expect("a segment file");
                        let path = dir.join(format!("object-{}", linked.len()));
                        std::fs::hard_link(&source, &path).expect("link");
                        let records = Vec::new();
                        current = Some((segment, Linked { path, records }));
                    }
                    let offset = payload_start(*end, record.payload.len()) % SEGMENT_BYTES;
                    let (_, object) = current.as_mut().expect("linked");
                    object.records.push((offset, record.payload.clone()));
                }
                linked.extend(current.map(|(_, l)| l));
                if cut > 0 {
                    wal.trim(live[cut - 1].1).await.expect("trim");
                    live.drain(..cut);
                }
            }
        }
        let trim = wal.stats().trim_position;
        wal.close().await.expect("close");
        (linked, live, trim)
    });
    assert!(trim.0 > 8 * CAPACITY_BYTES, "the ring lapped many times");
    assert!(linked.len() > 20, "{} segments linked", linked.len());
    // Released segments give back what the WAL never wrote in them.
    let punched = linked
        .iter()
        .filter(|o| std::fs::metadata(&o.path).expect("stat").blocks() * 512 < SEGMENT_BYTES / 2)
        .count();
    assert!(
        punched + 4 >= linked.len(),
        "{punched} of {} punched",
        linked.len()
    );
    for object in &linked {
        let bytes = std::fs::read(&object.path).expect("read a linked segment");
        for (offset, payload) in &object.records {
            let at = *offset as usize;
            assert!(
                bytes[at..at + payload.len()] == payload[..],
                "{}: a record's bytes changed after the ring reused its segment",
                object.path.display()
            );
        }
    }
    let recovered = run(async {
        let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
        assert_eq!(wal.stats().trim_position, trim);
        wal.close().await.expect("close");
        recovered
    });
    assert_same(&recovered, &live);
    std::fs::remove_dir_all(dir).ok();
}

fn assert_same(recovered: &[RecoveredRecord], expected: &[(TestRecord, WalPosition)]) {
    assert_eq!(recovered.len(), expected.len(), "records recovered");
    for (got, (want, end)) in recovered.iter().zip(expected) {
        assert_eq!(got.end_position, *end);
        assert_eq!(got.stream_id, want.stream_id);
        assert!(got.payload[..] == want.payload[..]);
    }
}

#[test]
fn a_roll_starts_the_next_record_in_a_new_segment_and_survives_a_reopen() {
    let dir = scratch_dir("segments-roll");
    let config = config(&dir);
    let records: Vec<TestRecord> = (0..3).map(|i| test_record(7, i, 1 << 10)).collect();
    let ends = run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("open");
        let first = append(&wal, &records[0]).await;
        let rolled = wal.roll().await.expect("roll");
        assert!(first < rolled);
        assert_eq!(
            rolled,
            WalPosition(SEGMENT_BYTES),
            "the roll closed segment 0"
        );
        assert_eq!(
            wal.roll().await.expect("roll again"),
            rolled,
            "a second roll finds the segment closed already"
        );
        wal.wait_durable(rolled).await.expect("durable");
        assert_eq!(wal.closed_segments_end(), Some(WalPosition(SEGMENT_BYTES)));
        let second = append(&wal, &records[1]).await;
        assert_eq!(
            second.0 - records[1].payload.len() as u64 - RECORD_HEADER_SIZE,
            SEGMENT_BYTES,
            "the record after a roll starts the next segment"
        );
        wal.wait_durable(second).await.expect("durable");
        // Dropped without close: reopening must find both, across the padding.
        (first, second)
    });
    let recovered = run(async {
        let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
        let third = append(&wal, &records[2]).await;
        wal.wait_durable(third).await.expect("durable");
        wal.close().await.expect("close");
        recovered
    });
    assert_eq!(recovered.len(), 2);
    assert_eq!(recovered[0].end_position, ends.0);
    assert_eq!(recovered[1].end_position, ends.1);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_free_segment_still_linked_at_open_is_replaced_before_reuse() {
    let dir = scratch_dir("segments-open-release");
    let config = config(&dir);
    let record = test_record(11, 0, 1 << 10);
    run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("open");
        let end = append(&wal, &record).await;
        wal.wait_durable(end).await.expect("durable");
        wal.close().await.expect("close");
    });
    // As if a crash came after an object linked segment 3 and the trim passed it, before the
    // WAL replaced it: the link is still there at open.
    let segment = dir.join("wal").join("segment-3");
    let object = dir.join("object");
    std::fs::hard_link(&segment, &object).expect("link");
    let inode = std::fs::metadata(&object).expect("stat").ino();
    run(async {
        let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
        assert_eq!(recovered.len(), 1, "the live segment is kept");
        wal.close().await.expect("close");
    });
    let now = std::fs::metadata(&segment).expect("stat");
    assert_ne!(now.ino(), inode, "the linked free segment was replaced");
    assert_eq!(now.len(), SEGMENT_BYTES);
    assert_eq!(std::fs::metadata(&object).expect("stat").nlink(), 1);
    let live = dir.join("wal").join("segment-0");
    assert_eq!(
        std::fs::metadata(&live).expect("stat").nlink(),
        1,
        "the live segment is untouched"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn segment_layouts_that_cannot_work_are_refused() {
    let dir = scratch_dir("segments-config");
    for segment_bytes in [1 << 20, 3 * SEGMENT_BYTES, CAPACITY_BYTES] {
        let mut config = config(&dir);
        config.segment_bytes = Some(segment_bytes);
        let result = run(Wal::open(config));
        assert!(
            matches!(result, Err(WalError::InvalidConfig(ref why)) if why.contains("segment_bytes")),
            "segment_bytes {segment_bytes} accepted"
        );
    }
    // A record must fit in a segment.
    let config = config(&dir);
    assert!(config.record_bytes_max() < SEGMENT_BYTES);
    std::fs::remove_dir_all(dir).ok();
}
