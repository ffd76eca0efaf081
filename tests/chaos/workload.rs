//! The clients of a scenario, recording into a [`History`]: an idempotent acks=all producer of
//! keyed records (each value starts with a unique id), in half of the scenarios a transactional
//! producer beside it (committing most transactions, aborting some), a committer of group
//! offsets, and the final full scans of every partition (read_committed too when transactions
//! ran).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::checker::{Event, Isolation, RecordId, TxnId};
use crate::rng::Rng;

/// Events one history holds at most (a limit on what grows; far above what a workload of
/// `RECORDS_MAX` records, its commits and two scans record).
const EVENTS_MAX: usize = 1 << 20;
/// Records one workload sends at most.
pub const RECORDS_MAX: u64 = 100_000;
/// Mixed into the seed for the keys, so that they do not repeat the fault schedule's draws.
const KEYS_SALT: u64 = 0x6b65_7973;
/// Sends are paced in ticks of this length.
const TICK: Duration = Duration::from_millis(10);
/// How long a send waits for room in the producer's queue before it counts as failed.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(10);
/// The committer's pace, and how often it reads a committed offset back.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
const FETCH_EVERY: u64 = 4;
/// The committer's group.
const GROUP: &str = "chaos-committer";
/// A scan that reads nothing new for this long fails.
const SCAN_STALL: Duration = Duration::from_secs(60);
/// Time for admin and metadata calls once faults are healed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Mixed into the seed to decide whether a scenario runs the transactional producer (and its
/// choices), apart from the fault schedule's draws, so that a seed keeps its schedule.
const TXN_SALT: u64 = 0x7478_6e73;
/// The transactional producer's record ids start here, apart from the plain producer's.
const TXN_IDS_START: RecordId = 1 << 40;
/// Records per transaction at most, the share of transactions aborted on purpose, and the pace.
const TXN_RECORDS_MAX: u64 = 5;
const TXN_ABORT_PERCENT: u64 = 25;
const TXN_INTERVAL: Duration = Duration::from_millis(50);
/// The broker aborts a transaction its producer left open after this long (a producer lost in
/// a fault), so that the last stable offset moves on before the scans.
const TXN_TIMEOUT_MS: u64 = 10_000;
/// How long a transactional call may take, and how long the producer tries to come back after
/// a fatal error (a fresh producer's init fences the old one and ends its open transaction).
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const TXN_REINIT_TIMEOUT: Duration = Duration::from_secs(60);
/// A read_committed scan waits this long at most for the last stable offset to reach the
/// high watermark (every transaction ended).
const LSO_WAIT: Duration = Duration::from_secs(60);

/// The events of one scenario, in the order the clients saw them.
pub struct History {
    events: Mutex<Vec<Event>>,
    overflowed: AtomicBool,
    transactional: AtomicBool,
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History {
            events: Mutex::new(Vec::new()),
            overflowed: AtomicBool::new(false),
            transactional: AtomicBool::new(false),
        })
    }

    /// Records `event`, or notes that the history is full (it is then useless: `take` fails).
    pub fn record(&self, event: Event) {
        if let Event::Send { txn: Some(_), .. } = event {
            self.transactional.store(true, Ordering::Relaxed);
        }
        let mut events = self.events.lock().expect("history lock");
        if events.len() < EVENTS_MAX {
            events.push(event);
        } else {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether any record was sent in a transaction (then scans read read_committed too).
    pub fn transactional(&self) -> bool {
        self.transactional.load(Ordering::Relaxed)
    }

    pub fn take(&self) -> Result<Vec<Event>, String> {
        if self.overflowed.load(Ordering::Relaxed) {
            return Err(format!("the history passed {EVENTS_MAX} events"));
        }
        Ok(std::mem::take(
            &mut *self.events.lock().expect("history lock"),
        ))
    }
}

/// What the producer sends: `rate_per_s` records a second for `duration` (at most
/// `RECORDS_MAX`), each to the partition of its key.
#[derive(Clone, Debug)]
pub struct Workload {
    pub topic: String,
    pub partitions: i32,
    pub keys: u64,
    pub value_bytes: usize,
    pub rate_per_s: u64,
    pub duration: Duration,
    /// Producer settings on top of idempotence and acks=all (timeouts, mostly).
    pub producer_config: Vec<(&'static str, String)>,
}

/// What the producer ended with.
#[derive(Debug, Default)]
pub struct Produced {
    pub sent: u64,
    /// A fatal error of the idempotent producer, if it raised one.
    pub fatal: Option<String>,
    /// Transactions begun, and what the transactional producer noted (fatal errors, restarts).
    pub transactions: u64,
    pub transaction_notes: Vec<String>,
}

/// A client config for `bootstrap` (the broker process may change under it, the port not).
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        // Reconnect quickly to a restarted broker.
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200");
    config
}

pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let results = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
    ))
    .map_err(|e| format!("CreateTopics: {e}"))?;
    for result in results {
        result.map_err(|(topic, code)| format!("creating {topic} failed: {code:?}"))?;
    }
    Ok(())
}

/// The producer and the committer, running in threads of their own until `finish`.
pub struct Running {
    producer: JoinHandle<Produced>,
    transactional: Option<JoinHandle<Transacted>>,
    committer: JoinHandle<()>,
    stop_committer: Arc<AtomicBool>,
}

impl Running {
    pub fn start(
        bootstrap: &str,
        workload: &Workload,
        seed: u64,
        history: &Arc<History>,
    ) -> Running {
        let producer = std::thread::spawn({
            let (bootstrap, workload, history) =
                (bootstrap.to_string(), workload.clone(), history.clone());
            move || produce(&bootstrap, &workload, seed, &history)
        });
        let transactional = Rng::new(seed ^ TXN_SALT).chance(50).then(|| {
            let (bootstrap, workload, history) =
                (bootstrap.to_string(), workload.clone(), history.clone());
            std::thread::spawn(move || transact(&bootstrap, &workload, seed, &history))
        });
        let stop_committer = Arc::new(AtomicBool::new(false));
        let committer = std::thread::spawn({
            let (bootstrap, workload, history, stop) = (
                bootstrap.to_string(),
                workload.clone(),
                history.clone(),
                stop_committer.clone(),
            );
            move || commit_offsets(&bootstrap, &workload, &history, &stop)
        });
        Running {
            producer,
            transactional,
            committer,
            stop_committer,
        }
    }

    /// Waits for the producer to send everything and hear every outcome, then stops the
    /// committer, which reads back every committed offset (faults must be healed by then).
    pub fn finish(self) -> Produced {
        let mut produced = self.producer.join().expect("the producer thread ends");
        if let Some(transactional) = self.transactional {
            let transacted = transactional
                .join()
                .expect("the transactional producer thread ends");
            produced.sent += transacted.sent;
            produced.transactions = transacted.begun;
            produced.transaction_notes = transacted.notes;
        }
        self.stop_committer.store(true, Ordering::Relaxed);
        self.committer.join().expect("the committer thread ends");
        produced
    }
}

/// Records each delivery report into the history.
struct Recording {
    history: Arc<History>,
}

impl ClientContext for Recording {}

impl ProducerContext for Recording {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let id = id as RecordId;
        self.history.record(match result {
            Ok(message) => Event::Ack {
                id,
                partition: message.partition(),
                offset: message.offset(),
            },
            Err((error, _)) => Event::Fail {
                id,
                error: error.to_string(),
            },
        });
    }
}

/// A record's value: its id and key, padded to `bytes`.
pub fn value(id: RecordId, key: &str, bytes: usize) -> Vec<u8> {
    let mut value = format!("{id}:{key}:").into_bytes();
    value.resize(bytes.max(value.len()), b'x');
    value
}

/// The id at the start of a value written by `value`.
pub fn id_of(value: &[u8]) -> Option<RecordId> {
    let end = value.iter().position(|b| *b == b':')?;
    std::str::from_utf8(&value[..end]).ok()?.parse().ok()
}

fn produce(bootstrap: &str, workload: &Workload, seed: u64, history: &Arc<History>) -> Produced {
    let mut config = client_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2");
    for (key, value) in &workload.producer_config {
        config.set(*key, value);
    }
    let producer: ThreadedProducer<Recording> = config
        .create_with_context(Recording {
            history: history.clone(),
        })
        .expect("the producer is configured right");
    let mut rng = Rng::new(seed ^ KEYS_SALT);
    let per_tick = (workload.rate_per_s * TICK.as_millis() as u64 / 1000).max(1);
    let started = Instant::now();
    let mut next_tick = started;
    let mut id: RecordId = 0;
    while started.elapsed() < workload.duration && id < RECORDS_MAX {
        for _ in 0..per_tick {
            send_drawn(&producer, workload, history, &mut rng, id, "k", None);
            id += 1;
        }
        // Pacing, not waiting for a condition: the workload's rate.
        next_tick += TICK;
        std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
    }
    // Every send has an outcome within message.timeout.ms; flush waits for them.
    let _ = producer.flush(Timeout::After(Duration::from_secs(120)));
    Produced {
        sent: id,
        fatal: producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}")),
        ..Produced::default()
    }
}

/// What the transactional producer did.
struct Transacted {
    begun: u64,
    sent: u64,
    notes: Vec<String>,
}

/// A transactional producer, ready (its transactions initialised), or the reason it is not
/// after `TXN_REINIT_TIMEOUT`.
fn transactional_producer(
    bootstrap: &str,
    workload: &Workload,
    history: &Arc<History>,
) -> Result<ThreadedProducer<Recording>, String> {
    let deadline = Instant::now() + TXN_REINIT_TIMEOUT;
    loop {
        let mut config = client_config(bootstrap);
        config
            .set("transactional.id", "chaos-txn")
            .set("transaction.timeout.ms", TXN_TIMEOUT_MS.to_string())
            .set("linger.ms", "2");
        for (key, value) in &workload.producer_config {
            config.set(*key, value);
        }
        // librdkafka refuses a message timeout longer than the transaction timeout.
        let message_timeout_ms: u64 = config
            .get("message.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(u64::MAX);
        if message_timeout_ms > TXN_TIMEOUT_MS {
            config.set("message.timeout.ms", TXN_TIMEOUT_MS.to_string());
        }
        let producer: ThreadedProducer<Recording> = config
            .create_with_context(Recording {
                history: history.clone(),
            })
            .expect("the transactional producer is configured right");
        match producer.init_transactions(TXN_CALL_TIMEOUT) {
            Ok(()) => return Ok(producer),
            Err(error) if Instant::now() >= deadline => {
                return Err(format!("init_transactions: {error}"));
            }
            // The broker may still be down or stopped by a fault; a new producer retries.
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Transactions of 1 to `TXN_RECORDS_MAX` keyed records, most committed and some aborted on
/// purpose, for the workload's duration. An outcome is recorded only when the producer
/// reports it; a transaction whose commit or abort failed stays undecided (its records may or
/// may not be visible to read_committed). After a fatal error, and at the end if the last
/// outcome is unknown, a fresh producer's init ends whatever the old one left open, so that
/// no transaction holds the last stable offset back when the scans start.
fn transact(bootstrap: &str, workload: &Workload, seed: u64, history: &Arc<History>) -> Transacted {
    let mut rng = Rng::new(seed ^ TXN_SALT ^ KEYS_SALT);
    let mut notes = Vec::new();
    let mut producer = match transactional_producer(bootstrap, workload, history) {
        Ok(producer) => producer,
        Err(error) => {
            notes.push(format!("transactional producer never started: {error}"));
            return Transacted {
                begun: 0,
                sent: 0,
                notes,
            };
        }
    };
    let started = Instant::now();
    let mut txn: TxnId = 0;
    let mut id = TXN_IDS_START;
    while started.elapsed() < workload.duration {
        let left_open = if let Err(error) = producer.begin_transaction() {
            notes.push(format!("begin_transaction: {error}"));
            true
        } else {
            txn += 1;
            for _ in 0..1 + rng.below(TXN_RECORDS_MAX) {
                // Keys of their own: per-key order holds within one producer only.
                send_drawn(&producer, workload, history, &mut rng, id, "t", Some(txn));
                id += 1;
            }
            let abort = rng.chance(TXN_ABORT_PERCENT);
            let ended = if abort {
                producer.abort_transaction(TXN_CALL_TIMEOUT)
            } else {
                producer.commit_transaction(TXN_CALL_TIMEOUT)
            };
            match ended {
                Ok(()) => {
                    history.record(Event::TxnEnd {
                        txn,
                        committed: !abort,
                    });
                    false
                }
                Err(KafkaError::Transaction(error)) if error.txn_requires_abort() => {
                    // The commit did not happen; an abort that succeeds decides it.
                    match producer.abort_transaction(TXN_CALL_TIMEOUT) {
                        Ok(()) => {
                            history.record(Event::TxnEnd {
                                txn,
                                committed: false,
                            });
                            false
                        }
                        Err(error) => {
                            notes.push(format!("txn {txn}: abort after a failed end: {error}"));
                            true
                        }
                    }
                }
                Err(error) => {
                    notes.push(format!("txn {txn}: {error}"));
                    true
                }
            }
        };
        if left_open {
            // Undecided: a fresh producer fences this one and ends the transaction.
            drop(producer);
            producer = match transactional_producer(bootstrap, workload, history) {
                Ok(producer) => producer,
                Err(error) => {
                    notes.push(format!("transactional producer did not come back: {error}"));
                    return Transacted {
                        begun: txn,
                        sent: id - TXN_IDS_START,
                        notes,
                    };
                }
            };
        }
        // Pacing: the transactional producer's rate.
        std::thread::sleep(TXN_INTERVAL);
    }
    let _ = producer.flush(Timeout::After(Duration::from_secs(30)));
    Transacted {
        begun: txn,
        sent: id - TXN_IDS_START,
        notes,
    }
}

/// Sends record `id` under a key drawn from the workload's (`key_prefix` and a number), to its
/// key's partition, recording the send first.
fn send_drawn(
    producer: &ThreadedProducer<Recording>,
    workload: &Workload,
    history: &History,
    rng: &mut Rng,
    id: RecordId,
    key_prefix: &str,
    txn: Option<TxnId>,
) {
    let key_number = rng.below(workload.keys);
    let key = format!("{key_prefix}{key_number}");
    let partition = (key_number % workload.partitions as u64) as i32;
    let payload = value(id, &key, workload.value_bytes);
    history.record(Event::Send {
        id,
        key: key.clone(),
        partition,
        txn,
    });
    send(producer, workload, history, id, &key, partition, &payload);
}

fn send(
    producer: &ThreadedProducer<Recording>,
    workload: &Workload,
    history: &History,
    id: RecordId,
    key: &str,
    partition: i32,
    payload: &[u8],
) {
    let waiting_since = Instant::now();
    loop {
        let record = BaseRecord::with_opaque_to(&workload.topic, id as usize)
            .key(key)
            .payload(payload)
            .partition(partition);
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if waiting_since.elapsed() < QUEUE_FULL_WAIT =>
            {
                // The queue drains as the broker answers; the polling thread delivers.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => {
                history.record(Event::Fail {
                    id,
                    error: format!("not enqueued: {error}"),
                });
                return;
            }
        }
    }
}

/// Commits increasing offsets (1, 2, 3, ...) round robin over the partitions, reads one back
/// now and then, and once stopped reads back every partition's (retrying while the broker
/// may still be coming back).
fn commit_offsets(bootstrap: &str, workload: &Workload, history: &History, stop: &AtomicBool) {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("socket.timeout.ms", "3000")
        .create()
        .expect("the committer is configured right");
    let partition_list = |partition: i32, offset: Offset| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&workload.topic, partition, offset)
            .expect("a valid offset");
        list
    };
    let fetch = |partition: i32| -> bool {
        let answer = consumer.committed_offsets(
            partition_list(partition, Offset::Invalid),
            Duration::from_secs(3),
        );
        let Ok(list) = answer else { return false };
        let Some(element) = list.find_partition(&workload.topic, partition) else {
            return false;
        };
        if element.error().is_err() {
            return false;
        }
        let offset = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => -1,
        };
        history.record(Event::GroupFetch {
            group: GROUP.into(),
            partition,
            offset,
        });
        true
    };
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let partition = (n % workload.partitions as u64) as i32;
        let offset = n as i64;
        let acked = consumer
            .commit(
                &partition_list(partition, Offset::Offset(offset)),
                CommitMode::Sync,
            )
            .is_ok();
        history.record(Event::GroupCommit {
            group: GROUP.into(),
            partition,
            offset,
            acked,
        });
        if n.is_multiple_of(FETCH_EVERY) {
            fetch(partition);
        }
        // Pacing: the committer's rate.
        std::thread::sleep(COMMIT_INTERVAL);
    }
    for partition in 0..workload.partitions {
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        while !fetch(partition) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads every partition of `topic` from its log start to its high watermark (taken first:
/// nothing is produced during a scan) and records each read and each partition's end.
pub fn scan(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    scan: u32,
    isolation: Isolation,
    history: &History,
) -> Result<u64, String> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "chaos-scan")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        )
        .create()
        .expect("the scanner is configured right");
    let mut ends = Vec::with_capacity(partitions as usize);
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (low, high) = match isolation {
            Isolation::ReadUncommitted => consumer
                .fetch_watermarks(topic, partition, ADMIN_TIMEOUT)
                .map_err(|e| format!("watermarks of {topic}/{partition}: {e}"))?,
            Isolation::ReadCommitted => stable_watermarks(bootstrap, &consumer, topic, partition)?,
        };
        ends.push((low, high, high <= low));
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(low))
            .expect("a valid offset");
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    let expected: i64 = ends.iter().map(|(low, high, _)| high - low).sum();
    // A bound on the reads of one scan: a broker serving records forever must not fill memory.
    let reads_max = 2 * expected as u64 + 1000;
    let mut reads = 0u64;
    let mut last_progress = Instant::now();
    while ends.iter().any(|(_, _, done)| !done) {
        if last_progress.elapsed() > SCAN_STALL || reads > reads_max {
            return Err(format!(
                "scan {scan} stalled after {reads} reads (of about {expected}); partitions not at their end: {:?}",
                (0..partitions)
                    .filter(|p| !ends[*p as usize].2)
                    .collect::<Vec<_>>()
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                reads += 1;
                last_progress = Instant::now();
                history.record(Event::Read {
                    scan,
                    isolation,
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .map(str::to_string),
                    id: message.payload().and_then(id_of),
                });
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(end) = ends.get_mut(partition as usize) {
                    end.2 = true;
                }
            }
            Some(Err(error)) => return Err(format!("scan {scan}: {error}")),
        }
    }
    for (partition, (low, high, _)) in ends.into_iter().enumerate() {
        history.record(Event::ScanEnd {
            scan,
            partition: partition as i32,
            log_start: low,
            high_watermark: high,
        });
    }
    Ok(reads)
}

/// A read_committed consumer's watermarks are the log start and the last stable offset; this
/// waits until the latter reaches the high watermark (every transaction ended, including those
/// the broker aborts on timeout), so that a full read_committed scan covers the whole log.
fn stable_watermarks(
    bootstrap: &str,
    committed: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), String> {
    let uncommitted: BaseConsumer = client_config(bootstrap)
        .create()
        .expect("the watermark reader is configured right");
    let deadline = Instant::now() + LSO_WAIT;
    loop {
        let (_, high) = uncommitted
            .fetch_watermarks(topic, partition, ADMIN_TIMEOUT)
            .map_err(|e| format!("watermarks of {topic}/{partition}: {e}"))?;
        let (low, stable) = committed
            .fetch_watermarks(topic, partition, ADMIN_TIMEOUT)
            .map_err(|e| format!("stable watermarks of {topic}/{partition}: {e}"))?;
        if stable >= high {
            return Ok((low, stable));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{topic}/{partition}: the last stable offset {stable} stayed below the high watermark {high} for {LSO_WAIT:?} (a transaction never ended)"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_id() {
        assert_eq!(id_of(&value(1234, "k7", 64)), Some(1234));
        assert_eq!(value(1, "k1", 64).len(), 64);
        assert_eq!(id_of(b"garbage"), None);
    }
}
