//! Hostile input never panics: proptest (bounded case count) feeds arbitrary
//! bytes and mutated valid requests to `decode_request`, arbitrary and
//! mutated batches to the RecordBatch parsers; framing limits; header errors.
//! `long_random_decode_loop` (ignored) runs the same for `SLUICE_FUZZ_SECS`.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::Rng;
use proptest::prelude::*;
use sluice_net::record_batch::{
    Compression, RecordBatchBuilder, RecordBatchHeader, batches, batches_allow_partial,
    decode_records,
};
use sluice_net::{
    ApiKey, DEFAULT_MAX_FRAME_BYTES, FrameError, RequestErrorKind, RequestHeader, decode_request,
    encode_request, frame_length,
};

/// Cap for decompressed records in these tests.
const DECOMPRESSED_BYTES_MAX: usize = 1 << 20;

/// A valid request frame (without size prefix) of a random API and version.
fn valid_request(rng: &mut Rng) -> Bytes {
    let apis = sluice_net::supported_apis();
    let (key, lo, hi) = apis[rng.below(apis.len() as u64) as usize];
    let version = lo + rng.below((hi - lo + 1) as u64) as i16;
    let request = random_request(rng, key, version);
    let header = RequestHeader {
        request_api_key: key as i16,
        request_api_version: version,
        correlation_id: rng.i32(),
        client_id: if rng.one_in(3) {
            None
        } else {
            Some(rng.string())
        },
    };
    let mut out = BytesMut::new();
    encode_request(&header, &request, &mut out).expect("encode");
    let frame = out.freeze().slice(4..);
    let (h, r) = decode_request(frame.clone()).expect("valid request decodes");
    assert_eq!((h, r), (header, request));
    frame
}

macro_rules! random_request {
    ($($variant:ident => $module:ident),* $(,)?) => {
        fn random_request(rng: &mut Rng, key: ApiKey, version: i16) -> sluice_net::Request {
            match key {
                $(ApiKey::$variant => sluice_net::Request::$variant(common::random::$module::random(rng, version)),)*
            }
        }
    };
}

random_request! {
    Produce => produce_request, Fetch => fetch_request, ListOffsets => list_offsets_request,
    Metadata => metadata_request, OffsetCommit => offset_commit_request,
    OffsetFetch => offset_fetch_request, FindCoordinator => find_coordinator_request,
    JoinGroup => join_group_request, Heartbeat => heartbeat_request,
    LeaveGroup => leave_group_request, SyncGroup => sync_group_request,
    DescribeGroups => describe_groups_request, ListGroups => list_groups_request,
    SaslHandshake => sasl_handshake_request, ApiVersions => api_versions_request,
    CreateTopics => create_topics_request, DeleteTopics => delete_topics_request,
    DeleteRecords => delete_records_request, InitProducerId => init_producer_id_request,
    OffsetForLeaderEpoch => offset_for_leader_epoch_request,
    AddPartitionsToTxn => add_partitions_to_txn_request,
    AddOffsetsToTxn => add_offsets_to_txn_request, EndTxn => end_txn_request,
    WriteTxnMarkers => write_txn_markers_request, TxnOffsetCommit => txn_offset_commit_request,
    DescribeConfigs => describe_configs_request, AlterConfigs => alter_configs_request,
    DescribeLogDirs => describe_log_dirs_request, SaslAuthenticate => sasl_authenticate_request,
    CreatePartitions => create_partitions_request, DeleteGroups => delete_groups_request,
    IncrementalAlterConfigs => incremental_alter_configs_request,
    OffsetDelete => offset_delete_request, DescribeCluster => describe_cluster_request,
    DescribeQuorum => describe_quorum_request,
    DescribeProducers => describe_producers_request,
    DescribeTransactions => describe_transactions_request,
    ListTransactions => list_transactions_request,
    ConsumerGroupHeartbeat => consumer_group_heartbeat_request,
    ConsumerGroupDescribe => consumer_group_describe_request,
    ElectLeaders => elect_leaders_request,
    AlterPartitionReassignments => alter_partition_reassignments_request,
    ListPartitionReassignments => list_partition_reassignments_request,
    DescribeUserScramCredentials => describe_user_scram_credentials_request,
    AlterUserScramCredentials => alter_user_scram_credentials_request,
    DescribeAcls => describe_acls_request,
    CreateAcls => create_acls_request,
    DeleteAcls => delete_acls_request,
    DescribeClientQuotas => describe_client_quotas_request,
    AlterClientQuotas => alter_client_quotas_request,
}

/// Flips, overwrites, truncates or extends a valid frame.
fn mutate(rng: &mut Rng, frame: &[u8]) -> Bytes {
    let mut v = frame.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len() as u64) as usize;
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.below(5) as usize];
            }
            2 if !v.is_empty() => {
                let n = rng.below(v.len() as u64) as usize;
                v.truncate(n);
            }
            3 => v.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
            4 if v.len() > 4 => {
                let i = rng.below(v.len() as u64 - 3) as usize;
                v[i..i + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
            }
            _ => {}
        }
    }
    Bytes::from(v)
}

/// A valid batch, possibly compressed, possibly mutated (with the CRC fixed
/// up so the record decoder, not only the CRC check, sees the damage).
fn batch_case(rng: &mut Rng, mutate_it: bool) -> Bytes {
    let codec = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ][rng.below(5) as usize];
    let mut b = RecordBatchBuilder::new(codec);
    for _ in 0..=rng.below(5) {
        let key = rng.bytes();
        let value = rng.bytes();
        let hk = rng.bytes();
        b.append(
            rng.i64(),
            Some(&key),
            if rng.one_in(5) { None } else { Some(&value) },
            &[(&hk, None)],
        );
    }
    let batch = b.build().expect("build");
    if !mutate_it {
        return batch;
    }
    let mut m = mutate(rng, &batch).to_vec();
    if m.len() >= 61 && rng.bool() {
        let crc = crc32c::crc32c(&m[21..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    Bytes::from(m)
}

fn exercise_batches(records: &Bytes) {
    for batch in batches(records)
        .chain(batches_allow_partial(records))
        .flatten()
    {
        let _ = RecordBatchHeader::validate(&batch);
        let _ = decode_records(&batch, DECOMPRESSED_BYTES_MAX);
    }
    let _ = decode_records(records, DECOMPRESSED_BYTES_MAX);
}

fn one_random_case(rng: &mut Rng) {
    match rng.below(4) {
        0 => {
            let n = rng.below(64) as usize;
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let _ = decode_request(Bytes::from(junk));
        }
        1 | 2 => {
            let frame = valid_request(rng);
            let _ = decode_request(mutate(rng, &frame));
        }
        _ => exercise_batches(&batch_case(rng, true)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request(Bytes::from(frame.clone()));
        exercise_batches(&Bytes::from(frame));
    }

    #[test]
    fn arbitrary_body_after_valid_header_never_panics(
        api in 0usize..37, version_pick in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        let (key, lo, hi) = sluice_net::supported_apis()[api];
        let version = lo + (version_pick % (hi - lo + 1) as u16) as i16;
        let mut f = BytesMut::new();
        f.put_i16(key as i16);
        f.put_i16(version);
        f.put_i32(1);
        f.put_i16(-1);
        if key.is_flexible(version) { f.put_u8(0); }
        f.put_slice(&body);
        let _ = decode_request(f.freeze());
    }

    #[test]
    fn mutated_valid_requests_and_batches_never_panic(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        one_random_case(&mut rng);
    }
}

#[test]
fn unsupported_and_unknown_keep_the_header() {
    // ApiVersions v99: the broker must still answer (with a v0 response).
    let mut f = BytesMut::new();
    f.put_i16(18);
    f.put_i16(99);
    f.put_i32(42);
    f.put_i16(3);
    f.put_slice(b"cli");
    let e = decode_request(f.freeze()).unwrap_err();
    let h = e.header.expect("header");
    assert_eq!(
        (h.correlation_id, h.client_id.as_deref()),
        (42, Some("cli"))
    );
    assert_eq!(
        e.kind,
        RequestErrorKind::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            version: 99
        }
    );

    let mut f = BytesMut::new();
    f.put_i16(1000);
    f.put_i16(0);
    f.put_i32(5);
    let e = decode_request(f.freeze()).unwrap_err();
    assert_eq!(e.header.map(|h| h.correlation_id), Some(5));
    assert_eq!(e.kind, RequestErrorKind::UnknownApiKey(1000));

    let e = decode_request(Bytes::from_static(&[0, 0, 0])).unwrap_err();
    assert!(e.header.is_none());
}

#[test]
fn frame_length_is_checked_before_allocation() {
    assert_eq!(
        frame_length(100i32.to_be_bytes(), DEFAULT_MAX_FRAME_BYTES),
        Ok(100)
    );
    assert_eq!(
        frame_length(((100 << 20) + 1i32).to_be_bytes(), DEFAULT_MAX_FRAME_BYTES),
        Err(FrameError::TooLarge {
            size_bytes: (100 << 20) + 1,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES
        })
    );
    assert_eq!(
        frame_length((-5i32).to_be_bytes(), 10),
        Err(FrameError::NegativeSize(-5))
    );
    assert_eq!(DEFAULT_MAX_FRAME_BYTES, 100 * 1024 * 1024);
}

/// Seeded random decode loop; `SLUICE_FUZZ_SECS=600 cargo test -p sluice-net
/// --release --test hostile_input -- --ignored --nocapture`.
#[test]
#[ignore]
fn long_random_decode_loop() {
    let secs: u64 = std::env::var("SLUICE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let start_seed: u64 = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut seed = start_seed;
    while std::time::Instant::now() < deadline {
        for _ in 0..1000 {
            let mut rng = Rng::new(seed);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                one_random_case(&mut rng)
            }));
            assert!(r.is_ok(), "panic with seed {seed}");
            seed += 1;
        }
    }
    println!(
        "random decode loop: {} cases in {secs} s (seeds {start_seed}..{seed}), no panic",
        seed - start_seed
    );
}

/// Writes valid request frames (and, with `SLUICE_FUZZ_BATCH_CORPUS`, valid
/// record batches) as seed corpora for `cargo fuzz`:
/// `SLUICE_FUZZ_CORPUS=fuzz/corpus/decode_request
/// SLUICE_FUZZ_BATCH_CORPUS=fuzz/corpus/record_batch cargo test -p sluice-net
/// --test hostile_input -- --ignored write_fuzz_seed_corpus`.
#[test]
#[ignore]
fn write_fuzz_seed_corpus() {
    let dir = std::env::var_os("SLUICE_FUZZ_CORPUS")
        .expect("SLUICE_FUZZ_CORPUS names the directory to write the corpus to");
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    let mut rng = Rng::new(7);
    for i in 0..2000 {
        let frame = valid_request(&mut rng);
        std::fs::write(
            std::path::Path::new(&dir).join(format!("seed-{i:04}")),
            &frame,
        )
        .expect("write");
    }
    // Seeds for the record_batch target: valid batches of every codec.
    if let Some(batch_dir) = std::env::var_os("SLUICE_FUZZ_BATCH_CORPUS") {
        std::fs::create_dir_all(&batch_dir).expect("create corpus dir");
        for i in 0..500 {
            let batch = batch_case(&mut rng, false);
            let path = std::path::Path::new(&batch_dir).join(format!("seed-{i:04}"));
            std::fs::write(path, &batch).expect("write");
        }
    }
}
