//! A schedule-paced producer: message *i* is due at `start + i / rate`, so a
//! slow broker cannot slow the sender down and hide its own latency
//! (coordinated omission). Each producer is one OS thread that wakes when the
//! next message is due, appends everything due to per-partition batches, and
//! sends batches over a pipelined connection when they are full or have
//! lingered, keeping at most `max_in_flight` requests per connection.
//!
//! Measured per message (OMB's definitions):
//! - publish delay = actual append time − scheduled time (µs);
//! - publish latency = append time → acknowledgement (includes linger and
//!   queueing in this client, as OMB's and librdkafka's do);
//! - the append time goes in the first 8 bytes of the payload (little-endian
//!   nanoseconds on this process's monotonic clock) for the consumers'
//!   end-to-end latency.
//!
//! Back-pressure: when `buffer_bytes` of messages are waiting (unsent or
//! unacknowledged), the producer stops taking due messages; they are taken
//! late, and the publish delay shows it.
//!
//! Helpers: `spawn`, `murmur2`, `key_partition`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use rand::Rng;
use sluice_net::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use sluice_net::{ApiKey, Request, Response};

use crate::batch::BatchWriter;
use crate::client::{Connection, Reply, is_retriable};
use crate::stats::Recorder;
use crate::workload::KeyDistributor;

/// Distinct keys in the key pool (OMB's `KeyDistributor.UNIQUE_COUNT`).
const KEY_POOL_SIZE: usize = 10_000;
/// Bytes per key (OMB's `KEY_BYTE_SIZE`).
const KEY_BYTES: usize = 7;
/// Longest nap of the pacing loop, so acknowledgements and lingering batches
/// are looked at often enough.
const NAP_MAX: Duration = Duration::from_millis(1);
/// Nap while blocked (buffer full or window full).
const NAP_BLOCKED: Duration = Duration::from_micros(50);
/// Bytes a record adds besides key and value (length, attributes, deltas, header count).
const RECORD_OVERHEAD_BYTES: usize = 16;
/// Smallest buffer a new batch starts with.
const BATCH_CAPACITY_MIN_BYTES: usize = 16 << 10;
/// How long a stopping producer waits for what it has queued to be acknowledged.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Wait between reconnection attempts.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// Producer settings (Kafka producer config names in brackets).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// 0, 1 or -1 (all). [acks]
    pub acks: i16,
    /// How long a batch may wait for more messages. [linger.ms]
    pub linger: Duration,
    /// Bytes at which a partition's batch is closed. [batch.size]
    pub batch_bytes: usize,
    /// Largest produce request (at least one batch is always sent). [max.request.size]
    pub max_request_bytes: usize,
    /// Requests in flight per connection. [max.in.flight.requests.per.connection]
    pub max_in_flight: usize,
    /// Bytes waiting to be sent or acknowledged before the producer stops taking messages. [buffer.memory]
    pub buffer_bytes: usize,
    /// Times a batch is re-sent after a retriable error. [retries]
    pub retries: u32,
    /// Wait before a retry. [retry.backoff.ms]
    pub retry_backoff: Duration,
    /// Broker-side timeout of a produce request, and this client's. [request.timeout.ms]
    pub request_timeout: Duration,
    /// Client id sent in request headers. [client.id]
    pub client_id: String,
}

/// What one producer sends.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    /// Topic name.
    pub topic: String,
    /// `(partition, leader node id)`.
    pub partitions: Vec<(i32, i32)>,
    /// Node id → `HOST:PORT`.
    pub brokers: HashMap<i32, String>,
    /// Messages per second of this producer.
    pub rate: f64,
    /// Key choice.
    pub keys: KeyDistributor,
    /// The payload of every message (its first 8 bytes carry the send time).
    pub payload: Arc<Vec<u8>>,
    /// Below `payload.len()`, each message takes a uniform random prefix of the payload of
    /// at least this many bytes (`--message-size-range`).
    pub payload_bytes_min: usize,
}

/// Starts a producer thread. Its schedule starts at `start`; it stops taking
/// messages when `stop` is set, then waits up to [`DRAIN_TIMEOUT`] for the
/// acknowledgement of what it has sent.
pub fn spawn(
    name: String,
    plan: ProducerPlan,
    config: ProducerConfig,
    start: Instant,
    recorder: Arc<Recorder>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut producer = Producer::new(plan, config, recorder, runtime)?;
            producer.run(start, &stop)
        })
        .context("starting a producer thread")
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partition of a keyed record: `toPositive(murmur2(key)) % partitions`.
pub fn key_partition(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions.max(1)
}

/// Nanoseconds on this process's monotonic clock (shared with the consumers).
pub fn now_ns() -> u64 {
    crate::epoch().elapsed().as_nanos() as u64
}

struct OpenBatch {
    writer: BatchWriter,
    bytes: usize,
    payload_bytes: u64,
    sent_ns: Vec<u64>,
    opened: Instant,
}

struct ReadyBatch {
    records: Bytes,
    sent_ns: Vec<u64>,
    /// Bytes counted against the buffer (payload and keys), released on the final outcome.
    accounted_bytes: usize,
    payload_bytes: u64,
    attempts: u32,
    not_before: Option<Instant>,
}

struct PartitionState {
    index: i32,
    leader: i32,
    /// Size of the last batch sealed, to size the next one's buffer.
    last_batch_bytes: usize,
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
}

/// State shared with the completion callbacks (which run on the connection tasks).
struct Shared {
    queued_bytes: AtomicUsize,
    retry: Mutex<Vec<(usize, ReadyBatch)>>,
    recorder: Arc<Recorder>,
}

struct Link {
    conn: Option<Arc<Connection>>,
    in_flight: Arc<AtomicUsize>,
    next_attempt: Instant,
    /// Partition slots led by this node.
    slots: Vec<usize>,
    /// Where the next request starts looking, for fairness.
    cursor: usize,
}

struct Producer {
    plan: ProducerPlan,
    config: ProducerConfig,
    runtime: tokio::runtime::Handle,
    partitions: Vec<PartitionState>,
    links: HashMap<i32, Link>,
    shared: Arc<Shared>,
    keys: Vec<[u8; KEY_BYTES]>,
    key_cursor: usize,
    sticky: usize,
    value: Vec<u8>,
    delays_us: Vec<u64>,
    produce_version: Option<i16>,
}

impl Producer {
    fn new(
        plan: ProducerPlan,
        config: ProducerConfig,
        recorder: Arc<Recorder>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Producer> {
        anyhow::ensure!(!plan.partitions.is_empty(), "a producer needs partitions");
        let partitions: Vec<PartitionState> = plan
            .partitions
            .iter()
            .map(|&(index, leader)| PartitionState {
                index,
                leader,
                last_batch_bytes: 0,
                open: None,
                ready: VecDeque::new(),
            })
            .collect();
        let mut links: HashMap<i32, Link> = HashMap::new();
        for (slot, p) in partitions.iter().enumerate() {
            links
                .entry(p.leader)
                .or_insert_with(|| Link {
                    conn: None,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    next_attempt: Instant::now(),
                    slots: Vec::new(),
                    cursor: 0,
                })
                .slots
                .push(slot);
        }
        let mut rng = rand::rng();
        let keys = (0..KEY_POOL_SIZE)
            .map(|_| {
                let mut k = [0u8; KEY_BYTES];
                for b in &mut k {
                    *b = rng.sample(rand::distr::Alphanumeric);
                }
                k
            })
            .collect();
        let sticky = rng.random_range(0..partitions.len());
        let value = plan.payload.as_ref().clone();
        Ok(Producer {
            plan,
            config,
            runtime,
            partitions,
            links,
            shared: Arc::new(Shared {
                queued_bytes: AtomicUsize::new(0),
                retry: Mutex::new(Vec::new()),
                recorder,
            }),
            keys,
            key_cursor: 0,
            sticky,
            value,
            delays_us: Vec::new(),
            produce_version: None,
        })
    }

    fn run(&mut self, start: Instant, stop: &AtomicBool) -> anyhow::Result<()> {
        let interval_ns = 1e9 / self.plan.rate;
        let mut next: u64 = 0;
        // Connect before the schedule starts so that set-up time is not charged as delay.
        self.connect_all();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let elapsed_ns = now.saturating_duration_since(start).as_nanos() as f64;
            let due = if now < start {
                0
            } else {
                (elapsed_ns / interval_ns) as u64 + 1
            };
            let wall_ms = wall_clock_ms();
            let mut appended = false;
            while next < due && self.has_room() {
                let scheduled = start + Duration::from_nanos((next as f64 * interval_ns) as u64);
                self.append(scheduled, wall_ms);
                next += 1;
                appended = true;
            }
            if appended {
                self.shared.recorder.record_delays(&self.delays_us);
                self.delays_us.clear();
            }
            self.take_retries();
            self.send_ready(Instant::now(), false);
            let now = Instant::now();
            let nap = if next < due {
                NAP_BLOCKED
            } else {
                let next_due = start + Duration::from_nanos((next as f64 * interval_ns) as u64);
                next_due.saturating_duration_since(now).min(NAP_MAX)
            };
            if !nap.is_zero() {
                std::thread::sleep(nap);
            }
        }
        self.drain();
        Ok(())
    }

    fn has_room(&self) -> bool {
        self.shared.queued_bytes.load(Ordering::Relaxed) < self.config.buffer_bytes
    }

    /// Appends message `next` (due at `scheduled`) to its partition's batch.
    fn append(&mut self, scheduled: Instant, wall_ms: i64) {
        let at = Instant::now();
        self.delays_us
            .push(at.saturating_duration_since(scheduled).as_micros() as u64);
        let sent_ns = now_ns();
        let value_bytes = if self.plan.payload_bytes_min < self.value.len() {
            rand::rng().random_range(self.plan.payload_bytes_min..=self.value.len())
        } else {
            self.value.len()
        };
        let value = &mut self.value[..value_bytes];
        let prefix = value.len().min(8);
        value[..prefix].copy_from_slice(&sent_ns.to_le_bytes()[..prefix]);
        let (slot, key) = match self.plan.keys {
            KeyDistributor::NoKey => (self.sticky, None),
            KeyDistributor::KeyRoundRobin => {
                self.key_cursor = (self.key_cursor + 1) % self.keys.len();
                let key = self.keys[self.key_cursor];
                (key_partition(&key, self.partitions.len()), Some(key))
            }
            KeyDistributor::RandomNano => {
                let key = self.keys[(sent_ns % self.keys.len() as u64) as usize];
                (key_partition(&key, self.partitions.len()), Some(key))
            }
        };
        let record_bytes = value_bytes + key.map_or(0, |k| k.len()) + RECORD_OVERHEAD_BYTES;
        let must_seal = self.partitions[slot]
            .open
            .as_ref()
            .is_some_and(|b| b.bytes + record_bytes > self.config.batch_bytes);
        if must_seal {
            self.seal(slot);
            self.send_ready(at, false);
        }
        let partition = &mut self.partitions[slot];
        let capacity = (partition.last_batch_bytes + partition.last_batch_bytes / 4).clamp(
            BATCH_CAPACITY_MIN_BYTES,
            self.config.batch_bytes + record_bytes,
        );
        let batch = partition.open.get_or_insert_with(|| OpenBatch {
            writer: BatchWriter::new(capacity),
            bytes: 0,
            payload_bytes: 0,
            sent_ns: Vec::new(),
            opened: at,
        });
        batch.writer.append(
            wall_ms,
            key.as_ref().map(|k| &k[..]),
            &self.value[..value_bytes],
        );
        batch.bytes += record_bytes;
        batch.payload_bytes += value_bytes as u64;
        batch.sent_ns.push(sent_ns);
        self.shared
            .queued_bytes
            .fetch_add(record_bytes, Ordering::Relaxed);
    }

    /// Closes a partition's open batch into its ready queue.
    fn seal(&mut self, slot: usize) {
        let Some(open) = self.partitions[slot].open.take() else {
            return;
        };
        if slot == self.sticky {
            self.sticky = (self.sticky + 1) % self.partitions.len();
        }
        let records = open.writer.finish();
        let partition = &mut self.partitions[slot];
        partition.last_batch_bytes = records.len();
        partition.ready.push_back(ReadyBatch {
            records,
            sent_ns: open.sent_ns,
            accounted_bytes: open.bytes,
            payload_bytes: open.payload_bytes,
            attempts: 0,
            not_before: None,
        });
    }

    fn take_retries(&mut self) {
        let retries = match self.shared.retry.lock() {
            Ok(mut r) if !r.is_empty() => std::mem::take(&mut *r),
            _ => return,
        };
        for (slot, batch) in retries {
            self.partitions[slot].ready.push_front(batch);
        }
    }

    fn connect_all(&mut self) {
        let leaders: Vec<i32> = self.links.keys().copied().collect();
        for leader in leaders {
            self.ensure_connected(leader);
        }
    }

    /// Whether `leader`'s connection is up, reconnecting (with back-off) when it is not.
    fn ensure_connected(&mut self, leader: i32) -> bool {
        let Some(link) = self.links.get_mut(&leader) else {
            return false;
        };
        if link.conn.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        if Instant::now() < link.next_attempt {
            return false;
        }
        link.conn = None;
        let Some(addr) = self.plan.brokers.get(&leader).cloned() else {
            link.next_attempt = Instant::now() + RECONNECT_BACKOFF;
            return false;
        };
        let connected = self.runtime.block_on(Connection::connect(
            &addr,
            &self.config.client_id,
            self.config.request_timeout,
        ));
        match connected.and_then(|c| c.version(ApiKey::Produce).map(|v| (c, v))) {
            Ok((conn, version)) => {
                self.produce_version = Some(version);
                link.conn = Some(conn);
                true
            }
            Err(e) => {
                report_once(format!("producer connection to {addr}: {e:#}"));
                link.next_attempt = Instant::now() + RECONNECT_BACKOFF;
                false
            }
        }
    }

    /// Sends what is ready, per leader, while its window has room. `flush`
    /// sends open batches without waiting for the linger time.
    fn send_ready(&mut self, now: Instant, flush: bool) {
        let leaders: Vec<i32> = self.links.keys().copied().collect();
        for leader in leaders {
            while let Some(link) = self.links.get(&leader) {
                if link.in_flight.load(Ordering::Acquire) >= self.config.max_in_flight {
                    break;
                }
                if !self.has_sendable(leader, now, flush) || !self.ensure_connected(leader) {
                    break;
                }
                let batches = self.take_request(leader, now, flush);
                if batches.is_empty() {
                    break;
                }
                self.send(leader, batches);
            }
        }
    }

    fn sendable_open(&self, slot: usize, now: Instant, flush: bool) -> bool {
        self.partitions[slot]
            .open
            .as_ref()
            .is_some_and(|b| flush || now.saturating_duration_since(b.opened) >= self.config.linger)
    }

    fn sendable_ready(&self, slot: usize, now: Instant) -> bool {
        self.partitions[slot]
            .ready
            .front()
            .is_some_and(|b| b.not_before.is_none_or(|t| t <= now))
    }

    fn has_sendable(&self, leader: i32, now: Instant, flush: bool) -> bool {
        self.links.get(&leader).is_some_and(|link| {
            link.slots
                .iter()
                .any(|&s| self.sendable_ready(s, now) || self.sendable_open(s, now, flush))
        })
    }

    /// At most one batch per partition, up to `max_request_bytes` (at least one batch).
    fn take_request(&mut self, leader: i32, now: Instant, flush: bool) -> Vec<(usize, ReadyBatch)> {
        let Some(link) = self.links.get(&leader) else {
            return Vec::new();
        };
        let slots = link.slots.clone();
        let start = link.cursor;
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        for i in 0..slots.len() {
            let slot = slots[(start + i) % slots.len()];
            if !self.sendable_ready(slot, now) && self.sendable_open(slot, now, flush) {
                self.seal(slot);
            }
            if !self.sendable_ready(slot, now) {
                continue;
            }
            let size = self.partitions[slot]
                .ready
                .front()
                .map_or(0, |b| b.records.len());
            if !taken.is_empty() && bytes + size > self.config.max_request_bytes {
                break;
            }
            if let Some(batch) = self.partitions[slot].ready.pop_front() {
                bytes += size;
                taken.push((slot, batch));
            }
        }
        if let Some(link) = self.links.get_mut(&leader) {
            link.cursor = (start + 1) % slots.len().max(1);
        }
        taken
    }

    fn send(&mut self, leader: i32, batches: Vec<(usize, ReadyBatch)>) {
        let Some(link) = self.links.get(&leader) else {
            return;
        };
        let Some(conn) = link.conn.clone() else {
            return;
        };
        let version = self.produce_version.unwrap_or(ProduceRequest::MIN_VERSION);
        let request = Request::Produce(ProduceRequest {
            transactional_id: None,
            acks: self.config.acks,
            timeout_ms: self
                .config
                .request_timeout
                .as_millis()
                .min(i32::MAX as u128) as i32,
            topic_data: vec![TopicProduceData {
                name: self.plan.topic.clone(),
                partition_data: batches
                    .iter()
                    .map(|(slot, b)| PartitionProduceData {
                        index: self.partitions[*slot].index,
                        records: Some(b.records.clone()),
                    })
                    .collect(),
            }],
        });
        let encoded = match conn.encode(&request, version) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("sluice perf: {e:#}");
                for (_, b) in batches {
                    self.shared
                        .recorder
                        .record_errors(b.sent_ns.len() as u64, false);
                    self.shared
                        .queued_bytes
                        .fetch_sub(b.accounted_bytes, Ordering::Relaxed);
                }
                return;
            }
        };
        drop(request);
        let in_flight = link.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        let shared = self.shared.clone();
        let retries = self.config.retries;
        let backoff = self.config.retry_backoff;
        let indexes: Vec<i32> = batches
            .iter()
            .map(|(slot, _)| self.partitions[*slot].index)
            .collect();
        let topic = self.plan.topic.clone();
        conn.send_encoded(
            encoded,
            self.config.acks != 0,
            Box::new(move |reply| {
                complete(reply, &topic, &indexes, batches, &shared, retries, backoff);
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }),
        );
    }

    /// After `stop`: send everything queued and wait for the acknowledgements.
    fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while Instant::now() < deadline {
            self.take_retries();
            self.send_ready(Instant::now(), true);
            let idle = self.shared.queued_bytes.load(Ordering::Acquire) == 0
                && self
                    .links
                    .values()
                    .all(|l| l.in_flight.load(Ordering::Acquire) == 0);
            if idle {
                return;
            }
            std::thread::sleep(NAP_BLOCKED * 4);
        }
        eprintln!(
            "sluice perf: producer for {} stopped with {} bytes unacknowledged after {:?}",
            self.plan.topic,
            self.shared.queued_bytes.load(Ordering::Acquire),
            DRAIN_TIMEOUT
        );
    }
}

/// Handles a produce response: latencies for the acknowledged batches,
/// errors counted, retriable failures queued for another attempt.
fn complete(
    reply: Reply,
    topic: &str,
    indexes: &[i32],
    batches: Vec<(usize, ReadyBatch)>,
    shared: &Shared,
    retries: u32,
    backoff: Duration,
) {
    let now = now_ns();
    // Per batch: None = acknowledged, Some(retriable) = failed.
    let outcome: Vec<Option<bool>> = match &reply {
        Ok(None) => vec![None; batches.len()],
        Ok(Some(Response::Produce(response))) => indexes
            .iter()
            .map(|index| {
                let code = response
                    .responses
                    .iter()
                    .filter(|t| t.name == topic)
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == *index)
                    .map(|p| p.error_code);
                match code {
                    Some(0) => None,
                    Some(code) => {
                        report_error(topic, *index, code);
                        Some(is_retriable(code))
                    }
                    None => Some(false),
                }
            })
            .collect(),
        Ok(Some(_)) => vec![Some(false); batches.len()],
        Err(e) => {
            report_once(format!("produce to {topic}: {e}"));
            vec![Some(true); batches.len()]
        }
    };
    let mut to_retry = Vec::new();
    for ((slot, mut batch), failed) in batches.into_iter().zip(outcome) {
        match failed {
            None => {
                shared.recorder.record_publish(
                    batch.sent_ns.iter().map(|&s| now.saturating_sub(s) / 1000),
                    batch.payload_bytes,
                );
                shared
                    .queued_bytes
                    .fetch_sub(batch.accounted_bytes, Ordering::AcqRel);
            }
            Some(retriable) => {
                let retry = retriable && batch.attempts < retries;
                shared
                    .recorder
                    .record_errors(batch.sent_ns.len() as u64, retry);
                if retry {
                    batch.attempts += 1;
                    batch.not_before = Some(Instant::now() + backoff);
                    to_retry.push((slot, batch));
                } else {
                    shared
                        .queued_bytes
                        .fetch_sub(batch.accounted_bytes, Ordering::AcqRel);
                }
            }
        }
    }
    if !to_retry.is_empty()
        && let Ok(mut r) = shared.retry.lock()
    {
        r.extend(to_retry);
    }
}

/// Prints a produce error code the first time it is seen (they are counted in the result).
fn report_error(topic: &str, partition: i32, code: i16) {
    report_once(format!(
        "produce to {topic}/{partition}: {}",
        crate::client::error_name(code)
    ));
}

/// Prints `message` unless it is the same as the last one printed (errors
/// are counted in the result; the log only needs to show what changed).
fn report_once(message: String) {
    static LAST: Mutex<String> = Mutex::new(String::new());
    if let Ok(mut last) = LAST.lock()
        && *last != message
    {
        eprintln!("sluice perf: {message}");
        *last = message;
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn keyed_partition_is_in_range() {
        for n in 1..20 {
            assert!(key_partition(b"somekey", n) < n);
        }
    }
}
