//! Tells the local object store's I/O pacer (`objstore/src/io_pacer.rs`) how this shard's WAL
//! is doing: every `REPORT_INTERVAL`, the mean latency of the WAL writes and syncs completed
//! since the last report, and how far its uploads are behind. The pacer holds object
//! reads and writes back while a WAL on the same disk waits longer than its baseline.

use std::time::Duration;

use futures::FutureExt;
use sluice_objstore::io_pacer::{REPORT_INTERVAL, ShardIoSignal};
use sluice_wal::{LatencyBuckets, WalStats};

use crate::stop::StopSignal;
use crate::storage::shard_wal::ShardWal;

/// Runs until `stop`: reports `wal`'s latency to `signal`.
pub async fn report_wal_latency(wal: &ShardWal, signal: &ShardIoSignal, stop: StopSignal) {
    let mut last = wal.stats();
    loop {
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(REPORT_INTERVAL).fuse() => {}
        }
        let now = wal.stats();
        signal.report(mean_latency(&last, &now), wal.upload_backlog(&now));
        last = now;
    }
}

/// The mean write latency plus the mean sync latency between two readings of the WAL's
/// stats: what a produce waits for the disk. `None` when the WAL did no I/O in between.
fn mean_latency(before: &WalStats, after: &WalStats) -> Option<Duration> {
    let write = mean_between(&before.write_latency, &after.write_latency);
    let sync = mean_between(&before.sync_latency, &after.sync_latency);
    match (write, sync) {
        (None, None) => None,
        (write, sync) => Some(write.unwrap_or_default() + sync.unwrap_or_default()),
    }
}

fn mean_between(before: &LatencyBuckets, after: &LatencyBuckets) -> Option<Duration> {
    let count = after.buckets.iter().sum::<u64>() - before.buckets.iter().sum::<u64>();
    let sum_us = after.sum_us.saturating_sub(before.sum_us);
    (count > 0).then(|| Duration::from_micros(sum_us / count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_counts_only_what_completed_between_the_readings() {
        let mut before = WalStats::default();
        before.write_latency.record(Duration::from_millis(50));
        let mut after = before.clone();
        assert_eq!(mean_latency(&before, &after), None, "no I/O in between");
        after.write_latency.record(Duration::from_micros(100));
        after.write_latency.record(Duration::from_micros(300));
        assert_eq!(
            mean_latency(&before, &after),
            Some(Duration::from_micros(200))
        );
        after.sync_latency.record(Duration::from_micros(1000));
        assert_eq!(
            mean_latency(&before, &after),
            Some(Duration::from_micros(1200))
        );
    }
}
