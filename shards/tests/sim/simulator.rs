//! The simulator: one shard (its partition store and order stage, its ShardWal over the WAL's
//! in-memory disk, its object tier over the object store's in-memory backend) driven by one
//! seed on one glommio executor, step by step, with the invariants of `model.rs` checked
//! after every step.
//!
//! Determinism: every disk operation completes after a seeded number of scheduler turns on
//! this executor, and every store fault is a function of the seed and the request, so the
//! interleaving of produces, WAL writes, syncs and crashes is the seed's alone. The metadata
//! controller (a real store in a temporary directory, on its own thread) and the object
//! store's runtime threads are only waited for while the shard has nothing else to run.

use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use sluice_metadata::{MetadataCommand, MetadataStore};
use sluice_net::ErrorCode;
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_objstore::{
    CleanerConfig, CompactionConfig, Compactor, LogCleaner, MemoryBackend, MemoryBackendBug,
    MemoryBackendConfig, ObjectStore, RetryPolicy, SealedUpload,
};
use sluice_shards::BrokerConfig;
use sluice_shards::builder::ShardBuilder;
use sluice_shards::controller::{Controller, ControllerHandle};
use sluice_shards::group::limits::GroupLimits;
use sluice_shards::metrics::BrokerMetrics;
use sluice_shards::shard::Shard;
use sluice_shards::storage::partition::AppendOutcome;
use sluice_shards::storage::request::{PartitionRead, PartitionRequest};
use sluice_shards::storage::validated_batch::ValidatedBatch;
use sluice_shards::tier::upload::{due_upload, upload_committed};
use sluice_wal::sim::{SimDisk, SimDiskBug, SimDiskConfig, SimRng, wait_turns};
use sluice_wal::{Wal, WalConfig, WalPosition};

use crate::model::{Broken, Model, SentBatch, TIMESTAMP_BASE_MS, record_value};

/// Ring capacity of the simulated WAL: small, so it wraps and fills (back-pressure).
const WAL_CAPACITY_BYTES: u64 = 256 << 10;
/// Partitions of the two topics: `sim-a` (two) and `sim-b` (one, with retention.bytes).
const PARTITIONS: usize = 3;
/// retention.bytes of `sim-b`.
const RETENTION_BYTES: i64 = 24 << 10;
/// Steps of the trace kept for a violation's report.
const TRACE_STEPS_KEPT: usize = 24;
/// Scheduler turns per round while waiting for produces, and idle rounds before the waiting
/// is taken for back-pressure (a full WAL or pool) and an upload runs.
const DRIVE_TURNS: u32 = 16;
const IDLE_ROUNDS_BEFORE_UPLOAD: u32 = 8;
/// Scheduler turns the disk may stay busy after a step before it counts as never settling.
const SETTLE_TURNS_MAX: u32 = 100_000;
/// Uploads run for one step's produces before they count as never answered.
const UPLOADS_PER_STEP_MAX: u32 = 64;
/// Restarts in a row that may fail (a fault while recovering) before recovery counts as broken.
const BOOT_ATTEMPTS_MAX: u32 = 32;
/// The upload interval, in virtual ms.
const UPLOAD_INTERVAL_MS: u64 = 1_000;
/// Disk writes and syncs that fail, per million, by default.
pub const DISK_FAULT_PPM_DEFAULT: u32 = 2_000;
/// Deletion grace of the simulated maintenance, in virtual ms.
const DELETION_GRACE_MS: u64 = 3_000;

/// What one run does.
#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub steps: u64,
    /// Parts per million of WAL disk writes that fail with EIO, and of fdatasyncs that fail
    /// (half as many writes fail with ENOSPC); 0: none.
    pub disk_fault_ppm: u32,
    /// Seeded outages, lost answers, slow answers and "store full" in the object store.
    pub store_faults: bool,
    /// Crashes (now, or after a seeded number of disk operations) and restarts.
    pub crashes: bool,
    pub disk_bug: Option<SimDiskBug>,
    pub store_bug: Option<MemoryBackendBug>,
    pub client_bug: Option<ClientBug>,
}

impl SimOptions {
    /// Every fault on, no bug.
    pub fn new(seed: u64, steps: u64) -> SimOptions {
        SimOptions {
            seed,
            steps,
            disk_fault_ppm: DISK_FAULT_PPM_DEFAULT,
            store_faults: true,
            crashes: true,
            disk_bug: None,
            store_bug: None,
            client_bug: None,
        }
    }
}

/// A deliberately broken client, to show that the duplicate check fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientBug {
    /// Retries a failed idempotent batch under a new producer epoch, which the broker rightly
    /// takes for a new batch: a batch that had landed is then stored twice.
    RetryUnderNewEpoch,
}

/// What a run did, in figures.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// FNV-1a of the whole trace: the same seed gives the same digest.
    pub digest: u64,
    pub steps: u64,
    pub batches_sent: u64,
    pub acks: u64,
    pub errors: u64,
    pub crashes: u64,
    pub uploads: u64,
    pub upload_failures: u64,
    /// Partition reads (fetches and checks) served from objects, not the log cache.
    pub cold_reads: u64,
    pub disk_write_errors: u64,
    pub disk_sync_errors: u64,
    pub blocks_damaged_by_crashes: u64,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub invariant: &'static str,
    pub detail: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation invariant broken: {} (seed {}, step {}; replay with SLUICE_SIM_SEED={})",
            self.invariant, self.seed, self.step, self.seed
        )?;
        writeln!(f, "  {}", self.detail)?;
        writeln!(f, "last steps:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Runs one seed on a fresh executor thread.
pub fn run(options: SimOptions) -> Result<SimReport, Violation> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(sluice_shards::runtime::io_memory_bytes(1))
        .spawn(move || async move { Simulator::start(options).await?.run().await })
        .expect("the simulator's executor starts")
        .join()
        .expect("the simulator ran")
}

/// A client: one producer of one partition, idempotent or not.
struct Client {
    partition: usize,
    /// (producer id, epoch) of an idempotent producer.
    idempotent: Option<(i64, i16)>,
    next_sequence: i32,
    /// A failed idempotent batch, sent again (same sequence) before anything new, across any
    /// number of restarts, until it is acknowledged.
    retry: Option<u64>,
}

struct Simulator {
    options: SimOptions,
    rng: SimRng,
    step: u64,
    trace: Trace,
    report: SimReport,
    clock_ms: u64,
    clock_base: Instant,
    _dir: tempfile::TempDir,
    controller: Option<Controller>,
    handle: ControllerHandle,
    backend: MemoryBackend,
    store: ObjectStore,
    config: Arc<BrokerConfig>,
    disk: SimDisk,
    /// Restarts so far: seeds each disk incarnation.
    incarnation: u64,
    shard: Option<Rc<Shard>>,
    /// An upload sealed and not committed yet: run again until it is.
    pending_upload: Option<SealedUpload>,
    /// The WAL failed (a write or sync error) or a crash was chosen: restart after this step.
    restart_due: bool,
    streams: Vec<u64>,
    clients: Vec<Client>,
    model: Model,
}

/// The last steps, and a digest of every line ever traced.
struct Trace {
    lines: VecDeque<String>,
    digest: u64,
    /// Print every line as it comes (`SLUICE_SIM_TRACE=1`, for replaying a seed).
    print: bool,
}

impl Trace {
    fn push(&mut self, line: String) {
        if self.print {
            println!("{line}");
        }
        for byte in line.bytes().chain([b'\n']) {
            self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.lines.len() == TRACE_STEPS_KEPT {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

type Reply = oneshot::Receiver<Result<AppendOutcome, ErrorCode>>;
/// (client, batch id, answer) of one produce.
type Answer = (usize, u64, Result<AppendOutcome, ErrorCode>);

impl Simulator {
    async fn start(options: SimOptions) -> Result<Simulator, Violation> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let metadata = MetadataStore::open(&dir.path().join("metadata"), 0).expect("metadata");
        let (controller, handle) = Controller::start(metadata, Vec::new()).expect("controller");
        let store_faults = options.store_faults;
        let backend = MemoryBackend::new(MemoryBackendConfig {
            seed: options.seed,
            unavailable_ppm: if store_faults { 30_000 } else { 0 },
            answer_lost_ppm: if store_faults { 10_000 } else { 0 },
            slow_ppm: if store_faults { 10_000 } else { 0 },
            slow_ms: 2,
            full_ppm: if store_faults { 20_000 } else { 0 },
            bug: options.store_bug,
        });
        // Read faults only while a fetch step waits for its read (see `fetch`).
        backend.set_read_faults(false);
        let store = ObjectStore::simulated(backend.clone())
            .expect("object store runtime")
            .with_retry(RetryPolicy {
                attempts_max: 3,
                attempt_timeout: Duration::from_secs(10),
                deadline: Duration::from_secs(30),
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(2),
            });
        let config = Arc::new(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            shards: 1,
            admin_listen: None,
            wal_bytes_per_shard: WAL_CAPACITY_BYTES,
            // A small budget: the log cache evicts uploaded batches, so reads go to objects.
            memory_bytes: 512 << 10,
            upload_bytes: 16 << 10,
            upload_interval: Duration::from_millis(UPLOAD_INTERVAL_MS),
            ..BrokerConfig::default()
        });
        let mut streams = Vec::new();
        for (topic, partitions, retention_bytes) in
            [("sim-a", 2, -1), ("sim-b", 1, RETENTION_BYTES)]
        {
            let configs = [
                ("retention.ms".to_string(), "-1".to_string()),
                ("retention.bytes".to_string(), retention_bytes.to_string()),
            ]
            .into_iter()
            .collect();
            let (image, _) = handle
                .submit(MetadataCommand::CreateTopic {
                    name: topic.to_string(),
                    partitions,
                    configs,
                    shards: 1,
                })
                .await
                .expect("topic created");
            let topic = image.topic(topic).expect("topic");
            streams.extend(topic.partitions.iter().map(|p| p.stream_id));
        }
        let clients = (0..PARTITIONS)
            .flat_map(|partition| {
                [
                    Client {
                        partition,
                        idempotent: Some((1_000 + partition as i64, 0)),
                        next_sequence: 0,
                        retry: None,
                    },
                    Client {
                        partition,
                        idempotent: None,
                        next_sequence: 0,
                        retry: None,
                    },
                ]
            })
            .collect();
        let mut simulator = Simulator {
            options,
            rng: SimRng::new(options.seed),
            step: 0,
            trace: Trace {
                lines: VecDeque::new(),
                digest: 0xcbf2_9ce4_8422_2325,
                print: std::env::var_os("SLUICE_SIM_TRACE").is_some(),
            },
            report: SimReport::default(),
            clock_ms: 0,
            clock_base: Instant::now(),
            _dir: dir,
            controller: Some(controller),
            handle,
            backend,
            store,
            config,
            disk: SimDisk::new(0, SimDiskConfig::default()),
            incarnation: 0,
            shard: None,
            pending_upload: None,
            restart_due: false,
            streams,
            clients,
            model: Model::new(PARTITIONS),
        };
        simulator.disk = SimDisk::new(
            sluice_wal::format::RING_OFFSET + WAL_CAPACITY_BYTES,
            simulator.disk_config(),
        );
        simulator.boot(WalPosition(0)).await?;
        Ok(simulator)
    }

    async fn run(mut self) -> Result<SimReport, Violation> {
        while self.step < self.options.steps {
            self.step += 1;
            self.run_step().await?;
            self.settle().await?;
            if self.restart_due || self.disk.is_crashed() {
                self.restart().await?;
            }
            self.check().await?;
        }
        self.count_cold_reads();
        self.shard = None;
        self.pending_upload = None;
        if let Some(controller) = self.controller.take() {
            controller.join();
        }
        self.report.steps = self.step;
        self.report.digest = self.trace.digest;
        Ok(self.report)
    }

    /// The disk of the current incarnation: its own seed, the configured faults.
    fn disk_config(&self) -> SimDiskConfig {
        let fault_ppm = self.options.disk_fault_ppm;
        SimDiskConfig {
            seed: self.options.seed ^ self.incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            latency_turns_max: 4,
            write_error_ppm: fault_ppm,
            no_space_ppm: fault_ppm / 2,
            sync_error_ppm: fault_ppm,
            bug: self.options.disk_bug,
        }
    }

    fn violation(&self, broken: Broken) -> Violation {
        Violation {
            seed: self.options.seed,
            step: self.step,
            invariant: broken.invariant,
            detail: broken.detail,
            trace: self.trace.lines.iter().cloned().collect(),
        }
    }

    fn note(&mut self, line: String) {
        self.trace.push(format!("step {}: {line}", self.step));
    }

    /// Adds the running shard's cold reads to the report (its metrics end with it).
    fn count_cold_reads(&mut self) {
        if let Some(shard) = &self.shard {
            self.report.cold_reads += shard.metrics.fetch_cold_reads.get();
        }
    }

    fn shard(&self) -> Rc<Shard> {
        self.shard.clone().expect("the shard runs between steps")
    }

    /// Lets the executor run until the disk has nothing in flight. Only then may the
    /// simulator wait for the controller or the object store (other threads): nothing else
    /// can run meanwhile, so when their answers come cannot change what happens.
    async fn settle(&self) -> Result<(), Violation> {
        for _ in 0..SETTLE_TURNS_MAX {
            if self.disk.ops_in_flight() == 0 {
                return Ok(());
            }
            wait_turns(1).await;
        }
        Err(self.violation(Broken {
            invariant: "the disk settles",
            detail: format!(
                "{} operations in flight after {SETTLE_TURNS_MAX} turns",
                self.disk.ops_in_flight()
            ),
        }))
    }

    /// One step: a seeded choice of what happens next.
    async fn run_step(&mut self) -> Result<(), Violation> {
        let advance_ms = self.rng.below(400);
        self.clock_ms += advance_ms;
        let crashes = self.options.crashes;
        match self.rng.below(100) {
            0..=44 => self.produce_burst(None).await,
            45..=49 if crashes => {
                let ops = self.rng.below(24);
                self.produce_burst(Some(ops)).await
            }
            50..=64 => self.fetch().await,
            65..=79 => self.upload().await,
            80..=84 => self.maintenance().await,
            85..=89 => self.retention().await,
            90..=93 => self.delete_records().await,
            94..=96 if crashes => {
                self.note("crash".to_string());
                self.restart_due = true;
                Ok(())
            }
            _ => {
                self.note(format!("clock +{advance_ms} ms"));
                Ok(())
            }
        }
    }

    /// Sends one to four batches from distinct clients at once, then waits for every answer,
    /// letting disk operations complete (and, optionally, the disk crash) in seeded order.
    async fn produce_burst(&mut self, crash_after_ops: Option<u64>) -> Result<(), Violation> {
        let shard = self.shard();
        let storage = shard.storage.clone();
        let count = 1 + self.rng.below(4) as usize;
        let mut chosen: Vec<usize> = Vec::new();
        for _ in 0..count {
            let client = self.rng.below(self.clients.len() as u64) as usize;
            if !chosen.contains(&client) {
                chosen.push(client);
            }
        }
        let mut replies: Vec<(usize, u64, Reply)> = Vec::new();
        for client in chosen {
            let id = self.next_batch(client);
            let sent = &self.model.batches[id as usize];
            let stream_id = self.streams[sent.partition];
            let bytes = sent.variants.last().expect("a batch has bytes").clone();
            let batch = ValidatedBatch::validate(false, Some(bytes))
                .expect("the simulator's batches are valid");
            let (reply, answer) = oneshot::channel();
            // Arrival order is ticket order, as in the router.
            if let Some(ordered) = storage.arrive(stream_id, batch, reply, Instant::now()) {
                let storage = storage.clone();
                glommio::spawn_local(async move { storage.order(ordered).await }).detach();
            }
            replies.push((client, id, answer));
        }
        if let Some(ops) = crash_after_ops {
            self.disk.crash_after_ops(ops);
        }
        let answers = self.drive(replies).await?;
        let mut line = String::from("produce");
        if let Some(ops) = crash_after_ops {
            line.push_str(&format!(" (disk crashes after {ops} ops)"));
        }
        let failed_records = self.disk.failed_records();
        for (client, id, answer) in answers {
            self.report.batches_sent += 1;
            match answer {
                Ok(outcome) => {
                    self.report.acks += 1;
                    line.push_str(&format!(" b{id}@{}", outcome.base_offset));
                    let stream_id = self.streams[self.model.batches[id as usize].partition];
                    let in_failed_write = failed_records.iter().any(|record| {
                        record.stream_id == stream_id
                            && record.first_offset == outcome.base_offset as u64
                    });
                    let acked = if in_failed_write {
                        Err(Broken {
                            invariant: "a failed write is reported as an error, never as success",
                            detail: format!(
                                "batch {id} acknowledged at {}, in a write that failed",
                                outcome.base_offset
                            ),
                        })
                    } else {
                        self.model.acked(id, outcome.base_offset)
                    };
                    if let Err(broken) = acked {
                        self.note(line);
                        return Err(self.violation(broken));
                    }
                    self.clients[client].retry = None;
                }
                Err(code) => {
                    self.report.errors += 1;
                    line.push_str(&format!(" b{id}:{code:?}"));
                    if code == ErrorCode::KafkaStorageError {
                        self.restart_due = true;
                    }
                    if self.clients[client].idempotent.is_some() {
                        self.clients[client].retry = Some(id);
                    }
                }
            }
        }
        self.note(line);
        Ok(())
    }

    /// The batch `client` sends next: its failed idempotent batch again, else a new one.
    fn next_batch(&mut self, client: usize) -> u64 {
        let Some(id) = self.clients[client].retry else {
            let id = self.model.batches.len() as u64;
            let records = 1 + self.rng.below(4) as i32;
            let bytes = self.build_batch(client, id, records);
            self.model.batches.push(SentBatch {
                partition: self.clients[client].partition,
                variants: vec![bytes],
                records,
                acked_at: None,
            });
            return id;
        };
        if self.options.client_bug == Some(ClientBug::RetryUnderNewEpoch) {
            // The broken client starts over under a new epoch with the same records: to the
            // broker a new batch.
            let state = &mut self.clients[client];
            if let Some((_, epoch)) = &mut state.idempotent {
                *epoch += 1;
            }
            state.next_sequence = 0;
            let records = self.model.batches[id as usize].records;
            let bytes = self.build_batch(client, id, records);
            self.model.batches[id as usize].variants.push(bytes);
        }
        id
    }

    /// The bytes of batch `id` of `client`, `records` records, at the client's next sequence.
    fn build_batch(&mut self, client: usize, id: u64, records: i32) -> Bytes {
        let padding = self.rng.below(600) as usize;
        let state = &mut self.clients[client];
        let mut builder = RecordBatchBuilder::new(Compression::None);
        if let Some((producer_id, epoch)) = state.idempotent {
            builder = builder.producer(producer_id, epoch, state.next_sequence);
            state.next_sequence += records;
        }
        let timestamp = TIMESTAMP_BASE_MS + self.clock_ms as i64;
        for index in 0..records {
            builder.append(
                timestamp,
                None,
                Some(&record_value(id, index, padding)),
                &[],
            );
        }
        builder.build().expect("a batch builds")
    }

    /// Lets the executor run until every reply came; when nothing moves for a while the
    /// produces wait for WAL or pool space, and an upload (as the shard's upload task would)
    /// frees it.
    async fn drive(
        &mut self,
        mut pending: Vec<(usize, u64, Reply)>,
    ) -> Result<Vec<Answer>, Violation> {
        let mut answers = Vec::new();
        let mut idle_rounds = 0;
        let mut uploads = 0;
        loop {
            let before = answers.len();
            pending.retain_mut(|(client, id, reply)| match reply.try_recv() {
                Ok(Some(answer)) => {
                    answers.push((*client, *id, answer));
                    false
                }
                Ok(None) => true,
                Err(oneshot::Canceled) => {
                    answers.push((*client, *id, Err(ErrorCode::UnknownServerError)));
                    false
                }
            });
            if pending.is_empty() {
                return Ok(answers);
            }
            idle_rounds = if answers.len() > before {
                0
            } else {
                idle_rounds + 1
            };
            if idle_rounds >= IDLE_ROUNDS_BEFORE_UPLOAD && self.disk.ops_in_flight() == 0 {
                if uploads == UPLOADS_PER_STEP_MAX {
                    return Err(self.violation(Broken {
                        invariant: "every produce is answered",
                        detail: format!(
                            "{} produces unanswered after {uploads} uploads",
                            pending.len()
                        ),
                    }));
                }
                uploads += 1;
                idle_rounds = 0;
                // Time passes while the produces wait: an upload of the oldest records is due.
                self.clock_ms += UPLOAD_INTERVAL_MS;
                self.upload().await?;
            }
            wait_turns(DRIVE_TURNS).await;
        }
    }

    /// Reads a partition from a seeded offset with the store's faults on; what comes back
    /// must be what the clients sent (the full check runs after every step anyway).
    async fn fetch(&mut self) -> Result<(), Violation> {
        let partition = self.rng.below(PARTITIONS as u64) as usize;
        let seen = &self.model.partitions[partition];
        let span = (seen.high_watermark_seen - seen.log_start_seen).max(0) as u64;
        let offset = seen.log_start_seen + self.rng.below(span + 1) as i64;
        let max_bytes = 1 + self.rng.below(8 << 10) as usize;
        // Whether a cold read meets a store fault depends on the block cache's prefetches,
        // which run on the store's threads: the outcome stays out of the trace.
        self.note(format!(
            "fetch p{partition}@{offset} up to {max_bytes} bytes"
        ));
        self.backend.set_read_faults(self.options.store_faults);
        let read = self.read(partition, offset, max_bytes).await;
        self.backend.set_read_faults(false);
        if let Ok(records) = read
            && let Err(broken) = self.model.check_fetched(partition, &records)
        {
            return Err(self.violation(broken));
        }
        Ok(())
    }

    async fn read(
        &self,
        partition: usize,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, ErrorCode> {
        let storage = self.shard().storage.clone();
        let (reply, answer) = oneshot::channel();
        storage
            .serve(PartitionRequest::Read {
                reads: vec![PartitionRead {
                    stream_id: self.streams[partition],
                    offset,
                    max_bytes,
                }],
                max_bytes,
                read_committed: false,
                reply,
            })
            .await;
        let mut slices = answer.await.map_err(|_| ErrorCode::UnknownServerError)?;
        slices
            .pop()
            .ok_or(ErrorCode::UnknownServerError)?
            .map(|s| s.records)
    }

    /// One round of the upload task at the virtual clock's time: seal what is due (or run
    /// the upload a failure left), commit it, trim the WAL.
    async fn upload(&mut self) -> Result<(), Violation> {
        let shard = self.shard();
        let storage = &shard.storage;
        let now = self.clock_base + Duration::from_millis(self.clock_ms);
        if self.pending_upload.is_none() {
            self.pending_upload = due_upload(&storage.tier, &storage.wal, storage.as_ref(), now);
        }
        let Some(sealed) = self.pending_upload.as_mut() else {
            self.note("upload: nothing due".to_string());
            return Ok(());
        };
        match sealed.run(storage.tier.store(), &storage.controller).await {
            Ok(report) => {
                self.pending_upload = None;
                self.report.uploads += 1;
                upload_committed(0, &storage.tier, &storage.wal, storage.as_ref(), &report).await;
                self.note(format!(
                    "upload: {} bytes in {} objects, WAL trimmed to {}",
                    report.bytes,
                    report.objects.len(),
                    report.wal_end_position
                ));
            }
            Err(error) => {
                self.report.upload_failures += 1;
                self.note(format!("upload failed: {error}"));
            }
        }
        Ok(())
    }

    /// One pass of the maintenance shard's compaction, retention and garbage collection.
    async fn maintenance(&mut self) -> Result<(), Violation> {
        let compactor = Compactor::new(
            self.store.clone(),
            CompactionConfig {
                step_bytes_max: 1 << 20,
                deletion_grace: Duration::from_millis(DELETION_GRACE_MS),
                ..CompactionConfig::default()
            },
        );
        let now_ms = TIMESTAMP_BASE_MS as u64 + self.clock_ms;
        let cleaner = LogCleaner::new(self.store.clone(), CleanerConfig::default());
        sluice_shards::tier::maintenance::maintain(
            &compactor,
            &cleaner,
            &AtomicBool::new(false),
            &self.handle,
            &|| now_ms,
        )
        .await;
        let objects = self.handle.image().objects().count();
        self.note(format!("maintenance: {objects} objects registered"));
        Ok(())
    }

    async fn retention(&mut self) -> Result<(), Violation> {
        self.shard().storage.apply_retention().await;
        self.note("retention".to_string());
        Ok(())
    }

    /// DeleteRecords to a seeded offset between the log start and the high watermark.
    async fn delete_records(&mut self) -> Result<(), Violation> {
        let partition = self.rng.below(PARTITIONS as u64) as usize;
        let seen = &self.model.partitions[partition];
        let span = (seen.high_watermark_seen - seen.log_start_seen).max(0) as u64;
        let offset = seen.log_start_seen + self.rng.below(span / 2 + 1) as i64;
        let storage = self.shard().storage.clone();
        let (reply, answer) = oneshot::channel();
        storage
            .serve(PartitionRequest::DeleteRecords {
                stream_id: self.streams[partition],
                offset,
                reply,
            })
            .await;
        let answer = answer.await.unwrap_or(Err(ErrorCode::UnknownServerError));
        if let Ok(start) = answer {
            let floor = &mut self.model.partitions[partition].log_start_floor;
            *floor = (*floor).max(start);
        }
        self.note(format!(
            "delete records p{partition} to {offset}: {answer:?}"
        ));
        Ok(())
    }

    /// Kills the shard (its disk keeps what a crash keeps), then restarts it over that image.
    async fn restart(&mut self) -> Result<(), Violation> {
        let durable = self.shard.as_ref().map_or(WalPosition(0), |shard| {
            shard.storage.wal.stats().durable_position
        });
        let image = self.disk.crash();
        let damaged = image
            .damage
            .iter()
            .filter(|(_, damage)| *damage != sluice_wal::sim::BlockDamage::Landed)
            .count();
        self.report.crashes += 1;
        self.report.blocks_damaged_by_crashes += damaged as u64;
        let stats = self.disk.stats();
        self.report.disk_write_errors += stats.write_errors + stats.no_space_errors;
        self.report.disk_sync_errors += stats.sync_errors;
        self.note(format!(
            "crash: WAL durable to {}, {} blocks unsynced ({damaged} damaged), disk {:?}",
            durable.0,
            image.damage.len(),
            stats
        ));
        self.count_cold_reads();
        self.shard = None;
        self.pending_upload = None;
        self.restart_due = false;
        // Let the dead shard's tasks see their errors and end.
        self.settle().await?;
        self.incarnation += 1;
        self.disk = SimDisk::from_image(image.bytes, self.disk_config());
        // As the broker does at start: objects a crash left between put and commit go.
        let store = self.store.clone();
        let image = self.handle.image();
        let orphans = sluice_shards::tier::delete_orphans(&store, &image);
        self.note(format!(
            "restart {}: orphans deleted {orphans:?}",
            self.incarnation
        ));
        self.boot(durable).await
    }

    /// Opens the WAL on the current disk and builds the shard over it; a fault while doing so
    /// is a crash during recovery, and the next attempt starts from its image.
    async fn boot(&mut self, durable: WalPosition) -> Result<(), Violation> {
        for _ in 0..BOOT_ATTEMPTS_MAX {
            let wal_config = WalConfig {
                path: "sim-wal".into(),
                capacity_bytes: WAL_CAPACITY_BYTES,
                inflight_writes_max: 4,
                group_commit_bytes_max: 16 << 10,
                ..WalConfig::default()
            };
            let opened = Wal::open_simulated(self.disk.clone(), wal_config).await;
            let (wal, records) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    self.note(format!("WAL open failed: {error}"));
                    self.crash_while_booting();
                    continue;
                }
            };
            let tail = wal.stats().append_position;
            if tail < durable {
                return Err(self.violation(Broken {
                    invariant: "the WAL never reports durable what a crash lost",
                    detail: format!(
                        "durable to {} before the crash, recovered to {}",
                        durable.0, tail.0
                    ),
                }));
            }
            let metrics = BrokerMetrics::new(1, self.store.clone()).shard(0);
            let built = ShardBuilder {
                id: 0,
                config: self.config.clone(),
                controller: self.handle.clone(),
                objects: self.store.clone(),
                metrics,
                peers: vec![None],
                group_limits: GroupLimits::from_config(&self.config),
            }
            .build_on(wal, records)
            .await;
            match built {
                Ok(built) => {
                    self.note(format!("booted: WAL recovered to {}", tail.0));
                    self.shard = Some(built.shard);
                    return Ok(());
                }
                Err(reason) => {
                    self.note(format!("shard build failed: {reason}"));
                    self.crash_while_booting();
                }
            }
        }
        Err(self.violation(Broken {
            invariant: "a crashed shard recovers",
            detail: format!("{BOOT_ATTEMPTS_MAX} restarts in a row failed"),
        }))
    }

    fn crash_while_booting(&mut self) {
        let image = self.disk.crash();
        self.incarnation += 1;
        self.disk = SimDisk::from_image(image.bytes, self.disk_config());
    }

    /// The invariants, over every partition, with the store's faults paused so that what is
    /// read is what is stored.
    async fn check(&mut self) -> Result<(), Violation> {
        self.backend.set_write_faults(false);
        let result = self.check_partitions().await;
        self.backend.set_write_faults(true);
        result
    }

    async fn check_partitions(&mut self) -> Result<(), Violation> {
        let storage = self.shard().storage.clone();
        let mut summary = Vec::new();
        for partition in 0..PARTITIONS {
            let Some(handle) = storage.partition(self.streams[partition]) else {
                continue;
            };
            let (high_watermark, log_start, _) = handle.offsets();
            let mut records = Vec::new();
            let mut offset = log_start;
            while offset < high_watermark {
                let read = self
                    .read(partition, offset, 1 << 20)
                    .await
                    .map_err(|code| {
                        self.violation(Broken {
                            invariant: "every acknowledged record is readable at its offset",
                            detail: format!("partition {partition} read at {offset}: {code:?}"),
                        })
                    })?;
                let Some(end) = end_offset(&read) else {
                    return Err(self.violation(Broken {
                        invariant: "every acknowledged record is readable at its offset",
                        detail: format!(
                            "partition {partition} read at {offset} below the high watermark {high_watermark}: nothing"
                        ),
                    }));
                };
                records.push(read);
                offset = end;
            }
            if let Err(broken) =
                self.model
                    .check_log(partition, log_start, high_watermark, &records)
            {
                return Err(self.violation(broken));
            }
            summary.push(format!("p{partition} {log_start}..{high_watermark}"));
        }
        self.note(format!("checked {}", summary.join(", ")));
        Ok(())
    }
}

/// The offset after the last whole batch of `records`.
fn end_offset(records: &Bytes) -> Option<i64> {
    sluice_net::record_batch::batches(records)
        .filter_map(Result::ok)
        .last()
        .and_then(|batch| {
            let header = sluice_net::record_batch::RecordBatchHeader::parse(&batch).ok()?;
            Some(header.base_offset() + i64::from(header.last_offset_delta()) + 1)
        })
}
