//! The publisher: one or more keep-alive HTTP/1.1 connections publishing at a
//! fixed total rate (or as fast as answers come back), each owning a share of
//! the channels so that every channel's sequence numbers stay in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::payload::{make, make_words, now_nanos};
use crate::target::Target;

/// Publisher counters (never reset; windows take differences).
#[derive(Debug, Default)]
pub struct Counters {
    /// Publishes answered with a success status.
    pub published: AtomicU64,
    /// Publishes that failed or were refused.
    pub errors: AtomicU64,
}

/// The publishers' shared state.
#[derive(Debug)]
pub struct Publisher {
    /// The server.
    pub target: Arc<Target>,
    /// Channel names; channel `c` belongs to connection `c % connections`.
    pub channels: Arc<Vec<String>>,
    /// The last sequence number published on each channel.
    pub seqs: Arc<Vec<AtomicU64>>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Payload size in bytes.
    pub payload_len: usize,
    /// Pad payloads with words rather than `x`.
    pub payload_words: bool,
}

impl Publisher {
    /// Starts `connections` publishing tasks. The total rate (publishes/s,
    /// 0 = unpaced, None = stopped) is read from `rate` and may change.
    pub fn start(self: &Arc<Self>, connections: usize, rate: &watch::Receiver<Option<f64>>) {
        let connections = connections.clamp(1, self.channels.len());
        for index in 0..connections {
            let this = self.clone();
            let rate = rate.clone();
            tokio::spawn(async move {
                if let Err(e) = this.run(index, connections, rate).await {
                    eprintln!("publisher {index}: {e:#}");
                }
            });
        }
    }

    async fn connect(&self) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
        let stream = self
            .target
            .open(self.target.publish_addr, None, false)
            .await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn run(
        &self,
        index: usize,
        connections: usize,
        mut rate: watch::Receiver<Option<f64>>,
    ) -> anyhow::Result<()> {
        let mine: Vec<usize> = (index..self.channels.len()).step_by(connections).collect();
        let mut sender = self.connect().await?;
        let mut next = 0usize;
        let mut due = Instant::now();
        loop {
            let current = *rate.borrow_and_update();
            let Some(total) = current else {
                if rate.changed().await.is_err() {
                    // The run is over.
                    return Ok(());
                }
                due = Instant::now();
                continue;
            };
            if total > 0.0 {
                let period = Duration::from_secs_f64(connections as f64 / total);
                due += period;
                let now = Instant::now();
                if due > now {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = rate.changed() => { due = Instant::now(); continue; }
                    }
                } else if now - due > Duration::from_secs(1) {
                    // Far behind: the server cannot keep up; do not burst.
                    due = now;
                }
            }
            // Pushpin answers every publish with `Connection: close`: open a
            // new connection before taking a sequence number, so a closed
            // one does not count as a lost message.
            if sender.ready().await.is_err() {
                sender = self.connect().await?;
            }
            let c = mine[next % mine.len()];
            next += 1;
            let seq = self.seqs[c].fetch_add(1, Ordering::Relaxed) + 1;
            let payload = if self.payload_words {
                make_words(seq, now_nanos(), self.payload_len)
            } else {
                make(seq, now_nanos(), self.payload_len)
            };
            let publish = self.target.publish(&self.channels[c], &payload);
            let mut request = hyper::Request::post(publish.path)
                .header("host", self.target.publish_addr.to_string());
            for (k, v) in publish.headers {
                request = request.header(k, v);
            }
            let request = request.body(Full::new(publish.body))?;
            let ok = match sender.send_request(request).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let _ = response.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            };
            let counter = if ok {
                &self.counters.published
            } else {
                &self.counters.errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
