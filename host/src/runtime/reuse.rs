//! Instance reuse, for a module that opts in: up to [`IDLE_INSTANCES`]
//! instances that ended an event well wait for the module's next event,
//! which takes one (last in, first out: its pages are the warmest) instead
//! of instantiating. All modules' idle instances together hold at most a
//! share of the engine's slots ([`IdleBudget`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::event::Event;

/// Idle instances one module that opts in to reuse keeps at most: about the
/// events that run at once on this machine's threads. Each holds a pool
/// slot and one of the module's `max_concurrent` permits while idle; an
/// instance that ends an event with the list full is dropped.
pub const IDLE_INSTANCES: usize = 16;

/// The share of the engine's instance slots that idle instances of all
/// modules together may hold (one in four), so that the modules that
/// reuse cannot leave the others without a slot (`503 busy`).
pub(super) const IDLE_SHARE_OF_SLOTS: usize = 4;

/// Idle instances held by all modules of one runtime, against their cap.
#[derive(Debug)]
pub(super) struct IdleBudget {
    held: AtomicUsize,
    max: usize,
}

impl IdleBudget {
    /// A budget of `max` idle instances.
    pub(super) fn new(max: usize) -> Arc<IdleBudget> {
        Arc::new(IdleBudget {
            held: AtomicUsize::new(0),
            max,
        })
    }

    /// Count one more idle instance, if under the cap.
    fn reserve(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One module version's idle instances.
pub(super) struct Idle<T: 'static> {
    list: Mutex<Vec<Event<T>>>,
    /// The runtime's count of idle instances, which `list` is part of.
    budget: Arc<IdleBudget>,
    /// Replaced or removed: keeps no idle instance (their pool slots and
    /// permits go back while events of this version may still run).
    retired: AtomicBool,
}

impl<T: Send + 'static> Idle<T> {
    pub(super) fn new(budget: Arc<IdleBudget>) -> Idle<T> {
        Idle {
            list: Mutex::new(Vec::new()),
            budget,
            retired: AtomicBool::new(false),
        }
    }

    /// The warmest idle instance, if any.
    pub(super) fn take(&self) -> Option<Event<T>> {
        let event = self.list.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        self.budget.release(1);
        Some(event)
    }

    /// Keep `event`'s instance for a next event, if there is room (in the
    /// list and the runtime's budget) and the version is not retired; else
    /// it is dropped.
    pub(super) fn park(&self, event: Event<T>) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: `retire` empties the list after setting it.
        if list.len() < IDLE_INSTANCES
            && !self.retired.load(Ordering::Relaxed)
            && self.budget.reserve()
        {
            list.push(event);
        }
    }

    /// Keep none from now on, and drop those kept.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        // Taken under the lock, dropped after it (a Store drop resets memory).
        let idle = std::mem::take(&mut *self.list.lock().unwrap_or_else(|e| e.into_inner()));
        self.budget.release(idle.len());
        drop(idle);
    }

    /// Instances kept now.
    pub(super) fn len(&self) -> usize {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<T: 'static> Drop for Idle<T> {
    fn drop(&mut self) {
        let idle = self.list.get_mut().unwrap_or_else(|e| e.into_inner());
        self.budget.release(idle.len());
    }
}

impl<T: 'static> std::fmt::Debug for Idle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("retired", &self.retired.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_caps_all_modules_together() {
        let budget = IdleBudget::new(2);
        assert!(budget.reserve() && budget.reserve());
        assert!(!budget.reserve());
        budget.release(1);
        assert!(budget.reserve());
    }
}
