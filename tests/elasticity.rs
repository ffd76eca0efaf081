//! Partition moves through real processes: three brokers on a three-controller quorum share
//! one object store. A partition moved again and again under an idempotent acks=all load
//! loses no acknowledged record, duplicates none, and keeps its offsets dense; the producer
//! only pauses (each move seals the partition on its old leader, uploads its WAL tail, and
//! opens it on the new one).
//!
//! `SLUICE_MOVE_ITERATIONS` sets the moves (default 6; issue 24's acceptance runs 100),
//! `SLUICE_MOVE_RATE` the records per second (default 2000; the acceptance runs 20000). The
//! gaps the producer saw (last acknowledgement before a move to the first after it) are
//! printed, not asserted: speed is for benchmarks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Acknowledgements: (sequence number, offset, when).
type Acks = Arc<Mutex<Vec<(u64, i64, Instant)>>>;

/// Keeps record `seq`'s acknowledgement; panics if it failed.
fn acknowledged(
    acks: &Acks,
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
        .push((seq, delivery.offset, Instant::now()));
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

    // The load: records "0", "1", ... at `rate` per second, in order, each awaited in the
    // background; every acknowledgement is kept with its offset and instant.
    let acks: Acks = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = common::idempotent_producer(&brokers[1]);
    let load = tokio::spawn({
        let (acks, stop, producer) = (acks.clone(), stop.clone(), producer.clone());
        async move {
            let mut pending = futures::stream::FuturesUnordered::new();
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = started.elapsed().as_secs_f64() * rate as f64;
                while (sent as f64) < due {
                    let value = sent.to_string();
                    let delivery = producer
                        .send_result(
                            FutureRecord::<(), _>::to(TOPIC)
                                .partition(0)
                                .payload(&value),
                        )
                        .unwrap_or_else(|(e, _)| panic!("record {sent} not queued: {e}"));
                    let seq = sent;
                    pending.push(async move { (seq, delivery.await) });
                    sent += 1;
                }
                // Collects what is acknowledged, one millisecond at a time.
                let tick = tokio::time::sleep(Duration::from_millis(1));
                tokio::pin!(tick);
                loop {
                    use futures::StreamExt;
                    tokio::select! {
                        Some((seq, outcome)) = pending.next() => {
                            acknowledged(&acks, seq, outcome);
                        }
                        _ = &mut tick => break,
                    }
                }
            }
            use futures::StreamExt;
            while let Some((seq, outcome)) = pending.next().await {
                acknowledged(&acks, seq, outcome);
            }
            sent
        }
    });

    let acked = || acks.lock().unwrap().len();
    let mut windows = Vec::new();
    for round in 0..moves {
        // Records flow before each move.
        let before = acked();
        common::wait_for(CLUSTER_CHANGE_MAX, || (acked() > before + 50).then_some(()))
            .expect("the load is acknowledged");
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
        // Records flow on the new leader.
        let after = acked();
        common::wait_for(CLUSTER_CHANGE_MAX, || (acked() > after + 50).then_some(()))
            .expect("the load goes on after the move");
        windows.push((asked, Instant::now(), asked.elapsed()));
        leader = to;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.expect("the load ran");

    // The producer's view of each move: the longest pause between two acknowledgements in
    // its window.
    let mut acks = acks.lock().unwrap().clone();
    acks.sort_by_key(|(_, _, at)| *at);
    let mut gaps: Vec<Duration> = windows
        .iter()
        .map(|(from, to, _)| {
            acks.windows(2)
                .filter(|pair| pair[1].2 >= *from && pair[0].2 <= *to)
                .map(|pair| pair[1].2 - pair[0].2)
                .max()
                .unwrap_or_default()
        })
        .collect();
    gaps.sort_unstable();
    let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q).round() as usize];
    println!(
        "{moves} moves at {rate} records/s: producer gap median {:?}, p99 {:?}, max {:?}; {sent} records",
        at(0.5),
        at(0.99),
        gaps.last().copied().unwrap_or_default()
    );

    // Every record acknowledged once, at the offset it was acknowledged at; offsets dense,
    // in the order sent.
    assert_eq!(acks.len() as u64, sent, "every record acknowledged");
    let mut by_offset = acks.clone();
    by_offset.sort_by_key(|(_, offset, _)| *offset);
    for (expected, (seq, offset, _)) in by_offset.iter().enumerate() {
        assert_eq!(
            (*seq, *offset),
            (expected as u64, expected as i64),
            "offsets dense and in send order"
        );
    }
    let mut expected = std::collections::HashMap::new();
    expected.insert(0, (0..sent).map(|seq| seq.to_string()).collect::<Vec<_>>());
    common::assert_topic_holds(&brokers[2], TOPIC, &expected);
}
