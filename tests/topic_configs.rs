//! Topic configs that change how batches are stored, applied as Kafka applies them:
//! compression.type recompresses batches whose codec differs (a consumer reads the same
//! records), and "producer" keeps each batch as sent; a compacted topic refuses records
//! without a key, and its log cleaner keeps the latest record per key; segment.ms and
//! segment.bytes upload a partition early (Sluice's roll), and the configs Sluice has no
//! meaning for take only their defaults. And the broker's loggers (BROKER_LOGGER), whose
//! levels change at run time.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::RawClient;
use common::{BrokerProcess, wait_for};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_net::ErrorCode;
use sluice_net::record_batch::{
    Compression, RecordBatchBuilder, RecordBatchHeader, batches, decode_records,
};

/// The first batch of partition 0 of `topic`, as a consumer fetches it.
fn first_batch(client: &mut RawClient, topic: &str) -> Bytes {
    let partition = client.fetch_partition(topic, 0, 0, false);
    assert_eq!(partition.error_code, 0);
    partition.records.expect("records")
}

#[test]
fn compression_type_recompresses_and_producer_keeps_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let mut client = RawClient::connect(&broker);
    let mut builder = RecordBatchBuilder::new(Compression::Lz4);
    builder.append(1_000, Some(b"k"), Some(b"one"), &[(b"h", Some(b"v"))]);
    builder.append(1_001, None, Some(b"two"), &[]);
    let sent = builder.build().expect("a batch");
    let sent_records = decode_records(&sent, 1 << 20).unwrap();
    for (topic, compression_type, stored) in [
        ("gzip", "gzip", Compression::Gzip),
        ("plain", "uncompressed", Compression::None),
        ("as-sent", "producer", Compression::Lz4),
    ] {
        client.create_topic(topic, 1, &[("compression.type", compression_type)]);
        assert_eq!(client.produce(topic, 0, None, sent.clone()), (0, 0));
        let batch = first_batch(&mut client, topic);
        let header = RecordBatchHeader::parse(&batch).expect("one whole batch");
        assert_eq!(header.compression(), Ok(stored), "{topic}");
        assert_eq!(
            decode_records(&batch, 1 << 20).unwrap(),
            sent_records,
            "{topic}"
        );
    }
    broker.check_log();
}

/// librdkafka's 0011_produce_batch: keyless records on a compacted topic are refused.
#[test]
fn a_compacted_topic_refuses_records_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let mut client = RawClient::connect(&broker);
    client.create_topic("table", 1, &[("cleanup.policy", "compact")]);
    let batch = |key: Option<&[u8]>| {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder.append(1_000, key, Some(b"v"), &[]);
        builder.build().expect("a batch")
    };
    assert_eq!(
        client.produce("table", 0, None, batch(None)).0,
        ErrorCode::InvalidRecord.code()
    );
    assert_eq!(client.produce("table", 0, None, batch(Some(b"k"))), (0, 0));
    // A batch with some keyless records names them (Produce v8+, KIP-467), as librdkafka's
    // 0011 expects: the client fails those records and retries none of the batch's others.
    let mut builder = RecordBatchBuilder::new(Compression::Lz4);
    for key in [Some(&b"a"[..]), None, Some(b"b"), None] {
        builder.append(1_000, key, Some(b"v"), &[]);
    }
    let answer = client.produce_answer("table", 0, None, builder.build().expect("a batch"));
    assert_eq!(answer.error_code, ErrorCode::InvalidRecord.code());
    let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![1, 3]);
    assert_eq!(
        answer.record_errors[0].batch_index_error_message.as_deref(),
        Some("Compacted topic cannot accept message without key in topic partition table-0.")
    );
    assert!(
        answer.error_message.as_deref().is_some_and(
            |m| m.starts_with("One or more records have been rejected due to 2 record errors")
        ),
        "{answer:?}"
    );
    broker.check_log();
}

/// Every record of partition 0 of `topic` from offset 0 to the high watermark, as a consumer
/// reads it: offset → (key, value; None for a tombstone).
fn read_partition(client: &mut RawClient, topic: &str) -> BTreeMap<i64, (String, Option<String>)> {
    let mut records = BTreeMap::new();
    let mut offset = 0;
    loop {
        let partition = client.fetch_partition(topic, 0, offset, false);
        assert_eq!(partition.error_code, 0, "fetch at {offset}");
        let data = partition.records.unwrap_or_default();
        let mut next = offset;
        for batch in batches(&data) {
            let batch = batch.expect("whole batches");
            let header = RecordBatchHeader::parse(&batch).expect("a v2 batch");
            for record in decode_records(&batch, 1 << 24).expect("records") {
                let at = header.base_offset() + i64::from(record.offset_delta);
                let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                if at >= offset {
                    let key = record.key.as_ref().map(text).expect("keyed");
                    records.insert(at, (key, record.value.as_ref().map(text)));
                }
            }
            next = next.max(header.last_offset() + 1);
        }
        if next >= partition.high_watermark {
            return records;
        }
        assert!(next > offset, "a fetch at {offset} moved nowhere");
        offset = next;
    }
}

/// The compaction test: records over 1,000 keys, the last write of every tenth key a
/// tombstone. Once cleaned, a consumer from offset 0 reads one record per key, the latest, at
/// the offset it was written at; tombstones stay for delete.retention.ms, then go.
/// SLUICE_COMPACTION_RECORDS sets the count (default 200,000; the acceptance run: 1,000,000).
#[test]
fn the_log_cleaner_keeps_the_latest_record_per_key_and_tombstones_for_their_retention() {
    let total: usize = std::env::var("SLUICE_COMPACTION_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    const KEYS: usize = 1_000;
    const DELETE_RETENTION_MS: u64 = 5_000;
    assert!(total >= KEYS);
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "--shards",
            "1",
            "--upload-interval-ms",
            "100",
            "--maintenance-interval-ms",
            "200",
        ],
    );
    let mut client = RawClient::connect(&broker);
    let retention = DELETE_RETENTION_MS.to_string();
    client.create_topic(
        "table",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", &retention),
        ],
    );
    let producer: BaseProducer = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut expected = BTreeMap::new();
    let started = Instant::now();
    for i in 0..total {
        let key = format!("key-{}", i % KEYS);
        let tombstone = i + KEYS >= total && (i % KEYS).is_multiple_of(10);
        let value = format!("value-{i}");
        let mut record = BaseRecord::<String, String>::to("table")
            .partition(0)
            .key(&key);
        if !tombstone {
            record = record.payload(&value);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((error, r)) = producer.send(r) {
                assert!(
                    matches!(
                        error.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "{error}"
                );
                producer.poll(Duration::from_millis(10));
                record = Some(r);
            }
        }
        if i + KEYS >= total {
            expected.insert(i as i64, (key, (!tombstone).then_some(value)));
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let produced_at = Instant::now();
    eprintln!("produced {total} records in {:?}", produced_at - started);

    // Compacted: every key once, at its latest offset; a tombstone may only be gone once its
    // retention has passed.
    let compacted = wait_for(Duration::from_secs(180), || {
        let read = read_partition(&mut client, "table");
        let live = |r: &BTreeMap<i64, (String, Option<String>)>| {
            r.iter()
                .filter(|(_, (_, v))| v.is_some())
                .map(|(o, kv)| (*o, kv.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        (read.len() <= KEYS && live(&read) == live(&expected)).then_some(read)
    })
    .expect("the partition is compacted within 180 s");
    let first_seen = produced_at.elapsed();
    eprintln!(
        "compacted after {first_seen:?}: {} records, {} tombstones",
        compacted.len(),
        compacted.values().filter(|(_, v)| v.is_none()).count()
    );
    for (offset, record) in &compacted {
        assert_eq!(expected.get(offset), Some(record), "offset {offset}");
    }
    if first_seen < Duration::from_millis(DELETE_RETENTION_MS) {
        assert_eq!(
            compacted.len(),
            KEYS,
            "tombstones kept within delete.retention.ms"
        );
    }
    let live: BTreeMap<i64, (String, Option<String>)> = expected
        .into_iter()
        .filter(|(_, (_, value))| value.is_some())
        .collect();
    let mut last_read = BTreeMap::new();
    let gone = wait_for(Duration::from_secs(120), || {
        last_read = read_partition(&mut client, "table");
        (last_read.len() < KEYS).then_some(produced_at.elapsed())
    })
    .expect("tombstones go after delete.retention.ms");
    eprintln!("tombstones gone after {gone:?}");
    assert_eq!(last_read, live);
    // librdkafka reads the compacted partition the same: it moves over the gaps the cleaner
    // left and the batches it emptied.
    assert_eq!(read_with_librdkafka(&broker, "table", live.len()), live);
    assert!(gone >= Duration::from_millis(DELETE_RETENTION_MS) - Duration::from_secs(1));
    broker.check_log();
}

/// Every record of partition 0 of `topic` through librdkafka's consumer, from the start until
/// `count` records came.
fn read_with_librdkafka(
    broker: &BrokerProcess,
    topic: &str,
    count: usize,
) -> BTreeMap<i64, (String, Option<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "{} of {count} records",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("a record");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        records.insert(
            message.offset(),
            (
                message.key().map(text).expect("keyed"),
                message.payload().map(text),
            ),
        );
    }
    records
}

/// Kafka's BROKER_LOGGER resource: DescribeConfigs lists the loggers, IncrementalAlterConfigs
/// sets one (its DEBUG lines appear) and DELETE puts it back; bad levels and APPEND are refused;
/// changes are kept across a restart.
#[test]
fn log_levels_change_at_run_time_through_incremental_alter_configs() {
    use sluice_net::messages::describe_configs_request::{
        DescribeConfigsRequest, DescribeConfigsResource,
    };
    use sluice_net::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
    };
    use sluice_net::{Request, Response};
    const BROKER_LOGGER: i8 = 8;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let mut client = RawClient::connect(&broker);
    let levels = |client: &mut RawClient| -> Vec<(String, String)> {
        let Response::DescribeConfigs(response) = client.call(
            4,
            Request::DescribeConfigs(DescribeConfigsRequest {
                resources: vec![DescribeConfigsResource {
                    resource_type: BROKER_LOGGER,
                    resource_name: "0".into(),
                    configuration_keys: None,
                }],
                ..Default::default()
            }),
        ) else {
            panic!("a DescribeConfigs response");
        };
        assert_eq!(response.results[0].error_code, 0, "{response:?}");
        response.results[0]
            .configs
            .iter()
            .map(|c| (c.name.clone(), c.value.clone().unwrap_or_default()))
            .collect()
    };
    let alter = |client: &mut RawClient, name: &str, operation: i8, value: Option<&str>| {
        let Response::IncrementalAlterConfigs(response) = client.call(
            1,
            Request::IncrementalAlterConfigs(IncrementalAlterConfigsRequest {
                resources: vec![AlterConfigsResource {
                    resource_type: BROKER_LOGGER,
                    resource_name: "0".into(),
                    configs: vec![AlterableConfig {
                        name: name.into(),
                        config_operation: operation,
                        value: value.map(str::to_string),
                    }],
                }],
                validate_only: false,
            }),
        ) else {
            panic!("an IncrementalAlterConfigs response");
        };
        response.responses[0].error_code
    };
    // The test brokers' filter: `info,openraft=off` (the default, `src/main.rs`).
    let defaults = vec![
        ("root".to_string(), "INFO".to_string()),
        ("openraft".to_string(), "OFF".to_string()),
    ];
    assert_eq!(levels(&mut client), defaults);
    let target = "sluice_shards::connection";
    assert_eq!(alter(&mut client, target, 0, Some("debug")), 0);
    let mut with_target = defaults.clone();
    with_target.push((target.to_string(), "DEBUG".to_string()));
    assert_eq!(levels(&mut client), with_target);
    // A new connection is logged at DEBUG now.
    drop(RawClient::connect(&broker));
    wait_for(Duration::from_secs(30), || {
        broker
            .log_lines()
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains(target))
            .then_some(())
    })
    .expect("a DEBUG line of the logger");
    assert_eq!(alter(&mut client, target, 1, None), 0, "DELETE");
    assert_eq!(levels(&mut client), defaults);
    assert_eq!(
        alter(&mut client, target, 0, Some("LOUD")),
        ErrorCode::InvalidConfig.code()
    );
    assert_eq!(
        alter(&mut client, target, 2, Some("DEBUG")),
        ErrorCode::InvalidRequest.code(),
        "APPEND"
    );
    assert_eq!(
        alter(&mut client, "root", 1, None),
        ErrorCode::InvalidRequest.code()
    );
    // A change outlives a restart, over the start-up filter.
    assert_eq!(alter(&mut client, "root", 0, Some("WARN")), 0);
    assert_eq!(alter(&mut client, target, 0, Some("TRACE")), 0);
    drop(client);
    broker.check_log();
    let broker = broker.restart();
    let mut client = RawClient::connect(&broker);
    assert_eq!(
        levels(&mut client),
        [
            ("root".to_string(), "WARN".to_string()),
            ("openraft".to_string(), "OFF".to_string()),
            (target.to_string(), "TRACE".to_string()),
        ]
    );
    broker.check_log();
}

/// Objects in the broker's local object store (`DATA_DIR/objects`): one more for each upload.
/// Compaction deletes one only after `--object-delete-delay-ms` (60 s), so the count grows by
/// uploads (and by what compaction writes, which needs uploads before it).
fn objects_in(data_dir: &std::path::Path) -> usize {
    ["sso", "so"]
        .iter()
        .map(|kind| {
            std::fs::read_dir(data_dir.join("objects").join(kind))
                .map(|entries| entries.count())
                .unwrap_or(0)
        })
        .sum()
}

/// One uncompressed batch of one record with a `value_bytes` value.
fn batch_of(value_bytes: usize) -> Bytes {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(1_000, Some(b"k"), Some(&vec![b'v'; value_bytes]), &[]);
    builder.build().expect("a batch")
}

/// segment.ms and segment.bytes roll a partition as Kafka rolls a segment: its data leaves
/// the WAL for objects (an upload) that long after it was written, or once that much of it
/// waits, whatever the broker's own upload interval (here ten minutes) and size.
#[test]
fn segment_ms_and_segment_bytes_upload_a_partitions_data_early() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &["--shards", "1", "--upload-interval-ms", "600000"],
    );
    let mut client = RawClient::connect(&broker);
    client.create_topic("by-bytes", 1, &[("segment.bytes", "4096")]);
    client.create_topic("by-time", 1, &[("segment.ms", "200")]);
    assert_eq!(objects_in(dir.path()), 0);

    assert_eq!(client.produce("by-bytes", 0, None, batch_of(5_000)), (0, 0));
    wait_for(Duration::from_secs(30), || {
        (objects_in(dir.path()) > 0).then_some(())
    })
    .expect("segment.bytes uploads the partition once 4096 bytes wait");
    let uploaded = objects_in(dir.path());

    let written = Instant::now();
    assert_eq!(client.produce("by-time", 0, None, batch_of(10)), (0, 0));
    let rolled = wait_for(Duration::from_secs(30), || {
        (objects_in(dir.path()) > uploaded).then(|| written.elapsed())
    })
    .expect("segment.ms uploads the partition");
    eprintln!("segment.ms=200 uploaded after {rolled:?}");
    assert!(rolled >= Duration::from_millis(150), "{rolled:?}");
    broker.check_log();
}

/// The offset-index configs take only their defaults (Sluice's object index is not
/// configurable), refused with INVALID_CONFIG naming them at CreateTopics, AlterConfigs and
/// IncrementalAlterConfigs. The configs whose every value Sluice satisfies are accepted.
#[test]
fn configs_without_a_meaning_take_only_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let mut client = RawClient::connect(&broker);
    client.create_topic("plain", 1, &[]);
    let invalid = ErrorCode::InvalidConfig.code();
    for (name, default, other) in [
        ("index.interval.bytes", "4096", "1024"),
        ("segment.index.bytes", "10485760", "1048576"),
    ] {
        for (how, (code, message)) in [
            (
                "CreateTopics",
                create_with_config(&mut client, "refused", (name, other)),
            ),
            (
                "AlterConfigs",
                alter_config(&mut client, TOPIC, "plain", (name, other)),
            ),
            (
                "IncrementalAlterConfigs",
                alter_config_incrementally(&mut client, TOPIC, "plain", (name, other)),
            ),
        ] {
            assert_eq!(code, invalid, "{how} {name}={other}");
            assert!(
                message.contains(name) && message.contains("only the default"),
                "{how}: {message}"
            );
        }
        // The default, as Kafka Streams and admin tools echo it back, is taken.
        assert_eq!(
            alter_config_incrementally(&mut client, TOPIC, "plain", (name, default)).0,
            0
        );
        assert_eq!(create_with_config(&mut client, name, (name, default)).0, 0);
    }
    for config in [
        ("flush.messages", "1"),
        ("flush.ms", "0"),
        ("preallocate", "true"),
        ("message.downconversion.enable", "false"),
        ("unclean.leader.election.enable", "true"),
    ] {
        assert_eq!(
            create_with_config(&mut client, config.0, config).0,
            0,
            "{config:?}"
        );
        assert_eq!(
            alter_config(&mut client, TOPIC, "plain", config).0,
            0,
            "{config:?}"
        );
    }
    broker.check_log();
}

/// Config resource types of AlterConfigs and IncrementalAlterConfigs.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// CreateTopics of `name` with one config; the topic's error code and message.
fn create_with_config(client: &mut RawClient, name: &str, config: (&str, &str)) -> (i16, String) {
    use sluice_net::messages::create_topics_request::{
        CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
    };
    use sluice_net::{Request, Response};
    let Response::CreateTopics(created) = client.call(
        7,
        Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.into(),
                num_partitions: 1,
                replication_factor: 1,
                configs: vec![CreatableTopicConfig {
                    name: config.0.into(),
                    value: Some(config.1.into()),
                }],
                ..Default::default()
            }],
            timeout_ms: 10_000,
            validate_only: false,
        }),
    ) else {
        panic!("a CreateTopics response");
    };
    let topic = &created.topics[0];
    (
        topic.error_code,
        topic.error_message.clone().unwrap_or_default(),
    )
}

/// AlterConfigs of one config of a resource; its error code and message.
fn alter_config(
    client: &mut RawClient,
    resource_type: i8,
    resource_name: &str,
    config: (&str, &str),
) -> (i16, String) {
    use sluice_net::messages::alter_configs_request::{self as alter, AlterConfigsRequest};
    use sluice_net::{Request, Response};
    let Response::AlterConfigs(altered) = client.call(
        1,
        Request::AlterConfigs(AlterConfigsRequest {
            resources: vec![alter::AlterConfigsResource {
                resource_type,
                resource_name: resource_name.into(),
                configs: vec![alter::AlterableConfig {
                    name: config.0.into(),
                    value: Some(config.1.into()),
                }],
            }],
            validate_only: false,
        }),
    ) else {
        panic!("an AlterConfigs response");
    };
    let answer = &altered.responses[0];
    (
        answer.error_code,
        answer.error_message.clone().unwrap_or_default(),
    )
}

/// IncrementalAlterConfigs setting one config of a resource; its error code and message.
fn alter_config_incrementally(
    client: &mut RawClient,
    resource_type: i8,
    resource_name: &str,
    config: (&str, &str),
) -> (i16, String) {
    use sluice_net::messages::incremental_alter_configs_request::{
        self as incremental, IncrementalAlterConfigsRequest,
    };
    use sluice_net::{Request, Response};
    let Response::IncrementalAlterConfigs(altered) = client.call(
        1,
        Request::IncrementalAlterConfigs(IncrementalAlterConfigsRequest {
            resources: vec![incremental::AlterConfigsResource {
                resource_type,
                resource_name: resource_name.into(),
                configs: vec![incremental::AlterableConfig {
                    name: config.0.into(),
                    config_operation: 0,
                    value: Some(config.1.into()),
                }],
            }],
            validate_only: false,
        }),
    ) else {
        panic!("an IncrementalAlterConfigs response");
    };
    let answer = &altered.responses[0];
    (
        answer.error_code,
        answer.error_message.clone().unwrap_or_default(),
    )
}

/// A limit on batches above what the broker's WAL holds (`--wal-size` / 2, less a record
/// header) is refused with INVALID_CONFIG naming `--wal-size`, at CreateTopics, AlterConfigs
/// and IncrementalAlterConfigs, for a topic's max.message.bytes and the broker's
/// message.max.bytes; a limit the WAL holds is taken.
#[test]
fn batch_limits_above_what_the_wal_holds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Records of at most 2 MiB less a 64-byte header.
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1", "--wal-size", "4MiB"]);
    let mut client = RawClient::connect(&broker);
    client.create_topic("plain", 1, &[]);
    let invalid = ErrorCode::InvalidConfig.code();
    let too_large = (2 << 20).to_string();
    for (how, (code, message)) in [
        (
            "CreateTopics",
            create_with_config(&mut client, "refused", ("max.message.bytes", &too_large)),
        ),
        (
            "AlterConfigs",
            alter_config(
                &mut client,
                TOPIC,
                "plain",
                ("max.message.bytes", &too_large),
            ),
        ),
        (
            "IncrementalAlterConfigs",
            alter_config_incrementally(
                &mut client,
                TOPIC,
                "plain",
                ("max.message.bytes", &too_large),
            ),
        ),
        (
            "AlterConfigs of the broker",
            alter_config(&mut client, BROKER, "", ("message.max.bytes", &too_large)),
        ),
        (
            "IncrementalAlterConfigs of the broker",
            alter_config_incrementally(&mut client, BROKER, "", ("message.max.bytes", &too_large)),
        ),
    ] {
        assert_eq!(code, invalid, "{how}: {message}");
        assert!(message.contains("--wal-size"), "{how}: {message}");
    }
    let held = ((2 << 20) - 64).to_string();
    assert_eq!(
        create_with_config(&mut client, "held", ("max.message.bytes", &held)).0,
        0
    );
    assert_eq!(
        alter_config_incrementally(&mut client, BROKER, "", ("message.max.bytes", &held)).0,
        0
    );
}
