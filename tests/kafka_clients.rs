//! The real broker binary driven by librdkafka (the `rdkafka` crate): topics, produce and
//! consume with every codec, idempotence, ListOffsets by time, delete, kill -9, two shards.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::BrokerProcess;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(60);

fn producer(broker: &BrokerProcess, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = broker.client_config();
    config.set("linger.ms", "5");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().expect("producer")
}

/// A consumed record: (offset, key, value, headers).
type Consumed = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

/// Reads `count` records of one partition from `offset`, with assign() and no group.
fn consume(
    broker: &BrokerProcess,
    topic: &str,
    partition: i32,
    offset: i64,
    count: usize,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "sluice-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::with_capacity(count);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while out.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "consumed only {} of {count} records of {topic}/{partition}",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("no consume error");
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            message.offset(),
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
            headers,
        ));
    }
    out
}

fn value_of(i: usize) -> Option<Vec<u8>> {
    // Every seventh record has a null value (a tombstone).
    (i % 7 != 3).then(|| format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_round_trip_with_every_codec_keys_headers_and_null_values() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    broker.create_topic("one", 1).await;
    broker.create_topic("three", 3).await;
    broker.create_topic("wide", 512).await;

    let metadata = broker
        .admin()
        .inner()
        .fetch_metadata(None, TIMEOUT)
        .expect("metadata");
    let partitions: HashMap<String, usize> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    assert_eq!(partitions.get("one"), Some(&1));
    assert_eq!(partitions.get("three"), Some(&3));
    assert_eq!(partitions.get("wide"), Some(&512));

    // 100k records: 20k per codec, over the 3 partitions, with keys, headers, null values.
    let per_codec = 20_000;
    let mut expected: HashMap<i32, Vec<(i64, usize)>> = HashMap::new();
    for (c, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let producer = producer(
            &broker,
            &[("compression.codec", codec), ("batch.num.messages", "1000")],
        );
        let mut deliveries = Vec::with_capacity(per_codec);
        for j in 0..per_codec {
            let i = c * per_codec + j;
            let key = format!("key-{i}");
            let value = value_of(i);
            let partition = (i % 3) as i32;
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "i",
                    value: Some(i.to_string().as_bytes()),
                })
                .insert(Header {
                    key: "empty",
                    value: None::<&[u8]>,
                });
            let mut record = FutureRecord::to("three")
                .key(&key)
                .partition(partition)
                .headers(headers);
            if let Some(value) = &value {
                record = record.payload(value);
            }
            deliveries.push((i, partition, producer.send_result(record).expect("queued")));
        }
        for (i, partition, delivery) in deliveries {
            let delivered = delivery.await.expect("not cancelled").expect("acked");
            assert_eq!(delivered.partition, partition);
            expected
                .entry(partition)
                .or_default()
                .push((delivered.offset, i));
        }
    }
    for partition in 0..3 {
        let mut acked = expected.remove(&partition).unwrap();
        acked.sort();
        let consumed = consume(&broker, "three", partition, 0, acked.len());
        for (n, ((offset, i), (c_offset, key, value, headers))) in
            acked.iter().zip(&consumed).enumerate()
        {
            assert_eq!(*offset, n as i64, "offsets are dense from 0");
            assert_eq!(c_offset, offset);
            assert_eq!(key.as_deref(), Some(format!("key-{i}").as_bytes()));
            assert_eq!(*value, value_of(*i));
            assert_eq!(
                headers[0],
                ("i".to_string(), Some(i.to_string().into_bytes()))
            );
            assert_eq!(headers[1], ("empty".to_string(), None));
        }
    }

    // Every partition of the wide topic takes a record and gives it back.
    let producer = producer(&broker, &[]);
    let mut deliveries = Vec::new();
    for p in 0..512 {
        let value = format!("wide-{p}");
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::<(), _>::to("wide")
                        .partition(p)
                        .payload(&value),
                )
                .unwrap(),
        );
    }
    for delivery in deliveries {
        let delivered = delivery.await.unwrap().expect("acked");
        assert_eq!(delivered.offset, 0);
    }
    for p in [0, 1, 255, 511] {
        let consumed = consume(&broker, "wide", p, 0, 1);
        assert_eq!(
            consumed[0].2.as_deref(),
            Some(format!("wide-{p}").as_bytes())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_writes_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    broker.create_topic("idem", 2).await;
    let producer = producer(
        &broker,
        &[
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("linger.ms", "0"),
        ],
    );
    let total: usize = 10_000;
    let mut deliveries = Vec::new();
    for i in 0..total {
        let value = format!("idem-{i}");
        let partition = (i % 2) as i32;
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::<(), _>::to("idem")
                        .partition(partition)
                        .payload(&value),
                )
                .unwrap(),
        );
    }
    let mut last = [-1i64; 2];
    for delivery in deliveries {
        let delivered = delivery.await.unwrap().expect("acked");
        let p = delivered.partition as usize;
        assert_eq!(
            delivered.offset,
            last[p] + 1,
            "in order, no gaps, no duplicates"
        );
        last[p] = delivered.offset;
    }
    for partition in 0..2 {
        let consumed = consume(&broker, "idem", partition, 0, total / 2);
        for (n, record) in consumed.iter().enumerate() {
            let i = n * 2 + partition as usize;
            assert_eq!(record.2.as_deref(), Some(format!("idem-{i}").as_bytes()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_time_finds_the_first_later_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    broker.create_topic("times", 1).await;
    let producer = producer(&broker, &[("linger.ms", "0")]);
    let base = 1_700_000_000_000i64;
    for i in 0..100i64 {
        let value = format!("t{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("times")
                    .partition(0)
                    .payload(&value)
                    .timestamp(base + i * 1000),
                TIMEOUT,
            )
            .await
            .expect("acked");
    }
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "times")
        .create()
        .unwrap();
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset("times", 0, Offset::Offset(base + 42_500))
        .unwrap();
    let found = consumer
        .offsets_for_times(query, TIMEOUT)
        .expect("ListOffsets answered");
    assert_eq!(
        found.find_partition("times", 0).unwrap().offset(),
        Offset::Offset(43)
    );
    let mut late = TopicPartitionList::new();
    late.add_partition_offset("times", 0, Offset::Offset(base + 10_000_000))
        .unwrap();
    let found = consumer.offsets_for_times(late, TIMEOUT).unwrap();
    assert_eq!(
        found.find_partition("times", 0).unwrap().offset(),
        Offset::End
    );
    let (low, high) = consumer.fetch_watermarks("times", 0, TIMEOUT).unwrap();
    assert_eq!((low, high), (0, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topics_disappear_and_can_be_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    broker.create_topic("doomed", 2).await;
    let producer = producer(&broker, &[]);
    producer
        .send(
            FutureRecord::<(), _>::to("doomed")
                .partition(1)
                .payload("bye"),
            TIMEOUT,
        )
        .await
        .expect("acked");
    let results = broker
        .admin()
        .delete_topics(&["doomed"], &AdminOptions::new())
        .await
        .expect("DeleteTopics answered");
    assert!(results[0].is_ok(), "{results:?}");
    let client = broker.admin();
    let metadata = client.inner().fetch_metadata(None, TIMEOUT).unwrap();
    assert!(metadata.topics().iter().all(|t| t.name() != "doomed"));
    broker.create_topic("doomed", 1).await;
    let (_, high) = producer
        .client()
        .fetch_watermarks("doomed", 0, TIMEOUT)
        .unwrap();
    assert_eq!(high, 0, "a re-created topic starts empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    broker.create_topic("durable", 2).await;
    let producer = producer(
        &broker,
        &[("linger.ms", "1"), ("message.timeout.ms", "5000")],
    );
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i32, i64, String)>::new()));
    let mut in_flight = Vec::new();
    for i in 0..200_000 {
        let value = format!("durable-{i}");
        let partition = i % 2;
        let delivery = producer
            .send_result(
                FutureRecord::<(), _>::to("durable")
                    .partition(partition)
                    .payload(&value),
            )
            .unwrap();
        let sink = acked.clone();
        in_flight.push(tokio::spawn(async move {
            if let Ok(Ok(delivered)) = delivery.await {
                sink.lock()
                    .unwrap()
                    .push((delivered.partition, delivered.offset, value));
            }
        }));
        if i == 20_000 {
            // Wait until a good share is acknowledged, then pull the plug mid-stream.
            let deadline = std::time::Instant::now() + TIMEOUT;
            while acked.lock().unwrap().len() <= 5_000 {
                assert!(std::time::Instant::now() < deadline, "acks arrive");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            break;
        }
    }
    let mut broker = broker;
    broker.kill9();
    drop(producer);
    for task in in_flight {
        let _ = task.await;
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() > 5_000);
    let broker = broker.restart();
    for partition in 0..2 {
        let mine: HashMap<i64, &String> = acked
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, o, v)| (*o, v))
            .collect();
        let needed = mine.keys().max().map(|m| *m as usize + 1).unwrap_or(0);
        let consumed = consume(&broker, "durable", partition, 0, needed);
        for (offset, _, value, _) in consumed {
            if let Some(expected) = mine.get(&offset) {
                assert_eq!(
                    value.as_deref(),
                    Some(expected.as_bytes()),
                    "offset {offset}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_share_the_partitions_and_serve_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    broker.create_topic("spread", 8).await;
    let producer = producer(&broker, &[]);
    let mut deliveries = Vec::new();
    for i in 0..4_000 {
        let value = format!("spread-{i}");
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::<(), _>::to("spread")
                        .partition(i % 8)
                        .payload(&value),
                )
                .unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap().expect("acked");
    }
    for partition in 0..8 {
        let consumed = consume(&broker, "spread", partition, 0, 500);
        for (n, record) in consumed.iter().enumerate() {
            let i = n * 8 + partition as usize;
            assert_eq!(record.2.as_deref(), Some(format!("spread-{i}").as_bytes()));
        }
    }
    drop(producer);
    let status = broker.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the broker cleanly: {status:?}"
    );
    let stopped: Vec<String> = broker
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("shard stopped"))
        .collect();
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    for line in &stopped {
        assert!(
            !line.contains("batches_appended=0"),
            "every shard ordered batches: {line}"
        );
        assert!(
            !line.contains("reads_served=0"),
            "every shard served reads: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_partitions_and_delete_records_through_the_admin_client() {
    use rdkafka::admin::{AlterConfig, NewPartitions, ResourceSpecifier};
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    broker.create_topic("admin", 2).await;
    let client = broker.admin();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));

    let described = client
        .describe_configs(&[ResourceSpecifier::Topic("admin")], &options)
        .await
        .unwrap();
    let resource = described[0].as_ref().expect("topic configs");
    let retention = resource.get("retention.ms").expect("retention.ms listed");
    assert_eq!(retention.value.as_deref(), Some("604800000"));
    assert!(retention.is_default);

    let altered = client
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("admin")).set("retention.ms", "3600000")],
            &options,
        )
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    // An invalid value is refused (INVALID_CONFIG; the rdkafka crate does not surface the
    // per-resource code, so check that nothing changed).
    let _ = client
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("admin")).set("retention.ms", "an hour")],
            &options,
        )
        .await;
    let described = client
        .describe_configs(&[ResourceSpecifier::Topic("admin")], &options)
        .await
        .unwrap();
    let resource = described[0].as_ref().unwrap();
    let retention = resource.get("retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert!(!retention.is_default);

    let grown = client
        .create_partitions(&[NewPartitions::new("admin", 5)], &options)
        .await
        .unwrap();
    assert!(grown[0].is_ok(), "{grown:?}");
    let shrunk = client
        .create_partitions(&[NewPartitions::new("admin", 3)], &options)
        .await
        .unwrap();
    assert!(shrunk[0].is_err(), "partition counts only grow: {shrunk:?}");
    let metadata = client
        .inner()
        .fetch_metadata(Some("admin"), TIMEOUT)
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 5);

    let producer = producer(&broker, &[]);
    for i in 0..10 {
        let value = format!("r{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("admin")
                    .partition(4)
                    .payload(&value),
                TIMEOUT,
            )
            .await
            .expect("acked");
    }
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset("admin", 4, Offset::Offset(6))
        .unwrap();
    let deleted = client
        .delete_records(&cut, &options)
        .await
        .expect("DeleteRecords answered");
    assert_eq!(
        deleted.find_partition("admin", 4).unwrap().offset(),
        Offset::Offset(6)
    );
    let (low, high) = producer
        .client()
        .fetch_watermarks("admin", 4, TIMEOUT)
        .unwrap();
    assert_eq!((low, high), (6, 10));
    let consumed = consume(&broker, "admin", 4, 6, 4);
    assert_eq!(consumed[0].2.as_deref(), Some(b"r6".as_slice()));
}
