//! A single-threaded "something changed" signal: waiters re-check their
//! condition after every notification, so spurious wake-ups are harmless.

use std::cell::{Cell, RefCell};
use std::future::Future as StdFuture;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub(crate) struct Notify {
    round: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    /// A future that resolves at the first `notify` after this call.
    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            round: self.round.get(),
            registered: false,
        }
    }

    pub(crate) fn notify(&self) {
        self.round.set(self.round.get() + 1);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }
}

pub(crate) struct Notified<'a> {
    notify: &'a Notify,
    round: u64,
    registered: bool,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.round.get() != self.round {
            return Poll::Ready(());
        }
        let mut wakers = self.notify.wakers.borrow_mut();
        if !self.registered || !wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        drop(wakers);
        self.registered = true;
        Poll::Pending
    }
}

/// An operation shared by everyone who needs "one run that started after
/// now" (an fdatasync after my write, a header read after my write): one
/// run serves every caller waiting when it started, and up to `runs_max`
/// runs are in flight at once.
///
/// Why more than one: with a single run at a time, a write that completes
/// while a sync runs waits for the rest of it and then a whole sync of its
/// own, and the device sees one flush at a time with the window's writes
/// parked behind it.
pub(crate) struct Coalesced {
    runs_max: usize,
    started: Cell<u64>,
    completed: Cell<u64>,
    running: RefCell<Vec<u64>>,
    done: Notify,
}

impl Coalesced {
    pub(crate) fn new(runs_max: usize) -> Coalesced {
        Coalesced {
            runs_max,
            started: Cell::new(0),
            completed: Cell::new(0),
            running: RefCell::new(Vec::new()),
            done: Notify::default(),
        }
    }

    pub(crate) async fn after_now<E, F, Fut>(&self, op: F) -> Result<(), E>
    where
        F: Fn() -> Fut,
        Fut: StdFuture<Output = Result<(), E>>,
    {
        let needed = self.started.get() + 1;
        loop {
            if self.completed.get() >= needed {
                return Ok(());
            }
            let serving = {
                let running = self.running.borrow();
                running.iter().any(|&number| number >= needed) || running.len() >= self.runs_max
            };
            if serving {
                let notified = self.done.notified();
                notified.await;
                continue;
            }
            let number = self.started.get() + 1;
            self.started.set(number);
            self.running.borrow_mut().push(number);
            let result = op().await;
            self.running
                .borrow_mut()
                .retain(|&running| running != number);
            if result.is_ok() {
                // A run vouches for everything completed before it started, so a later run
                // finishing first covers the callers of the earlier ones too.
                self.completed.set(self.completed.get().max(number));
            }
            self.done.notify();
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use futures_lite::future::yield_now;
    use glommio::LocalExecutor;

    use super::*;

    /// Runs of an operation that waits for `gate`, counting how many started.
    struct Gated {
        coalesced: Coalesced,
        started: Cell<u64>,
        gate: Notify,
    }

    impl Gated {
        async fn after_now(&self) -> Result<(), ()> {
            self.coalesced
                .after_now(|| async {
                    self.started.set(self.started.get() + 1);
                    self.gate.notified().await;
                    Ok(())
                })
                .await
        }
    }

    /// Polls the other tasks until `done` holds (or gives up after many turns).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            yield_now().await;
        }
    }

    fn three_callers_in_turn(runs_max: usize) -> (u64, u64) {
        LocalExecutor::default().run(async move {
            let gated = Rc::new(Gated {
                coalesced: Coalesced::new(runs_max),
                started: Cell::new(0),
                gate: Notify::default(),
            });
            let results = Rc::new(RefCell::new(Vec::new()));
            for _ in 0..3 {
                let gated_for_caller = gated.clone();
                let results_for_caller = results.clone();
                glommio::spawn_local(async move {
                    let result = gated_for_caller.after_now().await;
                    results_for_caller.borrow_mut().push(result);
                })
                .detach();
                let before = gated.started.get();
                // Each caller comes after the previous one started its run or began waiting.
                settle(|| gated.started.get() > before).await;
            }
            let started_while_blocked = gated.started.get();
            while results.borrow().len() < 3 {
                gated.gate.notify();
                settle(|| results.borrow().len() == 3).await;
            }
            assert_eq!(*results.borrow(), vec![Ok(()); 3]);
            (started_while_blocked, gated.started.get())
        })
    }

    #[test]
    fn callers_start_runs_of_their_own_up_to_the_limit() {
        // Four runs allowed: each caller, coming while earlier runs are blocked, starts its own.
        assert_eq!(three_callers_in_turn(4), (3, 3));
        // Two: the third waits for a free place, then needs a run that started after it came.
        assert_eq!(three_callers_in_turn(2), (2, 3));
        // One: the second and third wait for the first run and share the next one.
        assert_eq!(three_callers_in_turn(1), (1, 2));
    }
}
