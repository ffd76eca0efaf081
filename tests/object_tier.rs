//! The object tier through the real broker and librdkafka: far more data than the WAL holds
//! goes through a 64 MiB WAL into object storage (a local directory, or a real S3-compatible
//! server, s3s-fs, on 127.0.0.1) and reads back from offset 0, also after `kill -9`; an S3
//! outage during production loses no acknowledged record; a local store that refuses writes
//! gets produces refused (KAFKA_STORAGE_ERROR) and offset commits refused
//! (COORDINATOR_NOT_AVAILABLE) once the WAL is full, not stalled.
//!
//! `SLUICE_TIER_TEST_MIB` sets the volume of the big runs (default 2048, the acceptance figure
//! of issue 5).

mod common;
#[path = "../objstore/tests/common/s3_server.rs"]
mod s3_server;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::BrokerProcess;
use common::raw::{RawClient, producer_batch};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use s3_server::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, S3Server};
use sluice_net::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_net::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use sluice_net::{Request, Response};

const PARTITIONS: i32 = 8;
const VALUE_BYTES: usize = 16 * 1024;
const TIMEOUT: Duration = Duration::from_secs(120);
/// Sends awaited at once; bounds the producer's memory.
const SENDS_IN_FLIGHT: usize = 2048;

/// Records per partition for the big runs.
fn records_per_partition() -> u64 {
    let mib: u64 = std::env::var("SLUICE_TIER_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    (mib << 20) / VALUE_BYTES as u64 / PARTITIONS as u64
}

/// The value of record `seq` of `partition`: its identity, then a filler derived from it.
fn value(partition: i32, seq: u64) -> Vec<u8> {
    let fill = (seq.wrapping_mul(31) ^ partition as u64) as u8;
    let mut v = vec![fill; VALUE_BYTES];
    v[..4].copy_from_slice(&partition.to_be_bytes());
    v[4..12].copy_from_slice(&seq.to_be_bytes());
    v
}

async fn create_topic(broker: &BrokerProcess, name: &str) {
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    for result in admin
        .create_topics(
            &[NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("CreateTopics answered")
    {
        result.unwrap_or_else(|(topic, code)| panic!("creating {topic} failed: {code:?}"));
    }
}

fn producer(broker: &BrokerProcess) -> FutureProducer {
    broker
        .client_config()
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer")
}

/// Produces records `from..to` of every partition, round robin; panics on any failure.
async fn produce(producer: &FutureProducer, topic: &str, from: u64, to: u64) {
    let mut pending = Vec::with_capacity(SENDS_IN_FLIGHT);
    for seq in from..to {
        for partition in 0..PARTITIONS {
            let payload = value(partition, seq);
            let delivery = producer
                .send_result(
                    FutureRecord::<(), _>::to(topic)
                        .partition(partition)
                        .payload(&payload),
                )
                .unwrap_or_else(|(e, _)| panic!("enqueue failed: {e}"));
            pending.push((partition, seq, delivery));
            if pending.len() >= SENDS_IN_FLIGHT {
                drain(&mut pending).await;
            }
        }
    }
    drain(&mut pending).await;
}

type Pending = Vec<(i32, u64, rdkafka::producer::DeliveryFuture)>;

async fn drain(pending: &mut Pending) {
    for (partition, seq, delivery) in pending.drain(..) {
        let delivered = delivery
            .await
            .expect("delivery answered")
            .unwrap_or_else(|(e, _)| panic!("record {seq} of partition {partition}: {e}"));
        assert_eq!(delivered.partition, partition);
        assert_eq!(
            delivered.offset, seq as i64,
            "offsets are dense per partition"
        );
    }
}

/// Consumes `count` records of every partition from offset 0 and checks each one.
fn consume_and_check(broker: &BrokerProcess, topic: &str, count: u64) -> f64 {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "tier-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut next: HashMap<i32, u64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let total = count * PARTITIONS as u64;
    let mut seen = 0u64;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while seen < total {
        assert!(
            last_progress.elapsed() < TIMEOUT,
            "no record for {TIMEOUT:?}; positions {next:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("no consume error");
        let partition = message.partition();
        let expected = next.get_mut(&partition).expect("an assigned partition");
        assert_eq!(message.offset(), *expected as i64, "partition {partition}");
        assert!(
            message.payload() == Some(&value(partition, *expected)[..]),
            "record {expected} of partition {partition} differs"
        );
        *expected += 1;
        seen += 1;
        last_progress = Instant::now();
    }
    (total * VALUE_BYTES as u64) as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// ListOffsets by timestamp (offsets_for_times) on partition 0.
fn offset_for_time(broker: &BrokerProcess, topic: &str, timestamp_ms: i64) -> i64 {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "by-time")
        .create()
        .unwrap();
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, 0, Offset::Offset(timestamp_ms))
        .unwrap();
    let answer = consumer.offsets_for_times(query, TIMEOUT).unwrap();
    match answer.find_partition(topic, 0).unwrap().offset() {
        Offset::Offset(offset) => offset,
        other => panic!("offsets_for_times answered {other:?}"),
    }
}

/// Flags of a one-shard broker that uploads every 1 MiB or 100 ms.
const EAGER_UPLOADS: [&str; 6] = [
    "--shards",
    "1",
    "--upload-size",
    "1MiB",
    "--upload-interval-ms",
    "100",
];

/// A one-shard broker that uploads every 1 MiB or 100 ms and logs each upload.
fn eager_uploader(data_dir: &Path) -> BrokerProcess {
    let envs = [("SLUICE_LOG", "info,sluice_shards::tier=debug")];
    BrokerProcess::start_with_env(data_dir, &EAGER_UPLOADS, &envs)
}

/// Uploads the broker has committed so far (from its debug log).
fn uploads(broker: &BrokerProcess) -> usize {
    broker
        .log_lines()
        .iter()
        .filter(|l| l.contains("upload committed"))
        .count()
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The WAL files stay at their configured capacity (plus the header blocks).
fn assert_wal_bounded(data_dir: &Path) {
    for wal in files_under(&data_dir.join("wal")) {
        let len = std::fs::metadata(&wal).unwrap().len();
        assert!(
            len <= (64 << 20) + (1 << 20),
            "{} is {len} bytes",
            wal.display()
        );
    }
}

/// The whole acceptance run against one broker configuration.
async fn big_run(data_dir: &Path, args: &[&str], envs: &[(&str, &str)], objects_dir: &Path) {
    let broker = BrokerProcess::start_with_env(data_dir, args, envs);
    create_topic(&broker, "tiered").await;
    let count = records_per_partition();
    let started = Instant::now();
    let half = count / 2;
    let first = producer(&broker);
    produce(&first, "tiered", 0, half).await;
    // Every record of the second half is created after `middle_ms`.
    let middle_ms = now_ms() + 1;
    while now_ms() <= middle_ms {
        std::thread::sleep(Duration::from_millis(1));
    }
    produce(&first, "tiered", half, count).await;
    let mib = (count * PARTITIONS as u64 * VALUE_BYTES as u64) >> 20;
    eprintln!(
        "produced {mib} MiB in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_wal_bounded(data_dir);
    let objects = files_under(objects_dir);
    assert!(
        objects.len() >= 2,
        "objects appear in the store: {objects:?}"
    );
    let rate = consume_and_check(&broker, "tiered", count);
    eprintln!("read {mib} MiB back at {rate:.0} MiB/s");

    let broker = broker.restart();
    // Only in objects now: the search by time reads them.
    assert_eq!(offset_for_time(&broker, "tiered", middle_ms), half as i64);
    let rate = consume_and_check(&broker, "tiered", count);
    eprintln!("after kill -9: read {mib} MiB back at {rate:.0} MiB/s");
    // Production continues at the next offsets.
    produce(&producer(&broker), "tiered", count, count + 10).await;
    consume_and_check(&broker, "tiered", count + 10);
    assert_wal_bounded(data_dir);
}

fn s3_args(server: &S3Server) -> (String, String) {
    (
        format!("s3://{S3_BUCKET}/broker-test"),
        format!("http://127.0.0.1:{}", server.port),
    )
}

const S3_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_more_than_the_wal_goes_through_a_local_object_store() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--shards",
        "2",
        "--memory",
        "512MiB",
        "--upload-size",
        "8MiB",
    ];
    big_run(dir.path(), &args, &[], &dir.path().join("objects")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_more_than_the_wal_goes_through_an_s3_server() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (store, endpoint) = s3_args(&server);
    let args = [
        "--shards",
        "2",
        "--memory",
        "512MiB",
        "--upload-size",
        "8MiB",
        "--object-store",
        &store,
        "--s3-endpoint",
        &endpoint,
    ];
    big_run(dir.path(), &args, &S3_ENV, server.root()).await;
    assert!(
        !dir.path().join("objects").exists(),
        "nothing went to the local store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_during_production_loses_no_acknowledged_record() {
    let mut server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (store, endpoint) = s3_args(&server);
    let args = [
        "--shards",
        "1",
        "--memory",
        "256MiB",
        "--upload-size",
        "4MiB",
        "--upload-interval-ms",
        "500",
        "--object-store",
        &store,
        "--s3-endpoint",
        &endpoint,
    ];
    let broker = BrokerProcess::start_with_env(dir.path(), &args, &S3_ENV);
    // Whatever reaches the store during the outage fails and is retried: uploads, and the
    // maintenance pass (every 10 s) if it falls in the outage.
    for failed in [
        "upload not committed; retrying shard=0",
        "compaction step failed",
        "object retention failed",
        "object garbage collection failed",
    ] {
        broker.allow_log(&format!("{failed} error=object store unavailable"));
    }
    // An object put failing is logged once, then every 30 s, with the store's error.
    broker.allow_log("object upload failing; retrying");
    create_topic(&broker, "outage").await;
    let producer = producer(&broker);
    // 32 MiB before, 160 MiB during (more than the WAL holds: producers must wait), the rest
    // after the store is back.
    let per_mib = (1 << 20) / VALUE_BYTES as u64 / PARTITIONS as u64;
    produce(&producer, "outage", 0, 32 * per_mib).await;
    server.stop();
    let outage = Instant::now();
    let during = tokio::spawn({
        let producer = producer.clone();
        async move { produce(&producer, "outage", 32 * per_mib, 192 * per_mib).await }
    });
    // The outage lasts 20 s, whatever the producer does meanwhile.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed())).await;
    server.resume();
    during.await.expect("production resumes by itself");
    produce(&producer, "outage", 192 * per_mib, 224 * per_mib).await;
    consume_and_check(&broker, "outage", 224 * per_mib);
    let broker = broker.restart();
    consume_and_check(&broker, "outage", 224 * per_mib);
}

/// A local store that refuses writes (its directory replaced by a file: every put fails, as on
/// a full disk). Produces go on into the WAL until it is full; then each is refused at once
/// with KAFKA_STORAGE_ERROR, not left waiting until its timeout (REQUEST_TIMED_OUT), and the
/// broker stops on SIGTERM (it hung: the connection waited for answers that never came).
/// Once the store takes writes again, a restarted broker holds every acknowledged record.
#[test]
fn a_store_refusing_writes_gets_produces_refused_once_the_wal_is_full() {
    let store = RefusingStore::new();
    let args = store.broker_args(&["--wal-size", "16MiB"]);
    let mut broker = store.start_broker(&args);
    let mut client = RawClient::connect(&broker);
    client.create_topic("refused", 1, &[]);
    let mut acked = Vec::new();
    for _ in 0..8 {
        assert_eq!(produce_256_kib(&mut client, "refused", &mut acked), 0);
    }
    assert_eq!(commit_offset(&mut client, "refused", 3), 0);
    store.refuse_writes();
    // 16 MiB of WAL hold at most 64 of these batches.
    let refused = produce_256_kib_until_refused(&mut client, "refused", &mut acked, 200);
    assert_eq!(
        refused,
        Some(56),
        "once the WAL is full, a produce is refused KAFKA_STORAGE_ERROR ({} acknowledged)",
        acked.len()
    );
    assert!(
        acked.len() > 8,
        "the WAL took produces while the store refused writes"
    );
    // Offset commits are refused too (retriable) once even they no longer fit, rather than
    // waiting for room. Each takes at least a 4 KiB WAL block, so a few dozen fill it.
    let mut last_committed = 3;
    let refused_commit =
        (4..10_000).find(
            |&offset| match commit_offset(&mut client, "refused", offset) {
                0 => {
                    last_committed = offset;
                    false
                }
                code => {
                    assert_eq!(code, 15, "COORDINATOR_NOT_AVAILABLE");
                    true
                }
            },
        );
    assert!(refused_commit.is_some(), "an offset commit was refused");
    assert!(broker.terminate().success());
    store.take_writes();
    let broker = BrokerProcess::start(&store.data, &args);
    common::assert_topic_holds(&broker, "refused", &HashMap::from([(0, acked)]));
    // The refused commit left no trace, and the group's log goes on after the one before it.
    let mut client = RawClient::connect(&broker);
    assert_eq!(committed_offset(&mut client, "refused"), last_committed);
    assert_eq!(commit_offset(&mut client, "refused", 10_000), 0);
    assert_eq!(committed_offset(&mut client, "refused"), 10_000);
}

/// The same store with a WAL larger than the shard's memory pool, as by default (1 GiB of WAL
/// and 768 MiB of pool per shard): the batches waiting for an upload fill the pool first. A
/// produce that would wait for pool memory is then refused KAFKA_STORAGE_ERROR too, and the
/// pool keeps its share for request frames, so the next produce is read and refused as well
/// (before, each waited for memory until its client's timeout, and the stop waited for them).
#[test]
fn a_store_refusing_writes_gets_produces_refused_once_the_memory_pool_is_short() {
    let store = RefusingStore::new();
    let args = store.broker_args(&["--memory", "64MiB", "--wal-size", "256MiB"]);
    let mut broker = store.start_broker(&args);
    let mut client = RawClient::connect(&broker);
    client.create_topic("refused", 1, &[]);
    let mut acked = Vec::new();
    for _ in 0..8 {
        assert_eq!(produce_256_kib(&mut client, "refused", &mut acked), 0);
    }
    store.refuse_writes();
    // The shard's pool is 48 MiB, 16 MiB of it kept for frames: it holds fewer than 128 of
    // these batches, the WAL about 1,000.
    let refused = produce_256_kib_until_refused(&mut client, "refused", &mut acked, 400);
    assert_eq!(
        refused,
        Some(56),
        "once the pool is short, a produce is refused KAFKA_STORAGE_ERROR ({} acknowledged)",
        acked.len()
    );
    assert!(
        (9..128).contains(&acked.len()),
        "the pool took produces while the store refused writes, up to its frames' share ({} \
         acknowledged)",
        acked.len()
    );
    for _ in 0..3 {
        assert_eq!(produce_256_kib(&mut client, "refused", &mut acked), 56);
    }
    assert!(broker.terminate().success());
    store.take_writes();
    let broker = BrokerProcess::start(&store.data, &args);
    common::assert_topic_holds(&broker, "refused", &HashMap::from([(0, acked)]));
}

/// A broker's data directory beside a local object store whose directory can be replaced by a
/// file, so that every put fails (as on a full disk).
struct RefusingStore {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    objects: std::path::PathBuf,
}

impl RefusingStore {
    fn new() -> RefusingStore {
        let dir = tempfile::tempdir().unwrap();
        let (data, objects) = (dir.path().join("data"), dir.path().join("objects"));
        RefusingStore { dir, data, objects }
    }

    /// Starts a broker with `args`, expecting the WARN lines of a store that refuses writes.
    fn start_broker(&self, args: &[&str]) -> BrokerProcess {
        let broker = BrokerProcess::start(&self.data, args);
        broker.allow_log("object upload failing; retrying");
        broker.allow_log("compaction step failed");
        broker
    }

    /// One shard uploading often into this store, with `more`.
    fn broker_args<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        let objects = self.objects.to_str().expect("a UTF-8 path");
        let store = ["--object-store", objects];
        EAGER_UPLOADS
            .iter()
            .chain(&store)
            .chain(more)
            .copied()
            .collect()
    }

    fn refuse_writes(&self) {
        std::fs::rename(&self.objects, self.dir.path().join("objects-away")).unwrap();
        std::fs::write(&self.objects, b"not a directory").unwrap();
    }

    fn take_writes(&self) {
        std::fs::remove_file(&self.objects).unwrap();
        std::fs::rename(self.dir.path().join("objects-away"), &self.objects).unwrap();
    }
}

/// [`produce_256_kib`] until a produce is refused, at most `tries` times: the refusal's code.
fn produce_256_kib_until_refused(
    client: &mut RawClient,
    topic: &str,
    acked: &mut Vec<String>,
    tries: usize,
) -> Option<i16> {
    (0..tries).find_map(|_| match produce_256_kib(client, topic, acked) {
        0 => None,
        code => Some(code),
    })
}

/// Produces a batch of one 256 KiB record to partition 0 of `topic` through `client`: its
/// error code. An acknowledged record is pushed to `acked`, which the offsets must follow.
fn produce_256_kib(client: &mut RawClient, topic: &str, acked: &mut Vec<String>) -> i16 {
    let value = format!("{:08}-{}", acked.len(), "v".repeat(256 << 10));
    let batch = producer_batch((-1, -1), -1, false, &value);
    let answer = client.produce_answer(topic, 0, None, batch);
    if answer.error_code == 0 {
        assert_eq!(answer.base_offset, acked.len() as i64);
        acked.push(value);
    }
    answer.error_code
}

/// OffsetCommit v8 of `offset` for partition 0 of `topic` by group "g" (no generation):
/// the partition's error code.
fn commit_offset(client: &mut RawClient, topic: &str, offset: i64) -> i16 {
    let Response::OffsetCommit(answer) = client.call(
        8,
        Request::OffsetCommit(OffsetCommitRequest {
            group_id: "g".into(),
            generation_id_or_member_epoch: -1,
            topics: vec![OffsetCommitRequestTopic {
                name: topic.into(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: offset,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }),
    ) else {
        panic!("an OffsetCommit response");
    };
    answer.topics[0].partitions[0].error_code
}

/// Group "g"'s committed offset of partition 0 of `topic` (OffsetFetch v8).
fn committed_offset(client: &mut RawClient, topic: &str) -> i64 {
    let Response::OffsetFetch(answer) = client.call(
        8,
        Request::OffsetFetch(OffsetFetchRequest {
            groups: vec![OffsetFetchRequestGroup {
                group_id: "g".into(),
                topics: Some(vec![OffsetFetchRequestTopics {
                    name: topic.into(),
                    partition_indexes: vec![0],
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
    ) else {
        panic!("an OffsetFetch response");
    };
    let partition = &answer.groups[0].topics[0].partitions[0];
    assert_eq!(partition.error_code, 0, "OffsetFetch of {topic}");
    partition.committed_offset
}

/// Latencies of a producer sending one 1 KiB record every millisecond to `topic` for `for_how_long`
/// (acks=all, on a schedule: a slow answer does not delay the next send); returns p50 and p99.
async fn paced_latencies(
    producer: &FutureProducer,
    topic: &str,
    for_how_long: Duration,
) -> (f64, f64) {
    let payload = vec![7u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let started = Instant::now();
    let mut pending = Vec::new();
    while started.elapsed() < for_how_long {
        tick.tick().await;
        let sent = Instant::now();
        let delivery = producer
            .send_result(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&payload),
            )
            .unwrap_or_else(|(e, _)| panic!("enqueue failed: {e}"));
        pending.push(tokio::spawn(async move {
            delivery.await.expect("answered").expect("delivered");
            sent.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(pending.len());
    for task in pending {
        latencies.push(task.await.unwrap().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.50), at(0.99))
}

/// Cold-read isolation, a measurement (run it on a release build, figures on stderr):
/// `SLUICE_TEST_BINARY=target/release/sluice cargo test --test object_tier catch_up -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: see the doc comment"]
async fn catch_up_reader_and_tailing_producer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2", "--memory", "512MiB"]);
    create_topic(&broker, "backlog").await;
    create_topic(&broker, "live").await;
    // 1 GiB backlog over the 8 partitions of "backlog"; most of it leaves the log cache.
    let count = (1u64 << 30) / VALUE_BYTES as u64 / PARTITIONS as u64;
    produce(&producer(&broker), "backlog", 0, count).await;
    let live = broker
        .client_config()
        .set("linger.ms", "0")
        .set("acks", "all")
        .create::<FutureProducer>()
        .unwrap();
    // Uploads and compaction of the backlog settle first: they are not what is measured.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let window = Duration::from_secs(10);
    let (alone_p50, alone_p99) = paced_latencies(&live, "live", window).await;
    let reader = {
        let bootstrap = broker.bootstrap.clone();
        std::thread::spawn(move || {
            let mut config = rdkafka::ClientConfig::new();
            config
                .set("bootstrap.servers", &bootstrap)
                .set("broker.address.family", "v4");
            catch_up(config, count)
        })
    };
    let (busy_p50, busy_p99) = paced_latencies(&live, "live", window).await;
    let (mib, seconds) = reader.join().unwrap();
    let (after_p50, after_p99) = paced_latencies(&live, "live", window).await;
    eprintln!(
        "catch-up read: {mib} MiB in {seconds:.1} s = {:.0} MiB/s",
        mib as f64 / seconds
    );
    eprintln!("producer alone: p50 {alone_p50:.2} ms, p99 {alone_p99:.2} ms");
    eprintln!("producer during catch-up: p50 {busy_p50:.2} ms, p99 {busy_p99:.2} ms");
    eprintln!("producer after: p50 {after_p50:.2} ms, p99 {after_p99:.2} ms");
}

/// Reads the backlog from offset 0 to its end; returns (MiB, seconds).
fn catch_up(mut config: rdkafka::ClientConfig, count: u64) -> (u64, f64) {
    let consumer: BaseConsumer = config
        .set("group.id", "catch-up")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset("backlog", partition, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let total = count * PARTITIONS as u64;
    let started = Instant::now();
    let mut seen = 0;
    while seen < total {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            message.expect("no consume error");
            seen += 1;
        }
        assert!(started.elapsed() < TIMEOUT, "catch-up stalled at {seen}");
    }
    (
        (total * VALUE_BYTES as u64) >> 20,
        started.elapsed().as_secs_f64(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_bytes_and_by_time_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = EAGER_UPLOADS
        .iter()
        .chain(&["--retention-check-interval-ms", "100"])
        .copied()
        .collect();
    let broker = BrokerProcess::start(dir.path(), &args);
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let topics = [
        NewTopic::new("by-bytes", PARTITIONS, TopicReplication::Fixed(1))
            .set("retention.bytes", "4194304"),
        NewTopic::new("by-time", PARTITIONS, TopicReplication::Fixed(1))
            .set("retention.ms", "1000"),
    ];
    for result in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    // 16 MiB per partition of each topic.
    let count = (16 << 20) / VALUE_BYTES as u64;
    let producer = producer(&broker);
    produce(&producer, "by-bytes", 0, count).await;
    produce(&producer, "by-time", 0, count).await;
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "retention")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let low = |topic: &str| {
        consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap()
    };
    // Once data is uploaded, retention cuts whole object ranges, oldest first, while at least
    // retention.bytes stay (Kafka's rule for segments): never the newest 4 MiB.
    let kept_min = (4 << 20) / (VALUE_BYTES as i64 + 128);
    let (start, end) = common::wait_for(TIMEOUT, || {
        let (start, end) = low("by-bytes");
        (start > 0 && end - start <= count as i64 / 2).then_some((start, end))
    })
    .expect("retention.bytes cut the log");
    assert_eq!(end, count as i64);
    assert!(
        end - start >= kept_min,
        "retention.bytes keeps at least that much: {start}..{end}"
    );
    // Everything uploaded is older than a second soon; the part still only in the WAL stays.
    common::wait_for(TIMEOUT, || {
        let (start, end) = low("by-time");
        (start > 0 && end - start < count as i64 / 2).then_some(())
    })
    .expect("retention.ms cut the log");
    // The log start is where reading begins again. Retention stops first, so it stays put.
    let unlimited =
        rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic("by-bytes"))
            .set("retention.bytes", "-1");
    for result in admin
        .alter_configs(&[unlimited], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    let mut last = low("by-bytes").0;
    let start = common::wait_for(TIMEOUT, || {
        std::thread::sleep(Duration::from_millis(300)); // several retention checks
        let now = low("by-bytes").0;
        let stable = now == last;
        last = now;
        stable.then_some(now)
    })
    .expect("the log start settles");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("by-bytes", 0, Offset::Offset(start))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let message = common::wait_for(TIMEOUT, || consumer.poll(Duration::from_millis(100)))
        .expect("a record at the log start")
        .expect("no consume error");
    assert_eq!(message.offset(), start);
    assert_eq!(message.payload(), Some(&value(0, start as u64)[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_come_back_from_objects_once_the_wal_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = eager_uploader(dir.path());
    create_topic(&broker, "offsets").await;
    let producer = producer(&broker);
    produce(&producer, "offsets", 0, 64).await;
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "tiered-group")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut commit = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        commit
            .add_partition_offset("offsets", partition, Offset::Offset(10 + partition as i64))
            .unwrap();
    }
    consumer
        .commit(&commit, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    let before = uploads(&broker);
    // The group record is durable, so the next upload sealed from now on takes it and trims
    // the WAL past it; one in flight now may not hold it, hence two.
    produce(&producer, "offsets", 64, 128).await;
    common::wait_for(TIMEOUT, || (uploads(&broker) > before + 1).then_some(()))
        .expect("an upload after the commit");
    drop(consumer);
    let broker = broker.restart();
    // The recovery line is on stderr, the address the restart waited for on stdout: their
    // collectors race, so the line may be read a moment later.
    let recovered = common::wait_for(Duration::from_secs(10), || {
        broker
            .log_lines()
            .into_iter()
            .find(|l| l.contains("WAL recovered"))
    })
    .expect("the broker logs its WAL recovery");
    assert!(
        recovered.contains("group_entries=0") && recovered.contains("group_entries_from_objects=8"),
        "the group log comes from objects, not the WAL: {recovered}"
    );
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "tiered-group")
        .create()
        .unwrap();
    let mut query = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        query.add_partition("offsets", partition);
    }
    let committed = consumer.committed_offsets(query, TIMEOUT).unwrap();
    for partition in 0..PARTITIONS {
        assert_eq!(
            committed
                .find_partition("offsets", partition)
                .unwrap()
                .offset(),
            Offset::Offset(10 + partition as i64)
        );
    }
    consume_and_check(&broker, "offsets", 128);
}

/// A transactional producer (rdkafka's `BaseProducer`, flushed per transaction).
fn transactional(broker: &BrokerProcess) -> rdkafka::producer::BaseProducer {
    use rdkafka::producer::Producer;
    let producer: rdkafka::producer::BaseProducer = broker
        .client_config()
        .set("transactional.id", "tiered-txn")
        .set("transaction.timeout.ms", "60000")
        .create()
        .unwrap();
    producer.init_transactions(TIMEOUT).unwrap();
    producer
}

/// One transaction of `count` records tagged `tag` on partition 0, committed or not.
fn transaction(
    producer: &rdkafka::producer::BaseProducer,
    tag: u8,
    count: usize,
    end: Option<bool>,
) {
    use rdkafka::producer::{BaseRecord, Producer};
    producer.begin_transaction().unwrap();
    for i in 0..count {
        let mut payload = vec![tag; VALUE_BYTES];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        producer
            .send(
                BaseRecord::<(), _>::to("txn-tiered")
                    .partition(0)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(TIMEOUT).unwrap();
    match end {
        Some(true) => producer.commit_transaction(TIMEOUT).unwrap(),
        Some(false) => producer.abort_transaction(TIMEOUT).unwrap(),
        None => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_after_the_wal_is_trimmed_and_the_broker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = eager_uploader(dir.path());
    create_topic(&broker, "txn-tiered").await;
    let producer = transactional(&broker);
    transaction(&producer, b'A', 64, Some(false));
    transaction(&producer, b'B', 64, Some(true));
    transaction(&producer, b'C', 64, None);
    // Everything so far (C's open transaction included) goes to objects and out of the WAL:
    // the second upload from now on is sealed after it.
    let before = uploads(&broker);
    create_topic(&broker, "tiered-filler").await;
    produce(&self::producer(&broker), "tiered-filler", 0, 64).await;
    common::wait_for(TIMEOUT, || (uploads(&broker) > before + 1).then_some(()))
        .expect("an upload after the transactions");
    drop(producer);
    let broker = broker.restart();
    // A new producer with the same id fences C (aborting it), then commits D.
    let producer = transactional(&broker);
    transaction(&producer, b'D', 64, Some(true));
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "txn-tiered")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("txn-tiered", 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut tags = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while tags.len() < 128 {
        assert!(
            Instant::now() < deadline,
            "read_committed got {} records",
            tags.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("no consume error");
            tags.push(message.payload().unwrap()[VALUE_BYTES - 1]);
        }
    }
    let expected: Vec<u8> = [vec![b'B'; 64], vec![b'D'; 64]].concat();
    assert_eq!(tags, expected, "only the committed transactions, in order");
}
