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
/// now" (an fdatasync after my write, a header read after my write): at
/// most one run at a time, and one run serves every caller waiting when it
/// started.
#[derive(Default)]
pub(crate) struct Coalesced {
    started: Cell<u64>,
    completed: Cell<u64>,
    running: Cell<bool>,
    done: Notify,
}

impl Coalesced {
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
            if self.running.get() {
                let notified = self.done.notified();
                notified.await;
                continue;
            }
            self.running.set(true);
            let number = self.started.get() + 1;
            self.started.set(number);
            let result = op().await;
            self.running.set(false);
            if result.is_ok() {
                self.completed.set(number);
            }
            self.done.notify();
            result?;
        }
    }
}
