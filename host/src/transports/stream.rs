//! Streaming transports: server-sent events and chunked NDJSON. The response
//! body is a stream that waits on the connection's hub queue, so an open
//! stream costs one queue and one small state, and no task of its own.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{Backlog, Client, reset_json};
use crate::channels::{Cursor, Event, Message, Position};
use crate::dispatch::Body;

/// How a stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `text/event-stream`.
    Sse,
    /// `application/x-ndjson`.
    Ndjson,
}

/// How long an SSE client waits before reconnecting (the `retry:` field).
const SSE_RETRY_MS: u32 = 2000;

/// The `retry:` sent when the server shuts down: reconnect soon, to another
/// instance or this one restarted.
const SSE_RESTART_RETRY_MS: u32 = 500;

/// An open stream: the subscribed client and what it still has to be sent.
pub(crate) struct Stream {
    client: Client,
    cursor: Cursor,
    pending: VecDeque<Bytes>,
    format: Format,
    heartbeat: Interval,
    deadline: Option<Instant>,
    done: bool,
    close_reason: &'static str,
}

impl Stream {
    /// The `id:` of an SSE event: the stream's whole cursor.
    fn id_line(&self) -> Bytes {
        format!("id: {}\n", self.cursor.encode()).into()
    }

    fn push_message(&mut self, message: &Message) {
        self.cursor.set(&message.channel, message.position);
        match self.format {
            // With one channel the message's own cursor is the stream's.
            Format::Sse if self.client.conn.channels().count() == 1 => {
                self.pending.push_back(message.sse_with_id());
            }
            Format::Sse => {
                let id = self.id_line();
                self.pending.push_back(id);
                self.pending.push_back(message.sse());
            }
            Format::Ndjson => self.pending.push_back(message.ndjson()),
        }
    }

    fn push_control(&mut self, event: &str, json: &[u8]) {
        match self.format {
            Format::Sse => {
                let id = self.id_line();
                self.pending.push_back(id);
                let mut frame = format!("event: {event}\ndata: ").into_bytes();
                frame.extend_from_slice(json);
                frame.extend_from_slice(b"\n\n");
                self.pending.push_back(frame.into());
            }
            Format::Ndjson => {
                let mut line = json.to_vec();
                line.push(b'\n');
                self.pending.push_back(line.into());
            }
        }
    }

    /// The next bytes to write, waiting for a message, a heartbeat or the
    /// end; `None` once the stream is over.
    pub(crate) async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        if self.done {
            return None;
        }
        let deadline = self.deadline;
        tokio::select! {
            event = self.client.conn.next() => match event {
                Event::Message(m) => {
                    self.push_message(&m);
                    // Take whatever else is queued, so a burst is one write.
                    while let Some(m) = self.client.conn.try_next() {
                        self.push_message(&m);
                    }
                }
                Event::Closing => {
                    self.done = true;
                    self.close_reason = "server shutdown";
                    if self.format == Format::Sse {
                        // Reconnect soon, and with the cursor (the id line).
                        let retry = format!("retry: {SSE_RESTART_RETRY_MS}\n");
                        self.pending.push_back(retry.into());
                    }
                    let json = serde_json::json!({
                        "type": "error",
                        "error": "server-restart",
                        "message": "the server is restarting; reconnect with the last cursor",
                    });
                    self.push_control("error", json.to_string().as_bytes());
                }
                Event::SlowConsumer => {
                    self.done = true;
                    self.close_reason = "slow consumer";
                    let json = serde_json::json!({
                        "type": "error",
                        "error": "slow-consumer",
                        "message": "this client fell behind; reconnect with the last cursor to resume",
                    });
                    self.push_control("error", json.to_string().as_bytes());
                }
            },
            _ = self.heartbeat.tick() => {
                self.pending.push_back(match self.format {
                    Format::Sse => Bytes::from_static(b": heartbeat\n\n"),
                    Format::Ndjson => Bytes::from_static(b"{\"type\":\"heartbeat\"}\n"),
                });
            }
            () = sleep_until(deadline) => {
                self.done = true;
                self.close_reason = "hold timeout";
            }
        }
        self.pending.pop_front()
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let reason = if self.done {
            self.close_reason
        } else {
            "client closed"
        };
        self.client.closed(None, reason);
    }
}

impl Stream {
    /// Resolves once the hub has dropped this stream's client for falling
    /// behind, so a blocked write can be abandoned.
    pub(crate) fn kicked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.client.conn.kicked()
    }

    /// Bytes already queued, without waiting (to batch a burst into one
    /// write).
    pub(crate) fn ready_frame(&mut self) -> Option<Bytes> {
        self.pending.pop_front()
    }

    /// Mark the stream as ended by the server for `reason` (for on-close).
    pub(crate) fn end(&mut self, reason: &'static str) {
        self.done = true;
        self.close_reason = reason;
    }

    /// The response headers of a stream of `format`.
    pub(crate) fn content_type(format: Format) -> &'static str {
        match format {
            Format::Sse => "text/event-stream",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// The streaming response for a subscribed client: backlog first (with a
/// reset event for each channel that has a gap), then live messages,
/// heartbeats, and an error event if the client falls behind.
pub(crate) fn stream_response(
    client: Client,
    since: Cursor,
    backlogs: Vec<Backlog>,
    format: Format,
    heartbeat: Duration,
    hold_for: Option<Duration>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
) -> Response<Body> {
    into_response(
        open(client, since, backlogs, format, heartbeat, hold_for),
        extra_headers,
    )
}

/// The hyper response that writes `stream` as its body.
pub(crate) fn into_response(
    stream: Stream,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
) -> Response<Body> {
    let format = stream.format;
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let frame = stream.next_frame().await?;
        Some((Ok::<_, Infallible>(Frame::data(frame)), stream))
    });
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(Stream::content_type(format)),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    for (name, value) in extra_headers {
        headers.append(name, value);
    }
    response
}

/// A stream for a subscribed client, with its backlog (and resets) queued.
pub(crate) fn open(
    client: Client,
    since: Cursor,
    backlogs: Vec<Backlog>,
    format: Format,
    heartbeat: Duration,
    hold_for: Option<Duration>,
) -> Stream {
    let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stream = Stream {
        client,
        cursor: since,
        pending: VecDeque::new(),
        format,
        heartbeat,
        deadline: hold_for.map(|d| Instant::now() + d),
        done: false,
        close_reason: "",
    };
    // Drop positions of channels this stream is not subscribed to.
    let subscribed: Vec<String> = stream.client.conn.channels().map(str::to_string).collect();
    let mut cursor = Cursor::new();
    for channel in &subscribed {
        if let Some(p) = stream.cursor.get(channel) {
            cursor.set(channel, p);
        }
    }
    stream.cursor = cursor;
    if format == Format::Sse {
        stream
            .pending
            .push_back(format!("retry: {SSE_RETRY_MS}\n: connected\n\n").into());
    }
    for backlog in backlogs {
        // Where this channel starts: just before the first message delivered.
        let start = match backlog.messages.first() {
            Some(first) => Position {
                epoch: first.position.epoch,
                offset: first.position.offset.saturating_sub(1),
            },
            None => backlog.head,
        };
        stream.cursor.set(&backlog.channel, start);
        if let Some(gap) = backlog.gap {
            let json = reset_json(
                &backlog.channel,
                gap,
                &Cursor::single(&backlog.channel, start),
            );
            stream.push_control("reset", &json);
        }
        for message in &backlog.messages {
            stream.push_message(message);
        }
    }
    stream
}
