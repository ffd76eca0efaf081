//! Incremental fetch sessions (KIP-227) over the raw protocol (librdkafka does not use them;
//! the Java client and franz-go do): a session opens with a full fetch, then each fetch sends
//! only changes and gets only partitions with news; epochs are checked; closing works.

mod common;

use bytes::Bytes;
use common::BrokerProcess;
use common::raw::RawClient;
use sluice_net::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use sluice_net::messages::fetch_response::FetchResponse;
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{ErrorCode, Request, Response, Uuid};

const TOPIC: &str = "sessions";

fn record() -> Bytes {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(1_000, None, Some(b"v"), &[]);
    builder.build().expect("a batch")
}

/// Fetch v`version` in session (`session_id`, `epoch`) of `partitions` (partition, offset).
fn fetch(
    client: &mut RawClient,
    version: i16,
    topic_id: Uuid,
    (session_id, epoch): (i32, i32),
    partitions: &[(i32, i64)],
) -> FetchResponse {
    let Response::Fetch(answer) = client.call(
        version,
        Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            session_id,
            session_epoch: epoch,
            topics: if partitions.is_empty() {
                Vec::new()
            } else {
                vec![FetchTopic {
                    topic: TOPIC.into(),
                    topic_id,
                    partitions: partitions
                        .iter()
                        .map(|&(partition, fetch_offset)| FetchPartition {
                            partition,
                            fetch_offset,
                            partition_max_bytes: 1 << 20,
                            ..Default::default()
                        })
                        .collect(),
                }]
            },
            ..Default::default()
        }),
    ) else {
        panic!("a Fetch response");
    };
    answer
}

/// (partition, records bytes) of every partition in a response.
fn answered(response: &FetchResponse) -> Vec<(i32, usize)> {
    response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.records.as_ref().map_or(0, |r| r.len())))
        })
        .collect()
}

#[test]
fn incremental_fetches_send_and_answer_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    // One shard: a connection stays on it (one that moves finds no session on its new
    // shard and starts another, as after a broker restart).
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let mut client = RawClient::connect(&broker);
    let topic_id = client.create_topic(TOPIC, 3, &[]);
    for partition in [0, 1] {
        assert_eq!(client.produce(TOPIC, partition, None, record()), (0, 0));
    }

    // Partition 2 gets a record in each round.
    for (round, version) in [12, 16].into_iter().enumerate() {
        let partition_2_end = round as i64;
        // A full fetch opens the session and answers every partition.
        let full = fetch(
            &mut client,
            version,
            topic_id,
            (0, 0),
            &[(0, 0), (1, 0), (2, 0)],
        );
        assert_eq!(full.error_code, 0);
        let id = full.session_id;
        assert!(id > 0, "v{version}: a session was opened");
        let records = record().len();
        assert_eq!(
            answered(&full),
            vec![(0, records), (1, records), (2, records * round)]
        );

        // The client moves its offsets on: nothing new, nothing answered.
        let quiet = fetch(
            &mut client,
            version,
            topic_id,
            (id, 1),
            &[(0, 1), (1, 1), (2, partition_2_end)],
        );
        assert_eq!((quiet.error_code, quiet.session_id), (0, id));
        assert_eq!(answered(&quiet), vec![]);

        // A record on partition 2: only it is answered, though the request names none.
        assert_eq!(
            client.produce(TOPIC, 2, None, record()),
            (0, partition_2_end)
        );
        let news = fetch(&mut client, version, topic_id, (id, 2), &[]);
        assert_eq!(answered(&news), vec![(2, records)]);
        if version >= 13 {
            assert_eq!(news.responses[0].topic_id, topic_id);
        } else {
            assert_eq!(news.responses[0].topic, TOPIC);
        }

        // A repeated epoch is refused; closing answers without a session.
        let stale = fetch(&mut client, version, topic_id, (id, 2), &[]);
        assert_eq!(stale.error_code, ErrorCode::InvalidFetchSessionEpoch.code());
        let closed = fetch(&mut client, version, topic_id, (id, -1), &[(2, 1)]);
        assert_eq!((closed.error_code, closed.session_id), (0, 0));
        let gone = fetch(&mut client, version, topic_id, (id, 3), &[]);
        assert_eq!(gone.error_code, ErrorCode::FetchSessionIdNotFound.code());
    }
    broker.check_log();
}
