//! Partition moves through real processes: three brokers on a three-controller quorum share
//! one object store. A partition moved again and again under an idempotent acks=all load
//! loses no acknowledged record, duplicates none, and keeps its offsets dense; the producer
//! only pauses (each move seals the partition on its old leader, uploads its WAL tail, and
//! opens it on the new one).
//!
//! A fourth broker started under load gets its share of the partitions from the controller's
//! balancer, and a drained one (`sluice broker drain`) gives them back; busy partitions
//! spread over the brokers even when the counts are even (the balancer weighs partitions by
//! the bytes the brokers report in their heartbeats).
//!
//! `SLUICE_MOVE_ITERATIONS` sets the moves (default 6; issue 24's acceptance runs 100),
//! `SLUICE_MOVE_RATE` the records per second (default 2000; the acceptance runs 20000). The
//! gaps the producer saw (last acknowledgement before a move to the first after it) are
//! printed, not asserted: speed is for benchmarks.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use common::BrokerProcess;
use common::quorum::{CLUSTER_CHANGE_MAX, Quorum, leaders};
use rdkafka::producer::FutureRecord;
use sluice_net::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use sluice_net::{Request, Response};

const TOPIC: &str = "moving";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Asks `broker` to move partition 0 of `TOPIC` to broker `to`; panics on a refusal.
fn ask_move(broker: &BrokerProcess, to: i32) {
    let mut raw = common::raw::RawClient::connect(broker);
    let request = AlterPartitionReassignmentsRequest {
        topics: vec![ReassignableTopic {
            name: TOPIC.into(),
            partitions: vec![ReassignablePartition {
                partition_index: 0,
                replicas: Some(vec![to]),
            }],
        }],
        ..Default::default()
    };
    let Response::AlterPartitionReassignments(answer) =
        raw.call(0, Request::AlterPartitionReassignments(request))
    else {
        panic!("an AlterPartitionReassignments answer");
    };
    assert_eq!(answer.error_code, 0, "{answer:?}");
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "{answer:?}");
}

/// One acknowledgement: (sequence number, partition, offset, when).
type Ack = (u64, i32, i64, Instant);

/// An idempotent acks=all producer sending records "0", "1", ... (padded to `value_bytes`) to
/// `topic` at a steady rate, record `n` to `partitions[n % partitions.len()]`, each awaited
/// in the background.
struct Load {
    value_bytes: usize,
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Load {
    fn start(
        broker: &BrokerProcess,
        topic: &'static str,
        partitions: Vec<i32>,
        rate: u64,
        value_bytes: usize,
    ) -> Load {
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let producer = common::idempotent_producer(broker);
        let task = tokio::spawn({
            let (acks, stop) = (acks.clone(), stop.clone());
            async move {
                let mut pending = FuturesUnordered::new();
                let started = Instant::now();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let due = started.elapsed().as_secs_f64() * rate as f64;
                    while (sent as f64) < due {
                        let value = format!("{sent:<value_bytes$}");
                        let partition = partitions[(sent % partitions.len() as u64) as usize];
                        let record = FutureRecord::<(), _>::to(topic)
                            .partition(partition)
                            .payload(&value);
                        let delivery = producer
                            .send_result(record)
                            .unwrap_or_else(|(e, _)| panic!("record {sent} not queued: {e}"));
                        let seq = sent;
                        pending.push(async move { (seq, delivery.await) });
                        sent += 1;
                    }
                    // Collects what is acknowledged, one millisecond at a time.
                    let tick = tokio::time::sleep(Duration::from_millis(1));
                    tokio::pin!(tick);
                    loop {
                        tokio::select! {
                            Some((seq, outcome)) = pending.next() => {
                                acknowledged(&acks, seq, outcome);
                            }
                            _ = &mut tick => break,
                        }
                    }
                }
                while let Some((seq, outcome)) = pending.next().await {
                    acknowledged(&acks, seq, outcome);
                }
                sent
            }
        });
        Load {
            value_bytes,
            acks,
            stop,
            task,
        }
    }

    /// Records acknowledged so far.
    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits until `count` more records are acknowledged.
    fn wait_for_more(&self, count: usize, what: &str) {
        let before = self.acked();
        common::wait_for(CLUSTER_CHANGE_MAX, || {
            (self.acked() >= before + count).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: the load is not acknowledged"));
    }

    /// Stops sending, waits for the records in flight, and checks that every record was
    /// acknowledged once, at dense offsets of its partition in the order sent; returns the
    /// acknowledgements in time order and each partition's values in offset order.
    async fn finish(self) -> (Vec<Ack>, HashMap<i32, Vec<String>>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.task.await.expect("the load ran");
        let mut acks = self.acks.lock().unwrap().clone();
        assert_eq!(acks.len() as u64, sent, "every record acknowledged");
        acks.sort_by_key(|(seq, _, _, _)| *seq);
        let mut expected: HashMap<i32, Vec<String>> = HashMap::new();
        for (seq, partition, offset, _) in &acks {
            let values = expected.entry(*partition).or_default();
            assert_eq!(
                *offset,
                values.len() as i64,
                "record {seq}: offsets dense, in the order sent"
            );
            values.push(format!(
                "{seq:<value_bytes$}",
                value_bytes = self.value_bytes
            ));
        }
        acks.sort_by_key(|(_, _, _, at)| *at);
        (acks, expected)
    }
}

/// Keeps record `seq`'s acknowledgement; panics if it failed.
fn acknowledged(
    acks: &Mutex<Vec<Ack>>,
    seq: u64,
    outcome: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) {
    let delivery = outcome
        .expect("delivery future kept")
        .unwrap_or_else(|(e, _)| panic!("record {seq} not acknowledged: {e}"));
    acks.lock()
        .unwrap()
        .push((seq, delivery.partition, delivery.offset, Instant::now()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_under_an_idempotent_load_without_loss_or_duplicate() {
    let moves = env_or("SLUICE_MOVE_ITERATIONS", 6) as usize;
    let rate = env_or("SLUICE_MOVE_RATE", 2000).max(1);
    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start(root.path(), &[]);
    let brokers: Vec<BrokerProcess> = (10..13)
        .map(|id| quorum.shared_broker(root.path(), id))
        .collect();
    brokers[0].create_topic(TOPIC, 1).await;
    let mut leader = leaders(&brokers[0], TOPIC, &[10, 11, 12])[&0];

    let load = Load::start(&brokers[1], TOPIC, vec![0], rate, 1);
    let mut windows = Vec::new();
    for round in 0..moves {
        load.wait_for_more(50, "before the move");
        let to = [10, 11, 12]
            .into_iter()
            .filter(|id| *id != leader)
            .nth(round % 2)
            .expect("two other brokers");
        let asked = Instant::now();
        ask_move(&brokers[round % 3], to);
        let moved = common::wait_for(CLUSTER_CHANGE_MAX, || {
            (leaders(&brokers[0], TOPIC, &[10, 11, 12])[&0] == to).then_some(())
        });
        assert!(moved.is_some(), "move {round}: broker {to} never led it");
        load.wait_for_more(50, "after the move");
        windows.push((asked, Instant::now()));
        leader = to;
    }
    let (acks, expected) = load.finish().await;

    // The producer's view of each move: the longest pause between two acknowledgements in
    // its window.
    let mut gaps: Vec<Duration> = windows
        .iter()
        .map(|(from, to)| {
            acks.windows(2)
                .filter(|pair| pair[1].3 >= *from && pair[0].3 <= *to)
                .map(|pair| pair[1].3 - pair[0].3)
                .max()
                .unwrap_or_default()
        })
        .collect();
    gaps.sort_unstable();
    let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q).round() as usize];
    println!(
        "{moves} moves at {rate} records/s: producer gap median {:?}, p99 {:?}, max {:?}; {} records",
        at(0.5),
        at(0.99),
        gaps.last().copied().unwrap_or_default(),
        acks.len()
    );
    common::assert_topic_holds(&brokers[2], TOPIC, &expected);
}

/// The partitions each broker leads, by Metadata.
fn led_counts(broker: &BrokerProcess, topic: &str, brokers: &[i32]) -> HashMap<i32, usize> {
    let mut counts: HashMap<i32, usize> = brokers.iter().map(|id| (*id, 0)).collect();
    for leader in leaders(broker, topic, brokers).values() {
        *counts.entry(*leader).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_broker_gets_its_share_under_load_and_a_drained_one_gives_it_back() {
    const SPREAD: &str = "spread";
    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start(root.path(), &[]);
    let mut brokers: Vec<BrokerProcess> = (10..13)
        .map(|id| quorum.shared_broker(root.path(), id))
        .collect();
    brokers[0].create_topic(SPREAD, 24).await;
    assert_eq!(
        led_counts(&brokers[0], SPREAD, &[10, 11, 12]),
        HashMap::from([(10, 8), (11, 8), (12, 8)])
    );
    let load = Load::start(&brokers[1], SPREAD, (0..24).collect(), 2000, 1);
    load.wait_for_more(200, "three brokers");

    // A fourth broker: the balancer gives it six of the 24, a few moves at a time.
    brokers.push(quorum.shared_broker(root.path(), 13));
    let started = Instant::now();
    let all = [10, 11, 12, 13];
    let shared = common::wait_for(CLUSTER_CHANGE_MAX, || {
        let counts = led_counts(&brokers[0], SPREAD, &all);
        counts.values().all(|n| *n == 6).then_some(counts)
    });
    assert!(shared.is_some(), "the new broker gets its share");
    println!("broker 13 leads 6 of 24 after {:?}", started.elapsed());
    load.wait_for_more(200, "four brokers");

    // Drained, it gives them back; `sluice broker drain` waits until it leads none.
    let started = Instant::now();
    let drained = std::process::Command::new(common::sluice_binary())
        .args(["broker", "drain", "13", "--brokers", &brokers[0].bootstrap])
        .args(["--format", "json"])
        .output()
        .expect("sluice runs");
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&drained.stdout).expect("JSON from sluice broker drain");
    assert_eq!(answer[0]["partitions_moved"], 6, "{answer}");
    println!("broker 13 drained after {:?}", started.elapsed());
    assert_eq!(led_counts(&brokers[0], SPREAD, &all)[&13], 0);
    load.wait_for_more(200, "broker 13 drained");
    // A topic created now gets nothing on it.
    brokers[0].create_topic("after-drain", 6).await;
    assert_eq!(led_counts(&brokers[0], "after-drain", &all)[&13], 0);

    let (_, expected) = load.finish().await;
    common::assert_topic_holds(&brokers[2], SPREAD, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_partitions_spread_over_the_brokers_even_when_the_counts_are_even() {
    let root = tempfile::tempdir().expect("tempdir");
    let quorum = Quorum::start(root.path(), &[]);
    let brokers: Vec<BrokerProcess> = (10..12)
        .map(|id| quorum.shared_broker(root.path(), id))
        .collect();
    brokers[0].create_topic("busy", 4).await;
    brokers[0].create_topic("quiet", 4).await;
    // Both of broker 10's "busy" partitions get about 1 MB/s each; nothing else is written.
    let before = leaders(&brokers[0], "busy", &[10, 11]);
    let mut hot: Vec<i32> = before
        .iter()
        .filter(|(_, leader)| **leader == 10)
        .map(|(partition, _)| *partition)
        .collect();
    hot.sort_unstable();
    assert_eq!(hot.len(), 2, "{before:?}");
    let load = Load::start(&brokers[1], "busy", hot.clone(), 2000, 1000);
    // The balancer swaps one of them with an idle partition of broker 11: each broker
    // carries about 1 MB/s and still leads four.
    let started = Instant::now();
    let spread = common::wait_for(CLUSTER_CHANGE_MAX, || {
        let now = leaders(&brokers[0], "busy", &[10, 11]);
        let led_by_10 = now.values().filter(|l| **l == 10).count()
            + led_counts(&brokers[0], "quiet", &[10, 11])[&10];
        (now[&hot[0]] != now[&hot[1]] && led_by_10 == 4).then_some(now)
    });
    let spread = spread.expect("the busy partitions spread");
    println!("busy partitions spread after {:?}", started.elapsed());
    // And stay spread: two seconds of load later (several heartbeats' worth of noisy
    // rates), nothing moved back and forth.
    load.wait_for_more(4000, "spread");
    assert_eq!(leaders(&brokers[0], "busy", &[10, 11]), spread);
    let (_, expected) = load.finish().await;
    common::assert_topic_holds(&brokers[0], "busy", &expected);
}
