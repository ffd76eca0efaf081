//! A fetch of many partitions stays within its max_bytes as Kafka's does: partitions fill in
//! request order, each up to what the response has left, and only the first one with data
//! may go past it, by one batch.

mod common;

use bytes::Bytes;
use sluice_net::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_net::messages::fetch_response::FetchResponse;
use sluice_net::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ApiKey, Request, Response, decode_response};
use sluice_shards::in_process::{InProcessShard, request_frame};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const PARTITIONS: i32 = 4;
const BATCHES_PER_PARTITION: usize = 3;
const RECORDS_PER_BATCH: usize = 100;
const VALUE_BYTES: usize = 1000;

#[test]
fn a_fetch_fills_partitions_in_order_within_its_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::one_shard_config(dir.path());
    let executor = common::executor();
    executor.run(async move {
        let shard = InProcessShard::start(config).await.unwrap();
        let created = shard
            .submit(common::create_topics_frame("t", PARTITIONS))
            .await
            .unwrap();
        created.await.unwrap();
        let mut batch_bytes = 0;
        for partition in 0..PARTITIONS {
            for _ in 0..BATCHES_PER_PARTITION {
                let (frame, len) = produce_frame("t", partition);
                batch_bytes = len;
                let produced = shard.submit(frame).await.unwrap();
                produced.await.unwrap();
            }
        }

        // Room for two and a half batches: two from partition 0, none from the others (half
        // a batch is not a batch), though each partition alone could give all three.
        let max_bytes = batch_bytes * 5 / 2;
        let response = fetch(&shard, max_bytes, 10 << 20).await;
        assert_eq!(records_bytes(&response), [2 * batch_bytes, 0, 0, 0]);
        for partition in &response.responses[0].partitions {
            assert_eq!(partition.error_code, 0);
            assert_eq!(
                partition.high_watermark,
                (BATCHES_PER_PARTITION * RECORDS_PER_BATCH) as i64
            );
        }

        // Each partition's own limit applies first, then the response's: one batch each from
        // partitions 0 and 1, and the third batch would pass max_bytes.
        let response = fetch(&shard, max_bytes, batch_bytes + 1).await;
        assert_eq!(records_bytes(&response), [batch_bytes, batch_bytes, 0, 0]);

        // The first batch goes out even when it alone passes max_bytes, and nothing after it.
        let response = fetch(&shard, 1, 10 << 20).await;
        assert_eq!(records_bytes(&response), [batch_bytes, 0, 0, 0]);
        shard.stop().await;
    });
}

async fn fetch(
    shard: &InProcessShard,
    max_bytes: usize,
    partition_max_bytes: usize,
) -> FetchResponse {
    let frame = request_frame(
        ApiKey::Fetch,
        FETCH_VERSION,
        &Request::Fetch(FetchRequest {
            replica_id: -1,
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: max_bytes as i32,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic: "t".to_string(),
                partitions: (0..PARTITIONS)
                    .map(|partition| FetchPartition {
                        partition,
                        fetch_offset: 0,
                        partition_max_bytes: partition_max_bytes as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    )
    .unwrap();
    let answer = shard
        .submit(frame)
        .await
        .unwrap()
        .await
        .unwrap()
        .into_contiguous();
    let (_, response) =
        decode_response(ApiKey::Fetch as i16, FETCH_VERSION, answer.slice(4..)).unwrap();
    let Response::Fetch(response) = response else {
        panic!("not a Fetch response: {response:?}");
    };
    assert_eq!(response.error_code, 0);
    response
}

/// Bytes of records each partition returned, in partition order.
fn records_bytes(response: &FetchResponse) -> Vec<usize> {
    let mut partitions: Vec<_> = response.responses[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.records.as_ref().map_or(0, Bytes::len)))
        .collect();
    partitions.sort_unstable();
    partitions.into_iter().map(|(_, bytes)| bytes).collect()
}

/// A produce of one batch to `partition`, and the batch's size.
fn produce_frame(topic: &str, partition: i32) -> (Bytes, usize) {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    let value = vec![b'v'; VALUE_BYTES];
    for _ in 0..RECORDS_PER_BATCH {
        builder.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    let batch = builder.build().unwrap();
    let len = batch.len();
    let frame = request_frame(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &Request::Produce(ProduceRequest {
            transactional_id: None,
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![TopicProduceData {
                name: topic.to_string(),
                partition_data: vec![PartitionProduceData {
                    index: partition,
                    records: Some(batch),
                }],
            }],
        }),
    )
    .unwrap();
    (frame, len)
}
