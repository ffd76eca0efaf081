//! The controller quorum through real processes: three controllers (`--process-roles
//! controller`) and brokers that get the metadata from them as observers. A broker keeps
//! serving, and admin changes keep working, when the quorum's leader is `kill -9`ed; a
//! broker restarted on its data dir finds its topics in the quorum. Three brokers share the
//! partitions; a `kill -9`ed one is fenced, a survivor takes its WAL over, and its
//! partitions move to the survivors with every acknowledged record.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::quorum::{CLUSTER_CHANGE_MAX, Quorum, leaders, moved_leaders};
use common::{BrokerProcess, assert_topic_holds, produce_acked};

/// The leader's replacement must take changes within this (issue: "a new leader within 5 s").
const FAILOVER_MAX: Duration = Duration::from_secs(5);

/// `sluice cluster status --format json` against `broker`.
fn cluster_status(broker: &BrokerProcess) -> serde_json::Value {
    let output = std::process::Command::new(common::sluice_binary())
        .args([
            "cluster",
            "status",
            "--brokers",
            &broker.bootstrap,
            "--format",
            "json",
        ])
        .output()
        .expect("sluice runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_a_three_controller_quorum_survives_the_leaders_kill9_and_its_own() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut quorum = Quorum::start(root.path(), &[]);
    let broker = quorum
        .broker(root.path(), 10, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    broker.create_topic("before", 4).await;
    let before = produce_acked(&broker, "before", 4, 2_000).await;

    // `sluice cluster status` (DescribeQuorum) and the broker's gauges show the quorum.
    let status = cluster_status(&broker);
    let leader = quorum.leader();
    assert_eq!(status["leader_id"], leader);
    let roles: Vec<(u64, String)> = status["quorum"]
        .as_array()
        .expect("quorum")
        .iter()
        .map(|n| {
            let id = n["node_id"].as_u64().expect("node id");
            (id, n["role"].as_str().expect("role").to_string())
        })
        .collect();
    assert_eq!(roles.len(), 4, "{roles:?}");
    assert!(roles.contains(&(leader, "leader".to_string())), "{roles:?}");
    assert!(roles.contains(&(10, "observer".to_string())), "{roles:?}");
    assert_eq!(status["brokers"][0]["partitions_led"], 4);
    let admin = broker.admin.as_deref().expect("an admin server");
    let metrics = common::http::get(admin, "/metrics").body;
    assert!(
        metrics.contains(&format!("sluice_quorum_leader_id {leader}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_quorum_voters 3\n"));

    // The quorum's leader dies: the broker's next admin change waits for the new leader.
    let mut dead = quorum.controllers.remove(&leader).expect("leader");
    dead.kill9();
    let killed = Instant::now();
    broker.create_topic("after", 4).await;
    let failover = killed.elapsed();
    println!("controller {leader} killed: a topic created {failover:?} later");
    assert!(failover < FAILOVER_MAX, "{failover:?}");
    let after = produce_acked(&broker, "after", 4, 2_000).await;
    assert_ne!(quorum.leader(), leader);

    // The dead controller comes back and follows; the broker restarts and finds its topics
    // (and their data) through the quorum.
    quorum.controllers.insert(leader, dead.restart());
    let broker = broker.restart();
    assert_topic_holds(&broker, "before", &before);
    assert_topic_holds(&broker, "after", &after);
}

/// ListOffsets v7 of the latest offset of `topic`/`partition` with the client's leader
/// epoch: (error code, the partition's leader epoch).
fn list_latest(
    client: &mut common::raw::RawClient,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> (i16, i32) {
    use sluice_net::messages::list_offsets_request::{
        ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
    };
    let sluice_net::Response::ListOffsets(answer) = client.call(
        7,
        sluice_net::Request::ListOffsets(ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: topic.into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: partition,
                    current_leader_epoch,
                    timestamp: -1,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }),
    ) else {
        panic!("a ListOffsets response");
    };
    let answer = &answer.topics[0].partitions[0];
    (answer.error_code, answer.leader_epoch)
}

/// What a read_committed consumer reads of `topic`'s `partitions` once each holds
/// `end_offset` offsets (every marker written, so nothing is left open).
fn read_committed(
    broker: &BrokerProcess,
    topic: &str,
    partitions: i32,
    end_offset: i64,
) -> HashMap<i32, Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "cluster-read-committed")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let written = common::wait_for(CLUSTER_CHANGE_MAX, || {
        (0..partitions)
            .all(|partition| {
                consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(5))
                    .is_ok_and(|(_, high)| high == end_offset)
            })
            .then_some(())
    });
    assert!(written.is_some(), "{topic}: markers not all written");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut read: HashMap<i32, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + CLUSTER_CHANGE_MAX;
    let mut at_end = std::collections::BTreeSet::new();
    while at_end.len() < partitions as usize {
        assert!(Instant::now() < deadline, "{topic}: read {read:?}");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => read
                .entry(message.partition())
                .or_default()
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into()),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => panic!("{topic}: {error}"),
            None => {}
        }
    }
    read
}

/// A consumer of `topic`'s `partitions` from their start, outside any group.
fn following_consumer(
    broker: &BrokerProcess,
    topic: &str,
    partitions: &[i32],
) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = broker
        .client_config()
        .set("group.id", "cluster-follower")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in partitions {
        assignment
            .add_partition_offset(topic, *partition, rdkafka::Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// The next `count(partition)` records (offset, value) `consumer` reads of each of
/// `partitions`. Errors of a dead broker are waited out; a log truncation fails the test.
fn read_next(
    consumer: &rdkafka::consumer::BaseConsumer,
    partitions: &[i32],
    count: impl Fn(i32) -> usize,
) -> HashMap<i32, Vec<(i64, String)>> {
    use rdkafka::Message;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    let mut read: HashMap<i32, Vec<(i64, String)>> =
        partitions.iter().map(|p| (*p, Vec::new())).collect();
    let deadline = Instant::now() + CLUSTER_CHANGE_MAX;
    while read.iter().any(|(p, records)| records.len() < count(*p)) {
        assert!(Instant::now() < deadline, "read {read:?}");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
                read.entry(message.partition())
                    .or_default()
                    .push((message.offset(), value.into()));
            }
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::LogTruncation))) => {
                panic!("log truncation detected after reading {read:?}")
            }
            Some(Err(error)) => println!("consumer: {error}"),
            None => {}
        }
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_share_the_partitions_and_a_dead_ones_move_to_the_survivors() {
    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start_with_short_sessions(root.path());
    let brokers: Vec<BrokerProcess> = (10..13)
        .map(|id| quorum.shared_broker(root.path(), id))
        .collect();
    let [first, second, mut third] = <[BrokerProcess; 3]>::try_from(brokers).ok().expect("3");

    // Partitions spread over the three, and every broker takes writes for its own.
    first.create_topic("spread", 12).await;
    let leaders_before = leaders(&first, "spread", &[10, 11, 12]);
    for id in [10, 11, 12] {
        let led = leaders_before.values().filter(|l| **l == id).count();
        assert_eq!(led, 4, "broker {id} leads {led} of 12: {leaders_before:?}");
    }
    let mut expected = produce_acked(&second, "spread", 12, 3_000).await;
    assert_topic_holds(&third, "spread", &expected);
    // A consumer reads broker 12's partitions to their end, so that its positions carry the
    // leader epoch of the batches it read; it follows them through the move below.
    let mut twelves: Vec<i32> = leaders_before
        .iter()
        .filter(|(_, leader)| **leader == 12)
        .map(|(partition, _)| *partition)
        .collect();
    twelves.sort_unstable();
    let follower = following_consumer(&first, "spread", &twelves);
    let read = read_next(&follower, &twelves, |p| expected[&p].len());
    for partition in &twelves {
        let values: Vec<&String> = read[partition].iter().map(|(_, v)| v).collect();
        assert_eq!(values, expected[partition].iter().collect::<Vec<_>>());
    }
    let status = cluster_status(&first);
    assert_eq!(
        status["brokers"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(status["offline_partitions"], 0, "{status}");

    // Broker 12 dies: once its session ends it is fenced, a survivor takes its WAL over and
    // uploads what it held, and its partitions move to the survivors, two leader epochs up
    // (the fence, the move). Every partition takes writes again, every record is kept.
    third.kill9();
    let killed = Instant::now();
    let leaders_during = moved_leaders(&first, "spread", &[10, 11]);
    println!(
        "broker 12 killed: its partitions moved after {:?}",
        killed.elapsed()
    );
    for (partition, leader) in &leaders_during {
        let owner = leaders_before[partition];
        if owner != 12 {
            assert_eq!(*leader, owner, "partition {partition} stays");
        }
    }
    let producer = common::idempotent_producer(&first);
    for partition in leaders_during.keys() {
        let value = format!("during-{partition}");
        let record = rdkafka::producer::FutureRecord::<(), _>::to("spread")
            .partition(*partition)
            .payload(&value);
        let offset = producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("{value} not acknowledged: {e}"))
            .offset;
        let held = expected.get_mut(partition).expect("partition");
        assert_eq!(offset, held.len() as i64, "{value}");
        held.push(value);
    }
    // The consumer finds the moved partitions' new leaders and epochs, checks its positions
    // with OffsetForLeaderEpoch (librdkafka's validation; a truncation would be an error or
    // a rewind), and reads on from where it was.
    let read = read_next(&follower, &twelves, |_| 1);
    for partition in &twelves {
        let next = expected[partition].len() - 1;
        let record = (next as i64, expected[partition][next].clone());
        assert_eq!(read[partition], [record], "partition {partition}");
    }
    let validated = [&first, &second].iter().any(|broker| {
        let admin = broker.admin.as_deref().expect("an admin server");
        common::http::get(admin, "/metrics")
            .body
            .contains("api=\"OffsetForLeaderEpoch\"}")
    });
    assert!(validated, "the consumer validated its positions");
    assert_eq!(cluster_status(&second)["offline_partitions"], 0);
    let admin = second.admin.as_deref().expect("an admin server");
    let metrics = common::http::get(admin, "/metrics").body;
    for line in [
        "sluice_cluster_partitions_offline 0\n",
        "sluice_cluster_brokers{state=\"fenced\"} 1\n",
        "sluice_cluster_brokers{state=\"live\"} 2\n",
        "sluice_broker_fenced 0\n",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    for logged in ["broker fenced", "takes the fenced broker's WAL over"] {
        let found = quorum.controllers.values().any(|c| {
            c.log_lines()
                .iter()
                .any(|l| l.contains(logged) && l.contains("broker=12"))
        });
        assert!(found, "a controller logs {logged:?}");
    }
    // A client at the moved partition's old epoch is told its metadata is stale, one ahead
    // that the broker's is (KIP-320).
    let (&moved, &new_leader) = leaders_during
        .iter()
        .find(|(partition, _)| leaders_before[*partition] == 12)
        .expect("broker 12 led a partition");
    let new_leader = [&first, &second][(new_leader - 10) as usize];
    let mut raw = common::raw::RawClient::connect(new_leader);
    for (client_epoch, code, epoch) in [(0, 74, -1), (2, 0, 2), (3, 75, -1)] {
        assert_eq!(
            list_latest(&mut raw, "spread", moved, client_epoch),
            (code, epoch),
            "a client at leader epoch {client_epoch}"
        );
    }
    // OffsetForLeaderEpoch there (what librdkafka asks after the move to validate its
    // position): the old epoch is fenced; every epoch up to the new one ends at the log end,
    // which holds every record acknowledged before and after the move; a newer one is unknown.
    let end_offset = expected[&moved].len() as i64;
    let mut ask = |current, epoch| raw.offset_for_leader_epoch(4, "spread", moved, current, epoch);
    assert_eq!(ask(0, 0), (74, -1, -1));
    for epoch in [0, 1, 2] {
        assert_eq!(ask(2, epoch), (0, epoch, end_offset), "epoch {epoch}");
    }
    assert_eq!(ask(-1, 3), (0, -1, -1));

    // Broker 12 comes back on its data dir: it registers anew with a fresh WAL epoch, and
    // the controller's balancer evens the partition counts again: four partitions move to
    // it (sealed, their tails uploaded, opened there), with every record of them.
    let third = third.restart();
    let balanced = common::wait_for(CLUSTER_CHANGE_MAX, || {
        let now = leaders(&first, "spread", &[10, 11, 12]);
        [10, 11, 12]
            .iter()
            .all(|id| now.values().filter(|leader| *leader == id).count() == 4)
            .then_some(now)
    });
    assert!(balanced.is_some(), "the balancer gives broker 12 its share");
    assert_topic_holds(&third, "spread", &expected);
    // Storage keeps one copy, but a factor up to the brokers' count is taken, as Kafka would
    // (Connect, Streams and librdkafka's transaction tests ask for 3); more is refused.
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let results = third
        .admin()
        .create_topics(
            &[
                NewTopic::new("factor-3", 3, TopicReplication::Fixed(3)),
                NewTopic::new("factor-4", 3, TopicReplication::Fixed(4)),
            ],
            &AdminOptions::new(),
        )
        .await
        .expect("CreateTopics answered");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_eq!(
        results[1].as_ref().err().map(|(_, code)| *code),
        Some(rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor)
    );
    third.create_topic("after", 12).await;
    let after = produce_acked(&third, "after", 12, 1_200).await;
    assert_topic_holds(&second, "after", &after);
    assert_eq!(cluster_status(&third)["offline_partitions"], 0);

    // Transactions: the first broker registered coordinates them and sends the markers of
    // other brokers' partitions to their leaders (WriteTxnMarkers). One transaction over a
    // partition of each broker commits, the next aborts; read_committed sees the first only.
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    third.create_topic("txn", 3).await;
    let txn_leaders = leaders(&third, "txn", &[10, 11, 12]);
    let mut txn_brokers: Vec<i32> = txn_leaders.values().copied().collect();
    txn_brokers.sort_unstable();
    assert_eq!(txn_brokers, [10, 11, 12], "one partition per broker");
    // Threaded: its delivery reports are polled in the background, as abort needs.
    let txn: ThreadedProducer<DefaultProducerContext> = third
        .client_config()
        .set("transactional.id", "cluster-txn")
        .create()
        .expect("transactional producer");
    let txn_timeout = Duration::from_secs(30);
    txn.init_transactions(txn_timeout)
        .expect("init_transactions");
    for commit in [true, false] {
        txn.begin_transaction().expect("begin");
        for partition in 0..3 {
            let value = format!(
                "{}-{partition}",
                if commit { "committed" } else { "aborted" }
            );
            let record = BaseRecord::<(), str>::to("txn")
                .partition(partition)
                .payload(&value);
            txn.send(record).map_err(|(e, _)| e).expect("queued");
        }
        if commit {
            txn.commit_transaction(txn_timeout)
                .expect("commit across brokers");
        } else {
            // Written first, so that the abort has records to hide.
            txn.flush(txn_timeout).expect("records acknowledged");
            txn.abort_transaction(txn_timeout)
                .expect("abort across brokers");
        }
    }
    let committed: HashMap<i32, Vec<String>> = (0..3)
        .map(|partition| (partition, vec![format!("committed-{partition}")]))
        .collect();
    // Each partition: a record and its commit marker, a record and its abort marker.
    assert_eq!(read_committed(&first, "txn", 3, 4), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_broker_whose_wal_was_taken_over_cannot_append_and_stops() {
    use std::io::Read;
    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start_with_short_sessions(root.path());
    let live = quorum.shared_broker(root.path(), 10);
    let mut paused = quorum.shared_broker(root.path(), 11);
    live.create_topic("paused", 4).await;
    let before = leaders(&live, "paused", &[10, 11]);
    let (&partition, _) = before
        .iter()
        .find(|(_, leader)| **leader == 11)
        .expect("broker 11 leads a partition");
    let mut expected = produce_acked(&live, "paused", 4, 400).await;

    // Broker 11 stops answering (SIGSTOP) with a produce for its partition on the wire. Its
    // session ends, broker 10 takes its WAL over, the partition moves and takes writes.
    let mut raw = common::raw::RawClient::connect(&paused);
    paused.signal(libc::SIGSTOP);
    let stale = common::raw::producer_batch((-1, -1), -1, false, "stale");
    raw.send(
        9,
        &sluice_net::Request::Produce(sluice_net::messages::produce_request::ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![sluice_net::messages::produce_request::TopicProduceData {
                name: "paused".into(),
                partition_data: vec![
                    sluice_net::messages::produce_request::PartitionProduceData {
                        index: partition,
                        records: Some(stale),
                    },
                ],
            }],
            ..Default::default()
        }),
    );
    let moved = moved_leaders(&live, "paused", &[10]);
    assert_eq!(moved[&partition], 10);
    let producer = common::idempotent_producer(&live);
    let offset = producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to("paused")
                .partition(partition)
                .payload("fresh"),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("fresh not acknowledged: {e}"))
        .offset;
    let held = expected.get_mut(&partition).expect("partition");
    assert_eq!(offset, held.len() as i64);
    held.push("fresh".to_string());

    // Broker 11 wakes up with its old WAL: it acknowledges nothing (its append is refused by
    // the WAL's new epoch, or it is told it no longer leads) and stops.
    paused
        .allow_log("WAL append failed")
        .allow_log("WAL fenced")
        .allow_log("a live broker took its WAL over");
    paused.signal(libc::SIGCONT);
    let mut prefix = [0u8; 4];
    match raw_read(&mut raw, &mut prefix) {
        Some(frame) => {
            let (_, response) = sluice_net::decode_response(0, 9, bytes::Bytes::from(frame))
                .expect("a Produce response");
            let sluice_net::Response::Produce(answer) = response else {
                panic!("a Produce response");
            };
            let code = answer.responses[0].partition_responses[0].error_code;
            println!("the stale produce was answered with error {code}");
            assert_ne!(code, 0, "a fenced broker acknowledged a produce");
        }
        None => println!("the stale produce's connection closed unanswered"),
    }
    let status = paused
        .wait_exit(Duration::from_secs(30))
        .expect("the fenced broker stops");
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert!(
        paused
            .log_lines()
            .iter()
            .any(|l| l.contains("a live broker took its WAL over")),
        "it says why"
    );
    assert_topic_holds(&live, "paused", &expected);

    /// The next response frame, or None once the connection is closed.
    fn raw_read(raw: &mut common::raw::RawClient, prefix: &mut [u8; 4]) -> Option<Vec<u8>> {
        raw.stream().read_exact(prefix).ok()?;
        let mut frame = vec![0u8; u32::from_be_bytes(*prefix) as usize];
        raw.stream().read_exact(&mut frame).ok()?;
        Some(frame)
    }
}

/// FindCoordinator (v3, one key) of group `group` as `broker` answers it: (error, node).
fn find_group_coordinator(broker: &BrokerProcess, group: &str) -> (i16, i32) {
    use sluice_net::messages::find_coordinator_request::FindCoordinatorRequest;
    let mut raw = common::raw::RawClient::connect(broker);
    let sluice_net::Response::FindCoordinator(answer) = raw.call(
        3,
        sluice_net::Request::FindCoordinator(FindCoordinatorRequest {
            key: group.into(),
            key_type: 0,
            ..Default::default()
        }),
    ) else {
        panic!("a FindCoordinator response");
    };
    (answer.error_code, answer.node_id)
}

/// DescribeTransactions (v0) of `transactional_id` as `broker` answers it: its state.
fn transaction_state(broker: &BrokerProcess, transactional_id: &str) -> String {
    use sluice_net::messages::describe_transactions_request::DescribeTransactionsRequest;
    let mut raw = common::raw::RawClient::connect(broker);
    let sluice_net::Response::DescribeTransactions(answer) = raw.call(
        0,
        sluice_net::Request::DescribeTransactions(DescribeTransactionsRequest {
            transactional_ids: vec![transactional_id.into()],
        }),
    ) else {
        panic!("a DescribeTransactions response");
    };
    answer.transaction_states[0].transaction_state.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_moves_with_its_dead_brokers_wal_and_keeps_groups_and_transactions() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Offset, TopicPartitionList};
    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start_with_short_sessions(root.path());
    // The first broker registered coordinates groups and transactions.
    let mut coordinator = quorum.shared_broker(root.path(), 10);
    let survivors = [
        quorum.shared_broker(root.path(), 11),
        quorum.shared_broker(root.path(), 12),
    ];
    coordinator.create_topic("work", 3).await;
    leaders(&coordinator, "work", &[10, 11, 12]);
    assert_eq!(
        find_group_coordinator(&survivors[0], "moving-group"),
        (0, 10)
    );

    // A group commits offsets and a transactional producer commits a transaction, both on
    // broker 10, which then dies.
    let committed: TopicPartitionList = {
        let mut offsets = TopicPartitionList::new();
        for partition in 0..3 {
            offsets
                .add_partition_offset("work", partition, Offset::Offset(10 + i64::from(partition)))
                .expect("offset");
        }
        offsets
    };
    let group: BaseConsumer = survivors[0]
        .client_config()
        .set("group.id", "moving-group")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    group
        .commit(&committed, CommitMode::Sync)
        .expect("offsets committed");
    let txn: ThreadedProducer<DefaultProducerContext> = survivors[0]
        .client_config()
        .set("transactional.id", "moving-txn")
        .create()
        .expect("transactional producer");
    let txn_timeout = Duration::from_secs(60);
    txn.init_transactions(txn_timeout)
        .expect("init_transactions");
    // Writes one record per partition in a new transaction, acknowledged.
    let send_all = |name: &str| {
        txn.begin_transaction().expect("begin");
        for partition in 0..3 {
            let value = format!("{name}-{partition}");
            let record = BaseRecord::<(), str>::to("work")
                .partition(partition)
                .payload(&value);
            txn.send(record).map_err(|(e, _)| e).expect("queued");
        }
        txn.flush(txn_timeout).expect("records acknowledged");
    };
    // Its markers written and its completion in the log: a decided transaction found by the
    // next coordinator would be completed again, with a second marker on each partition
    // (harmless, as in Kafka, but this test counts offsets).
    let completes = |state: &str| {
        let completed = common::wait_for(CLUSTER_CHANGE_MAX, || {
            (transaction_state(&coordinator, "moving-txn") == state).then_some(())
        });
        assert!(completed.is_some(), "the transaction reaches {state}");
    };
    send_all("before");
    txn.commit_transaction(txn_timeout)
        .expect("a transaction before the kill");
    completes("CompleteCommit");
    send_all("aborted");
    txn.abort_transaction(txn_timeout).expect("an abort");
    completes("CompleteAbort");
    // Broker 10 dies with a transaction open: its partitions' transaction history (the
    // abort, the open transaction) moves with them.
    send_all("open");
    coordinator.kill9();
    let killed = Instant::now();

    // Once broker 10 is fenced and its WAL taken over, the coordinator is a survivor, which
    // read the group and transaction logs from objects.
    let new_coordinator = common::wait_for(CLUSTER_CHANGE_MAX, || {
        match find_group_coordinator(&survivors[0], "moving-group") {
            (0, node @ (11 | 12)) => Some(node),
            _ => None,
        }
    })
    .expect("the coordinator moved to a survivor");
    println!(
        "broker 10 killed: broker {new_coordinator} coordinates after {:?}",
        killed.elapsed()
    );
    let loaded = common::wait_for(CLUSTER_CHANGE_MAX, || {
        survivors[(new_coordinator - 11) as usize]
            .log_lines()
            .iter()
            .any(|l| l.contains("this broker coordinates now"))
            .then_some(())
    });
    assert!(loaded.is_some(), "the new coordinator says it loaded them");
    let admin = survivors[0].admin.as_deref().expect("an admin server");
    let metrics = common::http::get(admin, "/metrics").body;
    let gauge = format!("sluice_cluster_coordinator_id {new_coordinator}\n");
    assert!(metrics.contains(&gauge), "{gauge}: {metrics}");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..3 {
        partitions.add_partition("work", partition);
    }
    let offsets = common::wait_for(CLUSTER_CHANGE_MAX, || {
        group
            .committed_offsets(partitions.clone(), Duration::from_secs(5))
            .ok()
    })
    .expect("OffsetFetch answered");
    assert_eq!(
        offsets.to_topic_map(),
        committed.to_topic_map(),
        "the committed offsets moved with the coordinator"
    );
    // The same producer goes on: the new coordinator knows its id, epoch and open
    // transaction.
    txn.commit_transaction(txn_timeout)
        .expect("the open transaction commits after the move");
    send_all("after");
    txn.commit_transaction(txn_timeout)
        .expect("a transaction after the move");
    // Each partition: four transactions, each a record and a marker. The moved partition
    // still hides the aborted one.
    let read = read_committed(&survivors[1], "work", 3, 8);
    for partition in 0..3 {
        assert_eq!(
            read[&partition],
            ["before", "open", "after"].map(|name| format!("{name}-{partition}")),
            "partition {partition}"
        );
    }
}

/// SCRAM credentials in a cluster: an AlterUserScramCredentials sent to one broker goes
/// through the quorum's leader (the broker's controller forwards it), and every broker's
/// DescribeUserScramCredentials sees the user once its image has the record.
#[test]
fn scram_credentials_set_on_one_broker_are_described_by_another() {
    use common::raw::RawClient;
    use sluice_metadata::ScramMechanism;
    use sluice_net::messages::alter_user_scram_credentials_request::{
        AlterUserScramCredentialsRequest, ScramCredentialUpsertion,
    };
    use sluice_net::messages::describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest;
    use sluice_net::{Request, Response};

    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start(root.path(), &[]);
    let first = quorum.shared_broker(root.path(), 10);
    let second = quorum.shared_broker(root.path(), 11);
    let mechanism = ScramMechanism::Sha256;
    let salt = b"cluster-salt".to_vec();
    let alter = Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
        deletions: Vec::new(),
        upsertions: vec![ScramCredentialUpsertion {
            name: "alice".to_string(),
            mechanism: mechanism.id(),
            iterations: 4096,
            salted_password: mechanism.salted_password(b"pw", &salt, 4096).into(),
            salt: salt.into(),
        }],
    });
    let Response::AlterUserScramCredentials(altered) = RawClient::connect(&first).call(0, alter)
    else {
        panic!("an AlterUserScramCredentials response");
    };
    assert_eq!(altered.results.len(), 1);
    assert_eq!(altered.results[0].error_code, 0, "{altered:?}");
    let described = common::wait_for(CLUSTER_CHANGE_MAX, || {
        let describe = Request::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest {
            users: None,
        });
        let Response::DescribeUserScramCredentials(described) =
            RawClient::connect(&second).call(0, describe)
        else {
            panic!("a DescribeUserScramCredentials response");
        };
        (!described.results.is_empty()).then_some(described)
    })
    .expect("broker 11 sees the user broker 10 set");
    assert_eq!(described.results[0].user, "alice");
    assert_eq!(described.results[0].credential_infos[0].mechanism, 1);
    assert_eq!(described.results[0].credential_infos[0].iterations, 4096);
}

/// Client quotas in a cluster: an AlterClientQuotas sent to one broker goes through the
/// quorum's leader, and another broker's DescribeClientQuotas sees it once its image has it.
#[test]
fn client_quotas_set_on_one_broker_are_described_by_another() {
    use common::raw::RawClient;
    use sluice_net::messages::alter_client_quotas_request::{
        AlterClientQuotasRequest, EntityData, EntryData, OpData,
    };
    use sluice_net::messages::describe_client_quotas_request::DescribeClientQuotasRequest;
    use sluice_net::{Request, Response};

    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start(root.path(), &[]);
    let first = quorum.shared_broker(root.path(), 10);
    let second = quorum.shared_broker(root.path(), 11);
    let alter = Request::AlterClientQuotas(AlterClientQuotasRequest {
        entries: vec![EntryData {
            entity: vec![EntityData {
                entity_type: "client-id".to_string(),
                entity_name: Some("loader".to_string()),
            }],
            ops: vec![OpData {
                key: "producer_byte_rate".to_string(),
                value: 10_000_000.0,
                remove: false,
            }],
        }],
        validate_only: false,
    });
    let Response::AlterClientQuotas(altered) = RawClient::connect(&first).call(1, alter) else {
        panic!("an AlterClientQuotas response");
    };
    assert_eq!(altered.entries[0].error_code, 0, "{altered:?}");
    let described = common::wait_for(CLUSTER_CHANGE_MAX, || {
        let describe = Request::DescribeClientQuotas(DescribeClientQuotasRequest {
            components: Vec::new(),
            strict: false,
        });
        let Response::DescribeClientQuotas(described) =
            RawClient::connect(&second).call(1, describe)
        else {
            panic!("a DescribeClientQuotas response");
        };
        described.entries.filter(|e| !e.is_empty())
    })
    .expect("broker 11 sees the quota broker 10 set");
    assert_eq!(
        described[0].entity[0].entity_name.as_deref(),
        Some("loader")
    );
    assert_eq!(described[0].values[0].value, 10_000_000.0);
}
