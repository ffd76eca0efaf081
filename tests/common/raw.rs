//! A raw Kafka protocol client over a blocking socket, for requests no client library sends
//! as we need them (malformed input, admin APIs librdkafka does not expose).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_net::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use sluice_net::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_net::messages::fetch_response::PartitionData;
use sluice_net::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use sluice_net::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ApiKey, Request, RequestHeader, Response, Uuid};

use super::BrokerProcess;

/// One connection speaking the protocol request by request.
pub struct RawClient {
    stream: TcpStream,
    /// Correlation id of the last request; `receive` checks the response carries it (set it
    /// by hand before `send_raw`).
    pub correlation_id: i32,
}

impl RawClient {
    /// Connects to the broker (30 s read timeout).
    pub fn connect(broker: &BrokerProcess) -> RawClient {
        RawClient::connect_to(&broker.bootstrap)
    }

    /// Connects to `addr`, e.g. one of the broker's listeners (30 s read timeout).
    pub fn connect_to(addr: &str) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        RawClient {
            stream,
            correlation_id: 0,
        }
    }

    /// The connection itself, for reads a test makes by hand.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends `request` at `version`; returns its correlation id.
    pub fn send(&mut self, version: i16, request: &Request) -> i32 {
        self.correlation_id += 1;
        let header = RequestHeader {
            request_api_key: request.api_key() as i16,
            request_api_version: version,
            correlation_id: self.correlation_id,
            client_id: Some("sluice-raw-test".into()),
        };
        let mut out = BytesMut::new();
        sluice_net::encode_request(&header, request, &mut out).expect("encodes");
        self.send_raw(&out);
        self.correlation_id
    }

    /// Reads the response to the last request sent.
    pub fn receive(&mut self, api_key: ApiKey, version: i16) -> Response {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).expect("a response");
        let mut frame = vec![0u8; u32::from_be_bytes(prefix) as usize];
        self.stream
            .read_exact(&mut frame)
            .expect("a whole response");
        let (correlation_id, response) =
            sluice_net::decode_response(api_key as i16, version, Bytes::from(frame))
                .expect("decodes");
        assert_eq!(correlation_id, self.correlation_id);
        response
    }

    /// Sends `request` and waits for its response.
    pub fn call(&mut self, version: i16, request: Request) -> Response {
        let api_key = request.api_key();
        self.send(version, &request);
        self.receive(api_key, version)
    }

    /// Produce v9, acks=all, of one batch to `topic`/`partition`: (error code, base offset).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        transactional_id: Option<&str>,
        batch: Bytes,
    ) -> (i16, i64) {
        let partition = self.produce_answer(topic, partition, transactional_id, batch);
        (partition.error_code, partition.base_offset)
    }

    /// Produce v9 (acks=all) of `batch`: the partition's whole answer.
    pub fn produce_answer(
        &mut self,
        topic: &str,
        partition: i32,
        transactional_id: Option<&str>,
        batch: Bytes,
    ) -> sluice_net::messages::produce_response::PartitionProduceResponse {
        let Response::Produce(mut answer) = self.call(
            9,
            produce_request(topic, partition, transactional_id, batch),
        ) else {
            panic!("a Produce response");
        };
        answer.responses[0].partition_responses.remove(0)
    }

    /// CreateTopics v7 of `name` with `partitions` and `configs`; panics unless it is created
    /// (test set-up). Its topic id.
    pub fn create_topic(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Uuid {
        let Response::CreateTopics(created) = self.call(
            7,
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: name.into(),
                    num_partitions: partitions,
                    replication_factor: 1,
                    configs: configs
                        .iter()
                        .map(|(name, value)| CreatableTopicConfig {
                            name: name.to_string(),
                            value: Some(value.to_string()),
                        })
                        .collect(),
                    ..Default::default()
                }],
                timeout_ms: 10_000,
                validate_only: false,
            }),
        ) else {
            panic!("a CreateTopics response");
        };
        assert_eq!(created.topics[0].error_code, 0, "{created:?}");
        created.topics[0].topic_id
    }

    /// Fetch v11 of `topic`/`partition` from `fetch_offset`, without waiting: its answer.
    pub fn fetch_partition(
        &mut self,
        topic: &str,
        partition: i32,
        fetch_offset: i64,
        read_committed: bool,
    ) -> PartitionData {
        let Response::Fetch(answer) = self.call(
            11,
            Request::Fetch(FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                isolation_level: i8::from(read_committed),
                topics: vec![FetchTopic {
                    topic: topic.into(),
                    partitions: vec![FetchPartition {
                        partition,
                        fetch_offset,
                        partition_max_bytes: 1 << 20,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        ) else {
            panic!("a Fetch response");
        };
        answer.responses[0].partitions[0].clone()
    }

    /// OffsetForLeaderEpoch at `version` of `leader_epoch` in `topic`/`partition`, with the
    /// client's `current_leader_epoch` (v2+): (error code, leader epoch, end offset).
    pub fn offset_for_leader_epoch(
        &mut self,
        version: i16,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> (i16, i32, i64) {
        let Response::OffsetForLeaderEpoch(answer) = self.call(
            version,
            Request::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest {
                replica_id: -1,
                topics: vec![OffsetForLeaderTopic {
                    topic: topic.into(),
                    partitions: vec![OffsetForLeaderPartition {
                        partition,
                        current_leader_epoch,
                        leader_epoch,
                    }],
                }],
            }),
        ) else {
            panic!("an OffsetForLeaderEpoch response");
        };
        assert_eq!(answer.topics[0].topic, topic);
        let answer = &answer.topics[0].partitions[0];
        assert_eq!(answer.partition, partition);
        (answer.error_code, answer.leader_epoch, answer.end_offset)
    }

    /// True once the broker has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// A Produce (acks=all, as the tests send it at v9) of `batch` to `topic`/`partition`.
pub fn produce_request(
    topic: &str,
    partition: i32,
    transactional_id: Option<&str>,
    batch: Bytes,
) -> Request {
    Request::Produce(ProduceRequest {
        transactional_id: transactional_id.map(str::to_string),
        acks: -1,
        timeout_ms: 10_000,
        topic_data: vec![TopicProduceData {
            name: topic.into(),
            partition_data: vec![PartitionProduceData {
                index: partition,
                records: Some(batch),
            }],
        }],
    })
}

/// A batch of one record with `value` from (producer id, epoch) at `sequence`.
pub fn producer_batch(
    producer: (i64, i16),
    sequence: i32,
    transactional: bool,
    value: &str,
) -> Bytes {
    let mut builder = RecordBatchBuilder::new(Compression::None)
        .producer(producer.0, producer.1, sequence)
        .transactional(transactional);
    builder.append(0, None, Some(value.as_bytes()), &[]);
    builder.build().expect("a valid batch")
}
