//! What differs between the servers compared: subscriber URLs, how a
//! WebSocket subscription starts, and the publish request.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use clap::ValueEnum;
use serde::Serialize;

use crate::net;
use crate::tls::{SharedH2, Stream, Tls, wrap};

/// A server of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    /// `comet run` with a guest: `/comet/sse`, `/comet/ws`, `/comet/poll`, `POST /comet/publish/C`.
    Comet,
    /// `bare-broadcast`: `/sse`, `/ws`, `POST /publish/C`.
    Bare,
    /// nginx with Nchan (bench/peers/nchan): `/sub/C`, `POST /pub/C`.
    Nchan,
    /// Pushpin with a GRIP origin (bench/peers/pushpin): `/sse`, `/ws`
    /// (WebSocket-over-HTTP), publish on its HTTP control port.
    Pushpin,
    /// The Tornado broadcast server (bench/peers/tornado): as bare.
    Tornado,
}

/// A subscriber transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Server-sent events.
    Sse,
    /// WebSocket.
    Ws,
    /// Long-poll (comet only).
    Poll,
}

/// How a WebSocket subscription starts once the handshake is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsStart {
    /// Subscribed by the URL; wait for the server's first frame.
    FirstFrame,
    /// Subscribed by the URL; the server sends nothing first.
    Handshake,
    /// Send this frame, then wait for the server's answer.
    Send(String),
}

/// A server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which server.
    pub server: Server,
    /// Where subscribers connect.
    pub addr: SocketAddr,
    /// Where the publisher connects.
    pub publish_addr: SocketAddr,
    /// comet's publish token.
    pub token: String,
    /// TLS to the server (comet's own), if it serves it.
    pub tls: Option<Tls>,
    /// SSE subscribers share HTTP/2 connections (over TLS), if set.
    pub h2: Option<Arc<SharedH2>>,
    /// WebSocket subscribers offer permessage-deflate.
    pub ws_deflate: bool,
}

/// A publish request, ready to send.
#[derive(Debug)]
pub struct PublishRequest {
    /// Path and query.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Bytes,
}

impl Target {
    /// A connection to `addr` from `source`: TLS (offering `h2` if asked)
    /// when the server serves it.
    pub async fn open(
        &self,
        addr: SocketAddr,
        source: Option<Ipv4Addr>,
        h2: bool,
    ) -> anyhow::Result<Stream> {
        let tcp = net::connect(addr, source).await?;
        let connector = self
            .tls
            .as_ref()
            .map(|tls| if h2 { &tls.h2 } else { &tls.http1 });
        wrap(tcp, connector).await
    }

    /// The path (and query) a subscriber requests on `channel`.
    pub fn subscribe_path(&self, transport: Transport, channel: &str) -> anyhow::Result<String> {
        Ok(match (self.server, transport) {
            (Server::Comet, Transport::Sse) => format!("/comet/sse?channel={channel}"),
            (Server::Comet, Transport::Ws) => "/comet/ws".into(),
            (Server::Comet, Transport::Poll) => format!("/comet/poll?channel={channel}"),
            (Server::Nchan, Transport::Sse | Transport::Ws) => format!("/sub/{channel}"),
            (Server::Bare | Server::Tornado, Transport::Sse) => format!("/sse?channel={channel}"),
            (Server::Bare | Server::Tornado, Transport::Ws) => format!("/ws?channel={channel}"),
            (Server::Pushpin, Transport::Sse) => format!("/sse?channel={channel}"),
            (Server::Pushpin, Transport::Ws) => format!("/ws?channel={channel}"),
            (server, transport) => {
                anyhow::bail!("{server:?} does not support {transport:?} in this suite")
            }
        })
    }

    /// How a WebSocket subscription to `channel` starts.
    pub fn ws_start(&self, channel: &str) -> WsStart {
        match self.server {
            Server::Comet => {
                WsStart::Send(format!(r#"{{"op":"subscribe","channel":"{channel}"}}"#))
            }
            // Pushpin completes the handshake after its origin's OPEN
            // answer (which subscribes); it passes on no frame of its own.
            Server::Nchan | Server::Pushpin => WsStart::Handshake,
            _ => WsStart::FirstFrame,
        }
    }

    /// The request that publishes `payload` to `channel`.
    pub fn publish(&self, channel: &str, payload: &str) -> PublishRequest {
        match self.server {
            Server::Comet => PublishRequest {
                path: format!("/comet/publish/{channel}"),
                headers: vec![
                    ("authorization", format!("Bearer {}", self.token)),
                    ("content-type", "text/plain".into()),
                ],
                body: Bytes::from(payload.to_owned()),
            },
            Server::Nchan => PublishRequest {
                path: format!("/pub/{channel}"),
                headers: vec![("content-type", "text/plain".into())],
                body: Bytes::from(payload.to_owned()),
            },
            Server::Bare | Server::Tornado => PublishRequest {
                path: format!("/publish/{channel}"),
                headers: vec![("content-type", "text/plain".into())],
                body: Bytes::from(payload.to_owned()),
            },
            Server::Pushpin => {
                let item = serde_json::json!({ "items": [{
                    "channel": channel,
                    "formats": {
                        "http-stream": { "content": format!("event: message\ndata: {payload}\n\n") },
                        "ws-message": { "content": payload },
                    },
                }]});
                PublishRequest {
                    path: "/publish/".into(),
                    headers: vec![("content-type", "application/json".into())],
                    body: Bytes::from(item.to_string()),
                }
            }
        }
    }
}
