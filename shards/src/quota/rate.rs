//! A rate over sampled windows: Kafka's `Rate` over a `SampledStat` (`quota.window.num` samples
//! of `quota.window.size.seconds`), as `ClientQuotaManager` measures every client quota. A
//! shard publishes these rates to the others (`super::share_usage`); the throttle itself comes
//! from a token bucket (`super::bucket`).

/// Samples a rate is measured over (Kafka's `quota.window.num`, 11).
pub const QUOTA_WINDOWS: usize = 11;
/// Length of one sample (Kafka's `quota.window.size.seconds`, 1 s).
pub const QUOTA_WINDOW_MS: u64 = 1000;

/// One sample: what was recorded from `start_ms` on, for at most `QUOTA_WINDOW_MS`.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    start_ms: u64,
    value: f64,
    /// False until first used (a zeroed ring has no sample).
    used: bool,
}

/// A rate per second of what is recorded, over the last `QUOTA_WINDOWS` samples.
#[derive(Debug, Clone, Default)]
pub struct SampledRate {
    samples: [Sample; QUOTA_WINDOWS],
    /// The sample being recorded into.
    current: usize,
}

impl SampledRate {
    /// Adds `value` at `now_ms`; a sample older than `QUOTA_WINDOW_MS` is closed first and the
    /// next slot (the oldest) starts at `now_ms`, as Kafka's `SampledStat.record`.
    pub fn record(&mut self, value: f64, now_ms: u64) {
        let sample = &self.samples[self.current];
        if !sample.used || now_ms.saturating_sub(sample.start_ms) >= QUOTA_WINDOW_MS {
            if sample.used {
                self.current = (self.current + 1) % QUOTA_WINDOWS;
            }
            self.samples[self.current] = Sample {
                start_ms: now_ms,
                value: 0.0,
                used: true,
            };
        }
        self.samples[self.current].value += value;
    }

    /// The rate per second at `now_ms`: the samples' total over Kafka's `Rate.windowSize`
    /// (from the oldest live sample's start, and never less than `QUOTA_WINDOWS - 1` whole
    /// windows, so that a first burst is not divided by a few milliseconds).
    pub fn rate(&self, now_ms: u64) -> f64 {
        let total: f64 = self.live(now_ms).map(|s| s.value).sum();
        total / (self.window_ms(now_ms) as f64 / 1000.0)
    }

    /// Kafka's `Rate.windowSize` at `now_ms`.
    fn window_ms(&self, now_ms: u64) -> u64 {
        let oldest_ms = self
            .live(now_ms)
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let mut elapsed_ms = now_ms.saturating_sub(oldest_ms);
        let full_windows = elapsed_ms / QUOTA_WINDOW_MS;
        let min_full_windows = (QUOTA_WINDOWS - 1) as u64;
        if full_windows < min_full_windows {
            elapsed_ms += (min_full_windows - full_windows) * QUOTA_WINDOW_MS;
        }
        elapsed_ms
    }

    /// True when no sample is live: nothing was recorded for the whole window, so the entity
    /// can be forgotten.
    pub fn idle(&self, now_ms: u64) -> bool {
        self.live(now_ms).next().is_none()
    }

    /// The samples not yet obsolete (Kafka purges those that started `QUOTA_WINDOWS` windows
    /// ago or earlier).
    fn live(&self, now_ms: u64) -> impl Iterator<Item = &Sample> {
        let expire_ms = QUOTA_WINDOWS as u64 * QUOTA_WINDOW_MS;
        self.samples
            .iter()
            .filter(move |s| s.used && now_ms.saturating_sub(s.start_ms) < expire_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_burst_is_measured_over_ten_windows() {
        let mut rate = SampledRate::default();
        rate.record(10_000.0, 5_000);
        // 10 000 bytes over the minimum of 10 whole windows: 1000 bytes/s.
        assert_eq!(rate.window_ms(5_000), 10_000);
        assert_eq!(rate.rate(5_000), 1000.0);
        assert_eq!(rate.window_ms(5_500), 10_500);
    }

    #[test]
    fn a_steady_rate_is_measured_as_it_is_and_old_samples_expire() {
        let mut rate = SampledRate::default();
        // 2 000 bytes every 100 ms for 30 s: 20 000 bytes/s.
        for t in 0..300 {
            rate.record(2_000.0, 1_000 + t * 100);
        }
        let now_ms = 1_000 + 299 * 100;
        let measured = rate.rate(now_ms);
        assert!((measured - 20_000.0).abs() / 20_000.0 < 0.1, "{measured}");
        assert!(!rate.idle(now_ms));
        assert!(rate.idle(now_ms + QUOTA_WINDOWS as u64 * QUOTA_WINDOW_MS));
        assert_eq!(rate.rate(now_ms + 60_000), 0.0);
    }
}
