//! Consumer groups with librdkafka: assignment, rebalances on close and on a killed member,
//! commits that a new member resumes from (also after kill -9 of the broker),
//! cooperative-sticky and static membership.

mod common;

use std::collections::{BTreeSet, HashMap};
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

const TIMEOUT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a broker whose groups rebalance without Kafka's 3 s initial delay.
fn broker(dir: &std::path::Path, shards: &str) -> BrokerProcess {
    let broker = BrokerProcess::start(dir, &["--shards", shards]);
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let config =
        AlterConfig::new(ResourceSpecifier::Broker(0)).set("group.initial.rebalance.delay.ms", "0");
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

/// The body of the child process used as a member that gets killed.
#[test]
fn child_member_main() {
    let Ok(bootstrap) = std::env::var("SLUICE_CHILD_MEMBER_BOOTSTRAP") else {
        return;
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
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

fn spawn_child_member(broker: &BrokerProcess) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_member_main",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SLUICE_CHILD_MEMBER_BOOTSTRAP", &broker.bootstrap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn members_split_partitions_and_rebalance_when_one_closes_or_is_killed() {
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
