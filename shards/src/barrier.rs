//! A count that shards on different threads wait on at start-up and shutdown ("every shard
//! has recovered", "every shard has drained its connections"), woken when it is reached
//! instead of polled on a timer.

use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};

/// Arrivals counted across threads; waiters resume once the count reaches their target.
#[derive(Debug, Default)]
pub struct ShardBarrier {
    arrived: AtomicUsize,
    // Only touched at start-up and shutdown, a handful of times per shard: a lock is fine.
    waiters: Mutex<Vec<Waker>>,
}

impl ShardBarrier {
    /// Counts one arrival and wakes every waiter (each checks its own target).
    pub fn arrive(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.lock());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Arrivals so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Resolves once at least `target` arrivals were counted.
    pub async fn reached(&self, target: usize) {
        poll_fn(|cx| {
            if self.arrived() >= target {
                return Poll::Ready(());
            }
            self.lock().push(cx.waker().clone());
            // An arrival between the check and the push woke the old list: check again.
            if self.arrived() >= target {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // A panic while holding this lock leaves only wakers behind: still usable.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiters_on_other_threads_resume_when_the_count_is_reached() {
        let barrier = Arc::new(ShardBarrier::default());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.arrive();
                    futures::executor::block_on(barrier.reached(3));
                    barrier.arrived()
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().expect("no panic") >= 3);
        }
    }

    #[test]
    fn a_reached_target_resolves_at_once() {
        let barrier = ShardBarrier::default();
        barrier.arrive();
        futures::executor::block_on(barrier.reached(1));
        futures::executor::block_on(barrier.reached(0));
    }
}
