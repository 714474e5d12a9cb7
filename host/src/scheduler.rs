//! How guest events share the CPU.
//!
//! Strategy: every event's epoch callback runs at each tick (1 ms) the
//! guest is still computing. An event is cut off past its CPU budget (ticks
//! it ran) as well as past its wall-clock deadline. An event that has run
//! for more than five ticks is *hot*: from then on it runs one tick at a time,
//! each only with a permit of [`Scheduler`]'s semaphore, which has one
//! permit fewer than there are cores. Hot events take turns (the semaphore
//! is fair), and at least one core is always left to fresh events and to
//! the I/O of every connection, so guests spinning in a loop cannot starve
//! a bystander's short request or anyone's sockets.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::UpdateDeadline;

/// Ticks an event may run before it counts as hot: 5 ms. An ordinary
/// event that crosses a tick or two (a slow host call, a busy machine) is
/// not made to wait for a turn; a guest computing in a loop is caught
/// within 5 ms.
const COOL_TICKS: u64 = 5;

/// The shared turn-taking of hot events (one per engine).
#[derive(Debug, Clone)]
pub(crate) struct Scheduler {
    hot: Arc<Semaphore>,
}

/// One event's place in the scheduler: the permit it holds while it runs a
/// hot tick.
#[derive(Debug, Default, Clone)]
pub(crate) struct Turn {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Scheduler {
    /// Hot events may run `slices` at a time.
    pub(crate) fn new(slices: usize) -> Scheduler {
        Scheduler {
            hot: Arc::new(Semaphore::new(slices.max(1))),
        }
    }

    /// One fewer than the machine's cores (at least one).
    pub(crate) fn for_this_machine() -> Scheduler {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Scheduler::new(cores.saturating_sub(1))
    }

    /// What an event that has now run `ticks` ticks does next: a cool one
    /// yields once; a hot one gives back its turn and waits for the next.
    pub(crate) fn next_tick(&self, ticks: u64, turn: &Turn) -> UpdateDeadline {
        if ticks <= COOL_TICKS {
            return UpdateDeadline::Yield(1);
        }
        crate::channels::lock(&turn.permit).take();
        let hot = self.hot.clone();
        let permit = turn.permit.clone();
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                if let Ok(p) = hot.acquire_owned().await {
                    *crate::channels::lock(&permit) = Some(p);
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hot_events_take_turns_and_cool_ones_do_not_wait() {
        let scheduler = Scheduler::new(1);
        let (a, b) = (Turn::default(), Turn::default());
        assert!(matches!(
            scheduler.next_tick(COOL_TICKS, &a),
            UpdateDeadline::Yield(1)
        ));
        let UpdateDeadline::YieldCustom(_, first) = scheduler.next_tick(COOL_TICKS + 1, &a) else {
            panic!("a hot event waits for its turn");
        };
        first.await;
        assert!(a.permit.lock().unwrap().is_some());
        let UpdateDeadline::YieldCustom(_, second) = scheduler.next_tick(COOL_TICKS + 1, &b) else {
            panic!("a hot event waits for its turn");
        };
        let mut second = Box::pin(second);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "a holds the only turn"
        );
        // a's next tick gives its turn back.
        let UpdateDeadline::YieldCustom(_, _a_again) = scheduler.next_tick(COOL_TICKS + 2, &a)
        else {
            panic!();
        };
        second.await;
        assert!(b.permit.lock().unwrap().is_some());
    }
}
