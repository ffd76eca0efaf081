//! A single-threaded "something changed" signal: waiters re-check their
//! condition after every notification, so spurious wake-ups are harmless.

use std::cell::{Cell, RefCell};
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
