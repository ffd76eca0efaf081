//! What a partition knows of its past comes back after `kill -9` even once its data has left
//! the WAL, because each upload records it in the metadata: its idempotent producers' state
//! (a retry of an acknowledged batch is answered as the duplicate it is) and when its data
//! was written (time-based retention goes by the records' timestamps, not the restart's).
//! Over the raw protocol: librdkafka decides itself when to retry, and these tests need to
//! retry one given batch.

mod common;

use std::time::Duration;

use common::http::get;
use common::raw::{RawClient, producer_batch};
use common::{BrokerProcess, wait_for};
use rdkafka::admin::{AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use sluice_net::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_net::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use sluice_net::record_batch::RecordBatchHeader;
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ErrorCode, Request, Response};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOPIC: &str = "idempotent";
/// The WAL's block (`sluice_wal`'s BLOCK_SIZE).
const WAL_BLOCK_BYTES: u64 = 4096;

/// An idempotent (not transactional) producer id and epoch.
fn init_producer_id(client: &mut RawClient) -> (i64, i16) {
    let Response::InitProducerId(answer) = client.call(
        4,
        Request::InitProducerId(InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
        }),
    ) else {
        panic!("an InitProducerId response");
    };
    assert_eq!(answer.error_code, 0);
    (answer.producer_id, answer.producer_epoch)
}

/// (bytes appended, bytes not yet trimmed) of the WAL, summed over shards, from one scrape
/// of `/metrics` (the two figures are sampled together).
fn wal_appended_and_used_bytes(admin: &str) -> (u64, u64) {
    let body = get(admin, "/metrics").body;
    let sum = |name: &str| {
        body.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("sluice_wal_append_bytes_total"),
        sum("sluice_wal_used_bytes"),
    )
}

/// The base offset of every batch of partition 0, fetched from offset 0 to the high watermark
/// (a fetch that reads objects ends at an object's end).
fn batch_offsets(client: &mut RawClient) -> Vec<i64> {
    let mut offsets = Vec::new();
    let mut next = 0;
    loop {
        let partition = client.fetch_partition(TOPIC, 0, next, false);
        assert_eq!(partition.error_code, 0);
        let mut records = partition.records.clone().unwrap_or_default();
        while records.len() >= 12 {
            // [base offset i64][batch length i32][rest of the batch]
            let len = 12 + u32::from_be_bytes(records[8..12].try_into().unwrap()) as usize;
            let batch = records.split_to(len.min(records.len()));
            let header = RecordBatchHeader::parse(&batch).expect("a whole batch");
            offsets.push(header.base_offset());
            next = header.base_offset() + i64::from(header.last_offset_delta()) + 1;
        }
        if next >= partition.high_watermark {
            return offsets;
        }
    }
}

/// Produces batches `sequences` of `producer`, each acknowledged at the next offset from
/// `first_offset`; returns the bytes sent.
fn produce_in_order(
    client: &mut RawClient,
    producer: (i64, i16),
    sequences: std::ops::Range<i32>,
    first_offset: i64,
) -> u64 {
    let mut bytes = 0;
    for (i, sequence) in sequences.enumerate() {
        let batch = producer_batch(producer, sequence, false, &format!("v{sequence}"));
        bytes += batch.len() as u64;
        assert_eq!(
            client.produce(TOPIC, 0, None, batch),
            (0, first_offset + i as i64),
            "sequence {sequence}"
        );
    }
    bytes
}

/// Waits until every batch appended so far (`appended_bytes` in all) is uploaded and the WAL
/// trimmed past it, so that a restart replays nothing. Each write fills its 4 KiB block with
/// padding, which stays until the next write: the sequential writes held a block each.
fn wait_for_trim(admin: &str, appended_bytes: u64) {
    wait_for(TIMEOUT, || {
        let (appended, used) = wal_appended_and_used_bytes(admin);
        (appended >= appended_bytes && used < WAL_BLOCK_BYTES).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the WAL was never trimmed past the batches: (appended, used) = {:?}, {appended_bytes} bytes produced",
            wal_appended_and_used_bytes(admin)
        )
    });
}

/// Issue 23's acceptance: a producer that keeps its producer id across WAL trims and two
/// restarts sees no error and no duplicate.
#[test]
fn retries_after_upload_trim_and_kill9_are_answered_as_duplicates_twice_over() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1", "--upload-interval-ms", "50"]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(broker.create_topic(TOPIC, 1));
    let mut client = RawClient::connect(&broker);
    let producer = init_producer_id(&mut client);
    let produced = produce_in_order(&mut client, producer, 0..3, 0);
    wait_for_trim(broker.admin.as_deref().expect("an admin address"), produced);

    let broker = broker.restart();
    let mut client = RawClient::connect(&broker);
    // The last batch again, as a producer whose ack was lost in the crash sends it.
    let retry = producer_batch(producer, 2, false, "v2");
    assert_eq!(
        client.produce(TOPIC, 0, None, retry),
        (0, 2),
        "the retry is the batch at offset 2, not a new one"
    );
    let produced = produce_in_order(&mut client, producer, 3..5, 3);
    wait_for_trim(broker.admin.as_deref().expect("an admin address"), produced);

    let broker = broker.restart();
    let mut client = RawClient::connect(&broker);
    for (sequence, offset) in [(3, 3), (4, 4)] {
        let retry = producer_batch(producer, sequence, false, &format!("v{sequence}"));
        assert_eq!(
            client.produce(TOPIC, 0, None, retry),
            (0, offset),
            "the retry of sequence {sequence} after the second restart"
        );
    }
    produce_in_order(&mut client, producer, 5..6, 5);
    // The broker knows where the producer's sequence is: a gap is refused, not taken for a
    // producer it has never seen.
    let gap = producer_batch(producer, 9, false, "v9");
    assert_eq!(
        client.produce(TOPIC, 0, None, gap).0,
        ErrorCode::OutOfOrderSequenceNumber.code()
    );
    assert_eq!(batch_offsets(&mut client), (0..6).collect::<Vec<i64>>());
    broker.check_log();
}

/// Creates the test topic with one partition and unlimited retention (librdkafka's admin
/// client); the runtime it ran on, for more admin calls.
fn create_unretained_topic(broker: &BrokerProcess) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let created = runtime
        .block_on(broker.admin().create_topics(&[topic], &AdminOptions::new()))
        .expect("CreateTopics answered");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    runtime
}

/// ListOffsets v7 of partition 0 for `timestamp` (-2 earliest, -3 the largest timestamp):
/// (offset, timestamp).
fn list_offset(client: &mut RawClient, topic: &str, timestamp: i64) -> (i64, i64) {
    let Response::ListOffsets(answer) = client.call(
        7,
        Request::ListOffsets(ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: topic.into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: 0,
                    timestamp,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }),
    ) else {
        panic!("a ListOffsets response");
    };
    let partition = &answer.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    (partition.offset, partition.timestamp)
}

/// The log start offset of partition 0.
fn log_start_offset(client: &mut RawClient, topic: &str) -> i64 {
    list_offset(client, topic, -2).0
}

/// A batch of records stamped `timestamps`, from no producer.
fn stamped_batch(timestamps: &[i64]) -> bytes::Bytes {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    for &timestamp in timestamps {
        builder.append(timestamp, None, Some(b"v"), &[]);
    }
    builder.build().expect("a valid batch")
}

/// ListOffsets MAX_TIMESTAMP (-3) answers the first record with the largest timestamp, not
/// its batch's last offset, in the log cache and, after a restart, in objects.
#[test]
fn the_largest_timestamp_is_found_per_record_in_objects_and_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1", "--upload-interval-ms", "50"]);
    create_unretained_topic(&broker);
    let mut client = RawClient::connect(&broker);
    let mut produced = 0;
    for (timestamps, base_offset) in [(&[5, 9, 9, 3][..], 0), (&[7][..], 4)] {
        let batch = stamped_batch(timestamps);
        produced += batch.len() as u64;
        assert_eq!(client.produce(TOPIC, 0, None, batch), (0, base_offset));
    }
    assert_eq!(list_offset(&mut client, TOPIC, -3), (1, 9));
    wait_for_trim(broker.admin.as_deref().expect("an admin address"), produced);

    let broker = broker.restart();
    let mut client = RawClient::connect(&broker);
    assert_eq!(
        list_offset(&mut client, TOPIC, -3),
        (1, 9),
        "found in objects after the restart"
    );
    assert_eq!(
        client.produce(TOPIC, 0, None, stamped_batch(&[12, 12])),
        (0, 5)
    );
    assert_eq!(list_offset(&mut client, TOPIC, -3), (5, 12));
    broker.check_log();
}

/// Issue 23: "retention by the batches' own timestamps, across restarts". Records stamped in
/// 1970 sit in objects under unlimited retention; after `kill -9` and a restart, retention.ms
/// of an hour removes them (before, the restart stamped them with its own time).
#[test]
fn time_retention_goes_by_record_timestamps_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "--shards",
            "1",
            "--upload-interval-ms",
            "50",
            "--retention-check-interval-ms",
            "100",
        ],
    );
    let runtime = create_unretained_topic(&broker);
    let mut client = RawClient::connect(&broker);
    let producer = init_producer_id(&mut client);
    // `producer_batch` stamps its record with timestamp 0.
    let produced = produce_in_order(&mut client, producer, 0..3, 0);
    wait_for_trim(broker.admin.as_deref().expect("an admin address"), produced);

    let broker = broker.restart();
    let mut client = RawClient::connect(&broker);
    assert_eq!(log_start_offset(&mut client, TOPIC), 0);
    let an_hour = AlterConfig::new(ResourceSpecifier::Topic(TOPIC)).set("retention.ms", "3600000");
    let altered = runtime
        .block_on(
            broker
                .admin()
                .alter_configs(&[an_hour], &AdminOptions::new()),
        )
        .expect("AlterConfigs answered");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    wait_for(TIMEOUT, || {
        (log_start_offset(&mut client, TOPIC) == 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "retention.ms never removed the 1970 records: log start {}; log: {:#?}",
            log_start_offset(&mut client, TOPIC),
            broker.log_lines()
        )
    });
    broker.check_log();
}
