//! The built-in client endpoints under `/comet` (SSE, long-poll, NDJSON
//! streaming, WebSocket, and the publish API), and the guest-driven holds
//! that reuse them. The wire contract is in PROTOCOL.md.
//!
//! Inside: `query` parses what a subscribing request asks for, `client` is
//! a connection's life (on-connect, on-subscribe, on-close), `stream`,
//! `direct`, `poll` and `ws` write the transports, `hangup` closes HTTP
//! connections that cannot be written, `hold` serves a handler's holds and
//! WebSocket accepts, `publish_api` is the publish endpoint.

mod client;
pub(crate) mod direct;
mod hangup;
mod hold;
mod poll;
mod publish_api;
mod query;
mod socket;
mod stream;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::bindings::Transport;
use crate::http::{ApiError, Body};
use crate::module::HandlerModule;

pub(crate) use client::RequestInfo;
pub(crate) use hangup::Hangup;
pub(crate) use hold::{accept_websocket, hold};
pub(crate) use stream::{Format, Stream};

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
    /// Heartbeat interval of idle streams.
    pub heartbeat: Duration,
    /// Default and maximum long-poll hold.
    pub hold_timeout: Duration,
    /// Longest one write may block (see [`DEFAULT_WRITE_TIMEOUT`]).
    pub write_timeout: Duration,
    /// Which subscribing endpoints are served.
    pub transports: Enabled,
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
            heartbeat: DEFAULT_HEARTBEAT,
            hold_timeout: DEFAULT_HOLD_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            transports: Enabled::default(),
        }
    }
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
    if !config.transports.serves(&path) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "transport-disabled",
            format!("this server does not serve /comet/{path}: use another transport"),
        )
        .into_response();
    }
    let answer = match path.as_str() {
        "sse" => open_stream(module, config, request, remote, Format::Sse).await,
        "stream" => open_stream(module, config, request, remote, Format::Ndjson).await,
        "poll" => long_poll(module, config, request, remote).await,
        "ws" => ws::serve(module, request, remote, config.write_timeout).await,
        "client.js" => Ok(client_js()),
        p if p.starts_with("publish/") => publish_api::serve(module, config, request).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no built-in endpoint /comet/{path}"),
        )),
    };
    answer.unwrap_or_else(ApiError::into_response)
}

/// The browser client (`clients/js/comet.js`), embedded in the binary so a
/// page can `import { Comet } from "/comet/client.js"`.
const CLIENT_JS: &str = include_str!("../../../clients/js/comet.js");

fn client_js() -> Response<Body> {
    let mut response = Response::new(crate::http::full(CLIENT_JS));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Open an SSE or NDJSON stream from the query string.
async fn open_stream(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
    format: Format,
) -> Result<Response<Body>, ApiError> {
    let hangup = request.extensions().get::<Arc<Hangup>>().cloned();
    let mut stream = request_stream(module, config, request, remote, format).await?;
    if let Some(hangup) = hangup {
        stream.hang_up_with(&hangup);
    }
    Ok(stream::into_response(stream, Vec::new()))
}

/// The stream a subscribing `request` asks for (its query string, then
/// [`start_stream`]), through hyper or straight on the socket. The request
/// is dropped before the hooks run.
pub(crate) async fn request_stream<B>(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: http::Request<B>,
    remote: SocketAddr,
    format: Format,
) -> Result<Stream, ApiError> {
    let max = module.services().channels.max_channels_per_connection();
    let ask = query::parse(request.uri().query(), request.headers(), max)?;
    let info = RequestInfo::of(&request, remote);
    drop(request);
    start_stream(module, config, ask, info, format).await
}

/// Ask on-connect, subscribe to every channel asked for (on-subscribe for
/// each), and open the stream with its backlog; or the refusal.
async fn start_stream(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    ask: query::Ask,
    info: RequestInfo,
    format: Format,
) -> Result<Stream, ApiError> {
    let transport = match format {
        Format::Sse => Transport::Sse,
        Format::Ndjson => Transport::HttpStream,
    };
    let mut client = client::Client::connect(module, transport, info).await?;
    let backlogs = client
        .subscribe_all(&ask.channels, &ask.since, ask.token.as_deref(), true)
        .await?;
    Ok(Stream::open(
        client,
        backlogs,
        format,
        config.heartbeat,
        None,
    ))
}

/// `GET /comet/poll`.
async fn long_poll(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let max = module.services().channels.max_channels_per_connection();
    let ask = query::parse(request.uri().query(), request.headers(), max)?;
    let timeout = ask
        .timeout
        .unwrap_or(config.hold_timeout)
        .min(config.hold_timeout);
    let info = RequestInfo::of(&request, remote);
    drop(request);
    let mut client = client::Client::connect(module, Transport::LongPoll, info).await?;
    let backlogs = client
        .subscribe_all(&ask.channels, &ask.since, ask.token.as_deref(), true)
        .await?;
    let answer = poll::answer(&mut client, backlogs, timeout).await;
    client.closed(None, "poll answered");
    answer
}

#[cfg(test)]
mod tests {
    use super::Enabled;

    #[test]
    fn transports_parse_and_refuse_nonsense() {
        let only_sse = Enabled::parse("sse, poll").unwrap();
        assert!(only_sse.sse && only_sse.poll && !only_sse.websocket && !only_sse.stream);
        assert!(only_sse.serves("client.js") && !only_sse.serves("ws"));
        assert_eq!(
            Enabled::parse("websocket,sse,stream,poll").unwrap(),
            Enabled::default()
        );
        assert!(
            Enabled::parse("carrier-pigeon")
                .unwrap_err()
                .contains("unknown transport")
        );
        assert!(Enabled::parse("").unwrap_err().contains("at least one"));
    }
}
