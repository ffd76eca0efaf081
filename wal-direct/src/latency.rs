//! Latency histograms of the WAL's device writes and syncs, in the power-of-two microsecond
//! buckets of the broker's other histograms (`sluice_objstore::LATENCY_BUCKETS`), so that a
//! user sees in `/metrics` whether the foreground write path is waiting on the disk.

use std::time::Duration;

/// Buckets: bucket `i` counts observations under 2^i µs, the last everything slower.
pub const LATENCY_BUCKETS: usize = 28;

/// Observations of one kind of I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyBuckets {
    /// Observations per bucket (not cumulative).
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of the observations in microseconds.
    pub sum_us: u64,
}

impl LatencyBuckets {
    /// Records one observation.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_us = self.sum_us.saturating_add(us);
        let bucket = (64 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[bucket] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_power_of_two_buckets() {
        let mut latency = LatencyBuckets::default();
        latency.record(Duration::from_micros(0));
        latency.record(Duration::from_micros(3));
        latency.record(Duration::from_micros(4));
        latency.record(Duration::from_secs(3600));
        assert_eq!(latency.buckets[0], 1);
        assert_eq!(latency.buckets[2], 1, "3 µs is under 4");
        assert_eq!(latency.buckets[3], 1, "4 µs is under 8");
        assert_eq!(latency.buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(latency.sum_us, 3_600_000_007);
    }
}
