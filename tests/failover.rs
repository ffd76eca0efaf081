//! Failover by WAL takeover through real processes: three nodes on 127.0.0.1, each broker and
//! controller (`--process-roles broker,controller`), objects in one s3s-fs bucket, WALs in
//! one shared directory. Under an idempotent acks=all load on 12 partitions, a seeded random
//! node is `kill -9`ed; a survivor takes its WAL over and its partitions move. The victim is
//! restarted once they have moved. At the end every acknowledged record is there once, at
//! the offset it was acknowledged at, and offsets are dense.
//!
//! `SLUICE_FAILOVER_ITERATIONS` sets the kills (default 2; the acceptance runs 30),
//! `SLUICE_FAILOVER_SEED` the seed (printed), and `SLUICE_FAILOVER_SESSION_TIMEOUT_MS` the
//! broker session timeout (default Kafka's 9000 when iterations are asked for, 3000 for the
//! default short run).

mod common;
#[path = "../objstore/tests/common/s3_server.rs"]
mod s3_server;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::BrokerProcess;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use s3_server::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, S3Server};

const PARTITIONS: i32 = 12;
const TOPIC: &str = "failover";
/// Longest wait for every partition to take writes again after a kill; the bound
/// (15 s with default settings) is reported, not asserted: timing is for benchmarks.
const RECOVERY_MAX: Duration = Duration::from_secs(90);
/// Sends awaited at once.
const IN_FLIGHT_MAX: usize = 512;
/// Pause between two sends of the load (about 500 records per second).
const SEND_PAUSE: Duration = Duration::from_millis(2);

struct Node {
    id: u64,
    dir: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    process: Option<BrokerProcess>,
}

impl Node {
    fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A port of the killed process may be held for a moment: try again.
        let process = BrokerProcess::start_retrying(&self.dir, &args, &envs)
            .unwrap_or_else(|last| panic!("node {} did not start: {last}", self.id));
        self.process = Some(process);
    }

    fn process(&self) -> &BrokerProcess {
        self.process.as_ref().expect("running")
    }
}

/// One acknowledged record.
struct Acked {
    partition: i32,
    offset: i64,
    value: String,
    at: Instant,
}

/// The load: idempotent acks=all sends round-robin over the partitions until stopped.
struct Load {
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(producer: FutureProducer) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = {
            let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX));
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let permit = permits.clone().acquire_owned().await.expect("open");
                    let partition = (i % PARTITIONS as u64) as i32;
                    let value = format!("v{i}");
                    i += 1;
                    let delivery = producer.send_result(
                        FutureRecord::<(), _>::to(TOPIC)
                            .partition(partition)
                            .payload(&value),
                    );
                    let Ok(delivery) = delivery else {
                        failed.lock().unwrap().push(format!("{value}: not queued"));
                        continue;
                    };
                    let (acked, failed) = (acked.clone(), failed.clone());
                    tokio::spawn(async move {
                        match delivery.await {
                            Ok(Ok(delivered)) => acked.lock().unwrap().push(Acked {
                                partition: delivered.partition,
                                offset: delivered.offset,
                                value,
                                at: Instant::now(),
                            }),
                            Ok(Err((error, _))) => {
                                failed.lock().unwrap().push(format!("{value}: {error}"))
                            }
                            Err(_) => failed.lock().unwrap().push(format!("{value}: dropped")),
                        }
                        drop(permit);
                    });
                    tokio::time::sleep(SEND_PAUSE).await;
                }
                // Every send answered before the load ends.
                let _ = permits.acquire_many(IN_FLIGHT_MAX as u32).await;
            })
        };
        Load {
            acked,
            failed,
            stop,
            task,
        }
    }

    /// Per partition, the first acknowledgement at or after `since`, once every partition
    /// has one.
    fn first_acks_since(&self, since: Instant) -> Option<BTreeMap<i32, Instant>> {
        let acked = self.acked.lock().unwrap();
        let mut first: BTreeMap<i32, Instant> = BTreeMap::new();
        for ack in acked.iter().rev() {
            if ack.at < since {
                break;
            }
            first.insert(ack.partition, ack.at);
        }
        (first.len() == PARTITIONS as usize).then_some(first)
    }

    async fn finish(self) -> (Vec<Acked>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("load task");
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (acked, failed)
    }
}

/// True when Metadata (from any of `bootstrap`) lists exactly the brokers `ids`.
fn brokers_listed(bootstrap: &str, ids: &[i32]) -> bool {
    metadata(bootstrap).is_some_and(|(brokers, _)| brokers == ids)
}

/// The brokers Metadata lists and the leaders of the topic's partitions.
fn metadata(bootstrap: &str) -> Option<(Vec<i32>, Vec<i32>)> {
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .create()
        .expect("client");
    let metadata = client
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .ok()?;
    let mut brokers: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    brokers.sort_unstable();
    let mut leaders: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.leader())
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    Some((brokers, leaders))
}

fn median_and_max(mut values: Vec<Duration>) -> (Duration, Duration) {
    values.sort();
    (values[values.len() / 2], values[values.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_broker_under_idempotent_load_loses_nothing_and_its_partitions_move() {
    let iterations: usize = std::env::var("SLUICE_FAILOVER_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let session_timeout_ms: u64 = std::env::var("SLUICE_FAILOVER_SESSION_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var("SLUICE_FAILOVER_ITERATIONS").is_ok() {
            9000
        } else {
            3000
        });
    let seed: u64 = std::env::var("SLUICE_FAILOVER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        });
    println!(
        "SLUICE_FAILOVER_SEED={seed} iterations={iterations} session_timeout_ms={session_timeout_ms}"
    );
    let mut rng = fastrand::Rng::with_seed(seed);

    let server = S3Server::start();
    let root = tempfile::tempdir().expect("tempdir");
    let wals = root.path().join("shared-wals");
    let controller_addrs = common::free_addrs(3);
    let voters = common::quorum_voters(&controller_addrs);
    let store = format!("s3://{S3_BUCKET}/cluster");
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let session = session_timeout_ms.to_string();
    let mut nodes: Vec<Node> = controller_addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let id = i as u64 + 1;
            let wal = wals.join(format!("node-{id}"));
            let args = [
                "--node-id",
                &id.to_string(),
                "--process-roles",
                "broker,controller",
                "--controller-quorum-voters",
                &voters,
                "--controller-listen",
                addr,
                "--broker-session-timeout-ms",
                &session,
                "--wal-path",
                &wal.display().to_string(),
                "--object-store",
                &store,
                "--s3-endpoint",
                &endpoint,
                "--shards",
                "2",
                "--memory",
                "512MiB",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Node {
                id,
                dir: root.path().join(format!("node-{id}")),
                args,
                envs: vec![
                    ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
                ],
                process: None,
            }
        })
        .collect();
    // The voters start together: each waits for the others' votes.
    std::thread::scope(|scope| {
        for node in nodes.iter_mut() {
            scope.spawn(move || node.start());
        }
    });
    let bootstrap = |nodes: &[Node]| {
        nodes
            .iter()
            .filter_map(|n| n.process.as_ref().map(|p| p.bootstrap.clone()))
            .collect::<Vec<_>>()
            .join(",")
    };
    nodes[0].process().create_topic(TOPIC, PARTITIONS).await;
    assert!(
        common::wait_for(Duration::from_secs(30), || brokers_listed(
            &bootstrap(&nodes),
            &[1, 2, 3]
        )
        .then_some(()))
        .is_some(),
        "three brokers listed"
    );

    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap(&nodes))
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("producer");
    let load = Load::start(producer);
    assert!(
        common::wait_for(Duration::from_secs(30), || load
            .first_acks_since(Instant::now() - Duration::from_secs(60)))
        .is_some(),
        "the load is acknowledged on every partition"
    );

    let mut recoveries = Vec::with_capacity(iterations);
    for iteration in 0..iterations {
        // A node leading partitions (a node restarted after its partitions moved leads none
        // until another's move to it).
        let (_, leaders) = metadata(&bootstrap(&nodes)).expect("Metadata");
        let victim_id = leaders[rng.usize(0..leaders.len())] as u64;
        let victim = nodes
            .iter()
            .position(|n| n.id == victim_id)
            .expect("a node");
        nodes[victim].process.as_mut().expect("running").kill9();
        let killed = Instant::now();
        let first = common::wait_for(RECOVERY_MAX, || load.first_acks_since(killed))
            .unwrap_or_else(|| {
                panic!("iteration {iteration}: a partition took no write within {RECOVERY_MAX:?} of node {victim_id}'s kill")
            });
        let recovery = first
            .values()
            .map(|at| at.duration_since(killed))
            .max()
            .expect("12 partitions");
        println!(
            "iteration {iteration}: node {victim_id} killed; every partition took writes again after {recovery:?}"
        );
        recoveries.push(recovery);
        // Restarted only once its partitions have moved (they took writes).
        let dead = nodes[victim].process.take().expect("killed");
        drop(dead);
        nodes[victim].start();
        let all: Vec<i32> = nodes.iter().map(|n| n.id as i32).collect();
        assert!(
            common::wait_for(Duration::from_secs(60), || brokers_listed(
                &bootstrap(&nodes),
                &all
            )
            .then_some(()))
            .is_some(),
            "iteration {iteration}: node {victim_id} back"
        );
    }
    let (median, max) = median_and_max(recoveries);
    println!(
        "writes again after a kill -9: median {median:?}, max {max:?} over {iterations} kills \
         (session timeout {session_timeout_ms} ms)"
    );

    let (acked, failed) = load.finish().await;
    assert!(failed.is_empty(), "sends failed: {failed:?}");
    println!("{} records acknowledged", acked.len());
    check_topic_holds_exactly(nodes[0].process(), &acked);
}

/// Reads every partition from offset 0: each acknowledged record once, at its offset;
/// offsets dense; nothing else.
fn check_topic_holds_exactly(broker: &BrokerProcess, acked: &[Acked]) {
    let mut expected: HashMap<i32, BTreeMap<i64, &str>> = HashMap::new();
    for ack in acked {
        let previous = expected
            .entry(ack.partition)
            .or_default()
            .insert(ack.offset, &ack.value);
        assert!(
            previous.is_none(),
            "{}/{}: two records acknowledged at offset {}",
            ack.partition,
            ack.offset,
            ack.offset
        );
    }
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "failover-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut read: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "reading back timed out");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => read.entry(message.partition()).or_default().push((
                message.offset(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into(),
            )),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => panic!("reading back: {error}"),
            None => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    for partition in 0..PARTITIONS {
        let records = read.remove(&partition).unwrap_or_default();
        let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
        let dense: Vec<i64> = (0..records.len() as i64).collect();
        assert_eq!(offsets, dense, "partition {partition}: offsets not dense");
        for (offset, value) in &records {
            assert!(seen.insert(value.clone()), "{value} twice (a duplicate)");
            if let Some(acked) = expected.get(&partition).and_then(|e| e.get(offset)) {
                assert_eq!(acked, value, "partition {partition} offset {offset}");
            }
        }
        for (offset, value) in expected.get(&partition).into_iter().flatten() {
            assert!(
                (*offset as usize) < records.len(),
                "partition {partition}: acknowledged {value} at {offset} lost"
            );
        }
    }
    // Every send was answered, none failed: nothing but the acknowledged records is there.
    assert_eq!(
        seen.len(),
        acked.len(),
        "records read back against acknowledged"
    );
}
