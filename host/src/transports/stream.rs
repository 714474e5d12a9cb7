//! Streaming transports: server-sent events and chunked NDJSON. A
//! [`Stream`] turns a subscribed client's events into frames; it is written
//! either as a hyper response body ([`serve`], [`into_response`]) or, for a
//! connection's first request, straight to the socket as a chunked HTTP/1.1
//! response ([`serve_raw`]). An open stream costs one queue and one small
//! state, and no task of its own.
//!
//! Every way a stream ends is said in the stream itself, at an event
//! boundary: `slow-consumer` (the client fell behind), `server-restart`
//! (shutdown), `unavailable` (a lost message could not be read back), or
//! the hold's timeout.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::ReadBuf;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::client::{Client, RequestInfo};
use super::hangup::{Hangup, Stall};
use super::socket::{Framing, Pump, PumpEnd, SharedSocket, Socket, Through, Wire};
use super::{Conn, Endpoints, query};
use crate::channels::signal::Listener;
use crate::channels::{
    Backlog, ChannelName, Cursor, Event, Message, Position, Reset, TransportKind,
};
use crate::hooks::Hooks;
use crate::http::raw::{append_chunk, refuse};
use crate::http::{ApiError, Body};

/// `GET /comet/sse` or `/comet/stream` through hyper: the stream the query
/// asks for, as the response's body.
pub(super) async fn serve<B>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
    conn: Conn,
    format: Format,
) -> Result<Response<Body>, ApiError> {
    let mut stream = open(&hooks, endpoints, request, &conn, format).await?;
    if let Some(hangup) = &conn.hangup {
        stream.hang_up_with(hangup);
    }
    Ok(into_response(stream, Vec::new()))
}

/// `GET /comet/sse` as a connection's first request, on the socket itself:
/// the same hooks and checks as through hyper, the stream written as one
/// chunked response, the connection closing after it.
pub(super) async fn serve_raw<S: Socket>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    mut socket: S,
    request: http::Request<()>,
    conn: Conn,
) {
    let write_timeout = endpoints.config.write_timeout;
    let cors = endpoints.config.origins.cors(request.headers());
    // Boxed: the hooks' futures are large and only live until the stream
    // opens; the task keeps only what streaming needs.
    let opened = Box::pin(open(&hooks, endpoints, request, &conn, Format::Sse)).await;
    match opened {
        Ok(stream) => {
            let socket = Arc::new(SharedSocket::for_connection(
                socket,
                Framing::SseChunk,
                stream.connection(),
            ));
            let head = match &cors {
                None => RESPONSE_HEAD.to_vec(),
                // The CORS lines go before the blank line that ends the head.
                Some(cors) => {
                    let end = RESPONSE_HEAD.len() - 2;
                    let mut head = RESPONSE_HEAD[..end].to_vec();
                    head.extend_from_slice(cors.lines().as_bytes());
                    head.extend_from_slice(b"\r\n");
                    head
                }
            };
            write_raw(socket, stream, head, write_timeout).await;
        }
        Err(refusal) => {
            let pairs = cors.map(|c| c.pairs()).unwrap_or_default();
            let headers: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            refuse(&mut socket, &refusal, &headers, write_timeout).await
        }
    }
}

/// The stream a subscribing `request` asks for: its query string, then
/// on-connect, the subscriptions (on-subscribe for each) and the backlog.
/// The request is dropped before the hooks run.
async fn open<B>(
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
    conn: &Conn,
    format: Format,
) -> Result<Stream, ApiError> {
    let node = endpoints.node();
    let ask = query::parse(
        request.uri().query(),
        request.headers(),
        node.max_channels_per_connection(),
    )?;
    let info = RequestInfo::of(&request, &conn.peer);
    drop(request);
    let transport = match format {
        Format::Sse => TransportKind::Sse,
        Format::Ndjson => TransportKind::Stream,
    };
    let mut client = Client::connect(hooks, node, transport, info).await?;
    let backlogs = client
        .subscribe_all(&ask.channels, &ask.since, ask.token.as_deref(), true)
        .await?;
    Ok(Stream::open(
        client,
        backlogs,
        format,
        endpoints.config.heartbeat,
        None,
    ))
}

/// The head of a stream's raw response.
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: text/event-stream\r\n\
cache-control: no-cache\r\n\
x-accel-buffering: no\r\n\
connection: close\r\n\
transfer-encoding: chunked\r\n\r\n";

/// Write the stream to `socket` until it ends, the client goes away, or
/// bytes wait on its socket for `write_timeout`. Once the response head is
/// out, the hub's drains write a stream of one channel's live messages
/// themselves (see `socket`). A client dropped as a slow consumer gets the
/// `slow-consumer` event and the final chunk after what it was being sent,
/// if it reads them within the timeout; else the connection is closed.
async fn write_raw<W: Wire>(
    socket: Arc<SharedSocket<W>>,
    mut stream: Stream,
    head: Vec<u8>,
    write_timeout: Duration,
) {
    // The response head goes out with the backlog.
    let mut chunk = head;
    let mut frames: Vec<Bytes> = Vec::new();
    while let Some(frame) = stream.ready_frame() {
        frames.push(frame);
    }
    append_chunk(&mut chunk, &frames);
    if !send(&socket, &chunk, write_timeout).await {
        stream.end("slow consumer");
        return;
    }
    stream.write_through(&socket);
    let mut pump = Pump::new(write_timeout);
    // Nothing is expected from the client; reading notices it leaving.
    let mut probe = [0u8; 32];
    loop {
        let frame = tokio::select! {
            frame = stream.next_frame() => frame,
            read = poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut probe);
                ready!(socket.poll_read(cx, &mut buf))?;
                Poll::Ready(Ok::<_, std::io::Error>(buf.filled().len()))
            }) => match read {
                Ok(n) if n > 0 => continue,
                // Closed or failed: the stream's drop reports it.
                _ => return,
            },
            end = poll_fn(|cx| pump.poll(&socket, cx)) => {
                if end == PumpEnd::Stalled {
                    stream.end("slow consumer");
                }
                return;
            }
        };
        let last = frame.is_none();
        frames.clear();
        frames.extend(frame);
        // Take whatever else is ready, so a burst is one write.
        while let Some(more) = stream.ready_frame() {
            frames.push(more);
        }
        chunk.clear();
        append_chunk(&mut chunk, &frames);
        if last {
            chunk.extend_from_slice(b"0\r\n\r\n");
        }
        if !send(&socket, &chunk, write_timeout).await {
            stream.end("slow consumer");
            return;
        }
        if last {
            // What waits goes out before the socket closes.
            let _ = tokio::time::timeout(write_timeout, socket.flushed()).await;
            return;
        }
    }
}

/// Write all of `bytes` (whole frames) to `socket`, once there is room,
/// within `timeout`. A write is never cut short by the slow-consumer
/// signal: it ends at an event boundary, and the stream's next frame says
/// why it ends.
async fn send<W: Wire>(socket: &SharedSocket<W>, bytes: &[u8], timeout: Duration) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let write = poll_fn(|cx| socket.poll_write_own(cx, bytes));
    matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(_)))
}

/// How a stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `text/event-stream`.
    Sse,
    /// `application/x-ndjson`.
    Ndjson,
}

impl Format {
    /// The content type.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Sse => "text/event-stream",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// How long an SSE client waits before reconnecting (the `retry:` field).
const SSE_RETRY_MS: u32 = 2000;

/// The `retry:` sent when the server shuts down: reconnect soon, to another
/// instance or this one restarted.
const SSE_RESTART_RETRY_MS: u32 = 500;

/// An open stream: the subscribed client and what it still has to be sent.
pub(crate) struct Stream {
    client: Client,
    /// Each channel's position as far as frames were made: the `id:` of an
    /// SSE event (a reconnect with it misses nothing and repeats nothing).
    cursor: Cursor,
    /// One channel: a message's own cursor is the stream's.
    single: bool,
    pending: VecDeque<Bytes>,
    format: Format,
    heartbeat: Interval,
    deadline: Option<Instant>,
    done: bool,
    close_reason: &'static str,
    stall: Option<Arc<Stall>>,
    /// A stream of one channel written on its own socket: the hub's drains
    /// write its live messages there (see [`Stream::write_through`]).
    through: Option<(Arc<dyn Through>, ChannelName)>,
}

impl Stream {
    /// A stream for a subscribed client, with its backlog (and resets)
    /// queued first.
    pub(crate) fn open(
        client: Client,
        backlogs: Vec<Backlog>,
        format: Format,
        heartbeat: Duration,
        hold_for: Option<Duration>,
    ) -> Stream {
        let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut cursor = Cursor::new();
        for backlog in &backlogs {
            cursor.set(&backlog.channel, backlog.start);
        }
        let mut stream = Stream {
            single: client.conn.channel_count() == 1,
            client,
            cursor,
            pending: VecDeque::new(),
            format,
            heartbeat,
            deadline: hold_for.map(|d| Instant::now() + d),
            done: false,
            close_reason: "",
            stall: None,
            through: None,
        };
        if format == Format::Sse {
            // The stream's cursor before anything is delivered, as an event a
            // page can read (and an `id:` EventSource resumes from): a client
            // dropped before the first message still resumes without a gap.
            let cursor = stream.cursor.encode();
            stream.pending.push_back(
                format!(
                    "retry: {SSE_RETRY_MS}\n: connected\n\nid: {cursor}\nevent: subscribed\ndata: {{\"type\":\"subscribed\",\"cursor\":\"{cursor}\"}}\n\n"
                )
                .into(),
            );
        }
        for backlog in backlogs {
            if let Some(reset) = &backlog.reset {
                stream.push_reset(reset);
            }
            for message in &backlog.messages {
                stream.push_message(message);
            }
        }
        stream
    }

    /// The `id:` of an SSE event: the stream's whole cursor.
    fn id_line(&self) -> Bytes {
        format!("id: {}\n", self.cursor.encode()).into()
    }

    /// The client's channel connection.
    pub(crate) fn connection(&self) -> &crate::channels::Connection {
        &self.client.conn
    }

    /// Let the hub's drains write this stream's live messages straight to
    /// `socket` while it waits (an SSE stream of one channel, whose
    /// messages need no per-stream `id:`; others still get everything from
    /// [`Stream::next_frame`]).
    pub(super) fn write_through<W: Wire>(&mut self, socket: &Arc<SharedSocket<W>>) {
        if self.format != Format::Sse || !self.single {
            return;
        }
        let Some(channel) = self.client.conn.channels().pop() else {
            return;
        };
        self.client.conn.set_outlet(Some(socket.clone()));
        self.through = Some((socket.clone() as Arc<dyn Through>, channel));
    }

    /// Move the cursor past what the drains wrote, before making a frame
    /// whose `id:` is the cursor.
    fn catch_up_with_drains(&mut self) {
        if let Some((socket, channel)) = &self.through
            && let Some(position) = socket.take_written()
        {
            self.cursor.set(channel, position);
        }
    }

    fn push_message(&mut self, message: &Message) {
        self.cursor.set(&message.channel, message.position);
        match self.format {
            Format::Sse if self.single => self.pending.push_back(message.sse_with_id()),
            Format::Sse => {
                let id = self.id_line();
                self.pending.push_back(id);
                self.pending.push_back(message.sse());
            }
            Format::Ndjson => self.pending.push_back(message.ndjson()),
        }
    }

    fn push_reset(&mut self, reset: &Reset) {
        self.cursor.set(&reset.channel, reset.position);
        self.push_control("reset", &reset.json());
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

    /// Stop the drains: what this task writes from now on (the end) is the
    /// last thing on the socket.
    fn stop_drains(&mut self) {
        if let Some((socket, _)) = &self.through {
            socket.close_messages();
            self.catch_up_with_drains();
        }
    }

    /// End with an `error` event carrying `code`.
    fn push_end(&mut self, reason: &'static str, code: &str, message: &str) {
        self.end_with(
            reason,
            serde_json::json!({ "error": code, "message": message }),
        );
    }

    /// End with an `error` event of `error` (an object with at least
    /// `error` and `message`), typed `error`.
    fn end_with(&mut self, reason: &'static str, mut error: serde_json::Value) {
        self.stop_drains();
        self.done = true;
        self.close_reason = reason;
        error["type"] = serde_json::Value::from("error");
        self.push_control("error", error.to_string().as_bytes());
    }

    fn push(&mut self, event: Event) {
        self.catch_up_with_drains();
        match event {
            Event::Message(m) => self.push_message(&m),
            Event::Reset(reset) => self.push_reset(&reset),
            Event::Closing => {
                if self.format == Format::Sse {
                    // Reconnect soon, and with the cursor (the id line).
                    let retry = format!("retry: {SSE_RESTART_RETRY_MS}\n");
                    self.pending.push_back(retry.into());
                }
                self.push_end(
                    "server shutdown",
                    "server-restart",
                    "the server is restarting; reconnect with the last cursor",
                );
            }
            Event::SlowConsumer => self.push_end(
                "slow consumer",
                "slow-consumer",
                "this client fell behind; reconnect with the last cursor to resume",
            ),
            Event::Unavailable(why) => self.push_end(
                "broker unavailable",
                "unavailable",
                &format!("{why}; reconnect with the last cursor to resume"),
            ),
            Event::Disconnect(d) => self.end_with("disconnected by the server API", d.json()),
            Event::Unsubscribed(channel) => {
                let json = serde_json::json!({
                    "type": "unsubscribed", "channel": channel.as_str(), "server": true,
                });
                self.push_control("unsubscribed", json.to_string().as_bytes());
            }
            // Taken by `take`, which subscribes first.
            Event::Subscribe(..) => {}
        }
    }

    /// Handle `event`: a server-side subscription is made here (it waits
    /// for the broker), everything else becomes frames at once.
    async fn take(&mut self, event: Event) {
        match event {
            Event::Subscribe(channel, since) => {
                Box::pin(self.subscribe_server(channel, since)).await;
            }
            event => self.push(event),
        }
    }

    /// Subscribe to `channel` for the server API: the `subscribed` event,
    /// then the reset if any and the backlog.
    async fn subscribe_server(&mut self, channel: ChannelName, since: Option<Position>) {
        // Drains write a single channel's events without the stream's
        // cursor: from now on this task writes every frame, each with the
        // whole cursor.
        if self.through.is_some() {
            self.client.conn.set_outlet(None);
            self.catch_up_with_drains();
            self.through = None;
        }
        self.single = false;
        match self.client.subscribe(&channel, since, None, false).await {
            Ok(backlog) => {
                self.cursor.set(&backlog.channel, backlog.start);
                let json = serde_json::json!({
                    "type": "subscribed", "channel": channel.as_str(),
                    "cursor": Cursor::single(&channel, backlog.start).encode(), "server": true,
                });
                self.push_control("subscribed", json.to_string().as_bytes());
                if let Some(reset) = &backlog.reset {
                    self.push_reset(reset);
                }
                for message in &backlog.messages {
                    self.push_message(message);
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                let json = serde_json::json!({
                    "type": "error", "error": e.code, "message": e.message,
                    "channel": channel.as_str(),
                });
                self.push_control("error", json.to_string().as_bytes());
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
            event = self.client.conn.next() => {
                self.take(event).await;
                // Take whatever else is ready, so a burst is one write.
                while !self.done
                    && let Some(event) = self.client.conn.try_next()
                {
                    self.take(event).await;
                }
            }
            _ = self.heartbeat.tick() => {
                self.pending.push_back(match self.format {
                    Format::Sse => Bytes::from_static(b": heartbeat\n\n"),
                    Format::Ndjson => Bytes::from_static(b"{\"type\":\"heartbeat\"}\n"),
                });
            }
            () = sleep_until(deadline) => {
                self.stop_drains();
                self.done = true;
                self.close_reason = "hold timeout";
            }
        }
        self.pending.pop_front()
    }

    /// Bytes already made, without waiting (to batch a burst into one
    /// write).
    pub(crate) fn ready_frame(&mut self) -> Option<Bytes> {
        self.pending.pop_front()
    }

    /// Mark the stream as ended by the server for `reason` (for on-close).
    pub(crate) fn end(&mut self, reason: &'static str) {
        self.done = true;
        self.close_reason = reason;
    }

    /// Let `hangup` close the HTTP connection if this stream is dropped as a
    /// slow consumer and cannot be written to its end.
    pub(crate) fn hang_up_with(&mut self, hangup: &Arc<Hangup>) {
        let stall = hangup.stall();
        self.client
            .conn
            .on_kick(&(stall.clone() as Arc<dyn Listener>));
        self.stall = Some(stall);
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
        if let Some(stall) = &self.stall {
            stall.release();
        }
        let reason = if self.done {
            self.close_reason
        } else {
            "client closed"
        };
        self.client.closed(None, reason);
    }
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
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    for (name, value) in extra_headers {
        headers.append(name, value);
    }
    response
}
