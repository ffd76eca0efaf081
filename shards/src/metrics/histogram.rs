//! A latency histogram with power-of-two microsecond buckets, the scheme of the object store's
//! request histogram (`sluice_objstore::stats`), so both render the same way.

use std::time::Duration;

use super::counter::Counter;

/// Buckets per histogram: bucket `i` counts observations under 2^i µs, the last one everything
/// slower (2^26 µs is about 67 s).
pub const LATENCY_BUCKETS: usize = sluice_objstore::LATENCY_BUCKETS;

// The WAL's histograms render through the same buckets.
const _: () = assert!(sluice_wal::LATENCY_BUCKETS == LATENCY_BUCKETS);

/// A latency histogram written by one shard thread (see [`Counter`]).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [Counter; LATENCY_BUCKETS],
    sum_us: Counter,
}

/// A copy of a histogram at one moment, or the sum of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative), as in [`LatencyHistogram`].
    pub buckets: Vec<u64>,
    /// Sum of the observations in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.add(us);
        self.buckets[bucket_of(us)].add(1);
    }

    /// The observations so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(Counter::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

impl HistogramSnapshot {
    /// An empty histogram, to sum others into.
    pub fn empty() -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: vec![0; LATENCY_BUCKETS],
            sum_us: 0,
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_us += other.sum_us;
    }
}

/// The bucket of an observation of `us` microseconds: its bit length, so bucket `i` holds
/// `2^(i-1) <= us < 2^i`.
fn bucket_of(us: u64) -> usize {
    (64 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_below_their_power_of_two() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(0));
        histogram.record(Duration::from_micros(1));
        histogram.record(Duration::from_micros(3));
        histogram.record(Duration::from_micros(4));
        histogram.record(Duration::from_secs(3600));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets[0], 1);
        assert_eq!(snapshot.buckets[1], 1);
        assert_eq!(snapshot.buckets[2], 1);
        assert_eq!(snapshot.buckets[3], 1);
        assert_eq!(snapshot.buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(snapshot.count(), 5);
        assert_eq!(snapshot.sum_us, 8 + 3_600_000_000);
    }
}
