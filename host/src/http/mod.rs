//! The HTTP vocabulary the edge, the transports and the admin API share: the
//! response body type, request ids, the client's address, [`ApiError`] (the
//! one error shape clients see) with the [`ClientError`] trait, bearer
//! tokens (`auth`), and HTTP/1.1 written by hand (`raw`).
//!
//! This folder sits at the bottom of the crate: it depends on nothing else
//! in it. The status and code each domain error gets are decided at the
//! edge (`edge::errors`), where the `ClientError` impls live.

pub mod auth;
mod error;
pub mod raw;

pub(crate) use error::composite_error;
pub use error::{ApiError, ClientError};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// The length a request's headers declare for its body.
pub(crate) fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// The whole of `body`, at most `max` bytes: refused from its `declared`
/// length ([`declared_length`]) before anything is read, else once it
/// passes `max`, with `too_large(size)` (the declared size, or `max + 1`);
/// a body that cannot be read is `400 bad-body`.
pub(crate) async fn read_bounded<B>(
    declared: Option<usize>,
    body: B,
    max: usize,
    too_large: impl FnOnce(usize) -> ApiError,
) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(size) = declared.filter(|size| *size > max) {
        return Err(too_large(size));
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max + 1)),
        Err(e) => Err(ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "bad-body",
            format!("cannot read request body: {e}"),
        )),
    }
}

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

    /// A client a proxy named by its address alone (its port unknown: 0,
    /// and left out of the text).
    pub fn forwarded(ip: std::net::IpAddr) -> Peer {
        Peer {
            addr: SocketAddr::new(ip, 0),
            text: ip.to_string().into(),
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
}
