//! WebSocket: the upgrade, then one task per connection that reads client
//! frames (built-in operations, or custom frames for on-message) and writes
//! channel messages, acknowledgements and errors.
//!
//! Strategy: the task selects between the client's next frame, the hub queue
//! and a heartbeat tick. Every write is raced against the hub's slow-consumer
//! signal, so a client that stops reading is closed (4008) as soon as its
//! queue overflows, even while a write is blocked on a full socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};

use super::{Client, DEFAULT_HEARTBEAT, RequestInfo, error, hub_status, reset_json};
use crate::bindings::{self, Action, PublishSource, Transport};
use crate::channels::{Cursor, Event, Message, Payload, hub::DEFAULT_MAX_PAYLOAD};
use crate::dispatch::{Body, full, next_request_id};
use crate::module::HandlerModule;
use crate::publish::{self, PublishError};

/// Read buffer per connection. tungstenite allocates it up front (its default
/// of 128 KiB would cost that much per idle connection). Subscribers send
/// small frames; a large client frame just takes more reads.
const READ_BUFFER: usize = 1 << 10;

/// Largest client frame (a publish carries at most one payload plus JSON).
const MAX_FRAME: usize = DEFAULT_MAX_PAYLOAD + (4 << 10);

/// Longest a single write may block before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A client with no frame (not even a pong) for this many heartbeats is idle.
const IDLE_HEARTBEATS: u32 = 3;

/// Close code for a client dropped for falling behind.
const CLOSE_SLOW: u16 = 4008;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// `GET /comet/ws`: on-connect, then the upgrade.
pub(super) async fn serve(
    module: &Arc<HandlerModule>,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let info = RequestInfo::of(&request, remote);
    let client = match Client::connect(module, Transport::Websocket, info).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let mut request = request;
    upgrade(client, &mut request, Vec::new())
}

/// Answer the upgrade and run the connection in its own task, subscribed to
/// `channels` from the start (on-subscribe is not asked for these: the
/// handler that accepted the upgrade chose them).
pub(crate) fn upgrade<B>(
    client: Client,
    request: &mut http::Request<B>,
    channels: Vec<String>,
) -> Response<Body> {
    let is_upgrade = request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "not-websocket",
            "expected a WebSocket upgrade request",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .max_message_size(Some(MAX_FRAME))
                    .max_frame_size(Some(MAX_FRAME));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                Session::new(client, ws).run(channels).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
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
    response
}

/// A client operation (a JSON text frame with an `op`).
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Op {
    Subscribe {
        channel: String,
        since: Option<String>,
        token: Option<String>,
        #[serde(default)]
        id: serde_json::Value,
    },
    Unsubscribe {
        channel: String,
        #[serde(default)]
        id: serde_json::Value,
    },
    Publish {
        channel: String,
        data: Option<String>,
        data_b64: Option<String>,
        #[serde(default)]
        id: serde_json::Value,
    },
    Message {
        data: String,
        /// Accepted for symmetry with the other operations; on-message
        /// answers with its own frames.
        #[serde(default, rename = "id")]
        _id: serde_json::Value,
    },
}

/// Why the session ends.
enum End {
    /// The client closed (or the socket failed).
    Client(Option<u16>),
    /// The server closes with this code and reason.
    Server(u16, String),
}

struct Session {
    client: Client,
    ws: Ws,
    last_seen: Instant,
}

impl Session {
    fn new(client: Client, ws: Ws) -> Session {
        Session {
            client,
            ws,
            last_seen: Instant::now(),
        }
    }

    async fn run(mut self, channels: Vec<String>) {
        let mut end = None;
        for channel in channels {
            let subscribed =
                Box::pin(self.subscribe(&channel, None, None, false, serde_json::Value::Null));
            if let Err(e) = subscribed.await {
                end = Some(e);
                break;
            }
        }
        let end = match end {
            Some(end) => end,
            None => self.serve().await,
        };
        let (code, reason) = match end {
            End::Client(code) => (code, "client closed".to_string()),
            End::Server(code, reason) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: Utf8Bytes::from(reason.clone()),
                };
                // A slow consumer gets the close after what is already
                // buffered for it, so give it as long as any other write.
                let _ = tokio::time::timeout(SEND_TIMEOUT, self.ws.close(Some(frame))).await;
                (Some(code), reason)
            }
        };
        self.client.closed(code, &reason);
    }

    async fn serve(&mut self) -> End {
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + DEFAULT_HEARTBEAT, DEFAULT_HEARTBEAT);
        loop {
            let step = tokio::select! {
                frame = self.ws.next() => match frame {
                    Some(Ok(frame)) => {
                        self.last_seen = Instant::now();
                        // Boxed: handling a frame may run guest events,
                        // whose futures are large; an idle session keeps
                        // only the loop's state.
                        Box::pin(self.on_frame(frame)).await
                    }
                    Some(Err(e)) => Err(protocol_error(&e)),
                    None => Err(End::Client(None)),
                },
                event = self.client.conn.next() => match event {
                    Event::Message(m) => self.deliver(&m).await,
                    Event::SlowConsumer => Err(slow()),
                    Event::Closing => Err(End::Server(1012, "server restarting; reconnect".into())),
                },
                _ = heartbeat.tick() => {
                    if self.last_seen.elapsed() > DEFAULT_HEARTBEAT * IDLE_HEARTBEATS {
                        Err(End::Server(1001, "idle timeout".into()))
                    } else {
                        self.send(Frame::Ping(Bytes::new())).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Write one frame, racing the slow-consumer signal and a timeout.
    async fn send(&mut self, frame: Frame) -> Result<(), End> {
        let kicked = self.client.conn.kicked();
        tokio::select! {
            result = tokio::time::timeout(SEND_TIMEOUT, self.ws.send(frame)) => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Client(None)),
                Err(_) => Err(slow()),
            },
            () = kicked => Err(slow()),
        }
    }

    async fn send_json(&mut self, value: &serde_json::Value) -> Result<(), End> {
        self.send(Frame::Text(value.to_string().into())).await
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

    async fn deliver(&mut self, message: &Message) -> Result<(), End> {
        match &message.payload {
            Payload::Text(_) => {
                let text = Utf8Bytes::try_from(message.json())
                    .map_err(|_| End::Server(1011, "encoding".into()))?;
                self.send(Frame::Text(text)).await
            }
            Payload::Binary(bytes) => {
                // The header as a text frame, the payload as the binary frame after it.
                let header = serde_json::json!({
                    "type": "message",
                    "channel": &*message.channel,
                    "cursor": message.cursor().encode(),
                    "time": message.published_at_ms,
                    "binary": true,
                });
                self.send_json(&header).await?;
                self.send(Frame::Binary(bytes.clone())).await
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::Text(text) => self.on_text(text.as_str()).await,
            Frame::Binary(bytes) => {
                self.on_custom(bindings::Payload::Binary(bytes.to_vec()))
                    .await
            }
            // tungstenite queues the pong; flushing sends it.
            Frame::Ping(_) => self.ws.flush().await.map_err(|_| End::Client(None)),
            Frame::Pong(_) | Frame::Frame(_) => Ok(()),
            Frame::Close(frame) => Err(End::Client(frame.map(|f| u16::from(f.code)))),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                let msg = "a text frame must be a JSON object with an \"op\" field";
                return self
                    .send_error(serde_json::Value::Null, "malformed-frame", msg)
                    .await;
            }
        };
        let id = value.get("id").cloned().unwrap_or_default();
        let op = match serde_json::from_value::<Op>(value) {
            Ok(op) => op,
            Err(e) => return self.send_error(id, "bad-operation", &e.to_string()).await,
        };
        match op {
            Op::Subscribe {
                channel,
                since,
                token,
                id,
            } => {
                let since = match since.as_deref().map(Cursor::decode) {
                    None => None,
                    Some(Ok(c)) => Some(c),
                    Some(Err(e)) => {
                        return self.send_error(id, "invalid-cursor", &e.to_string()).await;
                    }
                };
                self.subscribe(&channel, since, token, true, id).await
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
                if !self.client.conn.hub().rules(&channel).client_publish {
                    let message = format!("clients may not publish to {channel}");
                    return self.send_error(id, "forbidden", &message).await;
                }
                self.publish(&channel, payload, id).await
            }
            Op::Message { data, .. } => self.on_custom(bindings::Payload::Text(data)).await,
        }
    }

    async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<Cursor>,
        token: Option<String>,
        ask_guest: bool,
        id: serde_json::Value,
    ) -> Result<(), End> {
        let since = since.unwrap_or_default();
        match self
            .client
            .subscribe(channel, &since, token, ask_guest)
            .await
        {
            Ok(backlog) => {
                self.send_json(
                    &serde_json::json!({ "type": "subscribed", "id": id, "channel": channel }),
                )
                .await?;
                if let Some(gap) = backlog.gap {
                    let at = backlog.messages.first().map_or(backlog.head, |m| {
                        let mut p = m.position;
                        p.offset = p.offset.saturating_sub(1);
                        p
                    });
                    let json = reset_json(channel, gap, &Cursor::single(channel, at));
                    let text = Utf8Bytes::try_from(json)
                        .map_err(|_| End::Server(1011, "encoding".into()))?;
                    self.send(Frame::Text(text)).await?;
                }
                for message in &backlog.messages {
                    self.deliver(message).await?;
                }
                Ok(())
            }
            Err(e) => self.send_error(id, e.code(), &e.message(channel)).await,
        }
    }

    async fn publish(
        &mut self,
        channel: &str,
        payload: Payload,
        id: serde_json::Value,
    ) -> Result<(), End> {
        let source = PublishSource::Client(self.client.info.clone());
        let module = self.client.module.clone();
        match publish::publish(&module, next_request_id(), channel, payload, source).await {
            Ok(message) => {
                self.send_json(&serde_json::json!({
                    "type": "ack", "id": id, "channel": channel, "cursor": message.cursor().encode(),
                }))
                .await
            }
            Err(PublishError::Hub(e)) => self.send_error(id, hub_status(&e).1, &e.to_string()).await,
            Err(PublishError::Rejected(reason)) => self.send_error(id, "rejected", &reason).await,
            Err(e @ PublishError::Hook(_)) => self.send_error(id, "hook-failed", &e.to_string()).await,
        }
    }

    /// A custom frame: on-message decides, and its actions run in order.
    async fn on_custom(&mut self, frame: bindings::Payload) -> Result<(), End> {
        let module = self.client.module.clone();
        let actions = match module
            .on_message(next_request_id(), &self.client.info, &frame)
            .await
        {
            Ok(actions) => actions,
            Err(e) => {
                return self
                    .send_error(
                        serde_json::Value::Null,
                        "hook-failed",
                        &format!("on-message: {e}"),
                    )
                    .await;
            }
        };
        for action in actions {
            match action {
                Action::Send(bindings::Payload::Text(t)) => {
                    self.send(Frame::Text(t.into())).await?
                }
                Action::Send(bindings::Payload::Binary(b)) => {
                    self.send(Frame::Binary(b.into())).await?
                }
                Action::Publish(out) => {
                    self.publish(&out.channel, out.payload.into(), serde_json::Value::Null)
                        .await?
                }
                Action::Subscribe(channel) => {
                    self.subscribe(&channel, None, None, false, serde_json::Value::Null)
                        .await?;
                }
                Action::Unsubscribe(channel) => {
                    self.client.conn.unsubscribe(&channel);
                }
                Action::SetSession(session) => {
                    self.client.conn.set_session(session.clone());
                    self.client.info.session = session;
                }
                Action::Close(frame) => return Err(End::Server(frame.code, frame.reason)),
            }
        }
        Ok(())
    }
}

fn slow() -> End {
    End::Server(
        CLOSE_SLOW,
        "slow consumer: reconnect and resume from your last cursor".into(),
    )
}

fn protocol_error(e: &tokio_tungstenite::tungstenite::Error) -> End {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Capacity(_) => End::Server(1009, "frame too large".into()),
        Error::Protocol(_) | Error::Utf8(_) => End::Server(1002, "protocol error".into()),
        _ => End::Client(None),
    }
}
