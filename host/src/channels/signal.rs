//! One-shot signals: set once, seen by every waiter, past and future. The
//! hub fires a [`Signal`] per connection when it drops that connection as a
//! slow consumer; admission fires a [`Broadcast`] when the server shuts down.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

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
        let first = fire(&self.fired, &self.notify);
        if first && let Some(listener) = self.listener.get() {
            listener.fired();
        }
        first
    }

    /// Whether it fired.
    pub fn is_set(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Resolves once it has fired (at once if it already has).
    pub async fn wait(&self) {
        wait(&self.fired, &self.notify).await
    }

    /// Tell `listener` when the signal fires (at once if it already has).
    /// One listener per signal; later ones are ignored.
    pub fn listen(&self, listener: &Arc<dyn Listener>) {
        if self.listener.set(listener.clone()).is_ok() && self.is_set() {
            listener.fired();
        }
    }
}

/// A one-shot signal that many tasks watch for their whole life (the
/// server's shutdown, watched by every connection at every wait).
///
/// Waiting on a [`Signal`] joins and leaves its waiter list each time, under
/// the list's lock; for a signal every connection shares, that is two
/// acquisitions of one contended lock per delivered message. A [`Watch`]
/// instead joins once and stays: later waits from the same task read the
/// flag and return.
#[derive(Debug, Default)]
pub struct Broadcast {
    fired: AtomicBool,
    /// Only ever woken with `notify_waiters`, so a registered watch stays
    /// in the list until the signal fires.
    notify: Arc<Notify>,
}

/// One task's standing registration with a [`Broadcast`] (empty until the
/// first wait).
#[derive(Debug, Default)]
pub struct Watch(Option<(Pin<Box<OwnedNotified>>, Waker)>);

impl Broadcast {
    /// Set the flag and wake every waiter; true the first time.
    pub fn fire(&self) -> bool {
        fire(&self.fired, &self.notify)
    }

    /// Whether it fired.
    pub fn is_set(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Resolves once it has fired (at once if it already has).
    pub async fn wait(&self) {
        wait(&self.fired, &self.notify).await
    }

    /// Ready once it has fired; otherwise make sure `watch` wakes this task
    /// when it does.
    pub fn poll_watch(&self, watch: &mut Watch, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_set() {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &watch.0 {
            // Registered with this task's waker: `fire` sets the flag
            // before it wakes the list, so the flag read above is enough.
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let (notified, waker) = watch.0.get_or_insert_with(|| {
            (
                Box::pin(self.notify.clone().notified_owned()),
                Waker::noop().clone(),
            )
        });
        // Joins the list (or updates the waker there) with this task's waker.
        if notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        waker.clone_from(cx.waker());
        // Fired between the flag read and joining the list: the
        // notification was counted when the watch was made, or the flag is
        // set now.
        if self.is_set() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Set `fired` and wake every waiter on `notify`; true the first time.
fn fire(fired: &AtomicBool, notify: &Notify) -> bool {
    let first = !fired.swap(true, Ordering::AcqRel);
    if first {
        notify.notify_waiters();
    }
    first
}

/// Resolves once `fired` is set (at once if it is), for one wait.
async fn wait(fired: &AtomicBool, notify: &Notify) {
    let notified = notify.notified();
    tokio::pin!(notified);
    // Register before checking the flag, so a fire in between is not lost.
    notified.as_mut().enable();
    if fired.load(Ordering::Acquire) {
        return;
    }
    notified.await;
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

    #[tokio::test]
    async fn a_broadcast_wakes_a_standing_watch_and_later_waits() {
        let b = Arc::new(Broadcast::default());
        let watcher = tokio::spawn({
            let b = b.clone();
            async move {
                let mut watch = Watch::default();
                // Polled many times while registered: each poll after the
                // first is the cheap path.
                let mut polls = 0;
                std::future::poll_fn(|cx| {
                    polls += 1;
                    if polls < 3 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    b.poll_watch(&mut watch, cx)
                })
                .await;
                polls
            }
        });
        tokio::task::yield_now().await;
        assert!(b.fire());
        assert!(!b.fire());
        assert!(watcher.await.unwrap() >= 3);
        b.wait().await;
    }
}
