//! Hostile and mistaken requests over a raw socket: each gets the Kafka error code a Java
//! client would get (or a closed connection where Kafka closes it), and the broker keeps
//! serving everyone else.

mod common;

use bytes::{Bytes, BytesMut};
use common::BrokerProcess;
use common::raw::{RawClient as Client, produce_request};
use sluice_net::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use sluice_net::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use sluice_net::messages::metadata_request::MetadataRequest;
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ApiKey, ErrorCode, Request, Response};

fn metadata_works(broker: &BrokerProcess) {
    let mut client = Client::connect(broker);
    let Response::Metadata(metadata) =
        client.call(12, Request::Metadata(MetadataRequest::default()))
    else {
        panic!("a Metadata response");
    };
    assert_eq!(metadata.brokers.len(), 1);
}

fn produce(topic: &str, records: Bytes) -> Request {
    produce_request(topic, 0, None, records)
}

fn produce_error(response: Response) -> i16 {
    let Response::Produce(response) = response else {
        panic!("a Produce response");
    };
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn bad_requests_get_kafka_errors_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    // What the broker logs for the connections this test makes it close.
    broker
        .allow_log("exceeds socket.request.max.bytes")
        .allow_log("malformed or unsupported request")
        .allow_log("request for an API or version this broker does not serve")
        .allow_log("closing connection after a malformed request");

    // A too-new ApiVersions gets a v0 answer: UNSUPPORTED_VERSION plus our ranges.
    let mut client = Client::connect(&broker);
    client.correlation_id = 5;
    client.send_raw(&[
        0, 0, 0, 14, 0, 18, 0, 99, 0, 0, 0, 5, 0xff, 0xff, 0, 1, 1, 0,
    ]);
    let Response::ApiVersions(versions) = client.receive(ApiKey::ApiVersions, 0) else {
        panic!("an ApiVersions response");
    };
    assert_eq!(versions.error_code, ErrorCode::UnsupportedVersion.code());
    assert!(
        versions
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16)
    );

    // Versions the codec knows but the broker does not serve are not advertised: Produce
    // v0–2 and Fetch v0–3 (message formats v0/v1), EndTxn v5 (transaction version 2).
    let range = |api: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == api as i16)
            .map(|k| (k.min_version, k.max_version))
            .expect("advertised")
    };
    assert_eq!(range(ApiKey::Produce).0, 3);
    assert_eq!(range(ApiKey::Fetch).0, 4);
    assert_eq!(range(ApiKey::EndTxn).1, 4);
    // A request at one of them closes the connection, as Kafka does.
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(1_700_000_000_000, None, Some(b"v"), &[]);
    let mut client = Client::connect(&broker);
    client.send(2, &produce("good", builder.build().expect("a batch")));
    assert!(client.is_closed());

    // A frame larger than socket.request.max.bytes closes the connection before allocation.
    let mut client = Client::connect(&broker);
    client.send_raw(&(200u32 << 20).to_be_bytes());
    assert!(client.is_closed());

    // An unknown API key closes the connection, as Kafka does.
    let mut client = Client::connect(&broker);
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&10u32.to_be_bytes());
    frame.extend_from_slice(&999i16.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    client.send_raw(&frame);
    assert!(client.is_closed());

    // A request whose body is garbage closes the connection too.
    let mut client = Client::connect(&broker);
    client.send_raw(&[0, 0, 0, 12, 0, 0, 0, 9, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
    assert!(client.is_closed());

    // Errors inside a well-formed request are answered, and the connection stays open.
    let mut client = Client::connect(&broker);
    let Response::CreateTopics(created) = client.call(
        7,
        Request::CreateTopics(CreateTopicsRequest {
            topics: vec![
                CreatableTopic {
                    name: "good".into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    ..Default::default()
                },
                CreatableTopic {
                    name: "bad/name".into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    ..Default::default()
                },
                CreatableTopic {
                    name: "three-replicas".into(),
                    num_partitions: 1,
                    replication_factor: 3,
                    ..Default::default()
                },
                CreatableTopic {
                    name: "bad-config".into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    configs: vec![CreatableTopicConfig {
                        name: "retention.ms".into(),
                        value: Some("soon".into()),
                    }],
                    ..Default::default()
                },
                CreatableTopic {
                    name: "zero".into(),
                    num_partitions: 0,
                    replication_factor: 1,
                    ..Default::default()
                },
            ],
            timeout_ms: 10_000,
            validate_only: false,
        }),
    ) else {
        panic!("a CreateTopics response");
    };
    let codes: Vec<i16> = created.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(
        codes,
        vec![
            0,
            ErrorCode::InvalidTopicException.code(),
            ErrorCode::InvalidReplicationFactor.code(),
            ErrorCode::InvalidConfig.code(),
            ErrorCode::InvalidPartitions.code(),
        ],
        "{created:?}"
    );
    assert!(
        created.topics[3]
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("retention.ms")
    );

    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    let good = builder.build().expect("a batch");
    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        produce_error(client.call(9, produce("good", corrupt.freeze()))),
        ErrorCode::CorruptMessage.code()
    );
    assert_eq!(
        produce_error(client.call(9, produce("missing", good.clone()))),
        ErrorCode::UnknownTopicOrPartition.code()
    );
    let mut two_batches = BytesMut::from(&good[..]);
    two_batches.extend_from_slice(&good);
    assert_eq!(
        produce_error(client.call(9, produce("good", two_batches.freeze()))),
        ErrorCode::InvalidRecord.code()
    );
    assert_eq!(produce_error(client.call(9, produce("good", good))), 0);

    // message.timestamp.after.max.ms applies: a record stamped a day ahead is refused.
    client.create_topic(
        "bounded",
        1,
        &[("message.timestamp.after.max.ms", "3600000")],
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let stamped = |timestamp: i64| {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder.append(timestamp, None, Some(b"v"), &[]);
        builder.build().expect("a batch")
    };
    assert_eq!(
        produce_error(client.call(9, produce("bounded", stamped(now_ms + 86_400_000)))),
        ErrorCode::InvalidTimestamp.code()
    );
    assert_eq!(
        produce_error(client.call(9, produce("bounded", stamped(now_ms)))),
        0
    );

    metadata_works(&broker);
}

/// A produce with acks=0 gets no response; when one of its partitions fails, the broker closes
/// the connection, as Kafka does, so that the client (which waits for no answer) reconnects
/// and refreshes its metadata instead of losing every later record silently.
#[test]
fn a_failed_produce_with_acks_0_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let mut client = Client::connect(&broker);
    client.create_topic("zero", 1, &[]);
    let acks_0 = |topic: &str| {
        let mut builder = RecordBatchBuilder::new(Compression::None);
        builder.append(1_700_000_000_000, None, Some(b"v"), &[]);
        let Request::Produce(mut request) = produce(topic, builder.build().expect("a batch"))
        else {
            unreachable!("produce builds a Produce request");
        };
        request.acks = 0;
        Request::Produce(request)
    };
    client.send(9, &acks_0("zero"));
    // Nothing answers it: the next frame on the connection answers the next request.
    let Response::Metadata(_) = client.call(12, Request::Metadata(MetadataRequest::default()))
    else {
        panic!("a Metadata response");
    };
    client.send(9, &acks_0("no-such-topic"));
    let mut byte = [0u8; 1];
    match std::io::Read::read(client.stream(), &mut byte) {
        Ok(0) => {}
        other => panic!("the connection is still open: {other:?}"),
    }
    // The first record was appended; the broker serves everyone else.
    let mut client = Client::connect(&broker);
    let Response::ListOffsets(offsets) = client.call(
        7,
        Request::ListOffsets(ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: "zero".into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: 0,
                    timestamp: -1,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }),
    ) else {
        panic!("a ListOffsets response");
    };
    assert_eq!(offsets.topics[0].partitions[0].offset, 1);
    broker.check_log();
}
