//! A one-shot signal: set once, seen by every waiter, past and future. The
//! hub fires one per connection when it drops that connection as a slow
//! consumer; admission fires one when the server shuts down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

/// Told when a [`Signal`] fires (for whoever must act on it without
/// waiting on it: the HTTP connection of a stream that is not being
/// polled, say).
pub trait Listener: Send + Sync + std::fmt::Debug {
    /// The signal fired.
    fn fired(&self);
}

/// A flag that is set once and wakes every waiter.
#[derive(Debug, Default)]
pub struct Signal {
    fired: AtomicBool,
    notify: Notify,
    listener: OnceLock<Arc<dyn Listener>>,
}

impl Signal {
    /// Set the flag and wake every waiter; true the first time.
    pub fn fire(&self) -> bool {
        let first = !self.fired.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
            if let Some(listener) = self.listener.get() {
                listener.fired();
            }
        }
        first
    }

    /// Whether it fired.
    pub fn is_set(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Resolves once it has fired (at once if it already has).
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Register before checking the flag, so a fire in between is not lost.
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
    }

    /// Tell `listener` when the signal fires (at once if it already has).
    /// One listener per signal; later ones are ignored.
    pub fn listen(&self, listener: &Arc<dyn Listener>) {
        if self.listener.set(listener.clone()).is_ok() && self.is_set() {
            listener.fired();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug, Default)]
    struct Count(AtomicUsize);
    impl Listener for Count {
        fn fired(&self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[tokio::test]
    async fn fires_once_for_every_waiter_and_the_listener() {
        let s = Arc::new(Signal::default());
        let count = Arc::new(Count::default());
        s.listen(&(count.clone() as Arc<dyn Listener>));
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        assert!(s.fire());
        assert!(!s.fire());
        waiter.await.unwrap();
        s.wait().await;
        assert_eq!(count.0.load(Ordering::Acquire), 1);
    }
}
