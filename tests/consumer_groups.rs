//! Consumer groups with librdkafka: assignment, rebalances on close and on a killed member,
//! commits that a new member resumes from (also after kill -9 of the broker),
//! cooperative-sticky and static membership; and the coordinator's answers to the group
//! protocol's corner cases over a raw socket.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{BrokerProcess, wait_for};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice_net::messages::describe_groups_request::DescribeGroupsRequest;
use sluice_net::messages::heartbeat_request::HeartbeatRequest;
use sluice_net::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use sluice_net::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use sluice_net::{ErrorCode, Request, RequestHeader, Response};

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
