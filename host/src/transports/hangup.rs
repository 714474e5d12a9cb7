//! Hanging up an HTTP connection whose stream can no longer be written.
//!
//! hyper polls a response body only when it can write: a client that stops
//! reading blocks hyper's write, and the body (which would notice that the
//! hub dropped it as a slow consumer and end with an error event) is never
//! polled again. So the stream's slow-consumer signal also tells the
//! connection's [`Hangup`]; the task serving that connection then gives the
//! stream [`EndpointConfig::write_timeout`](super::EndpointConfig) to end
//! (its last event and the final chunk written), and drops the connection if
//! it has not. On HTTP/2 that ends the other streams of the connection too:
//! a client that does not read one stream is not reading the connection.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::channels::signal::Listener;

/// One per HTTP connection served by hyper.
#[derive(Debug, Default)]
pub struct Hangup {
    /// Streams dropped as slow consumers and not ended yet.
    stalled: AtomicUsize,
    changed: Notify,
}

impl Hangup {
    /// Drive `connection` to its end, unless a stalled stream stays open
    /// for `grace`: then stop (dropping `connection` closes the socket) and
    /// answer `None`.
    pub(crate) async fn serve<F: Future>(
        &self,
        connection: F,
        grace: Duration,
    ) -> Option<F::Output> {
        tokio::pin!(connection);
        loop {
            // Nothing stalled: wait for the end or a change.
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.stalled.load(Ordering::Acquire) > 0 {
                    break;
                }
                tokio::select! {
                    out = &mut connection => return Some(out),
                    () = changed => {}
                }
            }
            // A stalled stream: it has `grace` to end.
            let deadline = tokio::time::sleep(grace);
            tokio::pin!(deadline);
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.stalled.load(Ordering::Acquire) == 0 {
                    break;
                }
                tokio::select! {
                    out = &mut connection => return Some(out),
                    () = changed => {}
                    () = &mut deadline => return None,
                }
            }
        }
    }

    /// A listener for one stream's slow-consumer signal.
    pub(crate) fn stall(self: &Arc<Self>) -> Arc<Stall> {
        Arc::new(Stall {
            hangup: self.clone(),
            state: AtomicU8::new(IDLE),
        })
    }

    fn add(&self, n: isize) {
        if n > 0 {
            self.stalled.fetch_add(1, Ordering::AcqRel);
        } else {
            self.stalled.fetch_sub(1, Ordering::AcqRel);
        }
        self.changed.notify_waiters();
    }
}

const IDLE: u8 = 0;
const COUNTED: u8 = 1;
const RELEASED: u8 = 2;

/// One stream's part in its connection's [`Hangup`]: counted while the
/// stream is stalled and open.
#[derive(Debug)]
pub(crate) struct Stall {
    hangup: Arc<Hangup>,
    state: AtomicU8,
}

impl Stall {
    /// The stream ended: it no longer holds its connection open.
    pub(crate) fn release(&self) {
        if self.state.swap(RELEASED, Ordering::AcqRel) == COUNTED {
            self.hangup.add(-1);
        }
    }
}

impl Listener for Stall {
    fn fired(&self) {
        if self
            .state
            .compare_exchange(IDLE, COUNTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.hangup.add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_that_ends_keeps_the_connection() {
        let hangup = Arc::new(Hangup::default());
        let stall = hangup.stall();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn({
            let hangup = hangup.clone();
            async move {
                hangup
                    .serve(async { end_rx.await.is_ok() }, Duration::from_secs(5))
                    .await
            }
        });
        stall.fired();
        tokio::time::advance(Duration::from_secs(1)).await;
        stall.release();
        tokio::time::advance(Duration::from_secs(10)).await;
        end_tx.send(()).unwrap();
        assert_eq!(served.await.unwrap(), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_that_stays_hangs_up() {
        let hangup = Arc::new(Hangup::default());
        let stall = hangup.stall();
        stall.fired();
        let out = hangup
            .serve(std::future::pending::<()>(), Duration::from_secs(5))
            .await;
        assert_eq!(out, None);
        // Released after the hang-up, or never fired: nothing counted twice.
        stall.release();
        stall.fired();
        assert_eq!(hangup.stalled.load(Ordering::Acquire), 0);
    }
}
