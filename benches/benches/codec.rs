//! Codec micro-benchmarks (issue 2):
//! - decode of a Produce v9 request with 32 partitions × 16 KiB batches
//!   (header + body, records left as zero-copy slices), alone and followed by
//!   validating every batch (CRC32C included), as the broker's parse step does;
//! - RecordBatch header validation (incl. CRC32C) of one 16 KiB batch.
//!
//! Run: `cargo bench -p sluice-benches --bench codec`

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use sluice_net::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_net::record_batch::{Compression, RecordBatchBuilder, RecordBatchHeader, batches};
use sluice_net::{Request, RequestHeader, decode_request, encode_request};

const PARTITIONS: usize = 32;
const BATCH_BYTES: usize = 16 * 1024;
const RECORD_VALUE_BYTES: usize = 1000;

/// An uncompressed batch of about `BATCH_BYTES` (1 KB values).
fn batch_16k(seed: u8) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None).producer(1, 0, 0);
    let value: Vec<u8> = (0..RECORD_VALUE_BYTES)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    while b.len() < BATCH_BYTES / (RECORD_VALUE_BYTES + 16) {
        b.append(1_700_000_000_000, Some(b"key"), Some(&value), &[]);
    }
    b.build().expect("build batch")
}

fn produce_v9_frame() -> Bytes {
    let request = ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "bench-topic".to_string(),
            partition_data: (0..PARTITIONS)
                .map(|i| PartitionProduceData {
                    index: i as i32,
                    records: Some(batch_16k(i as u8)),
                })
                .collect(),
        }],
    };
    let header = RequestHeader {
        request_api_key: ProduceRequest::API_KEY,
        request_api_version: 9,
        correlation_id: 1,
        client_id: Some("bench".to_string()),
    };
    let mut out = BytesMut::new();
    encode_request(&header, &Request::Produce(request), &mut out).expect("encode");
    out.freeze().slice(4..)
}

fn bench_codec(c: &mut Criterion) {
    let frame = produce_v9_frame();
    let mut g = c.benchmark_group("produce_v9_32x16KiB");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode_request", |b| {
        b.iter(|| decode_request(black_box(frame.clone())).expect("decode"))
    });
    g.bench_function("decode_request+validate_batches", |b| {
        b.iter(|| {
            let (_, req) = decode_request(black_box(frame.clone())).expect("decode");
            let Request::Produce(p) = req else {
                unreachable!()
            };
            let mut n = 0;
            for t in &p.topic_data {
                for part in &t.partition_data {
                    for batch in batches(part.records.as_ref().expect("records")) {
                        let batch = batch.expect("batch");
                        n += RecordBatchHeader::validate(&batch)
                            .expect("valid")
                            .records_count();
                    }
                }
            }
            n
        })
    });
    g.finish();

    let batch = batch_16k(7);
    let mut g = c.benchmark_group("record_batch_16KiB");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("validate_header_and_crc", |b| {
        b.iter(|| {
            RecordBatchHeader::validate(black_box(&batch))
                .expect("valid")
                .records_count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
