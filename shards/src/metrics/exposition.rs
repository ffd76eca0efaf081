//! Prometheus' text exposition format (version 0.0.4) of the broker's metrics: names with
//! their unit last, `_total` on counters, one `# HELP` and `# TYPE` per family.

use std::fmt::{Display, Write};
use std::sync::Arc;

use sluice_metadata::MetadataImage;
use sluice_metadata::quorum::QuorumStatus;
use sluice_objstore::StatsSnapshot;

use super::histogram::{HistogramSnapshot, LATENCY_BUCKETS};
use super::produce_stages::ProduceStage;
use super::{PartitionMetrics, ShardMetrics, ShardSample};
use crate::group::census::{GroupCensus, STATES};

/// The most per-partition series one scrape renders: partitions are taken in (topic,
/// partition) order until their series would pass this, and the rest are counted in
/// `sluice_metrics_partitions_omitted` (a bound on the scrape's size and on the series a
/// Prometheus server must hold, whatever the number of partitions).
pub const PARTITION_SERIES_MAX: usize = 10_000;

/// Series each partition adds (the per-partition families below).
const SERIES_PER_PARTITION: usize = 3;

/// The page `/metrics` serves, from every shard's metrics, the object store's counters and,
/// with a controller quorum, what this node knows of it.
pub fn render(
    shards: &[Arc<ShardMetrics>],
    objects: &StatsSnapshot,
    quorum: Option<(&QuorumStatus, &MetadataImage)>,
) -> String {
    let mut out = Exposition::default();
    render_requests(&mut out, shards);
    render_produce_stages(&mut out, shards);
    render_shard_counters(&mut out, shards);
    let samples: Vec<(usize, ShardSample)> = shards
        .iter()
        .filter_map(|s| Some((s.shard, s.sample()?)))
        .collect();
    render_samples(&mut out, &samples);
    render_groups(&mut out, &samples);
    render_partitions(&mut out, shards);
    render_objects(&mut out, objects);
    if let Some((quorum, image)) = quorum {
        render_quorum(&mut out, quorum);
        render_brokers(&mut out, image);
    }
    out.text
}

fn render_quorum(out: &mut Exposition, quorum: &QuorumStatus) {
    let leader = quorum.leader.map_or(-1, |id| id as i64);
    let families: [(&str, &str, i64); 4] = [
        (
            "sluice_quorum_leader_id",
            "The controller quorum's leader as this node knows it (-1: none).",
            leader,
        ),
        (
            "sluice_quorum_term",
            "The controller quorum's term (Kafka's leader epoch of the metadata log).",
            quorum.term as i64,
        ),
        (
            "sluice_quorum_applied_index",
            "The last metadata log index this node has applied.",
            quorum.applied_index as i64,
        ),
        (
            "sluice_quorum_voters",
            "Voters of the controller quorum.",
            quorum.voters.len() as i64,
        ),
    ];
    for (name, help, value) in families {
        out.family(name, Kind::Gauge, help);
        out.value(name, &[], value);
    }
}

/// The brokers of the cluster as this node's image has them.
fn render_brokers(out: &mut Exposition, image: &MetadataImage) {
    let brokers = image.brokers();
    let fenced = brokers.values().filter(|b| b.fenced).count();
    out.family(
        "sluice_cluster_brokers",
        Kind::Gauge,
        "Brokers registered in the cluster, by state (a fenced one's heartbeats stopped).",
    );
    out.value(
        "sluice_cluster_brokers",
        &[("state", "live")],
        brokers.len() - fenced,
    );
    out.value("sluice_cluster_brokers", &[("state", "fenced")], fenced);
    let live_led: usize = image
        .partitions_per_broker()
        .iter()
        .filter(|(id, _)| brokers.get(id).is_some_and(|b| !b.fenced))
        .map(|(_, count)| count)
        .sum();
    out.family(
        "sluice_cluster_partitions_offline",
        Kind::Gauge,
        "Partitions without a leader (their broker is fenced, or no broker has them yet).",
    );
    out.value(
        "sluice_cluster_partitions_offline",
        &[],
        image.partition_count().saturating_sub(live_led),
    );
    out.family(
        "sluice_broker_fenced",
        Kind::Gauge,
        "1 while this broker is fenced: it serves no partition until a heartbeat gets through.",
    );
    let this = brokers.get(&image.node_id).is_some_and(|b| b.fenced);
    out.value("sluice_broker_fenced", &[], u8::from(this));
    out.family(
        "sluice_cluster_coordinator_id",
        Kind::Gauge,
        "The broker coordinating groups and transactions (and running the object tier's \
         maintenance); it moves when a takeover releases its WAL. -1 while none is registered.",
    );
    out.value(
        "sluice_cluster_coordinator_id",
        &[],
        match image.coordinating_broker() {
            Some(id) if !brokers.is_empty() => i64::from(id),
            _ => -1,
        },
    );
}

/// A family with one series per shard: name, kind, help, and how to read its value.
type Family<T> = (&'static str, Kind, &'static str, fn(&T) -> u64);

/// A per-partition counter family: name, help, and how to read its value.
type PartitionFamily = (&'static str, &'static str, fn(&PartitionMetrics) -> u64);

/// The kind of a metric family.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, label_value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_into(&mut self.text, label_value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// One histogram series; bucket `i` of `histogram` counts observations under 2^i µs.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in histogram
            .buckets
            .iter()
            .enumerate()
            .take(LATENCY_BUCKETS - 1)
        {
            cumulative += count;
            let le = seconds((1u64 << i) as f64);
            let mut with_le = labels.to_vec();
            let le = le.to_string();
            with_le.push(("le", &le));
            self.value(&bucket, &with_le, cumulative);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        let count = histogram.count();
        self.value(&bucket, &with_le, count);
        self.value(
            &format!("{name}_sum"),
            labels,
            seconds(histogram.sum_us as f64),
        );
        self.value(&format!("{name}_count"), labels, count);
    }

    /// A family with one series per shard.
    fn per_shard(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        shards: &[Arc<ShardMetrics>],
        value: impl Fn(&ShardMetrics) -> u64,
    ) {
        self.family(name, kind, help);
        for shard in shards {
            self.value(name, &[("shard", &shard.shard.to_string())], value(shard));
        }
    }

    /// A family with one series per shard, from the shards' last samples.
    fn per_sample<T: Display>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: &[(usize, ShardSample)],
        value: impl Fn(&ShardSample) -> T,
    ) {
        self.family(name, kind, help);
        for (shard, sample) in samples {
            self.value(name, &[("shard", &shard.to_string())], value(sample));
        }
    }
}

fn render_requests(out: &mut Exposition, shards: &[Arc<ShardMetrics>]) {
    let per_shard: Vec<(String, Vec<(&'static str, HistogramSnapshot)>)> = shards
        .iter()
        .map(|s| (s.shard.to_string(), s.requests()))
        .collect();
    out.family(
        "sluice_requests_total",
        Kind::Counter,
        "Kafka requests answered, by the shard whose connection read them and by API.",
    );
    for (shard, requests) in &per_shard {
        for (api, histogram) in requests {
            out.value(
                "sluice_requests_total",
                &[("shard", shard), ("api", api)],
                histogram.count(),
            );
        }
    }
    // Summed over shards: per-shard latency buckets would multiply the series by the cores.
    let mut merged: Vec<(&'static str, HistogramSnapshot)> = Vec::new();
    for (_, requests) in &per_shard {
        for (api, histogram) in requests {
            match merged.iter_mut().find(|(name, _)| name == api) {
                Some((_, sum)) => sum.merge(histogram),
                None => merged.push((api, histogram.clone())),
            }
        }
    }
    merged.sort_by_key(|(api, _)| *api);
    out.family(
        "sluice_request_latency_seconds",
        Kind::Histogram,
        "Time from a request's last byte read to its response ready to write, by API.",
    );
    for (api, histogram) in &merged {
        out.histogram("sluice_request_latency_seconds", &[("api", api)], histogram);
    }
}

/// Every stage, even one nothing went through yet: a scraper diffing two scrapes (`sluice
/// perf --broker-metrics`) finds the same series in both.
fn render_produce_stages(out: &mut Exposition, shards: &[Arc<ShardMetrics>]) {
    const NAME: &str = "sluice_produce_stage_latency_seconds";
    out.family(
        NAME,
        Kind::Histogram,
        "Time produce requests spend in each stage (read, parse, order, wal_write, sync, \
         respond), summed over shards; read, parse and respond count requests, order, \
         wal_write and sync partitions' batches.",
    );
    for stage in ProduceStage::ALL {
        let mut merged = HistogramSnapshot::empty();
        for shard in shards {
            merged.merge(&shard.produce_stages.snapshot(stage));
        }
        out.histogram(NAME, &[("stage", stage.name())], &merged);
    }
}

fn render_shard_counters(out: &mut Exposition, shards: &[Arc<ShardMetrics>]) {
    let families: [Family<ShardMetrics>; 13] = [
        (
            "sluice_produce_batches_total",
            Kind::Counter,
            "Record batches appended by the shard owning their partition.",
            |s| s.produce_batches.get(),
        ),
        (
            "sluice_produce_records_total",
            Kind::Counter,
            "Records in the batches appended.",
            |s| s.produce_records.get(),
        ),
        (
            "sluice_produce_bytes_total",
            Kind::Counter,
            "Bytes of the batches appended.",
            |s| s.produce_bytes.get(),
        ),
        (
            "sluice_fetch_reads_total",
            Kind::Counter,
            "Partition reads served by the owner shard.",
            |s| s.fetch_reads.get(),
        ),
        (
            "sluice_fetch_bytes_total",
            Kind::Counter,
            "Bytes returned by partition reads.",
            |s| s.fetch_bytes.get(),
        ),
        (
            "sluice_fetch_cold_reads_total",
            Kind::Counter,
            "Partition reads served from object storage through the block cache.",
            |s| s.fetch_cold_reads.get(),
        ),
        (
            "sluice_connections_accepted_total",
            Kind::Counter,
            "Client connections accepted.",
            |s| s.connections_accepted.get(),
        ),
        (
            "sluice_connections_moved_total",
            Kind::Counter,
            "Client connections handed over to the shard owning their partitions.",
            |s| s.connections_moved.get(),
        ),
        (
            "sluice_tls_handshake_failures_total",
            Kind::Counter,
            "TLS handshakes that failed or timed out.",
            |s| s.tls_handshake_failures.get(),
        ),
        (
            "sluice_sasl_authentications_total",
            Kind::Counter,
            "Successful SASL authentications, re-authentications included.",
            |s| s.sasl_authentications.get(),
        ),
        (
            "sluice_sasl_authentication_failures_total",
            Kind::Counter,
            "Failed SASL authentications: bad credentials, unknown user or mechanism.",
            |s| s.sasl_authentication_failures.get(),
        ),
        (
            "sluice_shard_tasks_waits_total",
            Kind::Counter,
            "Requests from other shards or the shard's connections that waited for a task \
             permit (--shard-tasks-max).",
            |s| s.tasks_waits.get(),
        ),
        (
            "sluice_connections",
            Kind::Gauge,
            "Client connections open.",
            |s| s.connections_open.get(),
        ),
    ];
    for (name, kind, help, value) in families {
        out.per_shard(name, kind, help, shards, value);
    }
    let name = "sluice_quota_throttle_ms_total";
    out.family(
        name,
        Kind::Counter,
        "Milliseconds of throttle given to clients above their quotas, by quota type.",
    );
    for shard in shards {
        let id = shard.shard.to_string();
        for kind in crate::quota::QuotaType::ALL {
            let value = shard.quota_throttle_ms[kind as usize].get();
            out.value(name, &[("shard", &id), ("type", kind.label())], value);
        }
    }
}

/// Picks one of the WAL's latency histograms out of a sample.
type WalLatency = fn(&ShardSample) -> &sluice_wal::LatencyBuckets;

fn render_samples(out: &mut Exposition, samples: &[(usize, ShardSample)]) {
    let families: [Family<ShardSample>; 18] = [
        (
            "sluice_partitions",
            Kind::Gauge,
            "Partitions the shard owns and has opened.",
            |s| s.partitions,
        ),
        (
            "sluice_wal_used_bytes",
            Kind::Gauge,
            "WAL bytes between the trim and the append position (not yet in objects).",
            |s| s.wal.used_bytes,
        ),
        (
            "sluice_wal_capacity_bytes",
            Kind::Gauge,
            "WAL ring capacity.",
            |s| s.wal.capacity_bytes,
        ),
        (
            "sluice_wal_appends_total",
            Kind::Counter,
            "Records appended to the WAL.",
            |s| s.wal.appends_total,
        ),
        (
            "sluice_wal_append_bytes_total",
            Kind::Counter,
            "Payload bytes appended to the WAL.",
            |s| s.wal.append_payload_bytes_total,
        ),
        (
            "sluice_wal_writes_total",
            Kind::Counter,
            "Block writes to the WAL device.",
            |s| s.wal.writes_total,
        ),
        (
            "sluice_wal_write_bytes_total",
            Kind::Counter,
            "Bytes written to the WAL device (aligned blocks).",
            |s| s.wal.write_bytes_total,
        ),
        (
            "sluice_wal_writes_inflight",
            Kind::Gauge,
            "WAL writes in flight.",
            |s| s.wal.writes_inflight as u64,
        ),
        ("sluice_wal_syncs_total", Kind::Counter, "WAL syncs.", |s| {
            s.wal.syncs_total
        }),
        (
            "sluice_wal_space_waits_total",
            Kind::Counter,
            "Appends that waited for WAL space (back-pressure until an upload trims it).",
            |s| s.wal.space_waits_total,
        ),
        (
            "sluice_wal_window_waits_total",
            Kind::Counter,
            "Appends that waited for a slot in the WAL's in-flight window.",
            |s| s.wal.window_waits_total,
        ),
        (
            "sluice_request_memory_used_bytes",
            Kind::Gauge,
            "Bytes of request frames held; reading stops when the pool is spent.",
            |s| s.request_memory_used_bytes,
        ),
        (
            "sluice_request_memory_capacity_bytes",
            Kind::Gauge,
            "Size of the request memory pool.",
            |s| s.request_memory_capacity_bytes,
        ),
        (
            "sluice_memory_pool_used_bytes",
            Kind::Gauge,
            "Bytes of the shard's memory pool in chunks (request frames, log-cache batches).",
            |s| s.memory_pool_used_bytes,
        ),
        (
            "sluice_memory_pool_capacity_bytes",
            Kind::Gauge,
            "Size of the shard's memory pool, allocated at start.",
            |s| s.memory_pool_capacity_bytes,
        ),
        (
            "sluice_memory_pool_waits_total",
            Kind::Counter,
            "Frames and batches that waited for the memory pool (back-pressure).",
            |s| s.memory_pool_waits_total,
        ),
        (
            "sluice_log_cache_bytes",
            Kind::Gauge,
            "Bytes of recent batches held in the partitions' log caches.",
            |s| s.log_cache_bytes,
        ),
        (
            "sluice_log_cache_capacity_bytes",
            Kind::Gauge,
            "Log cache budget; uploaded batches are evicted above it.",
            |s| s.log_cache_capacity_bytes,
        ),
    ];
    for (name, kind, help, value) in families {
        out.per_sample(name, kind, help, samples, value);
    }
    out.per_sample(
        "sluice_wal_space_wait_seconds_total",
        Kind::Counter,
        "Time appends spent waiting for WAL space.",
        samples,
        |s| seconds(s.wal.space_wait_us_total as f64),
    );
    out.per_sample(
        "sluice_block_cache_bytes",
        Kind::Gauge,
        "Bytes of object blocks held for cold reads.",
        samples,
        |s| s.block_cache_bytes,
    );
    let wal_latencies: [(&str, &str, WalLatency); 2] = [
        (
            "sluice_wal_write_latency_seconds",
            "WAL block writes (one per sluice_wal_writes_total), from submission to completion.",
            |s| &s.wal.write_latency,
        ),
        (
            "sluice_wal_sync_latency_seconds",
            "WAL fdatasyncs, from submission to completion.",
            |s| &s.wal.sync_latency,
        ),
    ];
    for (name, help, latency) in wal_latencies {
        out.family(name, Kind::Histogram, help);
        for (shard, sample) in samples {
            let latency = latency(sample);
            out.histogram(
                name,
                &[("shard", &shard.to_string())],
                &HistogramSnapshot {
                    buckets: latency.buckets.to_vec(),
                    sum_us: latency.sum_us,
                },
            );
        }
    }
}

fn render_groups(out: &mut Exposition, samples: &[(usize, ShardSample)]) {
    let mut census = GroupCensus::default();
    for (_, sample) in samples {
        census.merge(&sample.groups);
    }
    out.family(
        "sluice_groups",
        Kind::Gauge,
        "Consumer groups coordinated by this broker, by state.",
    );
    for (state, count) in STATES.iter().zip(census.groups) {
        out.value("sluice_groups", &[("state", state.name())], count);
    }
    out.family(
        "sluice_group_members",
        Kind::Gauge,
        "Members of the consumer groups coordinated by this broker, by group state.",
    );
    for (state, count) in STATES.iter().zip(census.members) {
        out.value("sluice_group_members", &[("state", state.name())], count);
    }
}

fn render_partitions(out: &mut Exposition, shards: &[Arc<ShardMetrics>]) {
    let mut partitions: Vec<Arc<PartitionMetrics>> =
        shards.iter().flat_map(|s| s.partitions()).collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let exported = partitions
        .len()
        .min(PARTITION_SERIES_MAX / SERIES_PER_PARTITION);
    let omitted = partitions.len() - exported;
    partitions.truncate(exported);
    let labelled: Vec<(&PartitionMetrics, String)> = partitions
        .iter()
        .map(|p| (p.as_ref(), p.partition.to_string()))
        .collect();
    let families: [PartitionFamily; SERIES_PER_PARTITION] = [
        (
            "sluice_partition_produce_batches_total",
            "Record batches appended to the partition.",
            |p| p.produce_batches.get(),
        ),
        (
            "sluice_partition_produce_bytes_total",
            "Bytes of the batches appended to the partition.",
            |p| p.produce_bytes.get(),
        ),
        (
            "sluice_partition_fetch_bytes_total",
            "Bytes read from the partition.",
            |p| p.fetch_bytes.get(),
        ),
    ];
    for (name, help, value) in families {
        out.family(name, Kind::Counter, help);
        for (partition, index) in &labelled {
            out.value(
                name,
                &[("topic", &partition.topic), ("partition", index)],
                value(partition),
            );
        }
    }
    out.family(
        "sluice_metrics_partitions_omitted",
        Kind::Gauge,
        "Partitions left out of the per-partition series (at most 10000 series are rendered).",
    );
    out.value("sluice_metrics_partitions_omitted", &[], omitted);
}

fn render_objects(out: &mut Exposition, objects: &StatsSnapshot) {
    let families: [(&str, &str, u64); 16] = [
        (
            "sluice_objstore_requests_total",
            "Requests to the object store.",
            objects.requests,
        ),
        (
            "sluice_objstore_request_errors_total",
            "Object store requests that failed.",
            objects.request_errors,
        ),
        (
            "sluice_objstore_request_retries_total",
            "Object store requests retried.",
            objects.request_retries,
        ),
        (
            "sluice_objstore_upload_bytes_total",
            "Bytes uploaded to the object store.",
            objects.bytes_uploaded,
        ),
        (
            "sluice_objstore_download_bytes_total",
            "Bytes downloaded from the object store.",
            objects.bytes_downloaded,
        ),
        (
            "sluice_objstore_objects_uploaded_total",
            "Objects uploaded.",
            objects.objects_uploaded,
        ),
        (
            "sluice_objstore_objects_linked_total",
            "Objects made of a WAL segment file by a hard link: their data was not written again.",
            objects.objects_linked,
        ),
        (
            "sluice_objstore_objects_deleted_total",
            "Objects deleted (compaction, retention, garbage collection).",
            objects.objects_deleted,
        ),
        (
            "sluice_objstore_upload_retries_total",
            "Uploads retried.",
            objects.upload_retries,
        ),
        (
            "sluice_compaction_read_bytes_total",
            "Bytes compaction read.",
            objects.compaction_bytes_read,
        ),
        (
            "sluice_compaction_written_bytes_total",
            "Bytes compaction wrote.",
            objects.compaction_bytes_written,
        ),
        (
            "sluice_compaction_steps_total",
            "Compaction steps run.",
            objects.compaction_steps,
        ),
        (
            "sluice_block_cache_hits_total",
            "Cold reads of a block found in the block cache.",
            objects.cache_hits,
        ),
        (
            "sluice_block_cache_misses_total",
            "Cold reads of a block fetched from the object store.",
            objects.cache_misses,
        ),
        (
            "sluice_block_cache_evictions_total",
            "Blocks evicted from the block cache.",
            objects.cache_evictions,
        ),
        (
            "sluice_block_cache_prefetches_total",
            "Blocks prefetched into the block cache.",
            objects.cache_prefetches,
        ),
    ];
    for (name, help, value) in families {
        out.family(name, Kind::Counter, help);
        out.value(name, &[], value);
    }
    out.family(
        "sluice_objstore_puts_failing",
        Kind::Gauge,
        "Uploads whose put is failing right now: each retries until it succeeds, and meanwhile a produce that finds its WAL full is refused (KAFKA_STORAGE_ERROR).",
    );
    out.value("sluice_objstore_puts_failing", &[], objects.puts_failing);
    out.family(
        "sluice_objstore_paced_seconds_total",
        Kind::Counter,
        "Time local object reads and writes waited for the WAL on the same disk (I/O pacing).",
    );
    out.value(
        "sluice_objstore_paced_seconds_total",
        &[],
        seconds(objects.paced_us as f64),
    );
    out.family(
        "sluice_objstore_request_latency_seconds",
        Kind::Histogram,
        "Latency of object store requests.",
    );
    out.histogram(
        "sluice_objstore_request_latency_seconds",
        &[],
        &HistogramSnapshot {
            buckets: objects.request_latency_us_buckets.clone(),
            sum_us: objects.request_latency_us_sum,
        },
    );
}

/// Microseconds as seconds, Prometheus' base unit of time.
fn seconds(us: f64) -> f64 {
    us / 1e6
}

/// Appends `value` with the escapes of the text format (backslash, double quote, newline).
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let shard = Arc::new(ShardMetrics::new(0));
        shard.produce_bytes.add(42);
        shard.record_request(0, Duration::from_micros(300));
        shard
            .produce_stages
            .record(ProduceStage::Sync, Duration::from_micros(3));
        let partition = Arc::new(PartitionMetrics::new("a\"b", 3));
        partition.produce_bytes.add(7);
        shard.register_partition(&partition);
        let text = render(&[shard], &StatsSnapshot::default(), None);
        assert!(text.contains("sluice_produce_bytes_total{shard=\"0\"} 42\n"));
        assert!(text.contains("sluice_requests_total{shard=\"0\",api=\"Produce\"} 1\n"));
        assert!(text.contains(
            "sluice_request_latency_seconds_bucket{api=\"Produce\",le=\"0.000256\"} 0\n"
        ));
        assert!(text.contains(
            "sluice_request_latency_seconds_bucket{api=\"Produce\",le=\"0.000512\"} 1\n"
        ));
        assert!(text.contains(
            "sluice_partition_produce_bytes_total{topic=\"a\\\"b\",partition=\"3\"} 7\n"
        ));
        assert!(text.contains(
            "sluice_produce_stage_latency_seconds_bucket{stage=\"sync\",le=\"0.000004\"} 1\n"
        ));
        assert!(text.contains("sluice_produce_stage_latency_seconds_count{stage=\"sync\"} 1\n"));
        assert!(text.contains("sluice_produce_stage_latency_seconds_count{stage=\"read\"} 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a value after the series");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(!series.is_empty() && !series.starts_with('{'), "{line}");
        }
    }

    #[test]
    fn partitions_beyond_the_series_cap_are_counted_not_rendered() {
        let shard = Arc::new(ShardMetrics::new(0));
        let cap = PARTITION_SERIES_MAX / SERIES_PER_PARTITION;
        let partitions: Vec<Arc<PartitionMetrics>> = (0..cap as u32 + 5)
            .map(|i| Arc::new(PartitionMetrics::new("t", i)))
            .collect();
        for partition in &partitions {
            shard.register_partition(partition);
        }
        let text = render(&[shard], &StatsSnapshot::default(), None);
        assert!(text.contains("sluice_metrics_partitions_omitted 5\n"));
        let rendered = text
            .lines()
            .filter(|l| l.starts_with("sluice_partition_"))
            .count();
        assert_eq!(rendered, cap * SERIES_PER_PARTITION);
    }
}
