//! WebSocket: the upgrade, then one task per connection that reads client
//! frames (built-in operations, or custom frames for on-message) and writes
//! channel messages, acknowledgements and errors.
//!
//! Strategy: the task selects between the client's next frame, the hub queue,
//! the socket's waiting bytes and a heartbeat tick. The socket is shared
//! with the hub (`socket`): while the task waits with nothing in hand, the
//! hub's drains write live messages to it without waking the task. Every
//! write of the task's own is raced against the hub's slow-consumer signal,
//! so a client that stops reading is closed (4008) as soon as its queue or
//! socket overflows, or when bytes have waited on its socket for the write
//! timeout.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use bytes::BytesMut;
use comet_wire::frame::{self, BINARY, CLOSE, Frame, PING, PONG, Reader, TEXT};
use comet_wire::ops::{self, Op};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::upgrade::downcast;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::client::{Client, RequestInfo};
use super::query;
use super::socket::{Framing, Pump, PumpEnd, SharedSocket, Socket, SocketIo, Through as _, Wire};
use super::tls::TlsWire;
use super::{Conn, DEFAULT_HEARTBEAT, Endpoints};
use crate::channels::node::DEFAULT_MAX_PAYLOAD;
use crate::channels::{
    Backlog, ChannelError, ChannelName, Cursor, Event, Message, Outlet as _, Payload, Reset,
    TransportKind,
};
use crate::hooks::{Action, Hooks, PublishSource, Publisher};
use crate::http::raw::refuse;
use crate::http::{ApiError, Body, full, next_request_id};

/// Read buffer per connection, allocated up front. Subscribers send small
/// frames; a larger one grows it for as long as it takes to read.
const READ_BUFFER: usize = 1 << 10;

/// Largest client frame (a publish carries at most one payload plus JSON).
const MAX_FRAME: usize = DEFAULT_MAX_PAYLOAD + (4 << 10);

/// A client with no frame (not even a pong) for this many heartbeats is idle.
const IDLE_HEARTBEATS: u32 = 3;

/// Frames a client may send per second on average (pings, operations and
/// custom frames alike), and in one burst. A client past it is closed with
/// 1008: it would otherwise take CPU (and guest events) from everyone.
const FRAMES_PER_SECOND: f64 = 100.0;
const FRAME_BURST: f64 = 200.0;

/// Longest the server waits for a client's answer to its close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Close code for a client dropped for falling behind.
const CLOSE_SLOW: u16 = 4008;

/// `GET /comet/ws` through hyper (see [`open`]), answered by hyper's
/// upgrade; the session runs in a task of its own.
pub(super) async fn serve<B>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    mut request: http::Request<B>,
    conn: Conn,
) -> Result<Response<Body>, ApiError> {
    match open(&hooks, endpoints, &request, &conn).await {
        Ok((client, backlogs)) => upgrade(
            client,
            endpoints,
            &mut request,
            Opening::Subscribed(backlogs),
            &conn,
        ),
        Err(e) => Ok(refusal(e)),
    }
}

/// `GET /comet/ws` as a connection's first request, on the socket itself
/// (its head is read already): the same checks and hooks as through hyper,
/// the `101` written here, then the session in a task of its own (holding
/// the connection's slot).
pub(super) async fn serve_raw<S: Socket>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    mut socket: S,
    request: http::Request<()>,
    conn: Conn,
) {
    let write_timeout = endpoints.config.write_timeout;
    // Boxed: the hooks' futures are large and done with once the session
    // opens; the task keeps only the session's state.
    let opened = Box::pin(open(&hooks, endpoints, &request, &conn)).await;
    let (client, backlogs) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            refuse(&mut socket, &e, refusal_headers(&e), write_timeout).await;
            return;
        }
    };
    // `open` checked the handshake: the key is there.
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes());
    let accept = derive_accept_key(key.unwrap_or_default());
    let deflate = deflate_agreed(endpoints, &request);
    drop(request);
    let extensions = match deflate {
        Some(response) => format!("sec-websocket-extensions: {response}\r\n"),
        None => String::new(),
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
         connection: upgrade\r\nsec-websocket-accept: {accept}\r\n{extensions}\r\n"
    );
    let sent = tokio::time::timeout(write_timeout, socket.write_all(head.as_bytes())).await;
    if !matches!(sent, Ok(Ok(()))) {
        client.closed(None, "client closed");
        return;
    }
    let publisher = endpoints.publisher.clone();
    // A task of its own, sized for the session alone (the connection's
    // task is done): an idle session keeps only its own state.
    tokio::spawn(async move {
        let _slot = conn.slot;
        Session::new(
            client,
            publisher,
            socket,
            &[],
            write_timeout,
            deflate.is_some(),
        )
        .run(Opening::Subscribed(backlogs))
        .await;
    });
}

/// The handshake checked, on-connect, then the subscriptions the query
/// string asks for (`channel`, `since`, `token`, as on the SSE endpoint).
/// A refused subscription refuses the upgrade, with the status an SSE
/// request would get.
async fn open<B>(
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: &http::Request<B>,
    conn: &Conn,
) -> Result<(Client, Vec<Backlog>), ApiError> {
    check_upgrade(request)?;
    endpoints.config.origins.check_websocket(request)?;
    let node = endpoints.node();
    let max = node.max_channels_per_connection();
    let ask = query::parse_any(request.uri().query(), request.headers(), max)?;
    let info = RequestInfo::of(request, &conn.peer);
    let mut client = Client::connect(hooks, node, TransportKind::WebSocket, info).await?;
    let backlogs = client
        .subscribe_all(&ask.channels, &ask.since, ask.token.as_deref(), true)
        .await?;
    Ok((client, backlogs))
}

/// The extension response, if this handshake agrees to permessage-deflate:
/// the server allows it (`--ws-compression`) and the client offers it in a
/// form it can meet (see `comet_wire::frame::negotiate`).
fn deflate_agreed<B>(endpoints: &Endpoints, request: &http::Request<B>) -> Option<&'static str> {
    if !endpoints.config.ws_compression {
        return None;
    }
    let offers = request.headers().get_all(SEC_WEBSOCKET_EXTENSIONS);
    frame::negotiate(offers.iter().filter_map(|v| v.to_str().ok()))
}

/// The subscriptions a WebSocket connection opens with.
pub(super) enum Opening {
    /// The channels a handler's accept named: subscribed once upgraded,
    /// without asking on-subscribe (the handler chose them).
    Accepted(Vec<ChannelName>),
    /// The channels of the query string, subscribed before the upgrade.
    Subscribed(Vec<Backlog>),
}

/// Refuse a request that is not a WebSocket opening handshake as RFC 6455
/// (section 4.2.1) describes it: GET over HTTP/1.1, `Upgrade: websocket`,
/// `Connection: Upgrade`, a `Sec-WebSocket-Key` of 16 bytes in base64, and
/// version 13 (else `426` naming the version this server speaks).
pub(super) fn check_upgrade<B>(request: &http::Request<B>) -> Result<(), ApiError> {
    let headers = request.headers();
    let has = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let refuse = |why: &str| {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-websocket",
            format!("expected a WebSocket upgrade request: {why}"),
        ))
    };
    if request.method() != http::Method::GET {
        return refuse("the method must be GET");
    }
    if request.version() != http::Version::HTTP_11 {
        return refuse("the upgrade needs HTTP/1.1");
    }
    if !has(UPGRADE, "websocket") {
        return refuse("no `Upgrade: websocket`");
    }
    if !has(CONNECTION, "upgrade") {
        return refuse("no `Connection: Upgrade`");
    }
    let key_ok = headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|k| STANDARD.decode(k.as_bytes()).ok())
        .is_some_and(|k| k.len() == 16);
    if !key_ok {
        return refuse("`Sec-WebSocket-Key` must be 16 bytes in base64");
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket-version",
            "this server speaks WebSocket version 13",
        ));
    }
    Ok(())
}

/// A handshake refusal; a wrong version says which one to use.
pub(super) fn refusal(error: ApiError) -> Response<Body> {
    let headers = refusal_headers(&error);
    let mut response = error.into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    response
}

/// The headers a handshake refusal carries besides the error's own: the
/// version to use, after a wrong one (RFC 6455, section 4.4).
fn refusal_headers(error: &ApiError) -> &'static [(&'static str, &'static str)] {
    if error.status == StatusCode::UPGRADE_REQUIRED {
        &[("sec-websocket-version", "13")]
    } else {
        &[]
    }
}

/// Answer the upgrade and run the connection in its own task, subscribed as
/// `opening` says from the start.
pub(super) fn upgrade<B>(
    client: Client,
    endpoints: &Endpoints,
    request: &mut http::Request<B>,
    opening: Opening,
    conn: &Conn,
) -> Result<Response<Body>, ApiError> {
    let write_timeout = endpoints.config.write_timeout;
    let publisher = endpoints.publisher.clone();
    // The callers checked the handshake (check_upgrade).
    let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-websocket",
            "expected a WebSocket upgrade request",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let deflate = deflate_agreed(endpoints, request);
    // The connection's slot goes with the socket.
    let slot = conn.slot.clone();
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "websocket upgrade failed"),
        };
        // The edge hands hyper-util the TCP socket itself, or a TLS stream
        // over it: take it back, with what was read past the request, so
        // the session owns its socket as on the direct path.
        let upgraded = match downcast::<TokioIo<TcpStream>>(upgraded) {
            Ok(parts) => {
                let tcp = parts.io.into_inner();
                return Session::new(
                    client,
                    publisher,
                    tcp,
                    &parts.read_buf,
                    write_timeout,
                    deflate.is_some(),
                )
                .run(opening)
                .await;
            }
            Err(upgraded) => upgraded,
        };
        match downcast::<TokioIo<TlsWire>>(upgraded) {
            Ok(parts) => {
                let wire = parts.io.into_inner();
                Session::new(
                    client,
                    publisher,
                    wire,
                    &parts.read_buf,
                    write_timeout,
                    deflate.is_some(),
                )
                .run(opening)
                .await;
            }
            Err(_) => tracing::warn!("websocket upgrade on a connection of no known kind: closed"),
        }
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(response) = deflate {
        headers.insert(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(response));
    }
    Ok(response)
}

/// Why the session ends.
enum End {
    /// The client closed (or the socket failed).
    Client(Option<u16>),
    /// The server closes with this code and reason.
    Server(u16, String),
}

/// The client's side of the connection: its bytes, read into `buf` and
/// cut into frames by `reader`.
struct Incoming<W: Wire> {
    io: SocketIo<W>,
    reader: Reader,
    buf: BytesMut,
    /// The client broke the protocol: what it sends now is read and
    /// dropped (the close handshake waits for its end, so the socket is
    /// not reset with unread data before the close frame reaches it).
    broken: bool,
}

impl<W: Wire> Incoming<W> {
    /// The client's next message or control frame. Cancel safe: what was
    /// read stays in `buf`, a message in parts stays in `reader`.
    async fn next(&mut self) -> Result<Frame, End> {
        loop {
            if self.broken {
                // Read and dropped, until the client's end.
                self.buf.clear();
            } else {
                match self.reader.next(&mut self.buf) {
                    Ok(Some(frame)) => {
                        // A large frame grew the buffer: let it go.
                        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_BUFFER {
                            self.buf = BytesMut::with_capacity(READ_BUFFER);
                        }
                        return Ok(frame);
                    }
                    Ok(None) => {}
                    Err(violation) => {
                        self.broken = true;
                        return Err(End::Server(violation.code, violation.reason.into()));
                    }
                }
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_BUFFER);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(End::Client(None)),
                Ok(_) => {}
            }
        }
    }
}

/// One WebSocket connection's session, on a [`Wire`] (a TCP stream).
struct Session<W: Wire> {
    client: Client,
    /// Where the client's publishes (and on-message's) go.
    publisher: Arc<Publisher>,
    incoming: Incoming<W>,
    /// The socket under `incoming`, shared with the hub's drains; the
    /// session's own frames go through `incoming.io`.
    socket: Arc<SharedSocket<W>>,
    /// Sends what waits on the socket, and notices a client that stopped
    /// reading.
    pump: Pump,
    /// Frames the client may still send now (a token bucket).
    frame_budget: f64,
    budget_at: Instant,
    /// Longest a single write may block before the client counts as gone.
    write_timeout: Duration,
    last_seen: Instant,
}

impl<W: Wire> Session<W> {
    /// A session on `wire`, after the `101`; `prefix` is what was read of
    /// the client's frames already; `deflate` when permessage-deflate was
    /// agreed. The hub may write live messages to the socket from here on,
    /// once the session waits with nothing in hand.
    fn new(
        client: Client,
        publisher: Arc<Publisher>,
        wire: W,
        prefix: &[u8],
        write_timeout: Duration,
        deflate: bool,
    ) -> Session<W> {
        let socket = Arc::new(SharedSocket::for_connection(
            wire,
            Framing::WebSocket { deflate },
            &client.conn,
        ));
        let io = SocketIo {
            socket: socket.clone(),
            // Its own copy: a slice of hyper's read buffer would keep all
            // of it for the session's life.
            prefix: if prefix.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(prefix)
            },
        };
        let incoming = Incoming {
            io,
            reader: Reader::new(MAX_FRAME, deflate),
            buf: BytesMut::with_capacity(READ_BUFFER),
            broken: false,
        };
        client.conn.set_outlet(Some(socket.clone()));
        Session {
            client,
            publisher,
            incoming,
            socket,
            pump: Pump::new(write_timeout),
            frame_budget: FRAME_BURST,
            budget_at: Instant::now(),
            write_timeout,
            last_seen: Instant::now(),
        }
    }

    async fn run(mut self, opening: Opening) {
        // Boxed: these futures are large and done with once the
        // connection is open; an idle connection keeps only `serve`'s.
        let opened = match opening {
            Opening::Accepted(channels) => Box::pin(self.subscribe_accepted(channels)).await,
            Opening::Subscribed(backlogs) => Box::pin(self.open_subscribed(backlogs)).await,
        };
        let end = match opened {
            Err(end) => end,
            Ok(()) => self.serve().await,
        };
        // Nothing after the close frame, nor for a client that is gone.
        self.socket.close_messages();
        let (code, reason) = match end {
            End::Client(code) => (code, "client closed".to_string()),
            End::Server(code, reason) => {
                // A slow consumer gets the close after what is already
                // buffered for it, so give it as long as any other write.
                let socket = self.socket.clone();
                let close = frame::encode(CLOSE, &frame::close_payload(code, &reason));
                let io = &mut self.incoming.io;
                let closed =
                    async { io.write_all(&close).await.is_ok() && socket.flushed().await.is_ok() };
                let sent = tokio::time::timeout(self.write_timeout, closed).await;
                if matches!(sent, Ok(true)) {
                    // The closing handshake: read (and drop) what the client
                    // still sends until its close. Closing a socket with
                    // unread data resets it, and the close frame may never
                    // reach the client.
                    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
                        while let Ok(frame) = self.incoming.next().await {
                            if matches!(frame, Frame::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                }
                (Some(code), reason)
            }
        };
        self.client.closed(code, &reason);
    }

    /// Subscribe to the channels a handler's accept named.
    async fn subscribe_accepted(&mut self, channels: Vec<ChannelName>) -> Result<(), End> {
        for channel in channels {
            self.subscribe(channel, None, None, By::Handler, serde_json::Value::Null)
                .await?;
        }
        Ok(())
    }

    /// Answer the subscriptions made before the upgrade.
    async fn open_subscribed(&mut self, backlogs: Vec<Backlog>) -> Result<(), End> {
        for backlog in &backlogs {
            self.opened(backlog, serde_json::Value::Null, By::Handler)
                .await?;
        }
        Ok(())
    }

    async fn serve(&mut self) -> End {
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + DEFAULT_HEARTBEAT, DEFAULT_HEARTBEAT);
        loop {
            let step = tokio::select! {
                frame = self.incoming.next() => match frame {
                    Ok(frame) => {
                        self.last_seen = Instant::now();
                        let frames = self.incoming.reader.take_frames();
                        if !self.spend_frames(frames) {
                            return End::Server(1008, "too many frames".into());
                        }
                        // Boxed: handling a frame may run guest events,
                        // whose futures are large; an idle session keeps
                        // only the loop's state.
                        Box::pin(self.on_frame(frame)).await
                    }
                    Err(end) => Err(end),
                },
                end = poll_fn(|cx| self.pump.poll(&self.socket, cx)) => Err(match end {
                    PumpEnd::Broken => End::Client(None),
                    PumpEnd::Stalled => slow(),
                }),
                event = self.client.conn.next() => match event {
                    Event::Message(m) => self.deliver(&m).await,
                    Event::Reset(reset) => self.send_reset(&reset).await,
                    Event::SlowConsumer => Err(slow()),
                    Event::Closing => Err(End::Server(1012, "server restarting; reconnect".into())),
                    Event::Unavailable(_) => Err(End::Server(
                        1013,
                        "try again later: reconnect and subscribe with your last cursors".into(),
                    )),
                    Event::Disconnect(d) => Err(End::Server(d.code, d.reason)),
                    Event::Subscribe(channel, since) => {
                        Box::pin(self.subscribe(channel, since, None, By::Server, serde_json::Value::Null)).await
                    }
                    Event::Unsubscribed(channel) => {
                        self.send_json(&serde_json::json!({
                            "type": "unsubscribed", "id": null, "channel": channel.as_str(),
                            "was_subscribed": true, "server": true,
                        }))
                        .await
                    }
                },
                _ = heartbeat.tick() => {
                    if self.last_seen.elapsed() > DEFAULT_HEARTBEAT * IDLE_HEARTBEATS {
                        Err(End::Server(1001, "idle timeout".into()))
                    } else {
                        self.send(PING, &[]).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Take `frames` from the client's budget; false when it is spent.
    fn spend_frames(&mut self, frames: u32) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.budget_at).as_secs_f64() * FRAMES_PER_SECOND;
        self.budget_at = now;
        self.frame_budget = (self.frame_budget + refill).min(FRAME_BURST) - f64::from(frames);
        self.frame_budget >= 0.0
    }

    /// Write one frame (uncompressed), racing the slow-consumer signal and
    /// a timeout.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), End> {
        let frame = frame::encode(opcode, payload);
        let kicked = self.client.conn.kicked();
        let io = &mut self.incoming.io;
        tokio::select! {
            // The write first: when it completes at once, as most do, the
            // slow-consumer signal is never waited on.
            biased;
            result = tokio::time::timeout(self.write_timeout, io.write_all(&frame)) => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Client(None)),
                Err(_) => Err(slow()),
            },
            () = kicked => Err(slow()),
        }
    }

    async fn send_json(&mut self, value: &serde_json::Value) -> Result<(), End> {
        self.send(TEXT, value.to_string().as_bytes()).await
    }

    async fn send_error(
        &mut self,
        id: serde_json::Value,
        code: &str,
        message: &str,
    ) -> Result<(), End> {
        self.send_json(
            &serde_json::json!({ "type": "error", "id": id, "error": code, "message": message }),
        )
        .await
    }

    /// An error frame for `error`, answering the operation `id`.
    async fn send_api_error(&mut self, id: serde_json::Value, error: ApiError) -> Result<(), End> {
        let mut frame = serde_json::json!({
            "type": "error", "id": id, "error": error.code, "message": error.message,
        });
        if let Some(request_id) = error.request_id {
            frame["request_id"] = serde_json::Value::from(&*request_id);
        }
        self.send_json(&frame).await
    }

    async fn send_reset(&mut self, reset: &Reset) -> Result<(), End> {
        self.send(TEXT, &reset.json()).await
    }

    /// A message the task hands out itself (a backlog, a catch-up, or one
    /// the hub queued while the task was busy): framed as the hub's drains
    /// frame it, once there is room on the socket.
    async fn deliver(&mut self, message: &Message) -> Result<(), End> {
        let socket = &self.socket;
        let kicked = self.client.conn.kicked();
        tokio::select! {
            biased;
            room = tokio::time::timeout(self.write_timeout, poll_fn(|cx| socket.poll_room(cx))) => match room {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(End::Client(None)),
                Err(_) => return Err(slow()),
            },
            () = kicked => return Err(slow()),
        }
        self.socket.write(message).map_err(|_| slow())
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::Text(text) => self.on_text(&text).await,
            Frame::Binary(bytes) => self.on_custom(Payload::Binary(bytes)).await,
            // A client that does not read its pongs is closed by the write
            // timeout.
            Frame::Ping(payload) => self.send(PONG, &payload).await,
            Frame::Pong => Ok(()),
            Frame::Close(close) => {
                // The answer echoes the client's code, and is the last
                // frame sent.
                self.socket.close_messages();
                let code = close.map(|(code, _)| code);
                let payload = code.map_or_else(Vec::new, |code| frame::close_payload(code, ""));
                if self.send(CLOSE, &payload).await.is_ok() {
                    let _ = tokio::time::timeout(self.write_timeout, self.socket.flushed()).await;
                }
                Err(End::Client(code))
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let op = match ops::parse(text) {
            Ok(op) => op,
            Err(e) => return self.send_error(e.id(), e.code(), &e.to_string()).await,
        };
        match op {
            Op::Subscribe {
                channel,
                since,
                token,
                id,
            } => {
                let channel = match ChannelName::new(&channel) {
                    Ok(c) => c,
                    Err(e) => return self.send_api_error(id, ChannelError::from(e).into()).await,
                };
                let since = match since.as_deref().map(Cursor::decode) {
                    None => None,
                    Some(Ok(c)) => c.get(&channel),
                    Some(Err(e)) => {
                        return self.send_api_error(id, ChannelError::from(e).into()).await;
                    }
                };
                self.subscribe(channel, since, token, By::Client, id).await
            }
            Op::Unsubscribe { channel, id } => {
                let was = self.client.conn.unsubscribe(&channel);
                self.send_json(&serde_json::json!({ "type": "unsubscribed", "id": id, "channel": channel, "was_subscribed": was }))
                    .await
            }
            Op::Publish {
                channel,
                data,
                data_b64,
                id,
            } => {
                let payload = match (data, data_b64) {
                    (Some(text), None) => Payload::Text(text),
                    (None, Some(b64)) => match STANDARD.decode(b64) {
                        Ok(bytes) => Payload::Binary(bytes.into()),
                        Err(e) => {
                            return self
                                .send_error(id, "bad-operation", &format!("data_b64: {e}"))
                                .await;
                        }
                    },
                    _ => {
                        return self
                            .send_error(
                                id,
                                "bad-operation",
                                "publish needs exactly one of data or data_b64",
                            )
                            .await;
                    }
                };
                let channel = match ChannelName::new(&channel) {
                    Ok(c) => c,
                    Err(e) => return self.send_api_error(id, ChannelError::from(e).into()).await,
                };
                if !self.publisher.node().rules(&channel).client_publish {
                    let message = format!(
                        "clients may not publish to {channel}: its namespace does not set client_publish"
                    );
                    return self.send_error(id, "forbidden", &message).await;
                }
                self.publish(&channel, payload, id).await
            }
            Op::Message { data, .. } => self.on_custom(Payload::Text(data)).await,
        }
    }

    async fn subscribe(
        &mut self,
        channel: ChannelName,
        since: Option<crate::channels::Position>,
        token: Option<String>,
        by: By,
        id: serde_json::Value,
    ) -> Result<(), End> {
        match self
            .client
            .subscribe(&channel, since, token, by == By::Client)
            .await
        {
            Ok(backlog) => self.opened(&backlog, id, by).await,
            Err(e) => self.send_api_error(id, e.into()).await,
        }
    }

    /// A subscription made: the `subscribed` answer, then the reset if
    /// any, then the backlog.
    async fn opened(
        &mut self,
        backlog: &Backlog,
        id: serde_json::Value,
        by: By,
    ) -> Result<(), End> {
        // Where the channel starts, so a client that sees no message
        // before it drops still resumes without a gap.
        let mut cursor = crate::channels::Cursor::new();
        cursor.set(backlog.channel.as_str(), backlog.start);
        let mut frame = serde_json::json!({
            "type": "subscribed", "id": id, "channel": backlog.channel.as_str(),
            "cursor": cursor.encode(),
        });
        if by == By::Server {
            frame["server"] = serde_json::Value::Bool(true);
        }
        self.send_json(&frame).await?;
        if let Some(reset) = &backlog.reset {
            self.send_reset(reset).await?;
        }
        for message in &backlog.messages {
            self.deliver(message).await?;
        }
        Ok(())
    }

    async fn publish(
        &mut self,
        channel: &ChannelName,
        payload: Payload,
        id: serde_json::Value,
    ) -> Result<(), End> {
        let source = PublishSource::Client(self.client.info.clone());
        let publish = self.publisher.publish(
            &*self.client.hooks,
            next_request_id(),
            channel,
            payload,
            source,
        );
        match publish.await {
            Ok(published) => {
                self.send_json(&serde_json::json!({
                    "type": "ack", "id": id, "channel": channel.as_str(),
                    "cursor": published.cursor().encode(),
                }))
                .await
            }
            Err(e) => self.send_api_error(id, e.into()).await,
        }
    }

    /// A custom frame: on-message decides, and its actions run in order.
    async fn on_custom(&mut self, frame: Payload) -> Result<(), End> {
        let hooks = self.client.hooks.clone();
        let actions = match hooks
            .on_message(next_request_id(), &self.client.info, frame)
            .await
        {
            Ok(actions) => actions,
            Err(e) => return self.send_api_error(serde_json::Value::Null, e.into()).await,
        };
        for action in actions {
            match action {
                Action::Send(Payload::Text(t)) => self.send(TEXT, t.as_bytes()).await?,
                Action::Send(Payload::Binary(b)) => self.send(BINARY, &b).await?,
                Action::Publish(out) => match ChannelName::new(&out.channel) {
                    Ok(channel) => {
                        self.publish(&channel, out.payload, serde_json::Value::Null)
                            .await?
                    }
                    Err(e) => {
                        self.send_api_error(serde_json::Value::Null, ChannelError::from(e).into())
                            .await?
                    }
                },
                Action::Subscribe(channel) => match ChannelName::new(&channel) {
                    Ok(channel) => {
                        self.subscribe(channel, None, None, By::Handler, serde_json::Value::Null)
                            .await?
                    }
                    Err(e) => {
                        self.send_api_error(serde_json::Value::Null, ChannelError::from(e).into())
                            .await?
                    }
                },
                Action::Unsubscribe(channel) => {
                    self.client.conn.unsubscribe(&channel);
                }
                Action::SetSession(session) => {
                    self.client.conn.set_session(session.clone());
                    self.client.info.session = session;
                }
                Action::Close(frame) => {
                    // A code no endpoint may send (1005, 1006...) would be
                    // a protocol error to the client: 1011 instead.
                    let code = if frame::close_code_sendable(frame.code) {
                        frame.code
                    } else {
                        1011
                    };
                    return Err(End::Server(code, frame.reason));
                }
            }
        }
        Ok(())
    }
}

/// Who made a subscription: the client's operation (on-subscribe decides),
/// the handler that accepted the connection, or the server API (its
/// `subscribed` frame says `"server": true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Client,
    Handler,
    Server,
}

fn slow() -> End {
    End::Server(
        CLOSE_SLOW,
        "slow consumer: reconnect and resume from your last cursor".into(),
    )
}
