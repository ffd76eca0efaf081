//! The cap on tasks in flight per shard (`--shard-tasks-max`): every task the router spawns for
//! a request from the mesh holds a [`TaskPermit`] until it ends. At the cap the router waits
//! for a permit before it takes the next request, so the mesh queues into the shard fill and
//! their senders wait (back-pressure), instead of the shard growing without bound. Each wait
//! is counted in `sluice_shard_tasks_waits_total` and logged (throttled).
//!
//! Not counted here, because another bound already holds them (see the spawn sites): a
//! connection's request tasks and writer (`--connections-max` × `--pipeline-depth`), and the
//! shard's few long-lived service tasks (one each). Transaction calls and completions are not
//! counted either: they ask other shards, whose routers may be waiting for permits held by
//! tasks that wait for this shard, so holding a permit across such a call could deadlock.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::{Semaphore, StaticPermit};

use crate::metrics::ShardMetrics;
use crate::warn_throttle::WarnThrottle;

/// At most one line per this interval says that the cap was hit.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The permits of one shard's tasks.
pub struct TaskPermits {
    permits: Rc<Semaphore>,
    tasks_max: usize,
    metrics: Arc<ShardMetrics>,
    warnings: WarnThrottle,
}

/// A task's place under the cap, given back when dropped.
pub struct TaskPermit {
    _permit: Option<StaticPermit>,
}

impl TaskPermits {
    /// Permits for at most `tasks_max` tasks (at least one) at once.
    pub fn new(tasks_max: usize, metrics: Arc<ShardMetrics>) -> TaskPermits {
        let tasks_max = tasks_max.max(1);
        TaskPermits {
            permits: Rc::new(Semaphore::new(tasks_max as u64)),
            tasks_max,
            metrics,
            warnings: WarnThrottle::new(WARN_INTERVAL),
        }
    }

    /// A permit for one more task; waits while `tasks_max` tasks hold one.
    pub async fn acquire(&self) -> TaskPermit {
        if let Ok(permit) = self.permits.try_acquire_static_permit(1) {
            return TaskPermit {
                _permit: Some(permit),
            };
        }
        self.metrics.tasks_waits.add(1);
        if let Some(held_back) = self.warnings.ready(Instant::now()) {
            tracing::warn!(
                shard = self.metrics.shard,
                tasks_max = self.tasks_max,
                held_back,
                "shard at --shard-tasks-max: requests from the mesh wait for running tasks to end"
            );
        }
        // The semaphore is never closed, so the wait ends with a permit; if it ever were
        // closed, the task runs without one rather than being dropped.
        TaskPermit {
            _permit: self.permits.clone().acquire_static_permit(1).await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn with_a_cap_of_two_a_third_task_waits_until_one_ends() {
        let executor = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let metrics = Arc::new(ShardMetrics::new(0));
                let permits = Rc::new(TaskPermits::new(2, metrics.clone()));
                let first = permits.acquire().await;
                let _second = permits.acquire().await;
                assert_eq!(permits.permits.available(), 0);
                assert_eq!(metrics.tasks_waits.get(), 0);

                let started = Rc::new(Cell::new(false));
                let third = glommio::spawn_local({
                    let (permits, started) = (permits.clone(), started.clone());
                    async move {
                        let permit = permits.acquire().await;
                        started.set(true);
                        permit
                    }
                });
                // Let the third task run until it waits.
                while metrics.tasks_waits.get() == 0 {
                    glommio::executor().yield_now().await;
                }
                assert!(!started.get(), "a third task started past the cap");
                assert_eq!(metrics.tasks_waits.get(), 1, "the wait is counted");

                drop(first);
                let _third = third.await;
                assert!(started.get());
                assert_eq!(permits.permits.available(), 0);
            })
            .expect("executor starts");
        executor.join().expect("test ran");
    }
}
