//! Behaviour of the WAL against a real O_DIRECT file.

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::{TestRecord, file_offset, overwrite, run, scratch_dir, test_record};
use sluice_wal::format::{BLOCK_SIZE, RECORD_HEADER_SIZE};
use sluice_wal::{
    Durability, FenceCheck, RecoveredRecord, Wal, WalConfig, WalError, WalPosition, WhenFull,
};

const CAPACITY_BYTES: u64 = 4 << 20;

fn config(dir: &std::path::Path, capacity_bytes: u64) -> WalConfig {
    let mut config = WalConfig::new(dir.join("wal"), capacity_bytes);
    config.group_commit_bytes_max = 256 << 10;
    config.inflight_writes_max = 4;
    config
}

fn same(recovered: &RecoveredRecord, expected: &TestRecord) -> bool {
    recovered.stream_id == expected.stream_id
        && recovered.first_offset == expected.first_offset
        && recovered.last_offset == expected.last_offset
        && recovered.payload[..] == expected.payload[..]
}

async fn append_durable(wal: &Wal, record: &TestRecord) -> WalPosition {
    let end = wal
        .append(
            record.stream_id,
            record.first_offset,
            record.last_offset,
            &record.payload,
        )
        .await
        .expect("append");
    wal.wait_durable(end).await.expect("durable");
    end
}

fn assert_recovered(recovered: &[RecoveredRecord], expected: &[(TestRecord, WalPosition)]) {
    assert_eq!(
        recovered.len(),
        expected.len(),
        "number of recovered records"
    );
    for (index, (got, (want, end))) in recovered.iter().zip(expected).enumerate() {
        assert!(same(got, want), "record {index} differs");
        assert_eq!(got.end_position, *end, "record {index} end position");
    }
}

#[test]
fn concurrent_appends_group_commit_and_recover_in_order() {
    for durability in [Durability::Dsync, Durability::Fdatasync] {
        let dir = scratch_dir(&format!("roundtrip-{durability:?}"));
        let mut config = config(&dir, CAPACITY_BYTES);
        config.durability = durability;
        let expected = run(async {
            let (wal, recovered) = Wal::open(config.clone()).await.expect("open");
            assert!(recovered.is_empty());
            let wal = Rc::new(wal);
            let mut tasks = Vec::new();
            for task in 0..8u64 {
                let wal = wal.clone();
                tasks.push(glommio::spawn_local(async move {
                    let mut done = Vec::new();
                    for i in 0..40u64 {
                        let record = test_record(7, task * 1000 + i, 32 << 10);
                        let end = append_durable(&wal, &record).await;
                        assert!(wal.durable_position() >= end);
                        done.push((record, end));
                    }
                    done
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await);
            }
            let stats = wal.stats();
            assert_eq!(stats.appends_total, 320);
            assert!(
                stats.writes_total < stats.appends_total,
                "group commit coalesced: {stats:?}"
            );
            Rc::try_unwrap(wal)
                .ok()
                .expect("last reference")
                .close()
                .await
                .expect("close");
            all.sort_by_key(|(_, end)| *end);
            all
        });
        let recovered = run(async {
            let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
            wal.close().await.expect("close");
            recovered
        });
        assert_recovered(&recovered, &expected);
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn eight_mib_record_round_trips_and_oversized_is_refused() {
    let dir = scratch_dir("large");
    let config = config(&dir, 20 << 20);
    let mut record = test_record(3, 1, 0);
    record.payload = vec![0u8; 8 << 20];
    common::Rng(99).fill(&mut record.payload);
    let end = run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("open");
        let end = append_durable(&wal, &record).await;
        let too_large = vec![0u8; (10 << 20) - RECORD_HEADER_SIZE as usize + 1];
        match wal.append(1, 0, 0, &too_large).await {
            Err(WalError::RecordTooLarge {
                record_bytes_max, ..
            }) => assert_eq!(record_bytes_max, 10 << 20),
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
        wal.close().await.expect("close");
        end
    });
    let recovered = run(async { Wal::open(config.clone()).await.expect("reopen").1 });
    assert_recovered(&recovered, &[(record, end)]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_write_is_reported_written_no_later_than_durable() {
    for durability in [Durability::Dsync, Durability::Fdatasync] {
        let dir = scratch_dir(&format!("written-{durability:?}"));
        let mut config = config(&dir, CAPACITY_BYTES);
        config.durability = durability;
        run(async {
            let (wal, _) = Wal::open(config.clone()).await.expect("open");
            let record = test_record(5, 1, 4 << 10);
            let end = wal
                .append(
                    record.stream_id,
                    record.first_offset,
                    record.last_offset,
                    &record.payload,
                )
                .await
                .expect("append");
            wal.wait_written(end).await.expect("written");
            wal.wait_durable(end).await.expect("durable");
            // Durable implies written: waiting for it again resolves at once.
            let again = futures_lite::future::poll_once(wal.wait_written(end)).await;
            assert!(matches!(again, Some(Ok(()))), "{again:?}");
            let beyond = WalPosition(end.0 + BLOCK_SIZE);
            assert!(matches!(
                wal.wait_written(beyond).await,
                Err(WalError::PositionNotAppended { .. })
            ));
            wal.close().await.expect("close");
        });
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Writes `count` records, one write each; returns them with their end positions.
fn write_separately(config: &WalConfig, seed: u64, count: u64) -> Vec<(TestRecord, WalPosition)> {
    run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("open");
        let mut done = Vec::new();
        for i in 0..count {
            let record = test_record(seed, i, 16 << 10);
            let end = append_durable(&wal, &record).await;
            done.push((record, end));
        }
        wal.close().await.expect("close");
        done
    })
}

fn record_start(record: &TestRecord, end: WalPosition) -> u64 {
    end.0 - RECORD_HEADER_SIZE - record.payload.len() as u64
}

#[test]
fn torn_tail_is_truncated_never_returned() {
    enum Damage {
        ZeroBlock,
        GarblePayload,
        GarbleHeader,
    }
    for damage in [
        Damage::ZeroBlock,
        Damage::GarblePayload,
        Damage::GarbleHeader,
    ] {
        let dir = scratch_dir("torn");
        let config = config(&dir, CAPACITY_BYTES);
        let mut written = write_separately(&config, 11, 20);
        let (last, end) = written.last().cloned().expect("records");
        let start = record_start(&last, end);
        let offset = match damage {
            Damage::ZeroBlock => {
                let block = file_offset(CAPACITY_BYTES, start) / BLOCK_SIZE * BLOCK_SIZE;
                overwrite(&config.path, block, &[0u8; BLOCK_SIZE as usize]);
                block
            }
            Damage::GarblePayload => {
                let at = file_offset(CAPACITY_BYTES, end.0 - 1);
                overwrite(&config.path, at, &[0x5a]);
                at
            }
            Damage::GarbleHeader => {
                let at = file_offset(CAPACITY_BYTES, start + 30);
                overwrite(&config.path, at, &[0xa5, 0x17]);
                at
            }
        };
        assert!(offset > 0);
        written.pop();
        // Recovery stops before the damaged record; appending afterwards
        // rewrites the tail, and a second recovery sees old + new records.
        let more = run(async {
            let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
            assert_recovered(&recovered, &written);
            let mut more = Vec::new();
            for i in 100..105 {
                let record = test_record(12, i, 16 << 10);
                let end = append_durable(&wal, &record).await;
                more.push((record, end));
            }
            wal.close().await.expect("close");
            more
        });
        written.extend(more);
        let recovered = run(async { Wal::open(config.clone()).await.expect("reopen").1 });
        assert_recovered(&recovered, &written);
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn stale_records_after_a_torn_write_are_not_resurrected() {
    // Records A, B, C in three writes; B's block is zeroed (torn). After a
    // reopen, D (same size as B) lands exactly where B was, ending where C
    // (valid, but from the previous generation and never acknowledged after
    // the tear) starts: C must not come back.
    let dir = scratch_dir("stale");
    let config = config(&dir, CAPACITY_BYTES);
    let written = write_separately(&config, 21, 3);
    let (b, b_end) = written[1].clone();
    let b_start = record_start(&b, b_end);
    overwrite(
        &config.path,
        file_offset(CAPACITY_BYTES, b_start),
        &[0u8; BLOCK_SIZE as usize],
    );
    let d_end = run(async {
        let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
        assert_recovered(&recovered, &written[..1]);
        let mut d = b.clone();
        d.first_offset = 777;
        let end = append_durable(&wal, &d).await;
        assert_eq!(end, b_end, "D took B's place");
        wal.close().await.expect("close");
        end
    });
    let recovered = run(async { Wal::open(config.clone()).await.expect("reopen").1 });
    assert_eq!(recovered.len(), 2, "A and D only, C is stale");
    assert_eq!(recovered[1].first_offset, 777);
    assert_eq!(recovered[1].end_position, d_end);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn ring_wraps_around_after_trim() {
    let dir = scratch_dir("wrap");
    let capacity_bytes = 256 << 10;
    let mut config = config(&dir, capacity_bytes);
    config.group_commit_bytes_max = 32 << 10;
    let (kept, trim) = run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("open");
        let mut live: Vec<(TestRecord, WalPosition)> = Vec::new();
        let mut i = 0;
        while wal.stats().append_position.0 < 10 * capacity_bytes {
            let record = test_record(31, i, 12 << 10);
            i += 1;
            let end = append_durable(&wal, &record).await;
            live.push((record, end));
            if wal.stats().used_bytes > capacity_bytes / 2 {
                let cut = live.len() / 2;
                let trim = live[cut - 1].1;
                wal.trim(trim).await.expect("trim");
                live.drain(..cut);
            }
        }
        let trim = wal.stats().trim_position;
        wal.close().await.expect("close");
        (live, trim)
    });
    assert!(trim.0 > 8 * capacity_bytes, "wrapped many times");
    let recovered = run(async {
        let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
        assert_eq!(wal.stats().trim_position, trim, "trim persisted");
        recovered
    });
    assert_recovered(&recovered, &kept);
    // open_each hands over the same records, one at a time.
    let streamed = run(async {
        let mut streamed = Vec::new();
        let wal = Wal::open_each(config.clone(), |record| streamed.push(record))
            .await
            .expect("reopen");
        wal.close().await.expect("close");
        streamed
    });
    assert_recovered(&streamed, &kept);
    std::fs::remove_dir_all(dir).ok();
}

/// Appends `payload` (doing `when_full`) until an append waits for space; returns that
/// append's task, and the ends of those that fit in `ends`.
async fn fill_until_waiting(
    wal: &Rc<Wal>,
    payload: &[u8],
    ends: &mut Vec<WalPosition>,
    when_full: WhenFull,
) -> glommio::task::JoinHandle<Result<WalPosition, WalError>> {
    loop {
        let waiter = {
            let (wal, payload) = (wal.clone(), payload.to_vec());
            let append = async move {
                let crc = crc32c::crc32c(&payload);
                wal.append_with_crc(1, 0, 0, &payload, crc, when_full).await
            };
            glommio::spawn_local(append).detach()
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        if wal.stats().space_waiting == 1 {
            return waiter;
        }
        let end = waiter
            .await
            .expect("not cancelled")
            .expect("an append that fits");
        wal.wait_durable(end).await.expect("durable");
        ends.push(end);
        assert!(ends.len() < 100, "the ring never filled up");
    }
}

/// An append of `payload` that a refusal of space waits fails.
async fn append_refusable(wal: &Wal, payload: &[u8]) -> Result<WalPosition, WalError> {
    let crc = crc32c::crc32c(payload);
    wal.append_with_crc(1, 0, 0, payload, crc, WhenFull::WaitUnlessRefused)
        .await
}

#[test]
fn append_waits_for_trim_when_the_ring_is_full() {
    let dir = scratch_dir("backpressure");
    let capacity_bytes = 64 << 10;
    let config = config(&dir, capacity_bytes);
    run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("open");
        let wal = Rc::new(wal);
        let payload = vec![7u8; 8 << 10];
        let mut ends = Vec::new();
        // Fill the ring (8 KiB + header records pad to 12 KiB writes) until an append waits.
        let waiter = fill_until_waiting(&wal, &payload, &mut ends, WhenFull::Wait).await;
        assert!(wal.stats().space_waits_total >= 1);
        assert_eq!(wal.stats().space_waiting, 1, "append is waiting for space");
        // A blocked append completes once a trim releases space.
        wal.trim(ends[1]).await.expect("trim");
        let end = waiter
            .await
            .expect("not cancelled")
            .expect("append after trim");
        wal.wait_durable(end).await.expect("durable");
        let stats = wal.stats();
        assert_eq!(stats.space_waiting, 0);
        assert!(stats.space_wait_us_total >= 20_000, "{stats:?}");
        assert!(stats.used_bytes <= capacity_bytes);
    });
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn refused_space_waits_fail_full_appends_until_allowed_again() {
    let dir = scratch_dir("refused-space-waits");
    let capacity_bytes = 64 << 10;
    let config = config(&dir, capacity_bytes);
    run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("open");
        let wal = Rc::new(wal);
        let payload = vec![7u8; 8 << 10];
        let mut ends = Vec::new();
        let waiter =
            fill_until_waiting(&wal, &payload, &mut ends, WhenFull::WaitUnlessRefused).await;
        wal.refuse_space_waits(true);
        let refused = waiter.await.expect("not cancelled");
        assert!(
            matches!(refused, Err(WalError::Full { capacity_bytes: c }) if c == capacity_bytes),
            "the waiting append fails: {refused:?}"
        );
        assert!(
            matches!(
                append_refusable(&wal, &payload).await,
                Err(WalError::Full { .. })
            ),
            "a new append that does not fit fails at once"
        );
        // An append that must not be refused still waits.
        let patient = {
            let (wal, payload) = (wal.clone(), payload.clone());
            glommio::spawn_local(async move { wal.append(2, 0, 0, &payload).await })
        };
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(wal.stats().space_waiting, 1, "WhenFull::Wait waits");
        wal.trim(ends[0]).await.expect("trim");
        let end = patient.await.expect("the waiting append, after a trim");
        wal.wait_durable(end).await.expect("durable");
        ends.push(end);
        // Nothing is sticky: once a trim makes room, refusable appends succeed.
        wal.trim(ends[1]).await.expect("trim");
        let end = append_refusable(&wal, &payload)
            .await
            .expect("an append that fits");
        wal.wait_durable(end).await.expect("durable");
        ends.push(end);
        // Allowed again, a refusable append waits for space as before.
        wal.refuse_space_waits(false);
        let waiter =
            fill_until_waiting(&wal, &payload, &mut ends, WhenFull::WaitUnlessRefused).await;
        wal.trim(*ends.last().expect("appended"))
            .await
            .expect("trim");
        let end = waiter
            .await
            .expect("not cancelled")
            .expect("append after trim");
        wal.wait_durable(end).await.expect("durable");
    });
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_takeover_opens_only_an_existing_wal_of_the_named_node_and_fences_its_writer() {
    let dir = scratch_dir("takeover");
    let mut owner_config = config(&dir, CAPACITY_BYTES);
    owner_config.node_id = 7;
    owner_config.epoch = 3;
    let mut taker_config = owner_config.clone();
    taker_config.node_id = 8;
    taker_config.epoch = 4;
    taker_config.takeover_of = Some(7);
    run(async {
        match Wal::open(taker_config.clone()).await {
            Err(WalError::NotTakeable { expected: 7, .. }) => {}
            other => panic!("absent: {:?}", other.map(|_| ())),
        }
        assert!(!taker_config.path.exists(), "a takeover creates nothing");

        let (owner, _) = Wal::open(owner_config.clone()).await.expect("owner opens");
        let end = owner.append(1, 0, 0, b"acked").await.expect("append");
        owner.wait_durable(end).await.expect("durable");

        let mut wrong = taker_config.clone();
        wrong.takeover_of = Some(9);
        match Wal::open(wrong).await {
            Err(WalError::NotTakeable {
                expected: 9,
                reason,
                ..
            }) => {
                assert!(reason.contains("node 7"), "{reason}")
            }
            other => panic!("another node's WAL: {:?}", other.map(|_| ())),
        }
        // The refused open claimed nothing: the owner still writes.
        let end = owner.append(1, 1, 1, b"still ours").await.expect("append");
        owner
            .wait_durable(end)
            .await
            .expect("not fenced by a refused takeover");

        let (taker, recovered) = Wal::open(taker_config.clone()).await.expect("takeover");
        assert_eq!(recovered.len(), 2);
        let fenced = match owner.append(1, 2, 2, b"after").await {
            Ok(end) => owner.wait_durable(end).await,
            Err(error) => Err(error),
        };
        assert!(
            matches!(fenced, Err(WalError::Fenced { ours: 3, found: 4 })),
            "{fenced:?}"
        );
        taker.close().await.expect("close");
        drop(owner);
        // A second taker (the first died) finds the header still naming node 7.
        let mut second = taker_config.clone();
        second.epoch = 5;
        let (second, recovered) = Wal::open(second).await.expect("second takeover");
        // The fenced write landed, unacknowledged: later opens find it. (So a broker whose
        // partitions moved skips their records when it restarts: shards' recovery.)
        assert_eq!(recovered.len(), 3);
        second.close().await.expect("close");
    });
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_newer_epoch_fences_the_old_writer() {
    for fence_check in [FenceCheck::AfterWrite, FenceCheck::BeforeAndAfterWrite] {
        let dir = scratch_dir("fence");
        let mut old_config = config(&dir, CAPACITY_BYTES);
        old_config.epoch = 1;
        old_config.fence_check = fence_check;
        let mut new_config = old_config.clone();
        new_config.epoch = 2;
        run(async {
            let (old, _) = Wal::open(old_config.clone()).await.expect("open epoch 1");
            let end = old.append(1, 0, 0, b"before").await.expect("append");
            old.wait_durable(end)
                .await
                .expect("durable before the fence");

            let (new, recovered) = Wal::open(new_config.clone()).await.expect("open epoch 2");
            assert_eq!(recovered.len(), 1);

            let fenced = match old.append(1, 1, 1, b"after").await {
                Ok(end) => old.wait_durable(end).await,
                Err(error) => Err(error),
            };
            assert!(
                matches!(fenced, Err(WalError::Fenced { ours: 1, found: 2 })),
                "{fenced:?}"
            );
            assert!(matches!(
                old.append(1, 2, 2, b"again").await,
                Err(WalError::Fenced { .. })
            ));
            assert!(matches!(old.trim(end).await, Err(WalError::Fenced { .. })));

            let end = new.append(1, 1, 1, b"new owner").await.expect("new append");
            new.wait_durable(end).await.expect("new durable");
            new.close().await.expect("close");
            drop(old);

            match Wal::open(old_config.clone()).await {
                Err(WalError::Fenced { ours: 1, found: 2 }) => {}
                other => panic!(
                    "reopen with an old epoch must fail: {:?}",
                    other.map(|_| ())
                ),
            }
        });
        let recovered = run(async { Wal::open(new_config.clone()).await.expect("reopen").1 });
        let payloads: Vec<&[u8]> = recovered.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(payloads, vec![&b"before"[..], &b"new owner"[..]]);
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn one_corrupted_header_copy_still_opens() {
    for slot in 0..2u64 {
        let dir = scratch_dir("header");
        let config = config(&dir, CAPACITY_BYTES);
        let written = write_separately(&config, 41, 5);
        overwrite(&config.path, slot * BLOCK_SIZE + 20, &[0xff; 8]);
        let recovered = run(async {
            let (wal, recovered) = Wal::open(config.clone())
                .await
                .expect("open with one header copy");
            wal.close().await.expect("close");
            recovered
        });
        assert_recovered(&recovered, &written);
        // Both copies damaged: refuse rather than reformat.
        overwrite(&config.path, 20, &[0xff; 8]);
        overwrite(&config.path, BLOCK_SIZE + 20, &[0xff; 8]);
        let result = run(async { Wal::open(config.clone()).await.map(|_| ()) });
        assert!(
            matches!(result, Err(WalError::HeaderCorrupt { .. })),
            "{result:?}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}

/// A crash during the very first format can tear the first header copy while the second is
/// still blank: that WAL never opened, so it is formatted again rather than refused forever.
#[test]
fn a_first_format_cut_short_is_formatted_again() {
    let dir = scratch_dir("first-format");
    let config = config(&dir, CAPACITY_BYTES);
    run(async {
        let (wal, _) = Wal::open(config.clone()).await.expect("format");
        wal.close().await.expect("close");
    });
    overwrite(&config.path, 20, &[0xff; 8]);
    overwrite(&config.path, BLOCK_SIZE, &vec![0; BLOCK_SIZE as usize]);
    let written = write_separately(&config, 7, 3);
    let recovered = run(async {
        let (wal, recovered) = Wal::open(config.clone()).await.expect("reopen");
        wal.close().await.expect("close");
        recovered
    });
    assert_recovered(&recovered, &written);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn configuration_errors_are_named() {
    let dir = scratch_dir("config");
    run(async {
        let bad = WalConfig::new(dir.join("wal"), 10_000);
        assert!(matches!(
            Wal::open(bad).await.map(|_| ()),
            Err(WalError::InvalidConfig(_))
        ));
        let (wal, _) = Wal::open(config(&dir, CAPACITY_BYTES)).await.expect("open");
        wal.close().await.expect("close");
        let other_capacity = config(&dir, 2 * CAPACITY_BYTES);
        assert!(matches!(
            Wal::open(other_capacity).await.map(|_| ()),
            Err(WalError::CapacityMismatch { .. })
        ));
        let not_a_file = WalConfig::new(&dir, CAPACITY_BYTES);
        assert!(matches!(
            Wal::open(not_a_file).await.map(|_| ()),
            Err(WalError::UnsupportedTarget { .. })
        ));
    });
    std::fs::remove_dir_all(dir).ok();
}
