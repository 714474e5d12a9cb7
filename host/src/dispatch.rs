//! The path of one HTTP request through a handler: give it an id, read the
//! body within the limit, run on-request in a fresh sandbox, and turn the
//! outcome (a response, a hold on channels, a WebSocket upgrade, or a
//! failure) into an HTTP response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::bindings::{self, RequestOutcome};
use crate::channels::Cursor;
use crate::module::HandlerModule;
use crate::sandbox::EventError;
use crate::transports::{self, Client, EndpointConfig, Format, stream_response};

/// The body type of every response the host sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A new request id: a random per-process prefix and a counter, so ids are
/// unique within a process and unlikely to repeat across restarts.
pub fn next_request_id() -> Arc<str> {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        // Falling back to a fixed prefix only makes ids repeat across restarts.
        let _ = getrandom::fill(&mut b);
        u32::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:08x}-{n:x}").into()
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// Serve one request with the module's on-request.
pub async fn handle<B>(
    module: &Arc<HandlerModule>,
    endpoints: &EndpointConfig,
    request: http::Request<B>,
    remote: SocketAddr,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let id = next_request_id();
    let mut response = match run(module, endpoints, &id, request, remote).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(&id, module.name()),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A request that could not be served by the handler.
enum Failure {
    /// The client sent too much.
    BodyTooLarge(usize),
    /// The body could not be read.
    BadBody(String),
    /// The event failed.
    Event(EventError),
    /// A ready-made answer (from the channel layer).
    Answer(Response<Body>),
}

impl Failure {
    fn into_response(self, id: &str, module: &str) -> Response<Body> {
        let (status, message) = match &self {
            Failure::BodyTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is over the {limit} byte limit"),
            ),
            Failure::BadBody(e) => (
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            ),
            Failure::Event(EventError::Busy) => (
                StatusCode::SERVICE_UNAVAILABLE,
                EventError::Busy.to_string(),
            ),
            Failure::Event(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Failure::Answer(_) => (StatusCode::OK, String::new()),
        };
        if let Failure::Answer(response) = self {
            return response;
        }
        if let Failure::Event(e) = &self {
            tracing::warn!(request_id = id, module, error = %e, "event failed");
        }
        let body = serde_json::json!({ "error": message, "request_id": id });
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

async fn run<B>(
    module: &Arc<HandlerModule>,
    endpoints: &EndpointConfig,
    id: &Arc<str>,
    mut request: http::Request<B>,
    remote: SocketAddr,
) -> Result<Response<Body>, Failure>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = module.limits().max_request_body;
    let body = match Limited::new(request.body_mut(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Failure::BodyTooLarge(limit));
        }
        Err(e) => return Err(Failure::BadBody(e.to_string())),
    };
    let guest_request = bindings::Request {
        id: id.to_string(),
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().unwrap_or_default().to_string(),
        headers: bindings::guest_headers(request.headers()),
        body: body.to_vec(),
        remote_addr: remote.to_string(),
    };
    match module
        .on_request(id.clone(), &guest_request)
        .await
        .map_err(Failure::Event)?
    {
        RequestOutcome::Respond(response) => to_http(response).map_err(Failure::Event),
        RequestOutcome::Hold(hold) => hold_request(module, endpoints, hold).await,
        RequestOutcome::Upgrade(accept) => {
            let hub = &module.services().hub;
            let client =
                Client::accepted(module, hub, bindings::Transport::Websocket, accept.session)
                    .map_err(Failure::Answer)?;
            Ok(transports::upgrade(client, &mut request, accept.channels))
        }
    }
}

/// Hold a request on channels, as the handler asked (GRIP style).
async fn hold_request(
    module: &Arc<HandlerModule>,
    endpoints: &EndpointConfig,
    hold: bindings::Hold,
) -> Result<Response<Body>, Failure> {
    let headers = convert_headers(hold.headers).map_err(Failure::Event)?;
    let since = match hold.since.as_deref().map(Cursor::decode) {
        None => Cursor::new(),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            return Err(Failure::Answer(transports::error(
                StatusCode::BAD_REQUEST,
                "invalid-cursor",
                e,
            )));
        }
    };
    if hold.channels.is_empty() {
        return Err(Failure::Event(EventError::InvalidOutput(
            "a hold with no channels".into(),
        )));
    }
    let (transport, format) = match hold.format {
        bindings::StreamFormat::Sse => (bindings::Transport::Sse, Some(Format::Sse)),
        bindings::StreamFormat::Ndjson => (bindings::Transport::HttpStream, Some(Format::Ndjson)),
        bindings::StreamFormat::LongPoll => (bindings::Transport::LongPoll, None),
    };
    let hub = &module.services().hub;
    let mut client =
        Client::accepted(module, hub, transport, Vec::new()).map_err(Failure::Answer)?;
    let mut backlogs = Vec::with_capacity(hold.channels.len());
    for channel in &hold.channels {
        match client.subscribe(channel, &since, None, false).await {
            Ok(b) => backlogs.push(b),
            Err(e) => {
                return Err(Failure::Event(EventError::InvalidOutput(format!(
                    "a hold on {channel:?} that cannot be served: {}",
                    e.message(channel)
                ))));
            }
        }
    }
    let timeout = hold
        .timeout_ms
        .map(|ms| std::time::Duration::from_millis(u64::from(ms)));
    if let Some(format) = format {
        return Ok(stream_response(
            client,
            since,
            backlogs,
            format,
            endpoints.heartbeat,
            timeout,
            headers,
        ));
    }
    let timeout = timeout
        .unwrap_or(endpoints.hold_timeout)
        .min(endpoints.hold_timeout);
    let mut response = transports::poll_hold(&mut client, since, backlogs, timeout).await;
    client.closed(None, "poll answered");
    for (name, value) in headers {
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

/// Validate guest headers.
fn convert_headers(
    headers: Vec<bindings::Header>,
) -> Result<Vec<(HeaderName, HeaderValue)>, EventError> {
    headers
        .into_iter()
        .map(|header| {
            let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
                EventError::InvalidOutput(format!("an invalid header name {:?}", header.name))
            })?;
            let value = HeaderValue::from_bytes(&header.value).map_err(|_| {
                EventError::InvalidOutput(format!("an invalid value for header {:?}", header.name))
            })?;
            Ok((name, value))
        })
        .collect()
}

/// Convert a guest response, refusing a malformed status or header.
fn to_http(response: bindings::Response) -> Result<Response<Body>, EventError> {
    let status = StatusCode::from_u16(response.status).map_err(|_| {
        EventError::InvalidOutput(format!("an invalid status code {}", response.status))
    })?;
    let mut out = Response::new(full(response.body));
    *out.status_mut() = status;
    for (name, value) in convert_headers(response.headers)? {
        out.headers_mut().append(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique() {
        let a = next_request_id();
        let b = next_request_id();
        assert_ne!(a, b);
        assert_eq!(a.split('-').next().map(str::len), Some(8));
    }

    #[test]
    fn malformed_guest_headers_are_refused() {
        let response = bindings::Response {
            status: 200,
            headers: vec![bindings::Header {
                name: "bad name".into(),
                value: b"v".to_vec(),
            }],
            body: Vec::new(),
        };
        let err = to_http(response).unwrap_err();
        assert!(err.to_string().contains("invalid header name"), "{err}");
        let response = bindings::Response {
            status: 42,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert!(to_http(response).is_err());
    }
}
