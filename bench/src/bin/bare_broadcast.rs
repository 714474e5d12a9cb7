//! A bare tokio + hyper + tokio-tungstenite broadcast server with no
//! WebAssembly: the ceiling for comet's stack in the peer comparison.
//!
//! Usage: `bare-broadcast [ADDR]` (default 127.0.0.1:8082).
//!
//! - `GET /sse?channel=C`: server-sent events, `: connected` first, then one
//!   `event: message` per publish;
//! - `GET /ws?channel=C`: WebSocket, `{"type":"subscribed"}` first, then one
//!   text frame per publish (4 KiB read buffer, as comet uses);
//! - `POST /publish/C`: the body is broadcast to the channel's subscribers.
//!
//! Each channel is a `tokio::sync::broadcast` of messages encoded once per
//! wire format. A subscriber that falls 1024 messages behind skips ahead
//! (the gap shows in the load generator's counts).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    CONNECTION, CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages a subscriber may fall behind before it skips ahead.
const QUEUE: usize = 1024;
/// The WebSocket read buffer (tungstenite's default is 128 KiB).
const WS_READ_BUFFER: usize = 4 << 10;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One published message, encoded once for each transport.
#[derive(Debug)]
struct Encoded {
    sse: Bytes,
    ws: Utf8Bytes,
}

#[derive(Debug, Default)]
struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Encoded>>>>,
}

impl Hub {
    fn subscribe(&self, channel: &str) -> broadcast::Receiver<Arc<Encoded>> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(QUEUE).0)
            .subscribe()
    }

    /// Sends to the channel's subscribers; returns how many there were.
    fn publish(&self, channel: &str, payload: &str) -> usize {
        let sender = {
            let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels.get(channel).cloned()
        };
        let Some(sender) = sender else { return 0 };
        let encoded = Arc::new(Encoded {
            sse: Bytes::from(format!("event: message\ndata: {payload}\n\n")),
            ws: Utf8Bytes::from(payload.to_owned()),
        });
        sender.send(encoded).unwrap_or(0)
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = code;
    response
}

fn channel_param(request: &Request<Incoming>) -> Option<String> {
    let query = request.uri().query()?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("channel="))
        .map(str::to_owned)
}

fn sse(hub: &Hub, channel: &str) -> Response<Body> {
    let rx = hub.subscribe(channel);
    let first = futures_util::stream::once(async {
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b": connected\n\n")))
    });
    let messages = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(m) => return Some((Ok(Frame::data(m.sse.clone())), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(
        first.chain(messages),
    )));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

fn ws(hub: &Hub, channel: &str, request: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get(SEC_WEBSOCKET_KEY) else {
        return status(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let mut rx = hub.subscribe(channel);
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        if ws
            .send(Message::text(r#"{"type":"subscribed"}"#))
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Ok(m) => {
                        if ws.send(Message::Text(m.ws.clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                frame = ws.next() => match frame {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    });
    let mut response = status(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

async fn route(hub: Arc<Hub>, mut request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if let Some(channel) = path.strip_prefix("/publish/") {
        if request.method() != hyper::Method::POST {
            return status(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        let channel = channel.to_owned();
        let Ok(body) = request.into_body().collect().await else {
            return status(StatusCode::BAD_REQUEST, "unreadable body\n");
        };
        let body = body.to_bytes();
        let Ok(payload) = std::str::from_utf8(&body) else {
            return status(StatusCode::BAD_REQUEST, "the body must be UTF-8\n");
        };
        let delivered = hub.publish(&channel, payload);
        return Response::new(full(format!("{{\"subscribers\":{delivered}}}\n")));
    }
    let Some(channel) = channel_param(&request) else {
        return status(StatusCode::BAD_REQUEST, "no channel\n");
    };
    match path.as_str() {
        "/sse" => sse(&hub, &channel),
        "/ws" => ws(&hub, &channel, &mut request),
        _ => status(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8082".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "bare-broadcast: serving on http://{}",
        listener.local_addr()?
    );
    let hub = Arc::new(Hub::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(route(hub, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
