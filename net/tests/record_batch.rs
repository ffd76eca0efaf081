//! RecordBatch v2: builder ↔ view ↔ record decoder, patches, iterator, caps,
//! and cross-checks with kafka-protocol's record codec for every compression.

mod common;

use bytes::{Bytes, BytesMut};
use common::Rng;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records as kp;
use sluice_net::record_batch::{
    BatchError, Compression, ControlRecordType, RecordBatchBuilder, RecordBatchHeader,
    TimestampType, batches, batches_allow_partial, decode_records, set_base_offset,
    set_max_timestamp, set_partition_leader_epoch, whole_batch_crc32c,
};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];
const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

type Rec = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

fn random_records(rng: &mut Rng) -> Vec<Rec> {
    (0..1 + rng.below(20))
        .map(|_| {
            let ts = 1_700_000_000_000 + rng.below(10_000) as i64;
            let key = (!rng.one_in(4)).then(|| rng.bytes().to_vec());
            let value = (!rng.one_in(6)).then(|| rng.bytes().to_vec());
            let headers = (0..rng.below(3))
                .map(|i| {
                    (
                        format!("h{i}").into_bytes(),
                        (!rng.one_in(3)).then(|| rng.bytes().to_vec()),
                    )
                })
                .collect();
            (ts, key, value, headers)
        })
        .collect()
}

fn build(codec: Compression, recs: &[Rec]) -> Bytes {
    let mut b = RecordBatchBuilder::new(codec)
        .base_offset(1000)
        .producer(77, 3, 10);
    for (ts, k, v, h) in recs {
        let h: Vec<(&[u8], Option<&[u8]>)> = h
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        b.append(*ts, k.as_deref(), v.as_deref(), &h);
    }
    b.build().expect("build")
}

#[test]
fn builder_view_and_decoder_agree_for_every_codec() {
    for seed in 0..200u64 {
        let mut rng = Rng::new(seed);
        let recs = random_records(&mut rng);
        let codec = CODECS[(seed % 5) as usize];
        let batch = build(codec, &recs);
        let h = RecordBatchHeader::validate(&batch).expect("valid");
        assert_eq!(h.base_offset(), 1000);
        assert_eq!(h.compression(), Ok(codec));
        assert_eq!(h.records_count() as usize, recs.len());
        assert_eq!(h.last_offset_delta() as usize, recs.len() - 1);
        assert_eq!(
            (h.producer_id(), h.producer_epoch(), h.base_sequence()),
            (77, 3, 10)
        );
        assert_eq!(h.base_timestamp(), recs[0].0);
        assert_eq!(h.max_timestamp(), recs.iter().map(|r| r.0).max().unwrap());
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_transactional() && !h.is_control());
        let decoded = decode_records(&batch, DECOMPRESSED_BYTES_MAX).expect("decode");
        for (i, (r, (ts, k, v, hs))) in decoded.iter().zip(&recs).enumerate() {
            assert_eq!(r.offset_delta as usize, i);
            assert_eq!(h.base_timestamp() + r.timestamp_delta, *ts);
            assert_eq!(r.key.as_deref(), k.as_deref());
            assert_eq!(r.value.as_deref(), v.as_deref());
            let got: Vec<(&[u8], Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|h| (&h.key[..], h.value.as_deref()))
                .collect();
            let want: Vec<(&[u8], Option<&[u8]>)> = hs
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }
}

fn kp_codec(c: Compression) -> kp::Compression {
    match c {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
    }
}

#[test]
fn kafka_protocol_reads_our_batches_and_we_read_theirs() {
    for seed in 0..100u64 {
        let mut rng = Rng::new(seed);
        let recs = random_records(&mut rng);
        let codec = CODECS[(seed % 5) as usize];
        // Ours → kafka-protocol.
        let batch = build(codec, &recs);
        let mut b = batch.clone();
        let set = kp::RecordBatchDecoder::decode(&mut b)
            .unwrap_or_else(|e| panic!("seed {seed} {codec:?}: {e}"));
        assert_eq!(set.records.len(), recs.len());
        for (i, (r, (ts, k, v, hs))) in set
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (i, (r, &recs[i])))
        {
            assert_eq!(r.offset, 1000 + i as i64);
            assert_eq!(r.timestamp, *ts);
            assert_eq!(r.key.as_deref(), k.as_deref());
            assert_eq!(r.value.as_deref(), v.as_deref());
            assert_eq!(
                (r.producer_id, r.producer_epoch, r.sequence),
                (77, 3, 10 + i as i32)
            );
            assert_eq!(r.headers.len(), hs.len());
        }
        // kafka-protocol → ours.
        let kp_records: Vec<kp::Record> = recs
            .iter()
            .enumerate()
            .map(|(i, (ts, k, v, hs))| kp::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 5,
                producer_id: 9,
                producer_epoch: 1,
                timestamp_type: kp::TimestampType::Creation,
                offset: 50 + i as i64,
                sequence: i as i32,
                timestamp: *ts,
                key: k.clone().map(Bytes::from),
                value: v.clone().map(Bytes::from),
                headers: hs
                    .iter()
                    .map(|(k, v)| {
                        (
                            StrBytes::from_string(String::from_utf8(k.clone()).unwrap()),
                            v.clone().map(Bytes::from),
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut out = BytesMut::new();
        kp::RecordBatchEncoder::encode(
            &mut out,
            &kp_records,
            &kp::RecordEncodeOptions {
                version: 2,
                compression: kp_codec(codec),
            },
        )
        .expect("kp encode");
        let out = out.freeze();
        let h = RecordBatchHeader::validate(&out)
            .unwrap_or_else(|e| panic!("seed {seed} {codec:?}: {e}"));
        assert_eq!(
            (h.base_offset(), h.producer_id(), h.records_count() as usize),
            (50, 9, recs.len())
        );
        let decoded = decode_records(&out, DECOMPRESSED_BYTES_MAX).expect("decode kp batch");
        for (r, (_, k, v, _)) in decoded.iter().zip(&recs) {
            assert_eq!(
                (r.key.as_deref(), r.value.as_deref()),
                (k.as_deref(), v.as_deref())
            );
        }
    }
}

#[test]
fn crc_and_patches() {
    let batch = build(Compression::None, &random_records(&mut Rng::new(3)));
    let mut m = batch.to_vec();
    m[70] ^= 1;
    assert!(matches!(
        RecordBatchHeader::validate(&m),
        Err(BatchError::CrcMismatch { .. })
    ));

    let mut m = batch.to_vec();
    set_base_offset(&mut m, 123_456).unwrap();
    set_partition_leader_epoch(&mut m, 9).unwrap();
    let h = RecordBatchHeader::validate(&m).expect("base offset / epoch are outside the CRC");
    assert_eq!(
        (h.base_offset(), h.partition_leader_epoch(), h.last_offset()),
        (123_456, 9, 123_456 + h.last_offset_delta() as i64)
    );

    set_max_timestamp(&mut m, TimestampType::LogAppendTime, 42).unwrap();
    let h = RecordBatchHeader::validate(&m).expect("CRC recomputed");
    assert_eq!(
        (h.timestamp_type(), h.max_timestamp()),
        (TimestampType::LogAppendTime, 42)
    );
    assert!(set_base_offset(&mut [0u8; 10], 1).is_err());
    // The whole-batch CRC derived from the stored one equals a full pass, patched or not,
    // and anything but one whole batch gets the full pass.
    assert_eq!(whole_batch_crc32c(&m), crc32c::crc32c(&m));
    assert_eq!(whole_batch_crc32c(&batch), crc32c::crc32c(&batch));
    let mut large = RecordBatchBuilder::new(Compression::None);
    for i in 0..64 {
        large.append(i, None, Some(&[i as u8; 8192][..]), &[]);
    }
    let large = large.build().expect("build");
    assert!(large.len() > 4096, "large enough to take the combined CRC");
    assert_eq!(whole_batch_crc32c(&large), crc32c::crc32c(&large));
    let two = [&batch[..], &batch[..]].concat();
    assert_eq!(whole_batch_crc32c(&two), crc32c::crc32c(&two));
    assert_eq!(
        whole_batch_crc32c(&batch[..30]),
        crc32c::crc32c(&batch[..30])
    );
    assert_eq!(whole_batch_crc32c(b"short"), crc32c::crc32c(b"short"));
}

#[test]
fn control_batches() {
    let b = RecordBatchBuilder::end_txn_marker(5, 2, ControlRecordType::Commit, 7, 1000);
    let h = RecordBatchHeader::validate(&b).unwrap();
    assert!(h.is_control() && h.is_transactional());
    let r = decode_records(&b, 1 << 10).unwrap();
    assert_eq!(r[0].key.as_deref(), Some(&[0u8, 0, 0, 1][..]));
    assert_eq!(r[0].value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 7][..]));
    // kafka-protocol agrees it is a control record.
    let set = kp::RecordBatchDecoder::decode(&mut b.clone()).unwrap();
    assert!(set.records[0].control && set.records[0].transactional);
}

#[test]
fn iterator_strict_and_partial_tail() {
    let a = build(Compression::Lz4, &random_records(&mut Rng::new(1)));
    let b = build(Compression::Zstd, &random_records(&mut Rng::new(2)));
    let mut all = BytesMut::new();
    all.extend_from_slice(&a);
    all.extend_from_slice(&b);
    all.extend_from_slice(&b[..30]);
    let all = all.freeze();
    let strict: Vec<_> = batches(&all).collect();
    assert_eq!(strict.len(), 3);
    assert_eq!(strict[0].as_ref().unwrap(), &a);
    assert!(matches!(strict[2], Err(BatchError::Truncated { .. })));
    let mut it = batches_allow_partial(&all);
    let ok: Vec<Bytes> = it.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(ok, vec![a.clone(), b.clone()]);
    assert_eq!(it.partial_tail_bytes(), 30);
    // Zero-copy: batches are slices of the input.
    assert_eq!(ok[0].as_ptr(), all.as_ptr());
}

#[test]
fn decompression_is_capped() {
    let big = vec![b'x'; 1 << 20];
    for codec in CODECS {
        let mut b = RecordBatchBuilder::new(codec);
        b.append(0, None, Some(&big), &[]);
        let batch = b.build().unwrap();
        let r = decode_records(&batch, 64 << 10);
        if codec == Compression::None {
            assert!(r.is_ok(), "uncompressed needs no buffer");
        } else {
            assert_eq!(
                r,
                Err(BatchError::DecompressedTooLarge {
                    max_decompressed_bytes: 64 << 10
                }),
                "{codec:?}"
            );
        }
    }
}
