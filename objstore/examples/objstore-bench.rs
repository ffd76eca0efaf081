//! Upload and cold-read throughput of the object tier on the local backend
//! or on an S3 endpoint.
//!
//! cargo run -p sluice-objstore --example objstore-bench -- local /tmp/objbench
//! cargo run -p sluice-objstore --example objstore-bench -- s3 http://127.0.0.1:8014 BUCKET ACCESS SECRET
//!
//! Writes 8 streams × 16 KiB batches (256 MiB by default, SLUICE_BENCH_MIB),
//! 16 MiB uploads (SSO + SOs) through the uploader and a metadata store, then
//! reads every stream back from objects with a cold reader (1 MiB fetches,
//! read-ahead SLUICE_BENCH_READ_AHEAD blocks, default 2).

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_metadata::{MetadataCommand, MetadataStore};
use sluice_objstore::{
    AppendedRecord, BlockCache, ColdReader, ObjectStore, S3Config, S3Credentials, StoreRegistry,
    Uploader, UploaderConfig,
};

const STREAMS: u64 = 8;
const BATCH_BYTES: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = std::env::var("SLUICE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let meta = tempfile::tempdir().unwrap();
    let (store, label) = match args.first().map(String::as_str) {
        Some("local") => (ObjectStore::local(&args[1]).unwrap(), "local"),
        Some("s3") => (
            ObjectStore::s3(&S3Config {
                endpoint_url: Some(args[1].clone()),
                region: "us-east-1".into(),
                bucket: args[2].clone(),
                force_path_style: true,
                key_prefix: "bench/".into(),
                credentials: Some(S3Credentials {
                    access_key_id: args[3].clone(),
                    secret_access_key: args[4].clone(),
                }),
            })
            .unwrap(),
            "s3",
        ),
        _ => panic!("usage: objstore-bench local DIR | s3 URL BUCKET ACCESS SECRET"),
    };
    let mut metadata = MetadataStore::open(meta.path(), 1).unwrap();
    metadata
        .apply(MetadataCommand::CreateTopic {
            name: "bench".into(),
            partitions: STREAMS as u32,
            configs: Default::default(),
            shards: 1,
        })
        .unwrap();
    let registry = StoreRegistry::new(metadata);
    let mut uploader = Uploader::new(UploaderConfig::default());
    let batches = mib * 1024 * 1024 / BATCH_BYTES;
    let mut next = [0i64; STREAMS as usize + 1];
    let started = Instant::now();
    let mut wal = 0u64;
    futures::executor::block_on(async {
        for i in 0..batches {
            let stream_id = 1 + (i as u64 % STREAMS);
            let base = next[stream_id as usize];
            let mut b = BytesMut::with_capacity(BATCH_BYTES);
            b.put_i64(base);
            b.put_i32((BATCH_BYTES - 12) as i32);
            b.resize(BATCH_BYTES, (i % 251) as u8);
            let payload: Bytes = b.freeze();
            wal += payload.len() as u64;
            uploader
                .append(
                    AppendedRecord {
                        stream_id,
                        first_offset: base,
                        last_offset: base + 9,
                        payload_crc: crc32c::crc32c(&payload),
                        payload,
                        wal_end_position: wal,
                    },
                    started,
                    sluice_objstore::StreamRoll::NONE,
                )
                .unwrap();
            next[stream_id as usize] += 10;
            if uploader.should_seal(started) || i + 1 == batches {
                let mut sealed = uploader.seal().unwrap();
                sealed.run(&store, &registry).await.unwrap();
                uploader.completed();
            }
        }
    });
    let upload_s = started.elapsed().as_secs_f64();
    let image = registry.image();
    let read_ahead: usize = std::env::var("SLUICE_BENCH_READ_AHEAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let reader = ColdReader::new(BlockCache::new(store.clone(), 64 * 1024 * 1024))
        .with_read_ahead_blocks(read_ahead);
    let started = Instant::now();
    let mut read_bytes = 0usize;
    futures::executor::block_on(async {
        for stream_id in 1..=STREAMS {
            let mut offset = 0;
            while let Some(read) = reader
                .read(&image, stream_id, offset, 1 << 20)
                .await
                .unwrap()
            {
                read_bytes += read.bytes;
                offset = read.next_offset;
            }
        }
    });
    let read_s = started.elapsed().as_secs_f64();
    let stats = store.stats().snapshot();
    println!(
        "{label}: uploaded {mib} MiB in {} objects: {:.0} MiB/s; cold read {:.0} MiB: {:.0} MiB/s; \
         requests {} (p99 <= {} us), cache hits {} misses {} prefetches {}",
        image.objects().count(),
        mib as f64 / upload_s,
        read_bytes as f64 / 1048576.0,
        read_bytes as f64 / 1048576.0 / read_s,
        stats.requests,
        stats.request_latency_us_quantile(0.99),
        stats.cache_hits,
        stats.cache_misses,
        stats.cache_prefetches,
    );
}
