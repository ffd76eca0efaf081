//! The explicit order of a partition's order stage: the router takes a ticket for each batch
//! as it receives the request (synchronously, in channel order), and the order stage runs
//! ticket by ticket, whatever order the tasks are polled in. A ticket dropped unused gives
//! up its turn.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Hands out turns in ticket order.
#[derive(Debug, Default)]
pub struct Turnstile {
    state: Rc<RefCell<TurnState>>,
}

#[derive(Debug, Default)]
struct TurnState {
    issued: u64,
    /// The ticket whose turn it is.
    serving: u64,
    /// Tickets dropped before their turn: skipped when reached.
    abandoned: std::collections::BTreeSet<u64>,
    /// Wakers of tickets waiting for their turn.
    waiting: BTreeMap<u64, Waker>,
}

/// A place in a partition's order, taken when the request arrives.
#[derive(Debug)]
pub struct Ticket {
    number: u64,
    state: Rc<RefCell<TurnState>>,
    done: bool,
}

/// The turn of one ticket; the next ticket's turn starts when this is dropped.
#[derive(Debug)]
pub struct Turn {
    state: Rc<RefCell<TurnState>>,
}

impl Turnstile {
    /// The next ticket.
    pub fn ticket(&self) -> Ticket {
        let mut state = self.state.borrow_mut();
        let number = state.issued;
        state.issued += 1;
        Ticket {
            number,
            state: self.state.clone(),
            done: false,
        }
    }
}

impl Ticket {
    /// Waits until every earlier ticket has had its turn (or given it up).
    pub async fn turn(mut self) -> Turn {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.serving == self.number {
                state.waiting.remove(&self.number);
                Poll::Ready(())
            } else {
                debug_assert!(state.serving < self.number, "a ticket's turn came twice");
                state.waiting.insert(self.number, cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        self.done = true;
        Turn {
            state: self.state.clone(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.state.borrow_mut();
        state.waiting.remove(&self.number);
        if state.serving == self.number {
            advance(&mut state);
        } else {
            state.abandoned.insert(self.number);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        advance(&mut self.state.borrow_mut());
    }
}

/// Ends the current turn: skips abandoned tickets and wakes the next waiting one.
fn advance(state: &mut TurnState) {
    state.serving += 1;
    while state.abandoned.remove(&state.serving) {
        state.serving += 1;
    }
    if let Some(waker) = state.waiting.get(&state.serving) {
        waker.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::task::noop_waker_ref;
    use std::task::Context;

    fn ready<F: std::future::Future>(future: &mut std::pin::Pin<Box<F>>) -> Option<F::Output> {
        match future
            .as_mut()
            .poll(&mut Context::from_waker(noop_waker_ref()))
        {
            Poll::Ready(value) => Some(value),
            Poll::Pending => None,
        }
    }

    #[test]
    fn turns_follow_tickets_not_polling_order() {
        let turnstile = Turnstile::default();
        let first = turnstile.ticket();
        let second = turnstile.ticket();
        let mut second = Box::pin(second.turn());
        assert!(ready(&mut second).is_none(), "second waits for first");
        let mut first = Box::pin(first.turn());
        let turn = ready(&mut first).expect("first's turn");
        assert!(ready(&mut second).is_none(), "still first's turn");
        drop(turn);
        assert!(ready(&mut second).is_some(), "second's turn after first");
    }

    #[test]
    fn an_abandoned_ticket_gives_up_its_turn() {
        let turnstile = Turnstile::default();
        let first = turnstile.ticket();
        let second = turnstile.ticket();
        let third = turnstile.ticket();
        drop(second);
        let turn = first.turn().now_or_never().expect("first's turn");
        let mut third = Box::pin(third.turn());
        assert!(ready(&mut third).is_none());
        drop(turn);
        assert!(ready(&mut third).is_some(), "second was skipped");
        // Dropping the ticket whose turn it is passes the turn on too.
        let fourth = turnstile.ticket();
        let fifth = turnstile.ticket();
        drop(fourth);
        assert!(fifth.turn().now_or_never().is_some());
    }
}
