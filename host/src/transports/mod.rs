//! The built-in client endpoints under `/comet` (SSE, long-poll, NDJSON
//! streaming, WebSocket, and the publish API), and what they share: opening
//! a connection through on-connect, subscribing through on-subscribe, and the
//! JSON error answers. The wire contract is in PROTOCOL.md.

// Early HTTP answers (a refused subscription, a bad cursor) travel as the
// `Err` side of these functions; one is built per refused request.
#![allow(clippy::result_large_err)]

pub(crate) mod direct;
mod poll;
mod publish_api;
mod stream;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;

use crate::bindings::{self, ConnectOutcome, SubscribeOutcome, Transport};
use crate::channels::{Connection, Cursor, Gap, Hub, HubError, Message, TransportKind};
use crate::dispatch::{Body, full, next_request_id};
use crate::module::HandlerModule;

pub(crate) use poll::hold as poll_hold;
pub(crate) use stream::{Format, Stream, stream_response};
pub(crate) use ws::upgrade;

/// Path prefix of the built-in endpoints.
pub const PREFIX: &str = "/comet/";

/// How often an idle stream gets a heartbeat, so proxies keep it open and a
/// vanished client is noticed.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Longest a long-poll or a guest-held request is held without a message.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the built-in endpoints.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Bearer token for `POST /comet/publish/CHANNEL`.
    pub publish_token: String,
    /// Heartbeat interval of idle streams.
    pub heartbeat: Duration,
    /// Default and maximum long-poll hold.
    pub hold_timeout: Duration,
}

/// An answer with a JSON error body: `{"error": code, "message": ...}`.
pub(crate) fn error(
    status: StatusCode,
    code: &str,
    message: impl std::fmt::Display,
) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message.to_string() });
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The status and error code for a hub error, the same on every transport.
pub(crate) fn hub_status(e: &HubError) -> (StatusCode, &'static str) {
    match e {
        HubError::InvalidChannel(_) => (StatusCode::BAD_REQUEST, "invalid-channel"),
        HubError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
        HubError::TooManyChannels(_) => (StatusCode::BAD_REQUEST, "too-many-channels"),
        HubError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "too-many-connections"),
        HubError::Broker(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        HubError::Closing => (StatusCode::SERVICE_UNAVAILABLE, "server-restart"),
    }
}

/// The answer for a hub error (bad channel, too many channels, broker down).
pub(crate) fn hub_error(e: &HubError) -> Response<Body> {
    let (status, code) = hub_status(e);
    let mut response = error(status, code, e);
    if let HubError::Full(_) | HubError::Closing = e {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// Serve a request under [`PREFIX`].
pub(crate) async fn handle(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let path = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .to_string();
    match path.as_str() {
        "sse" => open_stream(module, config, request, remote, Format::Sse).await,
        "stream" => open_stream(module, config, request, remote, Format::Ndjson).await,
        "poll" => poll::serve(module, config, request, remote).await,
        "ws" => ws::serve(module, request, remote).await,
        p if p.starts_with("publish/") => publish_api::serve(module, config, request).await,
        _ => error(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no built-in endpoint /comet/{path}"),
        ),
    }
}

/// What a client asked for in the query string (and `Last-Event-ID`).
#[derive(Debug, Default)]
pub(crate) struct Ask {
    pub(crate) channels: Vec<String>,
    pub(crate) since: Cursor,
    pub(crate) token: Option<String>,
    pub(crate) timeout: Option<Duration>,
}

/// Parse `channel=` (repeatable), `since=` (repeatable; merged), `token=`,
/// `timeout=` (ms) and the `Last-Event-ID` header.
pub(crate) fn parse_ask(query: Option<&str>, headers: &HeaderMap) -> Result<Ask, Response<Body>> {
    let mut ask = Ask::default();
    let merge = |s: &str, ask: &mut Ask| -> Result<(), Response<Body>> {
        let cursor =
            Cursor::decode(s).map_err(|e| error(StatusCode::BAD_REQUEST, "invalid-cursor", e))?;
        ask.since.merge(&cursor);
        Ok(())
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "channel" => ask.channels.push(v.into_owned()),
            "since" if !v.is_empty() => merge(&v, &mut ask)?,
            "token" => ask.token = Some(v.into_owned()),
            "timeout" => {
                let ms: u64 = v.parse().map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "invalid-timeout",
                        "timeout must be milliseconds",
                    )
                })?;
                ask.timeout = Some(Duration::from_millis(ms));
            }
            _ => {}
        }
    }
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok())
        && !id.is_empty()
    {
        merge(id, &mut ask)?;
    }
    Ok(ask)
}

/// What on-connect is told about the request, copied out of it. Streams and
/// polls drop the request before running any hook: its header values are
/// slices of hyper's read buffer, and a buffer still shared when hyper next
/// reads makes it allocate a second one for the life of the connection
/// (16 KiB instead of 8 KiB per idle stream, measured with heaptrack).
#[derive(Debug)]
pub(crate) struct RequestInfo {
    path: String,
    query: String,
    headers: Vec<bindings::Header>,
    remote: SocketAddr,
}

impl RequestInfo {
    pub(crate) fn of<B>(request: &hyper::Request<B>, remote: SocketAddr) -> RequestInfo {
        RequestInfo {
            path: request.uri().path().to_string(),
            query: request.uri().query().unwrap_or_default().to_string(),
            headers: bindings::guest_headers(request.headers()),
            remote,
        }
    }
}

/// A client connection being opened or open: the hub membership and what
/// guests see of it.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) module: Arc<HandlerModule>,
    pub(crate) conn: Connection,
    pub(crate) info: bindings::Connection,
}

impl Client {
    /// A connection accepted without asking on-connect (a guest hold or
    /// WebSocket accept, where on-request already decided).
    pub(crate) fn accepted(
        module: &Arc<HandlerModule>,
        hub: &Arc<Hub>,
        transport: Transport,
        session: Vec<(String, String)>,
    ) -> Result<Client, Response<Body>> {
        let kind = match transport {
            Transport::Sse => TransportKind::Sse,
            Transport::HttpStream => TransportKind::Stream,
            Transport::LongPoll => TransportKind::Poll,
            Transport::Websocket => TransportKind::WebSocket,
        };
        let conn = hub.connect(kind).map_err(|e| hub_error(&e))?;
        conn.set_session(session.clone());
        let info = bindings::Connection {
            id: format!("c{}", conn.id()),
            transport,
            session,
        };
        Ok(Client {
            module: module.clone(),
            conn,
            info,
        })
    }

    /// Ask on-connect whether this client may open `transport`.
    pub(crate) async fn connect(
        module: &Arc<HandlerModule>,
        transport: Transport,
        request: RequestInfo,
    ) -> Result<Client, Response<Body>> {
        let hub = module.services().hub.clone();
        let mut client = Client::accepted(module, &hub, transport, Vec::new())?;
        let connect = bindings::ConnectRequest {
            connection: client.info.clone(),
            path: request.path,
            query: request.query,
            headers: request.headers,
            remote_addr: request.remote.to_string(),
        };
        match module.on_connect(next_request_id(), &connect).await {
            Ok(ConnectOutcome::Accept(session)) => {
                client.conn.set_session(session.clone());
                client.info.session = session;
                Ok(client)
            }
            Ok(ConnectOutcome::Reject(r)) => {
                let status = StatusCode::from_u16(r.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                Err(error(status, "rejected", r.reason))
            }
            Err(e) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "hook-failed",
                format!("on-connect: {e}"),
            )),
        }
    }

    /// Subscribe to `channel` after on-subscribe allows it; returns the
    /// backlog after the cursor's position in that channel.
    pub(crate) async fn subscribe(
        &mut self,
        channel: &str,
        since: &Cursor,
        token: Option<String>,
        ask_guest: bool,
    ) -> Result<Backlog, SubscribeError> {
        crate::channels::name::validate(channel).map_err(|e| SubscribeError::Hub(e.into()))?;
        if ask_guest {
            let request = bindings::SubscribeRequest {
                channel: channel.to_string(),
                token,
            };
            let hooks = self
                .module
                .hooks_for(channel)
                .map_err(|e| SubscribeError::Hook(e.to_string()))?;
            match hooks
                .on_subscribe(next_request_id(), &self.info, &request)
                .await
            {
                Ok(SubscribeOutcome::Allow) => {}
                Ok(SubscribeOutcome::Deny(reason)) => return Err(SubscribeError::Denied(reason)),
                Err(e) => return Err(SubscribeError::Hook(e.to_string())),
            }
        }
        let history = self
            .conn
            .subscribe(channel, since.get(channel))
            .map_err(SubscribeError::Hub)?;
        Ok(Backlog {
            channel: channel.to_string(),
            messages: history.messages,
            gap: history.gap,
            head: history.head,
        })
    }

    /// Subscribe to every channel asked for, answering the first failure.
    pub(crate) async fn subscribe_all(
        &mut self,
        ask: &Ask,
    ) -> Result<Vec<Backlog>, Response<Body>> {
        if ask.channels.is_empty() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "no-channel",
                "give at least one channel=NAME",
            ));
        }
        let mut backlogs = Vec::with_capacity(ask.channels.len());
        for channel in &ask.channels {
            let backlog = self
                .subscribe(channel, &ask.since, ask.token.clone(), true)
                .await
                .map_err(|e| e.response(channel))?;
            backlogs.push(backlog);
        }
        Ok(backlogs)
    }

    /// Tell the module the connection ended (in the background).
    pub(crate) fn closed(&self, code: Option<u16>, reason: &str) {
        let module = self.module.clone();
        let connection = self.info.clone();
        let info = bindings::CloseInfo {
            code,
            reason: reason.to_string(),
        };
        // During shutdown the runtime may already be gone: then there is no
        // one left to tell, and spawning would panic.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = module.on_close(next_request_id(), &connection, &info).await {
                tracing::warn!(connection = %connection.id, error = %e, "on-close failed");
            }
        });
    }
}

/// Why a subscription was refused.
#[derive(Debug)]
pub(crate) enum SubscribeError {
    Hub(HubError),
    Denied(String),
    Hook(String),
}

impl SubscribeError {
    /// Machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SubscribeError::Hub(e) => hub_status(e).1,
            SubscribeError::Denied(_) => "denied",
            SubscribeError::Hook(_) => "hook-failed",
        }
    }

    /// Human-readable message.
    pub(crate) fn message(&self, channel: &str) -> String {
        match self {
            SubscribeError::Hub(e) => e.to_string(),
            SubscribeError::Denied(reason) => format!("subscription to {channel} denied: {reason}"),
            SubscribeError::Hook(e) => format!("on-subscribe failed: {e}"),
        }
    }

    fn response(&self, channel: &str) -> Response<Body> {
        let status = match self {
            SubscribeError::Hub(e) => hub_status(e).0,
            SubscribeError::Denied(_) => StatusCode::FORBIDDEN,
            SubscribeError::Hook(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.code(), self.message(channel))
    }
}

/// Messages a new subscription must deliver before live ones.
#[derive(Debug)]
pub(crate) struct Backlog {
    pub(crate) channel: String,
    pub(crate) messages: Vec<Arc<Message>>,
    pub(crate) gap: Option<Gap>,
    pub(crate) head: crate::channels::Position,
}

/// `{"type":"reset","channel":..,"reason":..,"cursor":..}`: messages before
/// what follows may be missing for this channel.
pub(crate) fn reset_json(channel: &str, gap: Gap, cursor: &Cursor) -> Bytes {
    serde_json::json!({
        "type": "reset",
        "channel": channel,
        "reason": gap.reason(),
        "cursor": cursor.encode(),
    })
    .to_string()
    .into()
}

/// Open an SSE or NDJSON stream from the query string.
async fn open_stream(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
    format: Format,
) -> Response<Body> {
    let ask = match parse_ask(request.uri().query(), request.headers()) {
        Ok(ask) => ask,
        Err(response) => return response,
    };
    let info = RequestInfo::of(&request, remote);
    drop(request);
    match start_stream(module, config, ask, info, format).await {
        Ok(stream) => stream::into_response(stream, Vec::new()),
        Err(response) => response,
    }
}

/// Ask on-connect, subscribe to every channel asked for (on-subscribe for
/// each), and open the stream with its backlog; or the refusal.
pub(crate) async fn start_stream(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    ask: Ask,
    info: RequestInfo,
    format: Format,
) -> Result<Stream, Response<Body>> {
    let transport = match format {
        Format::Sse => Transport::Sse,
        Format::Ndjson => Transport::HttpStream,
    };
    let mut client = Client::connect(module, transport, info).await?;
    let backlogs = client.subscribe_all(&ask).await?;
    Ok(stream::open(
        client,
        ask.since,
        backlogs,
        format,
        config.heartbeat,
        None,
    ))
}
