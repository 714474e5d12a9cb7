//! The HTTP vocabulary every other module shares: the response body type,
//! request ids, and [`ApiError`], the one error shape clients see.
//!
//! This module sits at the bottom of the crate: it depends on nothing else in
//! it, so transports, dispatch, auth and the admin API can all use it without
//! importing each other.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// The body type of every response the host sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// Header carrying the request id on every response of a handler.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// The client at the other end of a connection: its address, and the same
/// as text for the guest's `remote-addr`, formatted once per connection
/// rather than for every request on it (formatting was 1.3 % of a kept-alive
/// request's CPU).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The address.
    pub addr: SocketAddr,
    /// `addr` as text.
    pub text: Arc<str>,
}

impl Peer {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            text: addr.to_string().into(),
        }
    }
}

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

/// An error as a client sees it: an HTTP status, a machine-readable code
/// (the table in PROTOCOL.md), a message for people, and when to retry.
///
/// Errors stay typed values until the edge; there they become this, and this
/// becomes the one JSON shape `{"error": CODE, "message": TEXT}` (plus
/// `request_id` when the request has one), or a WebSocket error frame with
/// the same code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code, for example `invalid-cursor`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Seconds after which retrying makes sense (`Retry-After`).
    pub retry_after: Option<u32>,
    /// The request's id, when it has one (handler requests do).
    pub request_id: Option<Arc<str>>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> Self {
        ApiError {
            status,
            code,
            message: message.to_string(),
            retry_after: None,
            request_id: None,
        }
    }

    /// Ask the client to retry after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Name the request this error answers.
    pub fn with_request_id(mut self, id: Arc<str>) -> Self {
        self.request_id = Some(id);
        self
    }

    /// The JSON body: `{"error": code, "message": text, "request_id"?: id}`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        if let Some(id) = &self.request_id {
            body["request_id"] = serde_json::Value::from(&**id);
        }
        body
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(full(self.body().to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Every 401 here is for a missing bearer token (RFC 6750).
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// An error type that knows how a client should see it. Implement it once
/// per error type; `?` then turns the error into an [`ApiError`].
pub trait ClientError: std::fmt::Display {
    /// The HTTP status.
    fn status(&self) -> StatusCode;
    /// The machine-readable code.
    fn code(&self) -> &'static str;
    /// Seconds after which a retry makes sense, if any.
    fn retry_after(&self) -> Option<u32> {
        None
    }
    /// The id of the event that failed, if one did (it is in the log too).
    fn request_id(&self) -> Option<Arc<str>> {
        None
    }
}

impl<E: ClientError> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            request_id: e.request_id(),
        }
    }
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
    fn errors_have_one_json_shape() {
        let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid-cursor", "not a cursor")
            .with_request_id("r-1".into())
            .retry_after(5);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": "invalid-cursor", "message": "not a cursor", "request_id": "r-1"})
        );
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
    }
}
