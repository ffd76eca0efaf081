//! Topic configs that change how batches are stored, applied as Kafka applies them:
//! compression.type recompresses batches whose codec differs (a consumer reads the same
//! records), and "producer" keeps each batch as sent; a compacted topic refuses records
//! without a key.

mod common;

use bytes::Bytes;
use common::BrokerProcess;
use common::raw::RawClient;
use sluice_net::ErrorCode;
use sluice_net::record_batch::{
    Compression, RecordBatchBuilder, RecordBatchHeader, decode_records,
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
    broker.check_log();
}
