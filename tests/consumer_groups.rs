//! Consumer groups with librdkafka: assignment, rebalances on close and on a killed member,
//! commits that a new member resumes from (also after kill -9 of the broker),
//! cooperative-sticky and static membership, the consumer group protocol of KIP-848
//! (`group.protocol=consumer`); and the coordinator's answers to both protocols' corner cases
//! over a raw socket.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::raw::RawClient;
use common::{BrokerProcess, wait_for};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice_net::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use sluice_net::messages::consumer_group_heartbeat_request::{
    ConsumerGroupHeartbeatRequest, TopicPartitions,
};
use sluice_net::messages::consumer_group_heartbeat_response::ConsumerGroupHeartbeatResponse;
use sluice_net::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_net::messages::describe_groups_request::DescribeGroupsRequest;
use sluice_net::messages::heartbeat_request::HeartbeatRequest;
use sluice_net::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use sluice_net::messages::list_groups_request::ListGroupsRequest;
use sluice_net::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_net::messages::offset_delete_request::{
    OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use sluice_net::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestGroup};
use sluice_net::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use sluice_net::{ErrorCode, Request, RequestHeader, Response, Uuid};

const TIMEOUT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a broker whose groups rebalance without Kafka's 3 s initial delay.
fn broker(dir: &std::path::Path, shards: &str) -> BrokerProcess {
    broker_with(dir, shards, &[])
}

/// [`broker`] with more broker configs set.
fn broker_with(dir: &std::path::Path, shards: &str, configs: &[(&str, &str)]) -> BrokerProcess {
    let broker = BrokerProcess::start(dir, &["--shards", shards]);
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let mut config =
        AlterConfig::new(ResourceSpecifier::Broker(0)).set("group.initial.rebalance.delay.ms", "0");
    for (name, value) in configs {
        config = config.set(name, value);
    }
    let results = runtime()
        .block_on(admin.alter_configs(&[config], &AdminOptions::new()))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    broker
}

fn create_topic(broker: &BrokerProcess, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let results = runtime()
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

fn produce(broker: &BrokerProcess, topic: &str, partitions: i32, per_partition: usize) {
    let producer: BaseProducer = broker.client_config().create().unwrap();
    for i in 0..per_partition {
        for p in 0..partitions {
            let value = format!("{p}-{i}");
            producer
                .send(BaseRecord::<(), _>::to(topic).partition(p).payload(&value))
                .unwrap();
        }
    }
    producer.flush(TIMEOUT).unwrap();
}

fn member_config(broker: &BrokerProcess, group: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

/// A group member polling on its own thread.
struct Member {
    stop: Arc<AtomicBool>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    received: Arc<Mutex<Vec<(i32, i64)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    fn start(config: ClientConfig, topic: &str) -> Member {
        let stop = Arc::new(AtomicBool::new(false));
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let topic = topic.to_string();
        let (s, a, r) = (stop.clone(), assignment.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let consumer: BaseConsumer = config.create().unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            while !s.load(Ordering::SeqCst) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
                    r.lock()
                        .unwrap()
                        .push((message.partition(), message.offset()));
                }
                let current: BTreeSet<i32> = consumer
                    .assignment()
                    .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default();
                *a.lock().unwrap() = current;
            }
            drop(consumer); // destroying the consumer sends LeaveGroup
        });
        Member {
            stop,
            assignment,
            received,
            thread: Some(thread),
        }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.assignment.lock().unwrap().clone()
    }

    fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until the members' assignments are disjoint, non-empty and cover `0..partitions`;
/// `extra` partitions are those held by members outside this process.
fn wait_for_split(members: &[&Member], partitions: i32, others: usize) -> Vec<BTreeSet<i32>> {
    let found = wait_for(TIMEOUT, || {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        let total: usize = sets.iter().map(|s| s.len()).sum();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let disjoint = union.len() == total;
        let expected = partitions as usize - others;
        (disjoint && total == expected && sets.iter().all(|s| !s.is_empty())).then_some(sets)
    });
    found.unwrap_or_else(|| {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        panic!("no clean split of {partitions} partitions ({others} elsewhere): {sets:?}")
    })
}

/// Set in the child process that `spawn_child_member` starts: the bootstrap address of the
/// broker whose group it joins.
const CHILD_MEMBER_ENV: &str = "SLUICE_CHILD_MEMBER_BOOTSTRAP";

/// The member that gets killed: a group member in a process of its own, polling until killed.
fn child_member(bootstrap: &str) -> ! {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "split")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.subscribe(&["split"]).unwrap();
    loop {
        let _ = consumer.poll(Duration::from_millis(50));
    }
}

/// Starts `child_member` in a child process: this test binary, re-run on the one test that
/// uses it, which becomes the child when it finds `CHILD_MEMBER_ENV` set.
fn spawn_child_member(broker: &BrokerProcess) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "members_split_partitions_and_rebalance_when_one_closes_or_is_killed",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_MEMBER_ENV, &broker.bootstrap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn members_split_partitions_and_rebalance_when_one_closes_or_is_killed() {
    if let Ok(bootstrap) = std::env::var(CHILD_MEMBER_ENV) {
        child_member(&bootstrap); // this process is the child of spawn_child_member
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), "2");
    create_topic(&broker, "split", 6);
    let config = |broker: &BrokerProcess| member_config(broker, "split", &[]);
    let a = Member::start(config(&broker), "split");
    let b = Member::start(config(&broker), "split");
    let c = Member::start(config(&broker), "split");
    let sets = wait_for_split(&[&a, &b, &c], 6, 0);
    assert!(
        sets.iter().all(|s| s.len() == 2),
        "range gives 2 each: {sets:?}"
    );

    c.close();
    wait_for_split(&[&a, &b], 6, 0);

    let mut child = spawn_child_member(&broker);
    let sets = wait_for_split(&[&a, &b], 6, 2);
    assert_eq!(sets.iter().map(|s| s.len()).sum::<usize>(), 4);
    let killed_at = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for_split(&[&a, &b], 6, 0);
    assert!(
        killed_at.elapsed() >= Duration::from_secs(3),
        "the killed member is removed by its session timeout, not before"
    );
}

#[test]
fn commits_are_resumed_exactly_and_survive_kill9_of_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), "2");
    create_topic(&broker, "resume", 2);
    produce(&broker, "resume", 2, 500);

    // A first member reads part of the data and commits what it processed.
    let consumer: BaseConsumer = member_config(&broker, "resumers", &[]).create().unwrap();
    consumer.subscribe(&["resume"]).unwrap();
    let mut processed: Vec<(i32, i64)> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while processed.len() < 300 {
        assert!(Instant::now() < deadline, "the first member consumes");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            processed.push((message.partition(), message.offset()));
        }
    }
    let mut next: HashMap<i32, i64> = HashMap::new();
    for (p, o) in &processed {
        let entry = next.entry(*p).or_insert(0);
        *entry = (*entry).max(o + 1);
    }
    let mut commit = TopicPartitionList::new();
    for (p, o) in &next {
        commit
            .add_partition_offset("resume", *p, Offset::Offset(*o))
            .unwrap();
    }
    consumer
        .commit(&commit, CommitMode::Sync)
        .expect("commit acknowledged");
    drop(consumer);

    // The broker dies; the commits are still there after restart.
    let broker = broker.restart();

    let second: BaseConsumer = member_config(&broker, "resumers", &[]).create().unwrap();
    second.subscribe(&["resume"]).unwrap();
    let mut rest: Vec<(i32, i64)> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while processed.len() + rest.len() < 1000 {
        assert!(
            Instant::now() < deadline,
            "the second member consumes the rest: {} so far",
            rest.len()
        );
        if let Some(Ok(message)) = second.poll(Duration::from_millis(100)) {
            rest.push((message.partition(), message.offset()));
        }
    }
    for p in 0..2 {
        let first = rest.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).min();
        let expected = next.get(&p).copied().unwrap_or(0); // nothing committed: earliest
        assert_eq!(
            first,
            Some(expected),
            "partition {p} resumes right after the commit"
        );
    }
    let all: BTreeSet<(i32, i64)> = processed.iter().chain(&rest).copied().collect();
    assert_eq!(all.len(), 1000, "no loss, no duplicates");
    assert_eq!(processed.len() + rest.len(), 1000);
}

#[test]
fn cooperative_sticky_and_static_members_keep_their_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), "2");
    create_topic(&broker, "coop", 4);
    let coop = |broker: &BrokerProcess| {
        member_config(
            broker,
            "cooperative",
            &[("partition.assignment.strategy", "cooperative-sticky")],
        )
    };
    let a = Member::start(coop(&broker), "coop");
    let b = Member::start(coop(&broker), "coop");
    let before = wait_for_split(&[&a, &b], 4, 0);
    let c = Member::start(coop(&broker), "coop");
    let after = wait_for_split(&[&a, &b, &c], 4, 0);
    // Sticky: the old members keep partitions they had (only some move to the newcomer).
    assert!(
        after[0].is_subset(&before[0]) && after[1].is_subset(&before[1]),
        "{before:?} -> {after:?}"
    );
    drop((a, b, c));

    create_topic(&broker, "static", 4);
    let fixed = |broker: &BrokerProcess, id: &str| {
        member_config(broker, "static", &[("group.instance.id", id)])
    };
    let x = Member::start(fixed(&broker, "x"), "static");
    let y = Member::start(fixed(&broker, "y"), "static");
    let sets = wait_for_split(&[&x, &y], 4, 0);
    // A static member that restarts within its session timeout takes its old place.
    y.close();
    let y = Member::start(fixed(&broker, "y"), "static");
    let again = wait_for_split(&[&x, &y], 4, 0);
    assert_eq!(
        sets, again,
        "static members keep their partitions across a restart"
    );
    let _ = x.received.lock().unwrap().len();
}

/// One connection speaking the group protocol directly, to see the coordinator's exact answers.
struct RawMember {
    stream: TcpStream,
    correlation_id: i32,
}

const GROUP: &str = "raw";
const JOIN_VERSION: i16 = 5;
const SESSION_TIMEOUT_MS: i32 = 1000;

impl RawMember {
    fn connect(broker: &BrokerProcess) -> RawMember {
        let stream = TcpStream::connect(&broker.bootstrap).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        RawMember {
            stream,
            correlation_id: 0,
        }
    }

    fn send(&mut self, version: i16, request: Request) {
        self.correlation_id += 1;
        let header = RequestHeader {
            request_api_key: request.api_key() as i16,
            request_api_version: version,
            correlation_id: self.correlation_id,
            client_id: Some("raw-member".into()),
        };
        let mut out = bytes::BytesMut::new();
        sluice_net::encode_request(&header, &request, &mut out).expect("encodes");
        self.stream.write_all(&out).expect("write");
    }

    /// The answer to the oldest request not answered yet (`correlation`: its number).
    fn receive(&mut self, api_key: sluice_net::ApiKey, version: i16, correlation: i32) -> Response {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).expect("a response");
        let mut frame = vec![0u8; u32::from_be_bytes(prefix) as usize];
        self.stream
            .read_exact(&mut frame)
            .expect("a whole response");
        let (correlation_id, response) =
            sluice_net::decode_response(api_key as i16, version, bytes::Bytes::from(frame))
                .expect("decodes");
        assert_eq!(correlation_id, correlation);
        response
    }

    fn send_join(&mut self, member_id: &str) -> i32 {
        self.send(
            JOIN_VERSION,
            Request::JoinGroup(JoinGroupRequest {
                group_id: GROUP.into(),
                session_timeout_ms: SESSION_TIMEOUT_MS,
                rebalance_timeout_ms: 30_000,
                member_id: member_id.into(),
                protocol_type: "consumer".into(),
                protocols: vec![JoinGroupRequestProtocol {
                    name: "range".into(),
                    metadata: bytes::Bytes::from_static(b"subscription"),
                }],
                ..Default::default()
            }),
        );
        self.correlation_id
    }

    fn receive_join(&mut self, correlation: i32) -> JoinGroupResponse {
        match self.receive(sluice_net::ApiKey::JoinGroup, JOIN_VERSION, correlation) {
            Response::JoinGroup(response) => response,
            other => panic!("not a JoinGroup response: {other:?}"),
        }
    }

    fn join(&mut self, member_id: &str) -> JoinGroupResponse {
        let correlation = self.send_join(member_id);
        self.receive_join(correlation)
    }

    fn sync(&mut self, generation_id: i32, member_id: &str, assignment: &'static [u8]) -> i16 {
        self.send(
            3,
            Request::SyncGroup(SyncGroupRequest {
                group_id: GROUP.into(),
                generation_id,
                member_id: member_id.into(),
                assignments: vec![SyncGroupRequestAssignment {
                    member_id: member_id.into(),
                    assignment: bytes::Bytes::from_static(assignment),
                }],
                ..Default::default()
            }),
        );
        match self.receive(sluice_net::ApiKey::SyncGroup, 3, self.correlation_id) {
            Response::SyncGroup(response) => {
                assert_eq!(response.assignment, assignment);
                response.error_code
            }
            other => panic!("not a SyncGroup response: {other:?}"),
        }
    }

    fn heartbeat(&mut self, generation_id: i32, member_id: &str) -> i16 {
        self.send(
            3,
            Request::Heartbeat(HeartbeatRequest {
                group_id: GROUP.into(),
                generation_id,
                member_id: member_id.into(),
                group_instance_id: None,
            }),
        );
        match self.receive(sluice_net::ApiKey::Heartbeat, 3, self.correlation_id) {
            Response::Heartbeat(response) => response.error_code,
            other => panic!("not a Heartbeat response: {other:?}"),
        }
    }

    fn remove(&mut self, member_id: &str) -> i16 {
        self.send(
            3,
            Request::LeaveGroup(LeaveGroupRequest {
                group_id: GROUP.into(),
                members: vec![MemberIdentity {
                    member_id: member_id.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        );
        match self.receive(sluice_net::ApiKey::LeaveGroup, 3, self.correlation_id) {
            Response::LeaveGroup(response) => response.members[0].error_code,
            other => panic!("not a LeaveGroup response: {other:?}"),
        }
    }

    fn group_state(&mut self) -> String {
        self.send(
            0,
            Request::DescribeGroups(DescribeGroupsRequest {
                groups: vec![GROUP.into()],
                ..Default::default()
            }),
        );
        match self.receive(sluice_net::ApiKey::DescribeGroups, 0, self.correlation_id) {
            Response::DescribeGroups(response) => response.groups[0].group_state.clone(),
            other => panic!("not a DescribeGroups response: {other:?}"),
        }
    }

    /// KIP-394: a new member is given its id first, then joins with it.
    fn join_new(&mut self) -> String {
        let response = self.join("");
        assert_eq!(response.error_code, ErrorCode::MemberIdRequired.code());
        assert!(!response.member_id.is_empty());
        response.member_id
    }
}

#[test]
fn coordinator_answers_rejoins_removals_and_expiry_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(
        dir.path(),
        "2",
        &[(
            "group.min.session.timeout.ms",
            &SESSION_TIMEOUT_MS.to_string(),
        )],
    );
    let mut a = RawMember::connect(&broker);
    let id_a = a.join_new();
    let joined = a.join(&id_a);
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader, id_a);
    assert_eq!(a.sync(1, &id_a, b"a"), 0);
    assert_eq!(a.heartbeat(1, &id_a), 0);

    // A second member's join waits for the first to rejoin; heartbeats say so meanwhile.
    let mut b = RawMember::connect(&broker);
    let id_b = b.join_new();
    let waiting = b.send_join(&id_b);
    assert!(
        wait_for(TIMEOUT, || (a.heartbeat(1, &id_a)
            == ErrorCode::RebalanceInProgress.code())
        .then_some(()))
        .is_some(),
        "heartbeats report the rebalance"
    );

    // The same member joins again elsewhere: its earlier join is answered without losing its id.
    let mut b_again = RawMember::connect(&broker);
    let waiting_again = b_again.send_join(&id_b);
    let superseded = b.receive_join(waiting);
    assert_eq!(
        (superseded.error_code, superseded.member_id.as_str()),
        (ErrorCode::RebalanceInProgress.code(), id_b.as_str())
    );

    // Removed while its join waits, it is told it is unknown (a fenced static member would
    // be told FENCED_INSTANCE_ID, which clients treat as fatal).
    assert_eq!(a.remove(&id_b), 0);
    let removed = b_again.receive_join(waiting_again);
    assert_eq!(removed.error_code, ErrorCode::UnknownMemberId.code());

    // The rebalance completes with the remaining member only: no ghost of the removed one.
    let rejoined = a.join(&id_a);
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, 2));
    let members: Vec<&str> = rejoined
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    assert_eq!(members, [id_a.as_str()]);
    assert_eq!(a.sync(2, &id_a, b"all"), 0);

    // Silent past its session timeout, the member is removed; its next heartbeat is told it is
    // unknown so that it rejoins with an empty member id, and that rejoin works.
    assert!(
        wait_for(TIMEOUT, || (a.group_state() == "Empty").then_some(())).is_some(),
        "the silent member expires"
    );
    assert_eq!(a.heartbeat(2, &id_a), ErrorCode::UnknownMemberId.code());
    assert_eq!(a.join(&id_a).error_code, ErrorCode::UnknownMemberId.code());
    let id_new = a.join_new();
    let fresh = a.join(&id_new);
    assert_eq!((fresh.error_code, fresh.generation_id), (0, 4));
}

/// A member of the consumer group protocol (KIP-848): the broker decides the session timeout,
/// the heartbeat interval and the assignment; offsets are committed automatically, also when
/// partitions are revoked, so the next owner resumes right after the last record read.
fn consumer_protocol_config(broker: &BrokerProcess, group: &str) -> ClientConfig {
    let mut config = broker.client_config();
    config
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "100");
    config
}

/// What one member read: (partition, offset) of each record.
type Reads = Arc<Mutex<Vec<(i32, i64)>>>;

/// Waits until the members together have read `total` records.
fn wait_for_records(reads: &[&Reads], total: usize) {
    let read = || -> usize { reads.iter().map(|r| r.lock().unwrap().len()).sum() };
    wait_for(TIMEOUT, || (read() >= total).then_some(()))
        .unwrap_or_else(|| panic!("{} of {total} records read", read()));
}

/// Checks that the members read offsets `0..per_partition` of every one of `partitions`
/// partitions exactly once, between them.
fn assert_read_once(reads: &[&Reads], partitions: i32, per_partition: i64) {
    let mut counts: HashMap<(i32, i64), usize> = HashMap::new();
    for member in reads {
        for read in member.lock().unwrap().iter() {
            *counts.entry(*read).or_default() += 1;
        }
    }
    let mut twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    twice.sort();
    assert!(twice.is_empty(), "records read more than once: {twice:?}");
    for p in 0..partitions {
        for offset in 0..per_partition {
            assert!(counts.contains_key(&(p, offset)), "{p}/{offset} never read");
        }
    }
    assert_eq!(counts.len(), (partitions as i64 * per_partition) as usize);
}

#[test]
fn consumer_protocol_members_share_partitions_and_read_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(
        dir.path(),
        "2",
        &[("group.consumer.heartbeat.interval.ms", "200")],
    );
    create_topic(&broker, "shared", 4);
    let a = Member::start(consumer_protocol_config(&broker, "kip848"), "shared");
    let b = Member::start(consumer_protocol_config(&broker, "kip848"), "shared");
    let sets = wait_for_split(&[&a, &b], 4, 0);
    assert!(sets.iter().all(|s| s.len() == 2), "uniform: {sets:?}");
    let (a_reads, b_reads) = (a.received.clone(), b.received.clone());
    produce(&broker, "shared", 4, 500);
    wait_for_records(&[&a_reads, &b_reads], 2000);
    assert_read_once(&[&a_reads, &b_reads], 4, 500);
    assert!(
        !a_reads.lock().unwrap().is_empty() && !b_reads.lock().unwrap().is_empty(),
        "both members read"
    );

    // A third member joins while records arrive: partitions move to it only after their
    // owner revoked them (and committed what it read), so nothing is read twice.
    let c = Member::start(consumer_protocol_config(&broker, "kip848"), "shared");
    let c_reads = c.received.clone();
    produce(&broker, "shared", 4, 250);
    wait_for_split(&[&a, &b, &c], 4, 0);
    wait_for_records(&[&a_reads, &b_reads, &c_reads], 3000);

    // One leaves while records arrive: the others resume its partitions from its commits.
    b.close();
    produce(&broker, "shared", 4, 250);
    wait_for_split(&[&a, &c], 4, 0);
    wait_for_records(&[&a_reads, &b_reads, &c_reads], 4000);
    assert_read_once(&[&a_reads, &b_reads, &c_reads], 4, 1000);
    assert!(!c_reads.lock().unwrap().is_empty(), "the newcomer read");
}

const CONSUMER_GROUP: &str = "raw848";

/// ConsumerGroupHeartbeat v1 (what librdkafka 2.12 sends) and its answer.
fn consumer_heartbeat(
    client: &mut RawClient,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    match client.call(1, Request::ConsumerGroupHeartbeat(request)) {
        Response::ConsumerGroupHeartbeat(response) => response,
        other => panic!("not a ConsumerGroupHeartbeat response: {other:?}"),
    }
}

/// A first heartbeat: member `member_id` joins at epoch 0 subscribing to `topic`.
fn joining(member_id: &str, topic: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        group_id: CONSUMER_GROUP.into(),
        member_id: member_id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec![topic.into()]),
        topic_partitions: Some(Vec::new()),
        ..Default::default()
    }
}

/// A later heartbeat at `member_epoch`, reporting the partitions of `topic_id` it owns.
fn beating(
    member_id: &str,
    member_epoch: i32,
    topic_id: Uuid,
    owned: Option<&[i32]>,
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        group_id: CONSUMER_GROUP.into(),
        member_id: member_id.into(),
        member_epoch,
        topic_partitions: owned.map(|partitions| {
            vec![TopicPartitions {
                topic_id,
                partitions: partitions.to_vec(),
            }]
        }),
        ..Default::default()
    }
}

/// The partitions an answer assigns (`None`: the assignment is unchanged).
fn assigned(response: &ConsumerGroupHeartbeatResponse) -> Option<Vec<i32>> {
    response.assignment.as_ref().map(|assignment| {
        let mut partitions: Vec<i32> = assignment
            .topic_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        partitions.sort();
        partitions
    })
}

/// OffsetCommit v9 of offset 10 of partition `partition` by `member_id` at `member_epoch`.
fn commit_v9(client: &mut RawClient, member_id: &str, member_epoch: i32, partition: i32) -> i16 {
    let request = OffsetCommitRequest {
        group_id: CONSUMER_GROUP.into(),
        generation_id_or_member_epoch: member_epoch,
        member_id: member_id.into(),
        topics: vec![OffsetCommitRequestTopic {
            name: "handover".into(),
            partitions: vec![OffsetCommitRequestPartition {
                partition_index: partition,
                committed_offset: 10,
                committed_metadata: Some(String::new()),
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    match client.call(9, Request::OffsetCommit(request)) {
        Response::OffsetCommit(response) => response.topics[0].partitions[0].error_code,
        other => panic!("not an OffsetCommit response: {other:?}"),
    }
}

/// OffsetFetch v9 of `partition` by `member_id` at `member_epoch`: (group error, offset).
fn fetch_v9(
    client: &mut RawClient,
    member_id: &str,
    member_epoch: i32,
    partition: i32,
) -> (i16, i64) {
    let request = OffsetFetchRequest {
        groups: vec![OffsetFetchRequestGroup {
            group_id: CONSUMER_GROUP.into(),
            member_id: Some(member_id.into()),
            member_epoch,
            topics: Some(vec![
                sluice_net::messages::offset_fetch_request::OffsetFetchRequestTopics {
                    name: "handover".into(),
                    partition_indexes: vec![partition],
                },
            ]),
        }],
        ..Default::default()
    };
    match client.call(9, Request::OffsetFetch(request)) {
        Response::OffsetFetch(response) => {
            let group = &response.groups[0];
            let offset = group
                .topics
                .first()
                .map_or(-1, |t| t.partitions[0].committed_offset);
            (group.error_code, offset)
        }
        other => panic!("not an OffsetFetch response: {other:?}"),
    }
}

#[test]
fn consumer_protocol_coordinator_refuses_fences_and_hands_partitions_over_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), "2");
    let mut client = RawClient::connect(&broker);
    let topic_id = client.create_topic("handover", 2, &[]);
    let code = |response: &ConsumerGroupHeartbeatResponse| response.error_code;

    // Refused first heartbeats create nothing.
    let no_timeout = ConsumerGroupHeartbeatRequest {
        rebalance_timeout_ms: -1,
        ..joining("m1", "handover")
    };
    let refused = consumer_heartbeat(&mut client, no_timeout);
    assert_eq!(code(&refused), ErrorCode::InvalidRequest.code());
    assert!(refused.error_message.is_some());
    let no_member_id = consumer_heartbeat(&mut client, joining("", "handover"));
    assert_eq!(code(&no_member_id), ErrorCode::InvalidRequest.code());
    let sticky = ConsumerGroupHeartbeatRequest {
        server_assignor: Some("sticky".into()),
        ..joining("m1", "handover")
    };
    assert_eq!(
        code(&consumer_heartbeat(&mut client, sticky)),
        ErrorCode::UnsupportedAssignor.code()
    );
    let ghost = consumer_heartbeat(&mut client, beating("ghost", 1, topic_id, None));
    assert_eq!(code(&ghost), ErrorCode::UnknownMemberId.code());

    // The first member gets both partitions at epoch 1; a wrong epoch is fenced.
    let first = consumer_heartbeat(&mut client, joining("m1", "handover"));
    assert_eq!(
        (
            code(&first),
            first.member_epoch,
            first.heartbeat_interval_ms
        ),
        (0, 1, 5000)
    );
    assert_eq!(first.member_id.as_deref(), Some("m1"));
    assert_eq!(assigned(&first), Some(vec![0, 1]));
    let fenced = consumer_heartbeat(&mut client, beating("m1", 7, topic_id, None));
    assert_eq!(code(&fenced), ErrorCode::FencedMemberEpoch.code());

    // A second member joins at epoch 2 but gets nothing while the first holds both.
    let second = consumer_heartbeat(&mut client, joining("m2", "handover"));
    assert_eq!((code(&second), second.member_epoch), (0, 2));
    assert_eq!(assigned(&second), Some(vec![]));

    // The first is asked to revoke one partition and stays at epoch 1 until it has.
    let revoke = consumer_heartbeat(&mut client, beating("m1", 1, topic_id, Some(&[0, 1])));
    assert_eq!((code(&revoke), revoke.member_epoch), (0, 1));
    let kept = assigned(&revoke).expect("a new assignment");
    assert_eq!(kept.len(), 1);
    let moving = 1 - kept[0];
    let waiting = consumer_heartbeat(&mut client, beating("m2", 2, topic_id, Some(&[])));
    assert_eq!((code(&waiting), assigned(&waiting)), (0, None));

    // Commits and fetches carry the member epoch (OffsetCommit / OffsetFetch v9).
    assert_eq!(
        commit_v9(&mut client, "m1", 0, moving),
        ErrorCode::StaleMemberEpoch.code()
    );
    assert_eq!(commit_v9(&mut client, "m1", 1, moving), 0);
    assert_eq!(
        commit_v9(&mut client, "ghost", 1, moving),
        ErrorCode::UnknownMemberId.code()
    );
    assert_eq!(
        fetch_v9(&mut client, "ghost", 1, moving).0,
        ErrorCode::UnknownMemberId.code()
    );
    assert_eq!(
        fetch_v9(&mut client, "m2", 1, moving).0,
        ErrorCode::StaleMemberEpoch.code()
    );
    assert_eq!(fetch_v9(&mut client, "m2", 2, moving), (0, 10));

    // Once the first reports it no longer owns it, it reaches epoch 2 and the second gets it.
    let acknowledged = consumer_heartbeat(&mut client, beating("m1", 1, topic_id, Some(&kept)));
    assert_eq!((code(&acknowledged), acknowledged.member_epoch), (0, 2));
    let handed = consumer_heartbeat(&mut client, beating("m2", 2, topic_id, Some(&[])));
    assert_eq!(
        (code(&handed), handed.member_epoch, assigned(&handed)),
        (0, 2, Some(vec![moving]))
    );

    // How the group looks through the describe and list APIs of both protocols.
    let Response::ConsumerGroupDescribe(described) = client.call(
        0,
        Request::ConsumerGroupDescribe(ConsumerGroupDescribeRequest {
            group_ids: vec![CONSUMER_GROUP.into(), "nobody".into()],
            include_authorized_operations: false,
        }),
    ) else {
        panic!("a ConsumerGroupDescribe response");
    };
    let group = &described.groups[0];
    assert_eq!(
        (
            group.error_code,
            group.group_state.as_str(),
            group.group_epoch,
            group.assignor_name.as_str()
        ),
        (0, "Stable", 2, "uniform")
    );
    assert_eq!(group.members.len(), 2);
    for member in &group.members {
        assert_eq!(member.assignment, member.target_assignment);
        assert_eq!(member.assignment.topic_partitions[0].topic_name, "handover");
    }
    assert_eq!(
        described.groups[1].error_code,
        ErrorCode::GroupIdNotFound.code()
    );
    let Response::ListGroups(listed) =
        client.call(5, Request::ListGroups(ListGroupsRequest::default()))
    else {
        panic!("a ListGroups response");
    };
    let entry = listed
        .groups
        .iter()
        .find(|g| g.group_id == CONSUMER_GROUP)
        .expect("listed");
    assert_eq!(
        (
            entry.group_type.as_str(),
            entry.group_state.as_str(),
            entry.protocol_type.as_str()
        ),
        ("consumer", "Stable", "consumer")
    );
    let Response::DescribeGroups(classic) = client.call(
        5,
        Request::DescribeGroups(DescribeGroupsRequest {
            groups: vec![CONSUMER_GROUP.into()],
            ..Default::default()
        }),
    ) else {
        panic!("a DescribeGroups response");
    };
    assert_eq!(
        (
            classic.groups[0].error_code,
            classic.groups[0].group_state.as_str()
        ),
        (0, "Dead"),
        "not a classic group"
    );
    // A classic member may join a live consumer group (online migration) when it speaks the
    // consumer embedded protocol, with a subscription that parses, as in Kafka.
    let classic_join = |client: &mut RawClient, member_id: &str, protocol_type: &str| {
        let Response::JoinGroup(join) = client.call(
            5,
            Request::JoinGroup(JoinGroupRequest {
                group_id: CONSUMER_GROUP.into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                member_id: member_id.into(),
                protocol_type: protocol_type.into(),
                protocols: vec![JoinGroupRequestProtocol {
                    name: "range".into(),
                    metadata: bytes::Bytes::new(),
                }],
                ..Default::default()
            }),
        ) else {
            panic!("a JoinGroup response");
        };
        join
    };
    let join = classic_join(&mut client, "", "connect");
    assert_eq!(join.error_code, ErrorCode::InconsistentGroupProtocol.code());
    let join = classic_join(&mut client, "", "consumer");
    assert_eq!(join.error_code, ErrorCode::MemberIdRequired.code());
    let join = classic_join(&mut client, &join.member_id, "consumer");
    assert_eq!(
        join.error_code,
        ErrorCode::InconsistentGroupProtocol.code(),
        "an empty subscription does not parse"
    );
    let delete = |client: &mut RawClient| -> i16 {
        let Response::DeleteGroups(deleted) = client.call(
            2,
            Request::DeleteGroups(DeleteGroupsRequest {
                groups_names: vec![CONSUMER_GROUP.into()],
            }),
        ) else {
            panic!("a DeleteGroups response");
        };
        deleted.results[0].error_code
    };
    assert_eq!(delete(&mut client), ErrorCode::NonEmptyGroup.code());

    // Leaving (epoch -1): the member is gone, and the other gets its partition.
    let left = consumer_heartbeat(&mut client, beating("m1", -1, topic_id, None));
    assert_eq!((code(&left), left.member_epoch), (0, -1));
    let gone = consumer_heartbeat(&mut client, beating("m1", 2, topic_id, None));
    assert_eq!(code(&gone), ErrorCode::UnknownMemberId.code());
    let all = consumer_heartbeat(&mut client, beating("m2", 2, topic_id, Some(&[moving])));
    assert_eq!(
        (code(&all), all.member_epoch, assigned(&all)),
        (0, 3, Some(vec![0, 1]))
    );
    let last = consumer_heartbeat(&mut client, beating("m2", -1, topic_id, None));
    assert_eq!(code(&last), 0);
    // Empty, the group may go (its committed offsets with it).
    assert_eq!(delete(&mut client), 0);
}

#[test]
fn consumer_protocol_answers_to_changes_wait_out_the_coordinator_linger_as_in_kafka() {
    // A long linger, so that held and immediate answers cannot be confused on a busy machine.
    let linger = Duration::from_millis(400);
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(
        dir.path(),
        "2",
        &[("group.coordinator.append.linger.ms", "400")],
    );
    let mut client = RawClient::connect(&broker);
    let topic_id = client.create_topic("handover", 2, &[]);
    let timed = |client: &mut RawClient, request| {
        let started = Instant::now();
        let response = consumer_heartbeat(client, request);
        (response, started.elapsed())
    };

    // A join changes the group: its answer waits, as Kafka's waits for its records.
    let (joined, took) = timed(&mut client, joining("m1", "handover"));
    assert_eq!(joined.error_code, 0);
    assert_eq!(assigned(&joined), Some(vec![0, 1]));
    assert!(took >= linger, "join answered after {took:?}");

    // A heartbeat that changes nothing, and a refusal, are answered at once.
    let epoch = joined.member_epoch;
    let (beat, took) = timed(&mut client, beating("m1", epoch, topic_id, Some(&[0, 1])));
    assert_eq!((beat.error_code, beat.member_epoch), (0, epoch));
    assert!(took < linger, "plain heartbeat answered after {took:?}");
    let (refused, took) = timed(&mut client, beating("ghost", 1, topic_id, None));
    assert_eq!(refused.error_code, ErrorCode::UnknownMemberId.code());
    assert!(took < linger, "refusal answered after {took:?}");

    // A leave changes the group too.
    let (left, took) = timed(&mut client, beating("m1", -1, topic_id, None));
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    assert!(took >= linger, "leave answered after {took:?}");
}

#[test]
fn consumer_protocol_members_expire_follow_new_partitions_and_static_members_return() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(
        dir.path(),
        "2",
        &[
            ("group.consumer.session.timeout.ms", "2000"),
            ("group.consumer.heartbeat.interval.ms", "500"),
        ],
    );
    let mut client = RawClient::connect(&broker);
    let topic_id = client.create_topic("handover", 2, &[]);

    // A member that stops heartbeating is removed after the session timeout, and its
    // partitions go to the member that is left.
    let silent = consumer_heartbeat(&mut client, joining("silent", "handover"));
    assert_eq!(
        (silent.member_epoch, assigned(&silent)),
        (1, Some(vec![0, 1]))
    );
    assert_eq!(silent.heartbeat_interval_ms, 500);
    let alive = consumer_heartbeat(&mut client, joining("alive", "handover"));
    assert_eq!((alive.member_epoch, assigned(&alive)), (2, Some(vec![])));
    let mut epoch = alive.member_epoch;
    let mut owned: Vec<i32> = Vec::new();
    let took_over = wait_for(TIMEOUT, || {
        let beat = consumer_heartbeat(&mut client, beating("alive", epoch, topic_id, Some(&owned)));
        assert_eq!(beat.error_code, 0);
        epoch = beat.member_epoch;
        if let Some(partitions) = assigned(&beat) {
            owned = partitions;
        }
        (owned == [0, 1]).then_some(epoch)
    });
    assert_eq!(
        took_over,
        Some(3),
        "the silent member expired (group epoch 3)"
    );
    let expired = consumer_heartbeat(&mut client, beating("silent", 1, topic_id, None));
    assert_eq!(expired.error_code, ErrorCode::UnknownMemberId.code());

    // Partitions added to a subscribed topic are assigned at the next heartbeat.
    let admin = broker.admin();
    let added = runtime()
        .block_on(admin.create_partitions(
            &[rdkafka::admin::NewPartitions::new("handover", 3)],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(added[0].is_ok(), "{added:?}");
    let grown = wait_for(TIMEOUT, || {
        let beat = consumer_heartbeat(&mut client, beating("alive", epoch, topic_id, Some(&owned)));
        epoch = beat.member_epoch;
        if let Some(partitions) = assigned(&beat) {
            owned = partitions;
        }
        (owned == [0, 1, 2]).then_some(epoch)
    });
    assert_eq!(grown, Some(4));
    assert_eq!(
        consumer_heartbeat(&mut client, beating("alive", -1, topic_id, None)).error_code,
        0
    );

    // A static member that leaves with epoch -2 keeps its partitions for its next
    // incarnation; its instance id cannot be taken while it is in use.
    let static_join = |member_id: &str| ConsumerGroupHeartbeatRequest {
        instance_id: Some("instance".into()),
        ..joining(member_id, "handover")
    };
    let first = consumer_heartbeat(&mut client, static_join("first"));
    assert_eq!(first.error_code, 0);
    let held = assigned(&first).expect("an assignment");
    assert_eq!(held, [0, 1, 2]);
    let usurper = consumer_heartbeat(&mut client, static_join("usurper"));
    assert_eq!(usurper.error_code, ErrorCode::UnreleasedInstanceId.code());
    let away = consumer_heartbeat(
        &mut client,
        ConsumerGroupHeartbeatRequest {
            instance_id: Some("instance".into()),
            ..beating("first", -2, topic_id, None)
        },
    );
    assert_eq!((away.error_code, away.member_epoch), (0, -2));
    let back = consumer_heartbeat(&mut client, static_join("second"));
    assert_eq!(back.error_code, 0);
    assert_eq!(assigned(&back), Some(held), "the same partitions, at once");
    assert!(back.member_epoch > 0);

    // Version 0 lets the coordinator name a member that joins without an id.
    let Response::ConsumerGroupHeartbeat(named) =
        client.call(0, Request::ConsumerGroupHeartbeat(joining("", "handover")))
    else {
        panic!("a ConsumerGroupHeartbeat response");
    };
    assert_eq!(named.error_code, 0);
    assert!(named.member_id.is_some_and(|id| !id.is_empty()));
}

#[test]
fn consumer_protocol_regex_subscriptions_the_member_cap_and_offset_delete() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2", "--group-members-max", "1"]);
    let mut client = RawClient::connect(&broker);
    let topic_id = client.create_topic("handover", 2, &[]);
    let by_regex = |member_id: &str, regex: &str| ConsumerGroupHeartbeatRequest {
        subscribed_topic_names: None,
        subscribed_topic_regex: Some(regex.into()),
        ..joining(member_id, "")
    };

    let invalid = consumer_heartbeat(&mut client, by_regex("r0", "hand("));
    assert_eq!(
        invalid.error_code,
        ErrorCode::InvalidRegularExpression.code()
    );
    // As Kafka resolves a new regex in the background, the heartbeat bringing it is answered
    // without its topics; they come at the next one.
    let joined = consumer_heartbeat(&mut client, by_regex("r1", "hand.*"));
    assert_eq!((joined.error_code, assigned(&joined)), (0, Some(vec![])));
    let first = consumer_heartbeat(
        &mut client,
        beating("r1", joined.member_epoch, topic_id, Some(&[])),
    );
    assert_eq!((first.error_code, assigned(&first)), (0, Some(vec![0, 1])));
    let full = consumer_heartbeat(&mut client, by_regex("r2", "hand.*"));
    assert_eq!(full.error_code, ErrorCode::GroupMaxSizeReached.code());

    // A new topic the regex matches joins the subscription.
    let other_id = client.create_topic("handbook", 1, &[]);
    let mut epoch = first.member_epoch;
    let mut owned: Vec<TopicPartitions> = vec![TopicPartitions {
        topic_id,
        partitions: vec![0, 1],
    }];
    let both = wait_for(TIMEOUT, || {
        let beat = consumer_heartbeat(
            &mut client,
            ConsumerGroupHeartbeatRequest {
                topic_partitions: Some(owned.clone()),
                ..beating("r1", epoch, topic_id, None)
            },
        );
        assert_eq!(beat.error_code, 0);
        epoch = beat.member_epoch;
        if let Some(assignment) = beat.assignment {
            owned = assignment
                .topic_partitions
                .into_iter()
                .map(|t| TopicPartitions {
                    topic_id: t.topic_id,
                    partitions: t.partitions,
                })
                .collect();
        }
        owned.iter().any(|t| t.topic_id == other_id).then_some(())
    });
    assert!(both.is_some(), "handbook is assigned: {owned:?}");

    // A subscribed topic's offsets cannot be deleted while the group consumes it.
    assert_eq!(commit_v9(&mut client, "r1", epoch, 0), 0);
    let Response::OffsetDelete(deleted) = client.call(
        0,
        Request::OffsetDelete(OffsetDeleteRequest {
            group_id: CONSUMER_GROUP.into(),
            topics: vec![OffsetDeleteRequestTopic {
                name: "handover".into(),
                partitions: vec![OffsetDeleteRequestPartition { partition_index: 0 }],
            }],
        }),
    ) else {
        panic!("an OffsetDelete response");
    };
    assert_eq!(deleted.error_code, 0);
    assert_eq!(
        deleted.topics[0].partitions[0].error_code,
        ErrorCode::GroupSubscribedToTopic.code()
    );

    // Membership is not durable, committed offsets are: after a restart the member is
    // unknown, rejoins at epoch 0, and its group's offsets are still there.
    let broker = broker.restart();
    let mut client = RawClient::connect(&broker);
    let unknown = consumer_heartbeat(&mut client, beating("r1", epoch, topic_id, None));
    assert_eq!(unknown.error_code, ErrorCode::UnknownMemberId.code());
    let rejoined = consumer_heartbeat(&mut client, by_regex("r1", "hand.*"));
    assert_eq!((rejoined.error_code, rejoined.member_epoch), (0, 1));
    assert_eq!(fetch_v9(&mut client, "r1", 1, 0), (0, 10));
}

/// ConsumerGroupDescribe of `group`: (error code, number of members).
fn consumer_group_members(broker: &BrokerProcess, group: &str) -> (i16, usize) {
    let mut client = RawClient::connect(broker);
    let Response::ConsumerGroupDescribe(described) = client.call(
        0,
        Request::ConsumerGroupDescribe(ConsumerGroupDescribeRequest {
            group_ids: vec![group.into()],
            include_authorized_operations: false,
        }),
    ) else {
        panic!("a ConsumerGroupDescribe response");
    };
    let group = &described.groups[0];
    (group.error_code, group.members.len())
}

/// Online migration (KIP-848, `group.consumer.migration.policy`): a consumer-protocol member
/// joins a live classic group (cooperative-sticky, as in a rolling upgrade), which becomes a
/// consumer group whose classic members stay and hand it partitions through their rebalances;
/// when it leaves, the group is classic again and the classic members share every partition.
/// With the policy `disabled`, such a member is refused GROUP_ID_NOT_FOUND.
#[test]
fn a_live_classic_group_upgrades_to_the_consumer_protocol_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(
        dir.path(),
        "2",
        &[("group.consumer.heartbeat.interval.ms", "200")],
    );
    create_topic(&broker, "migrating", 4);
    let classic = |group: &str| {
        member_config(
            &broker,
            group,
            &[("partition.assignment.strategy", "cooperative-sticky")],
        )
    };
    let a = Member::start(classic("rolling"), "migrating");
    let b = Member::start(classic("rolling"), "migrating");
    wait_for_split(&[&a, &b], 4, 0);
    assert_eq!(
        consumer_group_members(&broker, "rolling").0,
        ErrorCode::GroupIdNotFound.code(),
        "a classic group"
    );

    let modern = Member::start(consumer_protocol_config(&broker, "rolling"), "migrating");
    wait_for_split(&[&a, &b, &modern], 4, 0);
    assert_eq!(consumer_group_members(&broker, "rolling"), (0, 3));
    let (a_reads, b_reads, modern_reads) = (
        a.received.clone(),
        b.received.clone(),
        modern.received.clone(),
    );
    produce(&broker, "migrating", 4, 50);
    wait_for_records(&[&a_reads, &b_reads, &modern_reads], 200);
    assert!(
        !modern_reads.lock().unwrap().is_empty(),
        "the upgraded member read"
    );

    // The last consumer-protocol member leaves: a classic group again, rebalanced.
    modern.close();
    wait_for_split(&[&a, &b], 4, 0);
    wait_for(TIMEOUT, || {
        (consumer_group_members(&broker, "rolling").0 == ErrorCode::GroupIdNotFound.code())
            .then_some(())
    })
    .expect("downgraded to a classic group");
    a.close();
    b.close();

    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let disabled = AlterConfig::new(ResourceSpecifier::Broker(0))
        .set("group.initial.rebalance.delay.ms", "0")
        .set("group.consumer.heartbeat.interval.ms", "200")
        .set("group.consumer.migration.policy", "disabled");
    let altered = runtime()
        .block_on(admin.alter_configs(&[disabled], &AdminOptions::new()))
        .unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    let frozen = Member::start(classic("frozen"), "migrating");
    wait_for_split(&[&frozen], 4, 0);
    let mut client = RawClient::connect(&broker);
    let refused = consumer_heartbeat(
        &mut client,
        ConsumerGroupHeartbeatRequest {
            group_id: "frozen".into(),
            ..joining("cafe0000000000000000000000000001", "migrating")
        },
    );
    assert_eq!(
        refused.error_code,
        ErrorCode::GroupIdNotFound.code(),
        "{refused:?}"
    );
    assert_eq!(frozen.assignment().len(), 4, "the classic group goes on");
    frozen.close();
    broker.check_log();
}
