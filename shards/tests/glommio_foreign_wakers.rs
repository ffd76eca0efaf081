//! Wakers of glommio tasks woken and dropped on other threads, as the shards'
//! tasks are by object-store and cross-shard completions. glommio 0.9.0 freed
//! a task twice when its last waker was dropped on another thread while its
//! `JoinHandle` was dropped (vendor/glommio/SLUICE-PATCH.md); these tests
//! crash within a second on that code.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures::future::poll_fn;
use glommio::{LocalExecutorBuilder, spawn_local};

/// Rounds of each race; the unpatched crate failed within 100,000.
const ROUNDS: usize = 200_000;

/// Lets the executor run its other tasks once.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// What the foreign thread does with the waker it takes.
#[derive(Clone, Copy)]
enum ForeignAction {
    Drop,
    Wake,
}

/// Runs `ROUNDS` rounds: a local task stores its waker and completes, then a
/// foreign thread takes the waker and acts on it while the local side drops
/// the task's `JoinHandle` after a varying delay, so that the two meet at
/// every point of each other's work.
fn race_join_handle_drop_against(action: ForeignAction) {
    let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));
    let turn = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let foreign = {
        let (slot, turn, done) = (slot.clone(), turn.clone(), done.clone());
        std::thread::spawn(move || {
            for round in 1..=ROUNDS {
                while turn.load(Ordering::Acquire) != round {
                    std::hint::spin_loop();
                }
                let waker = slot.lock().expect("slot lock").take();
                if let (Some(waker), ForeignAction::Wake) = (&waker, action) {
                    waker.wake_by_ref();
                }
                drop(waker);
                done.store(round, Ordering::Release);
            }
        })
    };
    let executor = LocalExecutorBuilder::default()
        .make()
        .expect("a glommio executor");
    executor.run(async move {
        for round in 1..=ROUNDS {
            let task_slot = slot.clone();
            let handle = spawn_local(async move {
                poll_fn(|cx| {
                    *task_slot.lock().expect("slot lock") = Some(cx.waker().clone());
                    Poll::Ready(())
                })
                .await
            });
            while slot.lock().expect("slot lock").is_none() {
                yield_now().await;
            }
            turn.store(round, Ordering::Release);
            for _ in 0..(round * 7919) % 600 {
                std::hint::spin_loop();
            }
            drop(handle);
            while done.load(Ordering::Acquire) != round {
                yield_now().await;
            }
        }
    });
    foreign.join().expect("the foreign thread");
}

#[test]
fn a_last_waker_dropped_on_another_thread_never_frees_its_task_twice() {
    race_join_handle_drop_against(ForeignAction::Drop);
}

#[test]
fn a_waker_woken_and_dropped_on_another_thread_never_frees_its_task_twice() {
    race_join_handle_drop_against(ForeignAction::Wake);
}

#[test]
fn a_task_woken_from_another_thread_runs_to_completion() {
    let executor = LocalExecutorBuilder::default()
        .make()
        .expect("a glommio executor");
    let completed = executor.run(async {
        let mut completed = 0;
        for _ in 0..1_000 {
            let (sender, receiver) = futures::channel::oneshot::channel::<usize>();
            let waiter = spawn_local(async move { receiver.await.unwrap_or(0) });
            let thread = std::thread::spawn(move || sender.send(1));
            completed += waiter.await;
            thread
                .join()
                .expect("the sending thread")
                .expect("the receiver is alive");
        }
        completed
    });
    assert_eq!(completed, 1_000);
}
