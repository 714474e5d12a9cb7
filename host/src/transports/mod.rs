//! The built-in client endpoints under `/comet` (SSE, long-poll, NDJSON
//! streaming, WebSocket, and the publish API), and the handler-driven holds
//! that reuse them. The wire contract is in PROTOCOL.md.
//!
//! A transport knows the rest of the host through three values: the
//! [`Hooks`] that decide for the connection (routed by channel), the
//! [`Endpoints`] every connection shares (settings and the publish path,
//! with the channels behind it), and the [`Conn`] the edge hands over for
//! the connection a request came on. Nothing here names a module, the
//! registry or the server, so the unit tests run every transport against a
//! fake `Hooks` and the memory broker.
//!
//! One file per protocol family, each with its entry through hyper and, for
//! a connection's first request, its entry straight on the socket (`raw`):
//! `stream` (SSE and NDJSON), `poll` (long-poll), `ws` (WebSocket),
//! `publish_api`, `api` (the server API for backends). Beside them: `query` (what a subscribing request asks
//! for), `client` (a connection's life: on-connect, on-subscribe, on-close),
//! `socket` (a streaming connection's socket shared with the hub's drains),
//! `hangup` (closing an HTTP connection that cannot be written), `hold` (a
//! handler's holds and WebSocket accepts), `client_js` (the browser client).

mod api;
mod client;
mod client_js;
mod hangup;
mod hold;
mod origins;
mod poll;
mod publish_api;
mod query;
mod socket;
mod stream;
mod tls;
mod ws;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use comet_wire::head::Endpoint;
use http::{Response, StatusCode};

use crate::channels::Node;
use crate::hooks::{Hooks, Publisher};
use crate::http::{ApiError, Body, Peer};

pub use api::{MAX_API_BODY, MAX_BATCH, MAX_PRESENCE_CLIENTS};
pub use client::Denied;
pub use hangup::Hangup;
pub use hold::{accept_websocket, hold};
pub use origins::{Cors, Origins};
pub use socket::{Socket, Wire};
pub use tls::TlsWire;

/// Path prefix of the built-in endpoints.
pub const PREFIX: &str = comet_wire::ENDPOINT_PREFIX;

/// How often an idle stream gets a heartbeat, so proxies keep it open and a
/// vanished client is noticed.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Longest a long-poll or a guest-held request is held without a message.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest one write to a client may block. A client that reads nothing for
/// this long is gone (or hostile); it is disconnected and resumes by cursor.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the built-in endpoints.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Bearer token for `POST /comet/publish/CHANNEL`.
    pub publish_token: String,
    /// Bearer key of the server API, `POST /comet/api/COMMAND`.
    pub api_key: String,
    /// Heartbeat interval of idle streams.
    pub heartbeat: Duration,
    /// Default and maximum long-poll hold.
    pub hold_timeout: Duration,
    /// Longest one write may block (see [`DEFAULT_WRITE_TIMEOUT`]).
    pub write_timeout: Duration,
    /// Which subscribing endpoints are served.
    pub transports: Enabled,
    /// The pages of other origins that may open a WebSocket and read
    /// (CORS).
    pub origins: Origins,
    /// Agree to permessage-deflate with WebSocket clients that offer it.
    pub ws_compression: bool,
}

/// The subscribing endpoints an operator serves (`--transports`): one may be
/// turned off, for example WebSocket behind a proxy that breaks it; clients
/// get `403 transport-disabled` and the browser client falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enabled {
    /// `/comet/ws`.
    pub websocket: bool,
    /// `/comet/sse`.
    pub sse: bool,
    /// `/comet/stream`.
    pub stream: bool,
    /// `/comet/poll`.
    pub poll: bool,
}

impl Default for Enabled {
    fn default() -> Self {
        Enabled {
            websocket: true,
            sse: true,
            stream: true,
            poll: true,
        }
    }
}

impl Enabled {
    /// The names the CLI takes.
    pub const NAMES: [&str; 4] = ["websocket", "sse", "stream", "poll"];

    /// Parse a comma-separated list of [`Enabled::NAMES`].
    pub fn parse(list: &str) -> Result<Enabled, String> {
        let mut enabled = Enabled {
            websocket: false,
            sse: false,
            stream: false,
            poll: false,
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "websocket" | "ws" => enabled.websocket = true,
                "sse" => enabled.sse = true,
                "stream" => enabled.stream = true,
                "poll" => enabled.poll = true,
                other => {
                    return Err(format!(
                        "unknown transport `{other}`: expected some of {}",
                        Enabled::NAMES.join(", ")
                    ));
                }
            }
        }
        if enabled
            == (Enabled {
                websocket: false,
                sse: false,
                stream: false,
                poll: false,
            })
        {
            return Err(format!(
                "no transport left: name at least one of {}",
                Enabled::NAMES.join(", ")
            ));
        }
        Ok(enabled)
    }

    /// Whether the endpoint at `/comet/{path}` is served (other paths are).
    pub(crate) fn serves(&self, path: &str) -> bool {
        match path {
            "ws" => self.websocket,
            "sse" => self.sse,
            "stream" => self.stream,
            "poll" => self.poll,
            _ => true,
        }
    }
}

impl EndpointConfig {
    /// The defaults, with `publish_token`.
    pub fn new(publish_token: String) -> EndpointConfig {
        EndpointConfig {
            publish_token,
            api_key: crate::http::auth::random_token(),
            heartbeat: DEFAULT_HEARTBEAT,
            hold_timeout: DEFAULT_HOLD_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            transports: Enabled::default(),
            origins: Origins::default(),
            ws_compression: true,
        }
    }
}

/// What every connection of the built-in endpoints shares.
#[derive(Debug)]
pub struct Endpoints {
    /// Their settings.
    pub config: EndpointConfig,
    /// The one publish path, and the channels behind it.
    pub publisher: Arc<Publisher>,
}

impl Endpoints {
    /// The channels service.
    pub fn node(&self) -> &Arc<Node> {
        self.publisher.node()
    }
}

/// What the edge knows of the connection a request came on, handed to the
/// transports as a value (never in a request's extensions, where a missing
/// insert would silently turn a limit off).
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client.
    pub peer: Peer,
    /// What the connection holds for as long as anything serves it (the
    /// client address's connection slot): a WebSocket session outlives the
    /// request that opened it, and keeps it.
    pub slot: Arc<dyn std::any::Any + Send + Sync>,
    /// For a connection hyper serves: the signal that hangs it up when a
    /// stream on it is dropped as a slow consumer and cannot be written.
    pub hangup: Option<Arc<Hangup>>,
}

/// A connection's first request, read off the socket (its head only; the
/// edge peeked it whole), for the endpoints that serve it without hyper.
#[derive(Debug)]
pub struct RawRequest {
    /// What it asks for.
    pub endpoint: Endpoint,
    /// The request head.
    pub request: http::Request<()>,
    /// The head's length in bytes, still to be read off the socket.
    pub len: usize,
}

/// A handler's answer the host cannot serve: 500 `handler-failed`, as any
/// other invalid answer (`what` completes "the handler returned ...").
pub fn invalid_answer(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "handler-failed",
        format!("the handler returned {what}"),
    )
}

/// Serve a request under [`PREFIX`] through hyper (its body `B`: hyper's
/// `Incoming`, or in tests any other).
pub async fn serve<B>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
    conn: Conn,
) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .to_string();
    // What a page reads gets CORS headers for an allowed origin; the
    // WebSocket checks its origin itself, the publish API is for servers.
    let readable = matches!(path.as_str(), "sse" | "stream" | "poll" | "client.js");
    let origins = &endpoints.config.origins;
    if readable && request.method() == http::Method::OPTIONS {
        return origins.preflight(request.headers());
    }
    let cors = readable.then(|| origins.cors(request.headers())).flatten();
    let mut response = serve_path(hooks, endpoints, request, conn, &path).await;
    if let Some(cors) = cors {
        cors.apply(response.headers_mut());
    }
    response
}

async fn serve_path<B>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
    conn: Conn,
    path: &str,
) -> Response<Body>
where
    B: hyper::body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !endpoints.config.transports.serves(path) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "transport-disabled",
            format!("this server does not serve /comet/{path}: use another transport"),
        )
        .into_response();
    }
    let answer = match path {
        "sse" => stream::serve(hooks, endpoints, request, conn, stream::Format::Sse).await,
        "stream" => stream::serve(hooks, endpoints, request, conn, stream::Format::Ndjson).await,
        "poll" => poll::serve(hooks, endpoints, request, conn).await,
        "ws" => ws::serve(hooks, endpoints, request, conn).await,
        "client.js" => Ok(client_js::response()),
        p if p.starts_with("publish/") => publish_api::serve(&hooks, endpoints, request).await,
        p if p.starts_with("api/") => api::serve(&hooks, endpoints, request).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no built-in endpoint /comet/{path}"),
        )),
    };
    answer.unwrap_or_else(ApiError::into_response)
}

/// Whether `endpoint`, a connection's first request, is served straight on
/// the socket (see [`serve_raw`]).
pub fn serves_raw(endpoints: &Endpoints, endpoint: Endpoint) -> bool {
    endpoints.config.transports.serves(endpoint.name())
}

/// Serve `request`, a connection's first (a `GET /comet/sse` stream or a
/// `GET /comet/ws` upgrade), straight on the socket, without hyper: hyper
/// keeps an 8 KiB write buffer and a read buffer that grows to 16 KiB for
/// the life of every HTTP/1 connection, most of an idle SSE stream's memory
/// (heaptrack: 27 KiB per stream through hyper), and its upgrade was a fifth
/// of the CPU of opening a WebSocket.
pub async fn serve_raw<S: Socket>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    mut socket: S,
    request: RawRequest,
    conn: Conn,
) {
    use tokio::io::AsyncReadExt;
    let mut head = vec![0u8; request.len];
    if socket.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    let RawRequest {
        endpoint, request, ..
    } = request;
    match endpoint {
        // Boxed: the hooks' futures are large and only live until the
        // stream opens; the task keeps only what streaming needs.
        Endpoint::Sse => Box::pin(stream::serve_raw(hooks, endpoints, socket, request, conn)).await,
        Endpoint::WebSocket => {
            Box::pin(ws::serve_raw(hooks, endpoints, socket, request, conn)).await
        }
    }
}
