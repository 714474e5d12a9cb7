//! The live status page (`GET /admin/`): plain HTML and JavaScript embedded
//! in the binary, fed by `GET /admin/events`, an SSE stream of the status
//! document once a second.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::http::{Body, full};

const PAGE: &str = include_str!("status_page.html");

/// How often the page gets a new status document.
const PERIOD: Duration = Duration::from_secs(1);

/// How long one events stream lasts; the page reconnects. Bounded so an
/// open page never holds the admin listener's shutdown for long.
const STREAM_FOR: Duration = Duration::from_secs(60);

/// The page itself. It holds no data: it asks for the admin token and
/// sends it with each request.
pub(super) fn page() -> Response<Body> {
    let mut response = Response::new(full(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An SSE stream of `status()` every [`PERIOD`], for [`STREAM_FOR`].
pub(super) fn events(
    status: impl Fn() -> serde_json::Value + Send + Sync + 'static,
) -> Response<Body> {
    let ticks = (STREAM_FOR.as_secs() / PERIOD.as_secs()).max(1);
    let status = Arc::new(status);
    let start = (tokio::time::interval(PERIOD), 0u64);
    let stream = futures_util::stream::unfold(start, move |(mut interval, n)| {
        let status = status.clone();
        async move {
            if n >= ticks {
                return None;
            }
            // The first tick is at once.
            interval.tick().await;
            let mut event = b"event: status\ndata: ".to_vec();
            event.extend_from_slice(&serde_json::to_vec(&status()).unwrap_or_default());
            event.extend_from_slice(b"\n\n");
            let frame = Frame::data(Bytes::from(event));
            Some((Ok::<_, Infallible>(frame), (interval, n + 1)))
        }
    });
    let mut response = Response::new(StreamBody::new(stream.boxed()).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
