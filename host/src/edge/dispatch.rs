//! The path of one HTTP request through a handler: give it an id, read the
//! body within the limit, run on-request, and turn the outcome (a response,
//! a hold on channels, a WebSocket upgrade, or a failure) into an HTTP
//! response.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Response, StatusCode};

use crate::hooks::{self, Header, Hooks, RequestOutcome};
use crate::http::{
    ApiError, Body, REQUEST_ID_HEADER, declared_length, full, next_request_id, read_bounded,
};
use crate::transports::{self, Conn, Endpoints, invalid_answer};

/// Serve one request with `hooks`' on-request (routed by channel, for a
/// hold or an accepted WebSocket).
pub async fn handle<B>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
    conn: Conn,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let id = next_request_id();
    let mut response = match run(&hooks, endpoints, &id, request, &conn).await {
        Ok(response) => response,
        Err(error) => {
            if error.status.is_server_error() {
                tracing::warn!(
                    request_id = &*id,
                    module = hooks.name(),
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
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    id: &Arc<str>,
    mut request: http::Request<B>,
    conn: &Conn,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = hooks.max_request_body();
    let too_large = |_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("request body is over the {limit} byte limit"),
        )
    };
    let declared = declared_length(request.headers());
    let body = read_bounded(declared, request.body_mut(), limit, too_large).await?;
    let guest_request = hooks::Request {
        id: id.to_string(),
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().unwrap_or_default().to_string(),
        headers: Header::all(request.headers()),
        body: body.to_vec(),
        remote_addr: conn.peer.text.to_string(),
    };
    // A failed on-request is the request's failure: its message is the
    // guest's fault, not "on-request failed: ...".
    let outcome = hooks
        .on_request(id.clone(), guest_request)
        .await
        .map_err(|e| ApiError::from(e.failure))?;
    match outcome {
        RequestOutcome::Respond(response) => to_http(response),
        RequestOutcome::Hold(hold) => {
            let cors = endpoints.config.origins.cors(request.headers());
            drop(request);
            transports::hold(hooks, endpoints, hold, conn, cors).await
        }
        RequestOutcome::Upgrade(accept) => {
            transports::accept_websocket(hooks, endpoints, &mut request, accept, conn)
        }
    }
}

/// Convert a guest response, refusing a malformed status or header.
fn to_http(response: hooks::Response) -> Result<Response<Body>, ApiError> {
    let status = StatusCode::from_u16(response.status)
        .map_err(|_| invalid_answer(format!("an invalid status code {}", response.status)))?;
    let headers = Header::to_http(response.headers).map_err(invalid_answer)?;
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
        let response = hooks::Response {
            status: 200,
            headers: vec![Header {
                name: "bad name".into(),
                value: b"v".to_vec(),
            }],
            body: Vec::new(),
        };
        let err = to_http(response).unwrap_err();
        assert!(err.message.contains("invalid header name"), "{err}");
        assert_eq!(err.code, "handler-failed");
        let response = hooks::Response {
            status: 42,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert!(to_http(response).is_err());
    }
}
