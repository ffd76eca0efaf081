//! Rate-limited WARN lines: a condition a client can cause again and again (a refused
//! connection, a refused group) is logged once per interval, with the number of lines held
//! back since the last one, instead of once per occurrence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets a log line through at most once per interval, across threads, and counts the ones it
/// held back.
#[derive(Debug)]
pub struct WarnThrottle {
    origin: Instant,
    interval_ms: u64,
    /// Milliseconds since `origin` before which no line is let through.
    next_ms: AtomicU64,
    /// Lines held back since the last one let through.
    held_back: AtomicU64,
}

impl WarnThrottle {
    /// Lets the first line through, then at most one per `interval`.
    pub fn new(interval: Duration) -> WarnThrottle {
        WarnThrottle {
            origin: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged at `now`.
    pub fn ready(&self, now: Instant) -> Option<u64> {
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(0);
        let next_ms = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next_ms
            && self
                .next_ms
                .compare_exchange(
                    next_ms,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_let_through_once_per_interval_with_the_count_held_back() {
        let throttle = WarnThrottle::new(Duration::from_secs(10));
        let start = throttle.origin;
        assert_eq!(throttle.ready(start), Some(0));
        assert_eq!(throttle.ready(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.ready(start + Duration::from_secs(9)), None);
        assert_eq!(throttle.ready(start + Duration::from_secs(10)), Some(2));
        assert_eq!(throttle.ready(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.ready(start + Duration::from_secs(25)), Some(1));
    }
}
