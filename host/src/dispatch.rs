//! The path of one HTTP request through a handler: give it an id, read the
//! body within the limit, run on-request in a fresh sandbox, and turn the
//! outcome (a response, a hold on channels, a WebSocket upgrade, or a
//! failure) into an HTTP response.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::bindings::{self, RequestOutcome};
use crate::http::{ApiError, Body, Peer, REQUEST_ID_HEADER, full, next_request_id};
use crate::module::HandlerModule;
use crate::sandbox::EventError;
use crate::transports::{self, EndpointConfig, Hangup};

/// Serve one request with the module's on-request.
pub async fn handle<B>(
    module: &Arc<HandlerModule>,
    endpoints: &EndpointConfig,
    request: http::Request<B>,
    peer: &Peer,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let id = next_request_id();
    let mut response = match run(module, endpoints, &id, request, peer).await {
        Ok(response) => response,
        Err(error) => {
            if error.status.is_server_error() {
                tracing::warn!(
                    request_id = &*id,
                    module = module.name(),
                    code = error.code,
                    error = %error.message,
                    "request failed"
                );
            }
            error.with_request_id(id.clone()).into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn run<B>(
    module: &Arc<HandlerModule>,
    endpoints: &EndpointConfig,
    id: &Arc<str>,
    mut request: http::Request<B>,
    peer: &Peer,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = module.limits().max_request_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("request body is over the {limit} byte limit"),
        )
    };
    // Judged from the declared length before reading anything.
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = match Limited::new(request.body_mut(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                format!("cannot read request body: {e}"),
            ));
        }
    };
    let guest_request = bindings::Request {
        id: id.to_string(),
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().unwrap_or_default().to_string(),
        headers: bindings::guest_headers(request.headers()),
        body: body.to_vec(),
        remote_addr: peer.text.to_string(),
    };
    match module.on_request(id.clone(), guest_request).await? {
        RequestOutcome::Respond(response) => Ok(to_http(response)?),
        RequestOutcome::Hold(hold) => {
            let hangup = request.extensions().get::<Arc<Hangup>>().cloned();
            drop(request);
            transports::hold(module, endpoints, hold, hangup).await
        }
        RequestOutcome::Upgrade(accept) => {
            transports::accept_websocket(module, endpoints, &mut request, accept)
        }
    }
}

/// Convert a guest response, refusing a malformed status or header.
fn to_http(response: bindings::Response) -> Result<Response<Body>, EventError> {
    let status = StatusCode::from_u16(response.status).map_err(|_| {
        EventError::InvalidOutput(format!("an invalid status code {}", response.status))
    })?;
    let headers = bindings::http_headers(response.headers).map_err(EventError::InvalidOutput)?;
    let mut out = Response::new(full(response.body));
    *out.status_mut() = status;
    for (name, value) in headers {
        out.headers_mut().append(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
