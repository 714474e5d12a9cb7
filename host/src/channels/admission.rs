//! Admission: how many client connections this host holds, by transport,
//! and whether it still takes new ones (not past the limit, not while
//! shutting down).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;

use super::error::ChannelError;
use super::signal::{Broadcast, Watch};
use crate::metrics::{ConnectionCounters, Metrics};

/// Client connections one host holds at once by default; past it new ones get
/// 503. Below the common 20,000 file descriptor limit, leaving room for
/// publishers and the admin side.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_000;

/// The kind of client connection, for counting by transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Server-sent events.
    Sse,
    /// Chunked NDJSON streaming.
    Stream,
    /// Long-poll (and guest holds answered as one response).
    Poll,
    /// WebSocket.
    WebSocket,
}

impl TransportKind {
    /// Every kind, in the order of [`Admission::by_transport`].
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Sse,
        TransportKind::Stream,
        TransportKind::Poll,
        TransportKind::WebSocket,
    ];

    /// Lower-case name (`sse`, `stream`, `poll`, `websocket`).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Sse => "sse",
            TransportKind::Stream => "stream",
            TransportKind::Poll => "poll",
            TransportKind::WebSocket => "websocket",
        }
    }
}

/// The connection count and the shutdown signal.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    total: AtomicUsize,
    by_transport: [AtomicUsize; 4],
    /// The opened, closed and refused counters of each transport.
    counters: [ConnectionCounters; 4],
    closing: Broadcast,
    /// Woken when the last connection goes.
    empty: Notify,
}

/// A held connection slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    kind: TransportKind,
}

impl Admission {
    /// Admission of at most `max` connections at once, counted in
    /// `metrics`.
    pub fn new(max: usize, metrics: &Metrics) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            total: AtomicUsize::new(0),
            by_transport: Default::default(),
            counters: TransportKind::ALL.map(|kind| metrics.connections(kind.name())),
            closing: Broadcast::default(),
            empty: Notify::new(),
        })
    }

    /// A slot for a new connection of `kind`, unless the host is full or
    /// shutting down.
    pub fn admit(self: &Arc<Self>, kind: TransportKind) -> Result<Ticket, ChannelError> {
        if self.closing.is_set() {
            return Err(ChannelError::Closing);
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.counters[kind as usize].refused.inc();
            return Err(ChannelError::ConnectionLimit(self.max));
        }
        self.by_transport[kind as usize].fetch_add(1, Ordering::AcqRel);
        self.counters[kind as usize].opened.inc();
        tracing::debug!(transport = kind.name(), "connection admitted");
        Ok(Ticket {
            admission: self.clone(),
            kind,
        })
    }

    /// Connections held now.
    pub fn count(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections held now, by transport, in the order of
    /// [`TransportKind::ALL`].
    pub fn by_transport(&self) -> [(TransportKind, usize); 4] {
        TransportKind::ALL.map(|k| (k, self.by_transport[k as usize].load(Ordering::Acquire)))
    }

    /// Begin shutdown: new connections are refused and [`Admission::closing`]
    /// resolves for every open one.
    pub fn close_all(&self) {
        self.closing.fire();
    }

    /// Resolves once shutdown began.
    pub async fn closing(&self) {
        self.closing.wait().await
    }

    /// Ready once shutdown began; otherwise `watch` wakes this task when it
    /// does (a standing registration, for a connection that waits often).
    pub fn poll_closing(&self, watch: &mut Watch, cx: &mut Context<'_>) -> Poll<()> {
        self.closing.poll_watch(watch, cx)
    }

    /// Resolves once no connection is held (the end of a shutdown's drain).
    pub async fn drained(&self) {
        loop {
            let empty = self.empty.notified();
            tokio::pin!(empty);
            empty.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            empty.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.by_transport[self.kind as usize].fetch_sub(1, Ordering::AcqRel);
        self.admission.counters[self.kind as usize].closed.inc();
        if self.admission.total.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.admission.empty.notify_waiters();
        }
        tracing::debug!(transport = self.kind.name(), "connection released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_enforced_and_released() {
        let admission = Admission::new(2, &Metrics::default());
        let a = admission.admit(TransportKind::Sse).unwrap();
        let _b = admission.admit(TransportKind::WebSocket).unwrap();
        assert!(matches!(
            admission.admit(TransportKind::Sse),
            Err(ChannelError::ConnectionLimit(2))
        ));
        drop(a);
        assert_eq!(admission.count(), 1);
        assert_eq!(admission.by_transport()[0].1, 0);
        assert!(admission.admit(TransportKind::Sse).is_ok());
        admission.close_all();
        assert!(matches!(
            admission.admit(TransportKind::Sse),
            Err(ChannelError::Closing)
        ));
    }
}
