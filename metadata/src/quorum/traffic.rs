//! What each partition carries, bytes produced and fetched per second, as the brokers report
//! it with their heartbeats: the balancer spreads it (`Brokers::balancing_moves`), so that a
//! broker holding the busy partitions swaps some away even when the counts are even.
//!
//! Brokers send cumulative counts (their partitions' metrics); the quorum's leader turns two
//! reports of one broker into a rate and smooths it. The rates live in the leader's memory
//! only: a new leader learns them again within a few heartbeats, and balances by count
//! meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::MetadataImage;

/// One partition's bytes produced to and fetched from it on the reporting broker, since
/// that broker opened it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTraffic {
    pub topic: String,
    pub partition: u32,
    pub bytes: u64,
}

/// Where a broker reads its partitions' traffic for its heartbeats.
pub type TrafficSource = Arc<dyn Fn() -> Vec<PartitionTraffic> + Send + Sync>;

/// The weight of the newest interval in a partition's smoothed rate.
const RATE_SMOOTHING: f64 = 0.5;

/// A partition's last report and smoothed rate.
struct Rate {
    /// The broker that reported it last; None once that broker stopped reporting it (it
    /// moved, or was deleted): its rate stands until its new broker's reports replace it.
    broker: Option<i32>,
    bytes: u64,
    at: Instant,
    bytes_per_s: f64,
}

/// The partitions' rates, from the brokers' reports.
#[derive(Default)]
pub(crate) struct TrafficRates {
    partitions: HashMap<(String, u32), Rate>,
}

impl TrafficRates {
    /// Takes `broker`'s report at `now`: the partitions it leads, with their counts. Its
    /// partitions missing from the report left it (moved, deleted).
    pub(crate) fn record(&mut self, broker: i32, report: &[PartitionTraffic], now: Instant) {
        let reported: HashSet<(&str, u32)> = report
            .iter()
            .map(|t| (t.topic.as_str(), t.partition))
            .collect();
        for ((topic, partition), rate) in &mut self.partitions {
            if rate.broker == Some(broker) && !reported.contains(&(topic.as_str(), *partition)) {
                rate.broker = None;
            }
        }
        for traffic in report {
            let key = (traffic.topic.clone(), traffic.partition);
            let fresh = Rate {
                broker: Some(broker),
                bytes: traffic.bytes,
                at: now,
                bytes_per_s: 0.0,
            };
            let rate = self.partitions.entry(key).or_insert(fresh);
            let elapsed_s = now.saturating_duration_since(rate.at).as_secs_f64();
            if rate.broker == Some(broker) && traffic.bytes >= rate.bytes && elapsed_s > 0.0 {
                let newest = (traffic.bytes - rate.bytes) as f64 / elapsed_s;
                rate.bytes_per_s =
                    RATE_SMOOTHING * newest + (1.0 - RATE_SMOOTHING) * rate.bytes_per_s;
            }
            // A partition new to this broker (moved here) starts counting afresh; the rate
            // it had elsewhere stands until this broker's next report.
            rate.broker = Some(broker);
            rate.bytes = traffic.bytes;
            rate.at = now;
        }
    }

    /// Each partition's rate in bytes per second, by stream id. Partitions no longer in
    /// `image` are forgotten.
    pub(crate) fn rates(&mut self, image: &MetadataImage) -> HashMap<u64, f64> {
        self.partitions
            .retain(|(topic, partition), _| image.partition(topic, *partition).is_some());
        self.partitions
            .iter()
            .filter_map(|((topic, partition), rate)| {
                let part = image.partition(topic, *partition)?;
                Some((part.stream_id, rate.bytes_per_s))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(entries: &[(u32, u64)]) -> Vec<PartitionTraffic> {
        entries
            .iter()
            .map(|&(partition, bytes)| PartitionTraffic {
                topic: "t".into(),
                partition,
                bytes,
            })
            .collect()
    }

    #[test]
    fn rates_come_from_two_reports_and_leave_with_their_partition() {
        let mut rates = TrafficRates::default();
        let start = Instant::now();
        rates.record(1, &report(&[(0, 1000), (1, 0)]), start);
        rates.record(
            1,
            &report(&[(0, 3000), (1, 0)]),
            start + Duration::from_secs(1),
        );
        assert_eq!(rates.partitions[&("t".into(), 0)].bytes_per_s, 1000.0);
        assert_eq!(rates.partitions[&("t".into(), 1)].bytes_per_s, 0.0);
        // Partition 0 moved to broker 2: broker 1 no longer reports it, and its rate stands
        // until broker 2's second report.
        rates.record(1, &report(&[(1, 0)]), start + Duration::from_secs(2));
        rates.record(2, &report(&[(0, 0)]), start + Duration::from_secs(2));
        assert_eq!(rates.partitions[&("t".into(), 0)].bytes_per_s, 1000.0);
        rates.record(2, &report(&[(0, 4000)]), start + Duration::from_secs(3));
        assert_eq!(rates.partitions[&("t".into(), 0)].bytes_per_s, 2500.0);
        rates.record(2, &[], start + Duration::from_secs(4));
        assert_eq!(rates.partitions[&("t".into(), 0)].broker, None);
    }
}
