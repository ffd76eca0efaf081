//! Start-up waits for what a process that is still exiting may hold a moment longer (the data
//! dir's lock, a port): a restart right after `kill -9` must come back, not exit. Polled with
//! a short backoff, because neither a flock nor a port says when it is released, and bounded
//! by a configured wait, after which the caller fails naming what it waited for.

use std::time::{Duration, Instant};

/// The first pause between two attempts; it doubles up to [`POLL_INTERVAL_MAX`].
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(5);

/// The longest pause between two attempts: an exiting process lets go within milliseconds,
/// and a restart should not sleep much longer than that.
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(100);

/// How often, at most, a wait that goes on is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Calls `attempt` until it returns `Ok(Some(_))` or an error, or until `wait` has passed since
/// the first call: then `Ok(None)`. `Ok(None)` from `attempt` means busy; the first busy
/// attempt is logged at INFO with `describe()`, then once per [`LOG_INTERVAL`].
pub fn retry_while_busy<T, E>(
    wait: Duration,
    describe: impl Fn() -> String,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let start = Instant::now();
    let mut pause = POLL_INTERVAL_MIN;
    let mut logged_at: Option<Instant> = None;
    loop {
        if let Some(value) = attempt()? {
            if logged_at.is_some() {
                tracing::info!(
                    waited_ms = start.elapsed().as_millis(),
                    "{}: free now",
                    describe()
                );
            }
            return Ok(Some(value));
        }
        let waited = start.elapsed();
        if waited >= wait {
            return Ok(None);
        }
        if logged_at.is_none_or(|at| at.elapsed() >= LOG_INTERVAL) {
            tracing::info!(
                waited_ms = waited.as_millis(),
                wait_ms = wait.as_millis(),
                "{}: waiting",
                describe()
            );
            logged_at = Some(Instant::now());
        }
        std::thread::sleep(pause.min(wait - waited));
        pause = (pause * 2).min(POLL_INTERVAL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_freed_during_the_wait_is_taken() {
        let mut attempts = 0;
        let taken = retry_while_busy(
            Duration::from_secs(10),
            || "test resource".to_string(),
            || -> Result<Option<u32>, ()> {
                attempts += 1;
                Ok((attempts == 3).then_some(7))
            },
        );
        assert_eq!(taken, Ok(Some(7)));
        assert_eq!(attempts, 3);
    }

    #[test]
    fn a_resource_busy_for_the_whole_wait_gives_none_after_the_wait() {
        let start = Instant::now();
        let taken = retry_while_busy(
            Duration::from_millis(50),
            || "test resource".to_string(),
            || -> Result<Option<u32>, ()> { Ok(None) },
        );
        assert_eq!(taken, Ok(None));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }

    #[test]
    fn an_error_ends_the_wait_at_once() {
        let mut attempts = 0;
        let taken = retry_while_busy(
            Duration::from_secs(10),
            || "test resource".to_string(),
            || -> Result<Option<u32>, &str> {
                attempts += 1;
                Err("broken")
            },
        );
        assert_eq!(taken, Err("broken"));
        assert_eq!(attempts, 1);
    }

    #[test]
    fn no_wait_means_one_attempt() {
        let mut attempts = 0;
        let taken = retry_while_busy(
            Duration::ZERO,
            || "test resource".to_string(),
            || -> Result<Option<u32>, ()> {
                attempts += 1;
                Ok(None)
            },
        );
        assert_eq!((taken, attempts), (Ok(None), 1));
    }
}
