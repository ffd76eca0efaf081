//! An executor whose preemption timer fires before its loop reaches the first
//! task queue. glommio 0.9.0 then reported "nothing ran" and parked in
//! io_uring with tasks still runnable and nothing left to wake it: the thread
//! slept forever (vendor/glommio/SLUICE-PATCH.md). A shard met this when its
//! thread was descheduled for longer than the 100 ms timer on a loaded machine:
//! a restart hung before "WAL recovered", a fuzzer stopped after ~150,000 runs.
//! A 10 µs timer opens the same window on every loop; the unpatched crate hung
//! at the first spawned task in 10 of 10 runs.

use std::sync::mpsc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement, spawn_local};

/// Spawned-and-awaited tasks; each is one pass through the executor's loop.
const TASKS: u64 = 50_000;
/// A generous bound for work that takes well under a second on 2 cores.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_preemption_timer_that_fires_first_does_not_park_runnable_tasks() {
    let (progress, progress_rx) = mpsc::channel();
    let executor = std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .preempt_timer(Duration::from_micros(10))
            .make()
            .expect("executor")
            .run(async move {
                for i in 0..TASKS {
                    let doubled = spawn_local(async move { i * 2 }).detach().await;
                    assert_eq!(doubled, Some(i * 2));
                    if progress.send(i).is_err() {
                        return;
                    }
                }
            })
    });
    let mut done = 0;
    loop {
        match progress_rx.recv_timeout(PROGRESS_TIMEOUT) {
            Ok(i) => done = i + 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the executor stopped after {done} of {TASKS} tasks: parked with work")
            }
        }
    }
    executor.join().expect("executor thread");
    assert_eq!(done, TASKS);
}
