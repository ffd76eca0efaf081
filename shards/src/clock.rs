//! Wall-clock time, one definition for the broker: record timestamps, retention, transaction
//! and group timestamps are persisted and outlive the process, so they use the system clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_is_past_2020() {
        assert!(super::now_ms() > 1_577_836_800_000);
    }
}
