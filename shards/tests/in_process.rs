//! An in-process shard answers CreateTopics and Produce frames with the broker's own handlers,
//! persisting through a real WAL file, and refuses a frame it cannot parse.

mod common;

use bytes::Bytes;
use sluice_net::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ApiKey, Request, Response, decode_response};
use sluice_shards::api::ResponseFrame;
use sluice_shards::in_process::{InProcessShard, request_frame};

const PRODUCE_VERSION: i16 = 9;

#[test]
fn produce_through_an_in_process_shard_is_persisted_and_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::one_shard_config(dir.path());
    let executor = common::executor();
    executor.run(async move {
        let shard = InProcessShard::start(config).await.unwrap();
        let created = shard
            .submit(common::create_topics_frame("t", 1))
            .await
            .unwrap()
            .await
            .unwrap()
            .into_contiguous();
        let (_, response) = decode_response(
            ApiKey::CreateTopics as i16,
            common::CREATE_TOPICS_VERSION,
            created.slice(4..),
        )
        .unwrap();
        let Response::CreateTopics(response) = response else {
            panic!("not a CreateTopics response: {response:?}");
        };
        assert_eq!(response.topics[0].error_code, 0);

        // Both are ordered before either is durable, as on a pipelined connection.
        let first = shard.submit(produce_frame("t", 3)).await.unwrap();
        let second = shard.submit(produce_frame("t", 2)).await.unwrap();
        assert_eq!(base_offset(first.await.unwrap()), 0);
        assert_eq!(base_offset(second.await.unwrap()), 3);

        // Many in flight at once (the router takes each batch's turn on arrival): offsets
        // follow submission order, whatever order the persist tasks run in.
        let mut pending = Vec::new();
        for records in 1..=64 {
            pending.push((
                records,
                shard.submit(produce_frame("t", records)).await.unwrap(),
            ));
        }
        let mut expected = 5;
        for (records, answer) in pending {
            assert_eq!(base_offset(answer.await.unwrap()), expected);
            expected += records as i64;
        }

        assert!(
            shard
                .submit(Bytes::from_static(b"\x00\x00garbage"))
                .await
                .is_none()
        );
        shard.stop().await;
    });
}

fn base_offset(frame: ResponseFrame) -> i64 {
    let frame = frame.into_contiguous();
    let (_, response) =
        decode_response(ApiKey::Produce as i16, PRODUCE_VERSION, frame.slice(4..)).unwrap();
    let Response::Produce(response) = response else {
        panic!("not a Produce response: {response:?}");
    };
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0);
    partition.base_offset
}

fn produce_frame(topic: &str, records: usize) -> Bytes {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    for _ in 0..records {
        builder.append(1_700_000_000_000, None, Some(b"value"), &[]);
    }
    request_frame(
        ApiKey::Produce,
        PRODUCE_VERSION,
        &Request::Produce(ProduceRequest {
            transactional_id: None,
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![TopicProduceData {
                name: topic.to_string(),
                partition_data: vec![PartitionProduceData {
                    index: 0,
                    records: Some(builder.build().unwrap()),
                }],
            }],
        }),
    )
    .unwrap()
}
