//! Broker metrics for Prometheus: counters each shard's thread writes without locks, figures it
//! samples every second (WAL, pools, groups), and the object store's own counters; the admin
//! HTTP thread (`admin_http.rs`) reads them all and renders the text format (`exposition.rs`).

pub mod counter;
pub mod exposition;
pub mod histogram;
pub mod produce_stages;
pub mod sampler;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sluice_objstore::ObjectStore;

use crate::api::implemented::IMPLEMENTED_APIS;
use crate::group::census::GroupCensus;

pub use counter::Counter;
pub use histogram::{HistogramSnapshot, LatencyHistogram};

/// Every metric of one broker, shared by the shards (writers) and the admin server (reader).
pub struct BrokerMetrics {
    shards: Vec<Arc<ShardMetrics>>,
    objects: ObjectStore,
    /// The controller, once started: the quorum's gauges come from it.
    controller: std::sync::OnceLock<crate::controller::ControllerHandle>,
}

impl BrokerMetrics {
    /// Each partition's bytes produced and fetched on this broker so far, for the
    /// controller's balancer (sent with the heartbeats).
    pub fn partition_traffic(&self) -> Vec<sluice_metadata::quorum::PartitionTraffic> {
        self.shards
            .iter()
            .flat_map(|shard| shard.partitions())
            .map(|p| sluice_metadata::quorum::PartitionTraffic {
                topic: p.topic.clone(),
                partition: p.partition,
                bytes: p.produce_bytes.get().saturating_add(p.fetch_bytes.get()),
            })
            .collect()
    }

    /// Metrics of `shard_count` shards over the object store `objects`.
    pub fn new(shard_count: usize, objects: ObjectStore) -> BrokerMetrics {
        BrokerMetrics {
            shards: (0..shard_count)
                .map(|id| Arc::new(ShardMetrics::new(id)))
                .collect(),
            objects,
            controller: std::sync::OnceLock::new(),
        }
    }

    /// Gives the metrics the controller, whose quorum state they show from then on.
    pub fn set_controller(&self, controller: crate::controller::ControllerHandle) {
        let _ = self.controller.set(controller);
    }

    /// The metrics shard `id` writes.
    pub fn shard(&self, id: usize) -> Arc<ShardMetrics> {
        self.shards[id].clone()
    }

    /// Every metric in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let controller = self.controller.get();
        let quorum = controller.and_then(|c| Some((c.quorum_status()?, c.image())));
        exposition::render(
            &self.shards,
            &self.objects.stats().snapshot(),
            quorum.as_ref().map(|(status, image)| (status, &**image)),
        )
    }
}

/// What one shard counts; only that shard's thread writes it.
pub struct ShardMetrics {
    /// The shard's index.
    pub shard: usize,
    /// Batches this shard ordered as the owner of their partition.
    pub produce_batches: Counter,
    /// Records in those batches.
    pub produce_records: Counter,
    /// Bytes of those batches.
    pub produce_bytes: Counter,
    /// Reads this shard served as the owner (fetches of one partition).
    pub fetch_reads: Counter,
    /// Bytes those reads returned.
    pub fetch_bytes: Counter,
    /// Reads served from objects through the block cache.
    pub fetch_cold_reads: Counter,
    /// Connections accepted.
    pub connections_accepted: Counter,
    /// Connections handed over to the shard owning their partitions.
    pub connections_moved: Counter,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Counter,
    /// Successful SASL authentications (re-authentications included).
    pub sasl_authentications: Counter,
    /// Failed SASL authentications (bad credentials, unknown user or mechanism).
    pub sasl_authentication_failures: Counter,
    /// Connections open now.
    pub connections_open: Counter,
    /// Milliseconds of throttle given to clients above their quotas, per
    /// `quota::QuotaType` (produce, fetch, request).
    pub quota_throttle_ms: [Counter; 3],
    /// Times a request from the mesh waited because the shard ran `--shard-tasks-max` tasks.
    pub tasks_waits: Counter,
    /// Where produce requests spend their time, stage by stage.
    pub produce_stages: produce_stages::ProduceStages,
    /// Request latency, from the whole frame read to the response ready, per entry of
    /// `api::IMPLEMENTED_APIS`.
    requests: Vec<LatencyHistogram>,
    sample: Mutex<Option<ShardSample>>,
    partitions: Mutex<PartitionRegistry>,
}

/// Figures a shard copies every [`sampler::SAMPLE_INTERVAL`]: they live in structures only its
/// thread may touch.
#[derive(Debug, Clone)]
pub struct ShardSample {
    /// The WAL's figures.
    pub wal: sluice_wal::WalStats,
    /// Partitions this shard owns and has opened.
    pub partitions: u64,
    /// Bytes of request frames held now (the network pool).
    pub request_memory_used_bytes: u64,
    /// The size of the request memory pool.
    pub request_memory_capacity_bytes: u64,
    /// Bytes of the shard's memory pool in chunks (frames and log-cache batches).
    pub memory_pool_used_bytes: u64,
    /// The size of the shard's memory pool.
    pub memory_pool_capacity_bytes: u64,
    /// Times a frame or batch waited for the memory pool.
    pub memory_pool_waits_total: u64,
    /// Bytes of batches in the partitions' log caches.
    pub log_cache_bytes: u64,
    /// The log cache's budget.
    pub log_cache_capacity_bytes: u64,
    /// Bytes held by the block cache of cold reads.
    pub block_cache_bytes: u64,
    /// Groups and members this shard coordinates, by state.
    pub groups: GroupCensus,
}

/// What one partition counts; only its owner shard's thread writes it.
#[derive(Debug)]
pub struct PartitionMetrics {
    /// The topic's name.
    pub topic: String,
    /// The partition's index.
    pub partition: u32,
    /// Batches appended.
    pub produce_batches: Counter,
    /// Bytes of batches appended.
    pub produce_bytes: Counter,
    /// Bytes returned by reads.
    pub fetch_bytes: Counter,
}

/// The partitions of a shard, held weakly: a partition the shard drops drops out of the
/// metrics at the next prune.
#[derive(Default)]
struct PartitionRegistry {
    partitions: Vec<Weak<PartitionMetrics>>,
    // Prune when the list reaches this length, so registering stays O(1) amortised.
    prune_at_len: usize,
}

/// The smallest list length at which dead partitions are pruned.
const PARTITION_PRUNE_LEN_MIN: usize = 64;

impl ShardMetrics {
    /// Zeroed metrics of shard `shard`.
    pub fn new(shard: usize) -> ShardMetrics {
        ShardMetrics {
            shard,
            produce_batches: Counter::default(),
            produce_records: Counter::default(),
            produce_bytes: Counter::default(),
            fetch_reads: Counter::default(),
            fetch_bytes: Counter::default(),
            fetch_cold_reads: Counter::default(),
            connections_accepted: Counter::default(),
            connections_moved: Counter::default(),
            tls_handshake_failures: Counter::default(),
            quota_throttle_ms: Default::default(),
            sasl_authentications: Counter::default(),
            sasl_authentication_failures: Counter::default(),
            connections_open: Counter::default(),
            tasks_waits: Counter::default(),
            produce_stages: produce_stages::ProduceStages::default(),
            requests: IMPLEMENTED_APIS
                .iter()
                .map(|_| LatencyHistogram::default())
                .collect(),
            sample: Mutex::new(None),
            partitions: Mutex::new(PartitionRegistry::default()),
        }
    }

    /// Records a request of wire key `api_key` that took `latency`; keys the broker does not
    /// serve are not recorded (their connections are closed).
    pub fn record_request(&self, api_key: i16, latency: Duration) {
        if let Some(index) = IMPLEMENTED_APIS.iter().position(|k| *k as i16 == api_key) {
            self.requests[index].record(latency);
        }
    }

    /// The latency histograms per API name, for APIs that served a request.
    pub fn requests(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        IMPLEMENTED_APIS
            .iter()
            .zip(&self.requests)
            .map(|(key, histogram)| (key.name(), histogram.snapshot()))
            .filter(|(_, snapshot)| snapshot.count() > 0)
            .collect()
    }

    /// Replaces the sampled figures.
    pub fn store_sample(&self, sample: ShardSample) {
        *lock(&self.sample) = Some(sample);
    }

    /// The last sampled figures (None before the first sample).
    pub fn sample(&self) -> Option<ShardSample> {
        lock(&self.sample).clone()
    }

    /// Adds a partition the shard opened; it is exported while the shard holds it.
    pub fn register_partition(&self, partition: &Arc<PartitionMetrics>) {
        let mut registry = lock(&self.partitions);
        if registry.partitions.len() >= registry.prune_at_len.max(PARTITION_PRUNE_LEN_MIN) {
            registry.partitions.retain(|p| p.strong_count() > 0);
            registry.prune_at_len = registry.partitions.len() * 2;
        }
        registry.partitions.push(Arc::downgrade(partition));
    }

    /// The partitions the shard holds now.
    pub fn partitions(&self) -> Vec<Arc<PartitionMetrics>> {
        lock(&self.partitions)
            .partitions
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

impl PartitionMetrics {
    /// Zeroed metrics of `topic`/`partition`.
    pub fn new(topic: &str, partition: u32) -> PartitionMetrics {
        PartitionMetrics {
            topic: topic.to_string(),
            partition,
            produce_batches: Counter::default(),
            produce_bytes: Counter::default(),
            fetch_bytes: Counter::default(),
        }
    }
}

/// Locks `mutex`; a panic while it was held leaves plain figures behind, still worth reading.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
