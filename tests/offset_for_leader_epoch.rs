//! OffsetForLeaderEpoch (KIP-320) over the raw protocol, against one broker of two shards:
//! every epoch up to the partition's current one ends at the log end offset (Sluice never
//! truncates a log), no epoch or a newer one is (-1, -1), the client's current leader epoch
//! is checked as Fetch and ListOffsets check it, and every version from v0 to v4 answers.

mod common;

use common::BrokerProcess;
use common::raw::RawClient;
use sluice_net::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ErrorCode, Request, Response};

const TOPIC: &str = "epochs";
/// Records produced to partition 0; partition 1 stays empty.
const RECORDS: i64 = 7;

#[test]
fn epochs_up_to_the_current_one_end_at_the_log_end_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let mut client = RawClient::connect(&broker);
    client.create_topic(TOPIC, 2, &[]);
    let mut builder = RecordBatchBuilder::new(Compression::None);
    for i in 0..RECORDS {
        builder.append(1_000 + i, None, Some(b"v"), &[]);
    }
    let (error, base_offset) = client.produce(TOPIC, 0, None, builder.build().expect("a batch"));
    assert_eq!((error, base_offset), (0, 0));

    let none = ErrorCode::None.code();
    let ask = |client: &mut RawClient, partition, current, epoch| {
        client.offset_for_leader_epoch(4, TOPIC, partition, current, epoch)
    };
    // A single broker's partitions are at leader epoch 0.
    assert_eq!(ask(&mut client, 0, -1, 0), (none, 0, RECORDS));
    assert_eq!(ask(&mut client, 0, 0, 0), (none, 0, RECORDS));
    assert_eq!(ask(&mut client, 1, 0, 0), (none, 0, 0), "an empty log");
    // No epoch, and an epoch newer than the partition's: Kafka's undefined answer.
    assert_eq!(ask(&mut client, 0, -1, -1), (none, -1, -1));
    assert_eq!(ask(&mut client, 0, -1, 5), (none, -1, -1));
    // The client's current leader epoch, newer than the broker's.
    let unknown_epoch = ErrorCode::UnknownLeaderEpoch.code();
    assert_eq!(ask(&mut client, 0, 3, 0), (unknown_epoch, -1, -1));
    let unknown = ErrorCode::UnknownTopicOrPartition.code();
    assert_eq!(ask(&mut client, 2, -1, 0), (unknown, -1, -1));
    assert_eq!(
        client.offset_for_leader_epoch(4, "no-such-topic", 0, -1, 0),
        (unknown, -1, -1)
    );

    // Every version: v0 has no leader epoch in its answer (decoded as -1), v0–1 no current
    // leader epoch in the request (sent as -1, not checked).
    for version in 0..=4 {
        let epoch = if version == 0 { -1 } else { 0 };
        assert_eq!(
            client.offset_for_leader_epoch(version, TOPIC, 0, -1, 0),
            (none, epoch, RECORDS),
            "v{version}"
        );
    }

    // A follower's replica id (v3+) is answered as a consumer, as Kafka does; partitions and
    // topics keep the request's order, each with its own error.
    let partition = |partition, leader_epoch| OffsetForLeaderPartition {
        partition,
        current_leader_epoch: 0,
        leader_epoch,
    };
    let Response::OffsetForLeaderEpoch(answer) = client.call(
        3,
        Request::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest {
            replica_id: 1,
            topics: vec![
                OffsetForLeaderTopic {
                    topic: TOPIC.into(),
                    partitions: vec![partition(1, 0), partition(0, 0), partition(0, 1)],
                },
                OffsetForLeaderTopic {
                    topic: "no-such-topic".into(),
                    partitions: vec![partition(0, 0)],
                },
            ],
        }),
    ) else {
        panic!("an OffsetForLeaderEpoch response");
    };
    let seen: Vec<(String, i32, i16, i32, i64)> = answer
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let (topic, error) = (t.topic.clone(), p.error_code);
                (topic, p.partition, error, p.leader_epoch, p.end_offset)
            })
        })
        .collect();
    assert_eq!(
        seen,
        [
            (TOPIC.to_string(), 1, none, 0, 0),
            (TOPIC.to_string(), 0, none, 0, RECORDS),
            (TOPIC.to_string(), 0, none, -1, -1),
            ("no-such-topic".to_string(), 0, unknown, -1, -1),
        ]
    );
    broker.check_log();
}
