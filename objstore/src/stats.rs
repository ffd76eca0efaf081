//! Counters of the object tier: plain atomics, read by the metrics exporter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of the request latency histogram: bucket `i` counts requests
/// that took less than 2^i microseconds (the last one: everything slower).
pub const LATENCY_BUCKETS: usize = 28;

/// Counters, shared by every user of one `ObjectStore` (one per store).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    pub request_retries: AtomicU64,
    pub request_latency_us_sum: AtomicU64,
    pub request_latency_us_buckets: [AtomicU64; LATENCY_BUCKETS],
    pub bytes_uploaded: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub objects_uploaded: AtomicU64,
    /// Objects made of a WAL segment file by a hard link (counted in `objects_uploaded` too):
    /// their data was not written again.
    pub objects_linked: AtomicU64,
    pub objects_deleted: AtomicU64,
    pub upload_retries: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub compaction_steps: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_evictions: AtomicU64,
    pub cache_prefetches: AtomicU64,
    /// Microseconds local object I/O waited for the I/O pacer (`io_pacer.rs`).
    pub paced_us: AtomicU64,
    /// Uploads whose put is failing right now (each retries until it succeeds): a gauge.
    pub puts_failing: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub request_errors: u64,
    pub request_retries: u64,
    pub request_latency_us_sum: u64,
    pub request_latency_us_buckets: Vec<u64>,
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
    pub objects_uploaded: u64,
    pub objects_linked: u64,
    pub objects_deleted: u64,
    pub upload_retries: u64,
    pub compaction_bytes_read: u64,
    pub compaction_bytes_written: u64,
    pub compaction_steps: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    pub cache_prefetches: u64,
    pub paced_us: u64,
    pub puts_failing: u64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_request(&self, latency: Duration, failed: bool) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        Stats::add(&self.requests, 1);
        Stats::add(&self.request_latency_us_sum, us);
        if failed {
            Stats::add(&self.request_errors, 1);
        }
        let bucket = (64 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        Stats::add(&self.request_latency_us_buckets[bucket], 1);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            request_errors: get(&self.request_errors),
            request_retries: get(&self.request_retries),
            request_latency_us_sum: get(&self.request_latency_us_sum),
            request_latency_us_buckets: self.request_latency_us_buckets.iter().map(get).collect(),
            bytes_uploaded: get(&self.bytes_uploaded),
            bytes_downloaded: get(&self.bytes_downloaded),
            objects_uploaded: get(&self.objects_uploaded),
            objects_linked: get(&self.objects_linked),
            objects_deleted: get(&self.objects_deleted),
            upload_retries: get(&self.upload_retries),
            compaction_bytes_read: get(&self.compaction_bytes_read),
            compaction_bytes_written: get(&self.compaction_bytes_written),
            compaction_steps: get(&self.compaction_steps),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            cache_evictions: get(&self.cache_evictions),
            cache_prefetches: get(&self.cache_prefetches),
            paced_us: get(&self.paced_us),
            puts_failing: get(&self.puts_failing),
        }
    }
}

impl StatsSnapshot {
    /// An upper bound of the latency quantile `q` (0..=1) in microseconds,
    /// from the power-of-two histogram.
    pub fn request_latency_us_quantile(&self, q: f64) -> u64 {
        let total: u64 = self.request_latency_us_buckets.iter().sum();
        let target = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.request_latency_us_buckets.iter().enumerate() {
            seen += n;
            if seen >= target && *n > 0 {
                return 1u64 << i;
            }
        }
        0
    }
}
