//! Subscriber clients: SSE and long-poll over a hyper HTTP/1.1 client
//! connection, WebSocket over tokio-tungstenite (4 KiB read buffer). Each
//! first subscribes, reports that it is ready, then feeds every byte it
//! receives to the payload scanner until the run ends.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::payload::Scanner;
use crate::stats::Stats;
use crate::target::{Target, Transport, WsStart};

/// One subscriber's parameters.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The server.
    pub target: Arc<Target>,
    /// The transport.
    pub transport: Transport,
    /// The channel.
    pub channel: String,
    /// The source address, if spread over several.
    pub source: Option<Ipv4Addr>,
}

/// Delivery bookkeeping shared with the rest of the process.
#[derive(Debug, Clone)]
pub struct Sink {
    /// The process's statistics.
    pub stats: Arc<Stats>,
    /// This subscriber's last sequence number.
    pub last_seq: Arc<AtomicU64>,
}

impl Sink {
    pub(crate) fn feed(&self, scanner: &mut Scanner, found: &mut Vec<(u64, u64)>, chunk: &[u8]) {
        found.clear();
        scanner.feed(chunk, |seq, sent| found.push((seq, sent)));
        self.stats.record(&self.last_seq, found);
    }
}

impl Subscriber {
    /// Subscribes, sends `()` on `ready` once subscribed, then receives until
    /// the connection ends. Errors before `ready` is sent mean the subscribe
    /// failed.
    pub async fn run(self, sink: Sink, ready: oneshot::Sender<()>) -> anyhow::Result<()> {
        match self.transport {
            Transport::Sse => self.sse(sink, ready).await,
            Transport::Ws if self.target.ws_deflate => self.ws_deflate(sink, ready).await,
            Transport::Ws => self.ws(sink, ready).await,
            Transport::Poll => self.poll(sink, ready).await,
        }
    }

    async fn http(&self) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
        let stream = self
            .target
            .open(self.target.addr, self.source, false)
            .await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn get(&self, path: &str, accept: &str) -> anyhow::Result<hyper::Request<Empty<Bytes>>> {
        Ok(hyper::Request::get(path)
            .header("host", self.target.addr.to_string())
            .header("accept", accept)
            .body(Empty::new())?)
    }

    async fn sse(self, sink: Sink, ready: oneshot::Sender<()>) -> anyhow::Result<()> {
        let path = self.target.subscribe_path(Transport::Sse, &self.channel)?;
        let response = match &self.target.h2 {
            // A stream on a shared HTTP/2 connection (the URI absolute, as
            // HTTP/2 asks).
            Some(shared) => {
                let open = self.target.open(self.target.addr, self.source, true);
                let mut sender = shared.sender(open).await?;
                let uri = format!("https://{}{path}", crate::tls::SERVER_NAME);
                sender
                    .send_request(self.get(&uri, "text/event-stream")?)
                    .await?
            }
            None => {
                let mut sender = self.http().await?;
                sender
                    .send_request(self.get(&path, "text/event-stream")?)
                    .await?
            }
        };
        if !response.status().is_success() {
            bail!("subscribe answered {}", response.status());
        }
        let mut body = response.into_body();
        // Subscribed once the headers arrive: every server answers them after
        // registering the subscription.
        let _ = ready.send(());
        let mut scanner = Scanner::default();
        let mut found = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                sink.feed(&mut scanner, &mut found, &data);
            }
        }
        Ok(())
    }

    async fn ws(self, sink: Sink, ready: oneshot::Sender<()>) -> anyhow::Result<()> {
        let stream = self
            .target
            .open(self.target.addr, self.source, false)
            .await?;
        let path = self.target.subscribe_path(Transport::Ws, &self.channel)?;
        let scheme = if self.target.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        let url = format!("{scheme}://{}{path}", self.target.addr);
        let config = WebSocketConfig::default().read_buffer_size(4 << 10);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("websocket handshake")?;
        let mut scanner = Scanner::default();
        let mut found = Vec::new();
        match self.target.ws_start(&self.channel) {
            WsStart::Handshake => {}
            WsStart::FirstFrame => {
                ws.next().await.context("closed before subscribing")??;
            }
            WsStart::Send(frame) => {
                ws.send(Message::text(frame)).await?;
                match ws.next().await.context("closed before subscribing")?? {
                    Message::Text(t) if t.contains("subscribed") => {}
                    other => bail!("unexpected answer to subscribe: {other:?}"),
                }
            }
        }
        let _ = ready.send(());
        while let Some(message) = ws.next().await {
            match message? {
                Message::Text(t) => sink.feed(&mut scanner, &mut found, t.as_bytes()),
                Message::Binary(b) => sink.feed(&mut scanner, &mut found, &b),
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok(())
    }

    /// comet's long-poll: the first poll subscribes from now on; each answer's
    /// cursor is the `since` of the next.
    async fn poll(self, sink: Sink, ready: oneshot::Sender<()>) -> anyhow::Result<()> {
        let mut sender = self.http().await?;
        let base = self.target.subscribe_path(Transport::Poll, &self.channel)?;
        // An immediate poll (timeout 0) returns the current cursor: later
        // polls from it miss nothing.
        let mut cursor = {
            let response = sender
                .send_request(self.get(&format!("{base}&timeout=0"), "application/json")?)
                .await?;
            if !response.status().is_success() {
                bail!("poll answered {}", response.status());
            }
            let body = response.into_body().collect().await?.to_bytes();
            cursor_of(&body)?
        };
        let _ = ready.send(());
        let mut scanner = Scanner::default();
        let mut found = Vec::new();
        loop {
            sender.ready().await?;
            let response = sender
                .send_request(self.get(&format!("{base}&since={cursor}"), "application/json")?)
                .await?;
            if !response.status().is_success() {
                bail!("poll answered {}", response.status());
            }
            let body = response.into_body().collect().await?.to_bytes();
            sink.feed(&mut scanner, &mut found, &body);
            cursor = cursor_of(&body)?;
        }
    }
}

fn cursor_of(body: &[u8]) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        cursor: String,
    }
    let answer: Answer = serde_json::from_slice(body)
        .with_context(|| format!("poll answer: {}", String::from_utf8_lossy(body)))?;
    Ok(answer.cursor)
}
