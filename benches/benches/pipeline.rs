//! Produce pipeline benchmark (issue 10): Produce requests go through a real shard in process
//! (`sluice_shards::in_process::InProcessShard`: the connection's parse and order stages, the
//! O_DIRECT WAL, the uploader to a local object store), no sockets.
//!
//! One partition, 1 KiB records, acks=-1, one batch per request; requests in flight = 1
//! (Kafka's one request at a time, `--pipeline-depth 1`) against 16 (the default depth), so
//! the figures show what overlapping parse, order and persist buys at the broker alone.
//! Throughput is the record-batch bytes per second; records/s = that / ~1 KiB.
//!
//! Run: `cargo bench -p sluice-benches --bench pipeline`
//! Each benchmark starts a fresh shard in a temporary directory under $SLUICE_BENCH_DIR
//! (default: cargo's target/tmp, on the workspace's disk: O_DIRECT needs a real file system,
//! not tmpfs) and removes it afterwards: up to about 1 GiB of WAL and objects at a time.
//!
//! Figures (2026-11-26, this 2-core VM shared with other builds and brokers, load average
//! ~6: compare the rows of one run only; time is per request, batch = 16 or 64 records):
//!
//! | batch  | in flight | time/request | MiB/s (batch bytes) | records/s |
//! |--------|-----------|--------------|---------------------|-----------|
//! | 16 KiB | 1         | 536 µs       | 29.5                | 29.9 k    |
//! | 16 KiB | 16        | 90.7 µs      | 174.5               | 176 k     |
//! | 64 KiB | 1         | 669 µs       | 94.3                | 95.6 k    |
//! | 64 KiB | 16        | 371 µs       | 169.9               | 172 k     |
//!
//! At depth 1 a request waits for its WAL write to be durable before the next is read, so
//! time per request is about the durable-write latency whatever the batch size; at depth 16
//! the writes overlap and both batch sizes reach the same byte rate (5.9× and 1.8× depth 1),
//! where the uploader's copies into the local object store (about three times the shard
//! thread's CPU in `perf`) share the two cores with the shard.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::channel::mpsc;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_net::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_net::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ApiKey, Request, Response, decode_response};
use sluice_shards::BrokerConfig;
use sluice_shards::api::ResponseFrame;
use sluice_shards::in_process::{InProcessShard, request_frame};

const TOPIC: &str = "pipeline-bench";
const RECORD_VALUE_BYTES: usize = 1024;
const BATCH_BYTES: [usize; 2] = [16 << 10, 64 << 10];
const PIPELINE_DEPTHS: [usize; 2] = [1, 16];
const PRODUCE_VERSION: i16 = 9;
const CREATE_TOPICS_VERSION: i16 = 5;
/// Small next to the disk's free space: the bench writes its WAL there, then objects.
const WAL_BYTES: u64 = 256 << 20;
const MEMORY_BYTES: u64 = 512 << 20;

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_pipeline_1partition_1KiB_acks_all");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for batch_bytes in BATCH_BYTES {
        let frame = produce_frame(batch_bytes);
        let records_bytes = batch_len(&frame);
        group.throughput(Throughput::Bytes(records_bytes as u64));
        for depth in PIPELINE_DEPTHS {
            let shard = ShardThread::start();
            group.bench_with_input(
                BenchmarkId::new(
                    format!("batch_{}KiB", batch_bytes >> 10),
                    format!("depth_{depth}"),
                ),
                &depth,
                |b, &depth| b.iter_custom(|requests| shard.run(frame.clone(), requests, depth)),
            );
            shard.stop();
        }
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);

/// Requests for the shard's executor thread: push `requests` copies of `frame` with at most
/// `depth` unanswered, and reply with the time taken.
struct Run {
    frame: Bytes,
    requests: u64,
    depth: usize,
    elapsed: std::sync::mpsc::Sender<Duration>,
}

/// An in-process shard on its own executor thread, so it keeps running (uploads, WAL) between
/// criterion's samples like a broker's shard would.
struct ShardThread {
    runs: mpsc::UnboundedSender<Run>,
    executor: glommio::ExecutorJoinHandle<()>,
}

impl ShardThread {
    fn start() -> ShardThread {
        let (runs, mut queue) = mpsc::unbounded::<Run>();
        let (started, ready) = std::sync::mpsc::channel::<()>();
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("pipeline-bench-shard")
            .io_memory(sluice_shards::runtime::io_memory_bytes(1))
            .spawn(move || async move {
                let dir = tempfile::tempdir_in(bench_dir()).expect("temporary bench directory");
                let config = BrokerConfig {
                    data_dir: dir.path().to_path_buf(),
                    shards: 1,
                    admin_listen: None,
                    wal_bytes_per_shard: WAL_BYTES,
                    memory_bytes: MEMORY_BYTES,
                    ..BrokerConfig::default()
                };
                let shard = InProcessShard::start(config)
                    .await
                    .expect("in-process shard");
                create_topic(&shard).await;
                let _ = started.send(());
                while let Some(run) = queue.next().await {
                    let elapsed = push(&shard, &run.frame, run.requests, run.depth).await;
                    let _ = run.elapsed.send(elapsed);
                }
                shard.stop().await;
            })
            .expect("glommio executor");
        ready.recv().expect("shard thread started");
        ShardThread { runs, executor }
    }

    fn run(&self, frame: Bytes, requests: u64, depth: usize) -> Duration {
        let (elapsed, answer) = std::sync::mpsc::channel();
        self.runs
            .unbounded_send(Run {
                frame,
                requests,
                depth,
                elapsed,
            })
            .expect("shard thread running");
        answer.recv().expect("shard thread answered")
    }

    fn stop(self) {
        drop(self.runs);
        self.executor.join().expect("shard thread stopped");
    }
}

/// What a connection does with `depth` requests outstanding: order each request as it is
/// read, persist it in a task of its own, take the answers in request order.
async fn push(shard: &InProcessShard, frame: &Bytes, requests: u64, depth: usize) -> Duration {
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(depth);
    for _ in 0..requests {
        if in_flight.len() == depth
            && let Some(answer) = in_flight.pop_front()
        {
            check_produced(answer.await);
        }
        let pending = shard.submit(frame.clone()).await.expect("request parsed");
        in_flight.push_back(glommio::spawn_local(pending));
    }
    for answer in in_flight {
        check_produced(answer.await);
    }
    started.elapsed()
}

/// Panics unless `answer` is a Produce response without errors: a bench of error paths would
/// measure nothing useful.
fn check_produced(answer: Option<ResponseFrame>) {
    let frame = answer.expect("a response for acks=-1").into_contiguous();
    let (_, response) =
        decode_response(ApiKey::Produce as i16, PRODUCE_VERSION, frame.slice(4..)).expect("decode");
    let Response::Produce(response) = response else {
        panic!("not a Produce response");
    };
    for topic in &response.responses {
        for partition in &topic.partition_responses {
            assert_eq!(partition.error_code, 0, "produce refused");
        }
    }
}

async fn create_topic(shard: &InProcessShard) {
    let request = Request::CreateTopics(CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: TOPIC.to_string(),
            num_partitions: 1,
            replication_factor: 1,
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    });
    let pending = shard
        .submit(
            request_frame(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &request)
                .expect("encode request"),
        )
        .await
        .expect("CreateTopics parsed");
    let frame = pending
        .await
        .expect("CreateTopics answered")
        .into_contiguous();
    let (_, response) = decode_response(
        ApiKey::CreateTopics as i16,
        CREATE_TOPICS_VERSION,
        frame.slice(4..),
    )
    .expect("decode CreateTopics");
    let Response::CreateTopics(response) = response else {
        panic!("not a CreateTopics response");
    };
    assert!(
        response.topics.iter().all(|t| t.error_code == 0),
        "topic not created: {response:?}"
    );
}

/// A Produce request (without its length prefix) of one uncompressed, non-idempotent batch of
/// about `batch_bytes` (1 KiB values) for partition 0.
fn produce_frame(batch_bytes: usize) -> Bytes {
    let value: Vec<u8> = (0..RECORD_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    let mut builder = RecordBatchBuilder::new(Compression::None);
    for _ in 0..batch_bytes / RECORD_VALUE_BYTES {
        builder.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    let batch = builder.build().expect("build batch");
    let request = Request::Produce(ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: TOPIC.to_string(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(batch),
            }],
        }],
    });
    request_frame(ApiKey::Produce, PRODUCE_VERSION, &request).expect("encode request")
}

/// Bytes of the record batch inside a frame built by `produce_frame`.
fn batch_len(frame: &Bytes) -> usize {
    let Ok((_, Request::Produce(request))) = sluice_net::decode_request(frame.clone()) else {
        panic!("not a Produce frame");
    };
    request
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_ref())
        .map(|r| r.len())
        .sum()
}

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}
