//! The throttle decision of a client quota: a token bucket that holds one window of the quota
//! (`QUOTA_BURST_MS`) and refills at the quota's rate; a request that takes it below zero is
//! throttled for the time the refill needs to pay the debt back.
//!
//! Why not Kafka's own arithmetic (`rate.rs`, `Rate` over 11 windows of 1 s, as
//! `ClientQuotaManager` throttles byte rates): Kafka divides a first burst by at least ten
//! windows, so a client sending as fast as it can passes some ten seconds of its quota at once,
//! is then throttled while that sample stays in the window, and bursts again when it expires
//! (measured with a 10 MB/s quota: about 110 MB in one second every 12 s). Those bursts take
//! the disk and the shard from every other client, which is what a quota is there to prevent.
//! The bucket gives the same average with at most one window's worth at once, and a throttle
//! that grows with each request's size: the pacing Kafka's own KIP-599 `TokenBucket` gives
//! controller mutations. Clients see only a different `throttle_time_ms`, which they honour
//! as they do Kafka's.

/// What the bucket holds when full: this long at the quota's rate. One of Kafka's windows.
pub const QUOTA_BURST_MS: u64 = super::rate::QUOTA_WINDOW_MS;

/// A token bucket in the quota's unit (bytes, or percent-seconds for a request quota).
#[derive(Debug, Clone, Default)]
pub struct TokenBucket {
    /// Tokens left; below zero, the debt a throttle pays back.
    tokens: f64,
    /// When `tokens` was last brought up to date; None until the first record (the bucket
    /// starts full).
    updated_ms: Option<u64>,
    /// When the latest debt is paid back (the end of the latest throttle).
    debt_paid_ms: u64,
}

impl TokenBucket {
    /// Takes `value` out at `now_ms`, the bucket refilling at `refill_per_s` (the quota, or
    /// this shard's part of it) and holding at most `bound_per_s` × `QUOTA_BURST_MS`. Returns
    /// the milliseconds the client must wait for the bucket to be back at zero: none while it
    /// holds tokens.
    pub fn take(&mut self, value: f64, now_ms: u64, bound_per_s: f64, refill_per_s: f64) -> u64 {
        let capacity = bound_per_s * QUOTA_BURST_MS as f64 / 1000.0;
        self.tokens = match self.updated_ms {
            None => capacity,
            Some(updated_ms) => {
                let elapsed_s = now_ms.saturating_sub(updated_ms) as f64 / 1000.0;
                (self.tokens + refill_per_s * elapsed_s).min(capacity)
            }
        };
        self.updated_ms = Some(now_ms);
        self.tokens -= value;
        if self.tokens >= 0.0 || refill_per_s <= 0.0 {
            return 0;
        }
        // A debt too large for u64 milliseconds saturates: a throttle of "for ever".
        let throttle_ms = (-self.tokens / refill_per_s * 1000.0).ceil() as u64;
        self.debt_paid_ms = now_ms.saturating_add(throttle_ms);
        throttle_ms
    }

    /// True while a debt is unpaid at `now_ms`: forgetting the bucket then would let a client
    /// that reconnects skip the rest of its throttle.
    pub fn in_debt(&self, now_ms: u64) -> bool {
        now_ms < self.debt_paid_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_passes_one_window_then_throttles_by_the_debt() {
        let mut bucket = TokenBucket::default();
        // 1000 bytes/s: the first 1000 bytes pass.
        assert_eq!(bucket.take(1000.0, 0, 1000.0, 1000.0), 0);
        // 500 more at once: 500 bytes of debt, half a second at 1000 bytes/s.
        assert_eq!(bucket.take(500.0, 0, 1000.0, 1000.0), 500);
        // Half a second later the debt is paid; 100 more is a debt of 100 bytes: 100 ms.
        assert_eq!(bucket.take(100.0, 500, 1000.0, 1000.0), 100);
        // A long pause refills it to one window only.
        assert_eq!(bucket.take(0.0, 60_000, 1000.0, 1000.0), 0);
        assert_eq!(bucket.take(1500.0, 60_000, 1000.0, 1000.0), 500);
    }

    #[test]
    fn a_client_that_waits_its_throttles_holds_its_bound_without_bursts() {
        // 1 MB requests as soon as the client may, against 10 MB/s, for 60 s: the average is
        // the bound within 2%, and no second passes more than twice the bound.
        let bound = 10_000_000.0;
        let mut bucket = TokenBucket::default();
        let mut now_ms = 0;
        let mut per_second = vec![0.0; 61];
        while now_ms < 60_000 {
            per_second[(now_ms / 1000) as usize] += 1_000_000.0;
            now_ms += bucket.take(1_000_000.0, now_ms, bound, bound).max(1);
        }
        let sent: f64 = per_second.iter().sum();
        let achieved = sent / (now_ms as f64 / 1000.0);
        assert!((achieved - bound).abs() / bound < 0.02, "{achieved}");
        let worst = per_second.iter().cloned().fold(0.0, f64::max);
        assert!(worst <= 2.0 * bound, "{worst} in one second");
    }

    #[test]
    fn a_smaller_refill_throttles_longer_and_the_debt_lasts_the_throttle() {
        let mut bucket = TokenBucket::default();
        assert!(!bucket.in_debt(0));
        assert_eq!(bucket.take(2000.0, 0, 1000.0, 250.0), 4000);
        assert!(bucket.in_debt(3999));
        assert!(!bucket.in_debt(4000));
        // No refill at all: no throttle can pay the debt back, and none is asked.
        assert_eq!(TokenBucket::default().take(5000.0, 0, 1000.0, 0.0), 0);
    }
}
