//! Transactions and exactly-once with librdkafka: commit and abort seen through read_committed
//! and read_uncommitted consumers, consume-transform-produce with offsets in the transaction,
//! zombie fencing, kill -9 mid-transaction; and the transaction APIs over the raw protocol
//! (error codes, DescribeProducers / DescribeTransactions / ListTransactions).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::BrokerProcess;
use common::raw::{RawClient, producer_batch as batch};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_net::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use sluice_net::messages::describe_producers_request::{DescribeProducersRequest, TopicRequest};
use sluice_net::messages::describe_transactions_request::DescribeTransactionsRequest;
use sluice_net::messages::end_txn_request::EndTxnRequest;
use sluice_net::messages::fetch_response::PartitionData;
use sluice_net::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_net::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use sluice_net::messages::list_transactions_request::ListTransactionsRequest;
use sluice_net::record_batch::RecordBatchBuilder;
use sluice_net::{ApiKey, ErrorCode, Request, Response};

const TIMEOUT: Duration = Duration::from_secs(60);

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// Starts a broker whose groups rebalance without Kafka's 3 s initial delay.
fn broker(dir: &std::path::Path, shards: &str) -> BrokerProcess {
    let broker = BrokerProcess::start(dir, &["--shards", shards]);
    let config =
        AlterConfig::new(ResourceSpecifier::Broker(0)).set("group.initial.rebalance.delay.ms", "0");
    let results = runtime()
        .block_on(admin(&broker).alter_configs(&[config], &AdminOptions::new()))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    broker
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn admin(broker: &BrokerProcess) -> AdminClient<DefaultClientContext> {
    broker.client_config().create().unwrap()
}

fn create_topic(broker: &BrokerProcess, name: &str, partitions: i32) {
    let results = runtime()
        .block_on(admin(broker).create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

/// A transactional producer, initialized.
fn txn_producer(
    broker: &BrokerProcess,
    transactional_id: &str,
    extra: &[(&str, &str)],
) -> TxnProducer {
    let mut config = broker.client_config();
    config
        .set("transactional.id", transactional_id)
        .set("linger.ms", "5");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let producer: TxnProducer = config.create().expect("transactional producer");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    producer
}

fn send(producer: &TxnProducer, topic: &str, partition: i32, value: &str) {
    producer
        .send(
            BaseRecord::<(), str>::to(topic)
                .partition(partition)
                .payload(value),
        )
        .map_err(|(error, _)| error)
        .expect("queued");
}

/// Reads every partition of `topic` from the start with `isolation` until `count` records
/// arrived and every partition reported its end; returns (partition, offset, value).
fn read_all(
    broker: &BrokerProcess,
    topic: &str,
    partitions: i32,
    isolation: &str,
    count: usize,
) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "txn-readers")
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < count || at_end.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "{isolation} read {} of {count} records of {topic}: {out:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(error)) => panic!("consume error: {error}"),
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
                out.push((message.partition(), message.offset(), value.into_owned()));
            }
        }
    }
    out
}

/// The values of one partition, in offset order (offsets checked increasing).
fn values_of(records: &[(i32, i64, String)], partition: i32) -> Vec<String> {
    let mine: Vec<&(i32, i64, String)> = records.iter().filter(|r| r.0 == partition).collect();
    assert!(
        mine.windows(2).all(|w| w[0].1 < w[1].1),
        "partition {partition} is read in offset order"
    );
    mine.into_iter().map(|r| r.2.clone()).collect()
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn read_committed_sees_committed_transactions_only_and_read_uncommitted_sees_all() {
    let dir = tempfile::tempdir().unwrap();
    // Two shards: the coordinator and the partitions' owners differ, markers cross shards.
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    create_topic(&broker, "txn", 2);
    let producer = txn_producer(&broker, "commit-abort-commit", &[]);
    for (prefix, commit) in [("first", true), ("aborted", false), ("third", true)] {
        producer.begin_transaction().unwrap();
        for i in 0..10 {
            for p in 0..2 {
                send(&producer, "txn", p, &format!("{prefix}-{i}"));
            }
        }
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer
                .flush(TIMEOUT)
                .expect("the aborted records are written");
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    }

    let committed = read_all(&broker, "txn", 2, "read_committed", 40);
    assert_eq!(committed.len(), 40, "no aborted record: {committed:?}");
    let expected: Vec<String> = names("first", 0..10)
        .into_iter()
        .chain(names("third", 0..10))
        .collect();
    for p in 0..2 {
        assert_eq!(values_of(&committed, p), expected);
    }

    let everything = read_all(&broker, "txn", 2, "read_uncommitted", 60);
    assert_eq!(everything.len(), 60, "{everything:?}");
    let expected: Vec<String> = names("first", 0..10)
        .into_iter()
        .chain(names("aborted", 0..10))
        .chain(names("third", 0..10))
        .collect();
    for p in 0..2 {
        assert_eq!(values_of(&everything, p), expected);
    }
}

#[test]
fn offsets_sent_to_a_transaction_are_committed_only_when_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), "2");
    create_topic(&broker, "in", 1);
    create_topic(&broker, "out", 1);
    let input = txn_producer(&broker, "ctp-input", &[]);
    input.begin_transaction().unwrap();
    for i in 0..10 {
        send(&input, "in", 0, &format!("in-{i}"));
    }
    input.commit_transaction(TIMEOUT).unwrap();

    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "transformers")
        .set("session.timeout.ms", "6000")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["in"]).unwrap();
    let mut inputs = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while inputs.len() < 10 {
        assert!(Instant::now() < deadline, "the input is consumed");
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("no consume error");
            inputs.push(String::from_utf8_lossy(message.payload().unwrap()).into_owned());
        }
    }
    assert_eq!(inputs, names("in", 0..10));
    let group = consumer.group_metadata().expect("group metadata");
    let committed = |consumer: &BaseConsumer| {
        let mut asked = TopicPartitionList::new();
        asked.add_partition("in", 0);
        let answer = consumer.committed_offsets(asked, TIMEOUT).unwrap();
        answer.find_partition("in", 0).unwrap().offset()
    };
    let offsets_at = |offset: i64| {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("in", 0, Offset::Offset(offset))
            .unwrap();
        offsets
    };

    let transformer = txn_producer(&broker, "ctp-transformer", &[]);
    // The first attempt at records 0..5 aborts: neither its output nor its offsets count.
    transformer.begin_transaction().unwrap();
    for value in &inputs[..5] {
        send(&transformer, "out", 0, &format!("{value}-attempt-1"));
    }
    transformer
        .send_offsets_to_transaction(&offsets_at(5), &group, TIMEOUT)
        .unwrap();
    transformer.abort_transaction(TIMEOUT).unwrap();
    assert_eq!(
        committed(&consumer),
        Offset::Invalid,
        "nothing committed by the abort"
    );

    for (range, attempt) in [(0..5, 2), (5..10, 1)] {
        transformer.begin_transaction().unwrap();
        for value in &inputs[range.clone()] {
            send(
                &transformer,
                "out",
                0,
                &format!("{value}-attempt-{attempt}"),
            );
        }
        transformer
            .send_offsets_to_transaction(&offsets_at(range.end as i64), &group, TIMEOUT)
            .unwrap();
        transformer.commit_transaction(TIMEOUT).unwrap();
        assert_eq!(
            committed(&consumer),
            Offset::Offset(range.end as i64),
            "the commit carries the offsets"
        );
    }

    let output = read_all(&broker, "out", 1, "read_committed", 10);
    let expected: Vec<String> = (0..10)
        .map(|i| format!("in-{i}-attempt-{}", if i < 5 { 2 } else { 1 }))
        .collect();
    assert_eq!(values_of(&output, 0), expected, "exactly once");
}

#[test]
fn an_open_transaction_holds_back_later_commits_and_times_out_into_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    create_topic(&broker, "shared", 2);
    // Two transactions interleave on the same partitions; the later one commits first.
    let open = txn_producer(&broker, "held-open", &[]);
    let quick = txn_producer(&broker, "quick", &[]);
    open.begin_transaction().unwrap();
    quick.begin_transaction().unwrap();
    for i in 0..5 {
        for p in 0..2 {
            send(&open, "shared", p, &format!("open-{i}"));
        }
        open.flush(TIMEOUT).unwrap();
        for p in 0..2 {
            send(&quick, "shared", p, &format!("quick-{i}"));
        }
        quick.flush(TIMEOUT).unwrap();
    }
    quick.commit_transaction(TIMEOUT).unwrap();
    // The open transaction began first: nothing after its first offset is stable yet.
    assert_eq!(
        read_all(&broker, "shared", 2, "read_committed", 0),
        Vec::new()
    );
    open.abort_transaction(TIMEOUT).unwrap();
    let committed = read_all(&broker, "shared", 2, "read_committed", 10);
    for p in 0..2 {
        assert_eq!(values_of(&committed, p), names("quick", 0..5));
    }

    // A transaction left open past transaction.timeout.ms is aborted at a bumped epoch: its
    // producer is fenced, and read_committed consumers move past it.
    let short = [
        ("transaction.timeout.ms", "1000"),
        ("message.timeout.ms", "1000"),
        ("socket.timeout.ms", "1000"),
    ];
    let slow = txn_producer(&broker, "too-slow", &short);
    slow.begin_transaction().unwrap();
    send(&slow, "shared", 0, "late");
    slow.flush(TIMEOUT).unwrap();
    let mut client = RawClient::connect(&broker);
    let deadline = Instant::now() + TIMEOUT;
    while describe_transactions(&mut client, &["too-slow"])[0].1 != "CompleteAbort" {
        assert!(
            Instant::now() < deadline,
            "the timed-out transaction is aborted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let error = slow
        .commit_transaction(TIMEOUT)
        .expect_err("a timed-out transaction cannot commit");
    assert!(
        matches!(&error, KafkaError::Transaction(e) if e.is_fatal() || e.txn_requires_abort()),
        "{error:?}"
    );
    quick.begin_transaction().unwrap();
    send(&quick, "shared", 0, "after-timeout");
    quick.commit_transaction(TIMEOUT).unwrap();
    let records = read_all(&broker, "shared", 2, "read_committed", 11);
    let mut expected = names("quick", 0..5);
    expected.push("after-timeout".to_string());
    assert_eq!(values_of(&records, 0), expected);
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    create_topic(&broker, "fenced", 1);
    let zombie = txn_producer(&broker, "fence-me", &[]);
    zombie.begin_transaction().unwrap();
    send(&zombie, "fenced", 0, "zombie");
    zombie
        .flush(TIMEOUT)
        .expect("the zombie's record is written");

    // The new instance aborts the zombie's open transaction and takes a higher epoch.
    let successor = txn_producer(&broker, "fence-me", &[]);
    let error = zombie
        .commit_transaction(TIMEOUT)
        .expect_err("the zombie cannot commit");
    let fenced = match &error {
        KafkaError::Transaction(e) => {
            e.is_fatal()
                && matches!(
                    e.code(),
                    RDKafkaErrorCode::Fenced
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                )
        }
        _ => false,
    };
    assert!(fenced, "a fatal fenced error, got {error:?}");

    successor.begin_transaction().unwrap();
    send(&successor, "fenced", 0, "successor");
    successor.commit_transaction(TIMEOUT).unwrap();
    let records = read_all(&broker, "fenced", 1, "read_committed", 1);
    assert_eq!(values_of(&records, 0), vec!["successor".to_string()]);
}

#[test]
fn kill9_mid_transaction_aborts_it_and_completes_a_committed_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    create_topic(&broker, "crash", 1);
    // A short timeout, so the abandoned transaction is aborted soon after the restart.
    let short = [
        ("transaction.timeout.ms", "3000"),
        ("message.timeout.ms", "3000"),
        ("socket.timeout.ms", "3000"),
    ];
    let committer = txn_producer(&broker, "crash-committed", &short);
    let abandoned = txn_producer(&broker, "crash-open", &short);
    committer.begin_transaction().unwrap();
    abandoned.begin_transaction().unwrap();
    for i in 0..5 {
        send(&committer, "crash", 0, &format!("committed-{i}"));
        send(&abandoned, "crash", 0, &format!("doomed-{i}"));
    }
    abandoned
        .flush(TIMEOUT)
        .expect("the open transaction's records are written");
    committer.commit_transaction(TIMEOUT).unwrap();
    // kill -9 right after EndTxn was acknowledged: its markers may not be written yet, and the
    // other transaction is open (AddPartitionsToTxn done, no EndTxn).
    let broker = broker.restart();
    drop(abandoned);
    drop(committer);

    let after = txn_producer(&broker, "crash-after", &[]);
    after.begin_transaction().unwrap();
    for i in 0..5 {
        send(&after, "crash", 0, &format!("after-{i}"));
    }
    after.commit_transaction(TIMEOUT).unwrap();

    let records = read_all(&broker, "crash", 1, "read_committed", 10);
    let values = values_of(&records, 0);
    let expected: BTreeSet<String> = names("committed", 0..5)
        .into_iter()
        .chain(names("after", 0..5))
        .collect();
    assert_eq!(values.len(), 10, "{values:?}");
    assert_eq!(values.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(
        values[5..].iter().all(|v| v.starts_with("after")),
        "the later transaction follows: {values:?}"
    );

    let mut client = RawClient::connect(&broker);
    let states = describe_transactions(&mut client, &["crash-open", "crash-committed"]);
    assert_eq!(
        states,
        vec![
            ("crash-open".to_string(), "CompleteAbort".to_string()),
            ("crash-committed".to_string(), "CompleteCommit".to_string())
        ]
    );
}

fn describe_transactions(client: &mut RawClient, ids: &[&str]) -> Vec<(String, String)> {
    let Response::DescribeTransactions(described) = client.call(
        0,
        Request::DescribeTransactions(DescribeTransactionsRequest {
            transactional_ids: ids.iter().map(|s| s.to_string()).collect(),
        }),
    ) else {
        panic!("a DescribeTransactions response");
    };
    described
        .transaction_states
        .into_iter()
        .map(|s| {
            assert_eq!(s.error_code, 0, "{} is known", s.transactional_id);
            (s.transactional_id, s.transaction_state)
        })
        .collect()
}

fn init_producer_id(client: &mut RawClient, id: &str, timeout_ms: i32) -> Result<(i64, i16), i16> {
    let Response::InitProducerId(answer) = client.call(
        4,
        Request::InitProducerId(InitProducerIdRequest {
            transactional_id: Some(id.into()),
            transaction_timeout_ms: timeout_ms,
            producer_id: -1,
            producer_epoch: -1,
        }),
    ) else {
        panic!("an InitProducerId response");
    };
    match answer.error_code {
        0 => Ok((answer.producer_id, answer.producer_epoch)),
        code => Err(code),
    }
}

/// AddPartitionsToTxn v3: one code per partition asked.
fn add_partitions(
    client: &mut RawClient,
    id: &str,
    (producer_id, epoch): (i64, i16),
    partitions: &[(&str, i32)],
) -> Vec<i16> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in partitions {
        topics.entry(topic).or_default().push(*p);
    }
    let Response::AddPartitionsToTxn(answer) = client.call(
        3,
        Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            v3_and_below_transactional_id: id.into(),
            v3_and_below_producer_id: producer_id,
            v3_and_below_producer_epoch: epoch,
            v3_and_below_topics: topics
                .into_iter()
                .map(|(name, partitions)| AddPartitionsToTxnTopic {
                    name: name.into(),
                    partitions,
                })
                .collect(),
            ..Default::default()
        }),
    ) else {
        panic!("an AddPartitionsToTxn response");
    };
    answer
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

fn end_txn(
    client: &mut RawClient,
    id: &str,
    (producer_id, epoch): (i64, i16),
    commit: bool,
) -> i16 {
    let Response::EndTxn(answer) = client.call(
        3,
        Request::EndTxn(EndTxnRequest {
            transactional_id: id.into(),
            producer_id,
            producer_epoch: epoch,
            committed: commit,
        }),
    ) else {
        panic!("an EndTxn response");
    };
    answer.error_code
}

fn produce(client: &mut RawClient, transactional_id: Option<&str>, batch: Bytes) -> (i16, i64) {
    client.produce("raw", 0, transactional_id, batch)
}

/// Fetch v11 of raw/0 from offset 0.
fn fetch(client: &mut RawClient, read_committed: bool) -> PartitionData {
    client.fetch_partition("raw", 0, 0, read_committed)
}

fn latest_offset(client: &mut RawClient, read_committed: bool) -> i64 {
    let Response::ListOffsets(answer) = client.call(
        7,
        Request::ListOffsets(ListOffsetsRequest {
            replica_id: -1,
            isolation_level: i8::from(read_committed),
            topics: vec![ListOffsetsTopic {
                name: "raw".into(),
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
    answer.topics[0].partitions[0].offset
}

/// (producer id, epoch, current transaction start offset) of each producer of raw/0.
fn describe_producers(client: &mut RawClient) -> Vec<(i64, i32, i64)> {
    let Response::DescribeProducers(answer) = client.call(
        0,
        Request::DescribeProducers(DescribeProducersRequest {
            topics: vec![TopicRequest {
                name: "raw".into(),
                partition_indexes: vec![0],
            }],
        }),
    ) else {
        panic!("a DescribeProducers response");
    };
    let partition = &answer.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition
        .active_producers
        .iter()
        .map(|p| (p.producer_id, p.producer_epoch, p.current_txn_start_offset))
        .collect()
}

fn list_transactions(client: &mut RawClient, states: &[&str]) -> (Vec<String>, Vec<String>) {
    let Response::ListTransactions(answer) = client.call(
        1,
        Request::ListTransactions(ListTransactionsRequest {
            state_filters: states.iter().map(|s| s.to_string()).collect(),
            producer_id_filters: Vec::new(),
            duration_filter: -1,
        }),
    ) else {
        panic!("a ListTransactions response");
    };
    let ids = answer
        .transaction_states
        .into_iter()
        .map(|s| s.transactional_id)
        .collect();
    (ids, answer.unknown_state_filters)
}

#[test]
fn transaction_apis_answer_kafka_errors_and_describe_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    create_topic(&broker, "raw", 2);
    let mut client = RawClient::connect(&broker);
    let code = |e: ErrorCode| e.code();

    let Response::ApiVersions(versions) = client.call(3, Request::ApiVersions(Default::default()))
    else {
        panic!("an ApiVersions response");
    };
    for api in [
        ApiKey::AddPartitionsToTxn,
        ApiKey::AddOffsetsToTxn,
        ApiKey::EndTxn,
        ApiKey::TxnOffsetCommit,
        ApiKey::DescribeProducers,
        ApiKey::DescribeTransactions,
        ApiKey::ListTransactions,
    ] {
        assert!(
            versions.api_keys.iter().any(|k| k.api_key == api as i16),
            "{api:?} is advertised"
        );
    }

    assert_eq!(
        init_producer_id(&mut client, "", 60_000),
        Err(code(ErrorCode::InvalidRequest))
    );
    assert_eq!(
        init_producer_id(&mut client, "raw-txn", 1_000_000_000),
        Err(code(ErrorCode::InvalidTransactionTimeout))
    );
    let producer = init_producer_id(&mut client, "raw-txn", 60_000).unwrap();
    assert_eq!(producer.1, 0);
    assert_eq!(
        end_txn(&mut client, "raw-txn", producer, true),
        code(ErrorCode::InvalidTxnState),
        "no transaction is open"
    );
    assert_eq!(
        add_partitions(&mut client, "raw-txn", producer, &[("raw", 0), ("nope", 0)]),
        vec![
            code(ErrorCode::UnknownTopicOrPartition),
            code(ErrorCode::OperationNotAttempted)
        ],
        "an unknown partition fails the request"
    );
    assert_eq!(
        add_partitions(&mut client, "raw-txn", (producer.0, 5), &[("raw", 0)]),
        vec![code(ErrorCode::ProducerFenced)]
    );
    assert_eq!(
        add_partitions(&mut client, "raw-txn", (producer.0 + 1, 0), &[("raw", 0)]),
        vec![code(ErrorCode::InvalidProducerIdMapping)]
    );
    assert_eq!(
        add_partitions(&mut client, "raw-txn", producer, &[("raw", 0)]),
        vec![0]
    );

    // A transactional batch opens the transaction on raw/0; other batches are refused.
    assert_eq!(
        produce(
            &mut client,
            Some("raw-txn"),
            batch(producer, 0, true, "in-txn")
        ),
        (0, 0)
    );
    assert_eq!(
        produce(&mut client, None, batch(producer, 1, false, "outside")).0,
        code(ErrorCode::InvalidTxnState),
        "a non-transactional batch while the transaction is open"
    );
    assert_eq!(
        produce(&mut client, None, batch(producer, 1, true, "no id")).0,
        code(ErrorCode::TransactionalIdAuthorizationFailed)
    );
    let marker = RecordBatchBuilder::end_txn_marker(
        producer.0,
        producer.1,
        sluice_net::record_batch::ControlRecordType::Commit,
        0,
        0,
    );
    assert_eq!(
        produce(&mut client, Some("raw-txn"), marker).0,
        code(ErrorCode::InvalidRecord),
        "clients do not write markers"
    );

    // The open transaction holds the last stable offset at its first offset.
    assert_eq!(describe_producers(&mut client), vec![(producer.0, 0, 0)]);
    assert_eq!(
        describe_transactions(&mut client, &["raw-txn"]),
        vec![("raw-txn".to_string(), "Ongoing".to_string())]
    );
    let open = fetch(&mut client, true);
    assert_eq!((open.high_watermark, open.last_stable_offset), (1, 0));
    assert_eq!(open.records.as_ref().map(Bytes::len), Some(0));
    assert_eq!(
        fetch(&mut client, false).records.map(|r| r.is_empty()),
        Some(false)
    );
    assert_eq!(latest_offset(&mut client, true), 0);
    assert_eq!(latest_offset(&mut client, false), 1);
    assert_eq!(
        list_transactions(&mut client, &["Ongoing", "Bogus"]),
        (vec!["raw-txn".to_string()], vec!["Bogus".to_string()])
    );
    assert_eq!(
        list_transactions(&mut client, &["Bogus"]).0,
        Vec::<String>::new()
    );

    // v4+ (broker to broker): verify_only checks membership without adding.
    let Response::AddPartitionsToTxn(verified) = client.call(
        4,
        Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            transactions: vec![AddPartitionsToTxnTransaction {
                transactional_id: "raw-txn".into(),
                producer_id: producer.0,
                producer_epoch: producer.1,
                verify_only: true,
                topics: vec![AddPartitionsToTxnTopic {
                    name: "raw".into(),
                    partitions: vec![0, 1],
                }],
            }],
            ..Default::default()
        }),
    ) else {
        panic!("an AddPartitionsToTxn response");
    };
    let codes: Vec<i16> = verified.results_by_transaction[0].topic_results[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect();
    assert_eq!(codes, vec![0, code(ErrorCode::InvalidTxnState)]);

    // Abort: the marker ends the transaction and read_committed learns it was aborted.
    assert_eq!(end_txn(&mut client, "raw-txn", producer, false), 0);
    let deadline = Instant::now() + TIMEOUT;
    while describe_transactions(&mut client, &["raw-txn"])[0].1 != "CompleteAbort" {
        assert!(Instant::now() < deadline, "the abort completes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let aborted = fetch(&mut client, true);
    assert_eq!((aborted.high_watermark, aborted.last_stable_offset), (2, 2));
    let ranges: Vec<(i64, i64)> = aborted
        .aborted_transactions
        .unwrap_or_default()
        .iter()
        .map(|t| (t.producer_id, t.first_offset))
        .collect();
    assert_eq!(ranges, vec![(producer.0, 0)]);
    assert_eq!(describe_producers(&mut client), vec![(producer.0, 0, -1)]);
    assert_eq!(
        end_txn(&mut client, "raw-txn", producer, false),
        0,
        "a retried abort"
    );
    assert_eq!(
        end_txn(&mut client, "raw-txn", producer, true),
        code(ErrorCode::InvalidTxnState)
    );

    // A new producer takes the next epoch; the old one is fenced.
    let successor = init_producer_id(&mut client, "raw-txn", 60_000).unwrap();
    assert_eq!(successor, (producer.0, 1));
    assert_eq!(
        end_txn(&mut client, "raw-txn", producer, true),
        code(ErrorCode::ProducerFenced)
    );
    let Response::DescribeTransactions(unknown) = client.call(
        0,
        Request::DescribeTransactions(DescribeTransactionsRequest {
            transactional_ids: vec!["never-seen".into()],
        }),
    ) else {
        panic!("a DescribeTransactions response");
    };
    assert_eq!(
        unknown.transaction_states[0].error_code,
        code(ErrorCode::TransactionalIdNotFound)
    );
}
