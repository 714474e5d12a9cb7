//! What a handler's on-request may turn a request into: a hold on channels
//! (GRIP style: SSE, NDJSON or long-poll, exactly as the built-in
//! endpoints serve them) or an accepted WebSocket.

use std::sync::Arc;
use std::time::Duration;

use http::Response;

use super::client::Client;
use super::query::channel_list;
use super::stream::{self, Format, Stream};
use super::{Conn, Cors, Endpoints, invalid_answer, poll, ws};
use crate::channels::{ChannelError, Cursor, TransportKind};
use crate::hooks::{Header, Hold, Hooks, StreamFormat, WebSocketAccept};
use crate::http::{ApiError, Body};

/// Serve `hold`, which the handler answered on-request with; `cors`: the
/// CORS headers of the request's origin, added unless the hold sets its own
/// `Access-Control-*` headers (the handler's win).
pub async fn hold(
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    hold: Hold,
    conn: &Conn,
    cors: Option<Cors>,
) -> Result<Response<Body>, ApiError> {
    let mut response = serve_hold(hooks, endpoints, hold, conn).await?;
    if let Some(cors) = cors {
        cors.apply(response.headers_mut());
    }
    Ok(response)
}

async fn serve_hold(
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    hold: Hold,
    conn: &Conn,
) -> Result<Response<Body>, ApiError> {
    let headers = Header::to_http(hold.headers).map_err(invalid_answer)?;
    // The client's cursor, passed through the handler.
    let since = match hold.since.as_deref() {
        None => Cursor::new(),
        Some(s) => Cursor::decode(s).map_err(ChannelError::from)?,
    };
    if hold.channels.is_empty() {
        return Err(invalid_answer("a hold with no channels"));
    }
    let node = endpoints.node();
    let max = node.max_channels_per_connection();
    let channels = channel_list(hold.channels.iter().map(String::as_str), max)
        .map_err(|e| invalid_answer(format!("a hold that cannot be served: {e}")))?;
    let (transport, format) = match hold.format {
        StreamFormat::Sse => (TransportKind::Sse, Some(Format::Sse)),
        StreamFormat::Ndjson => (TransportKind::Stream, Some(Format::Ndjson)),
        StreamFormat::LongPoll => (TransportKind::Poll, None),
    };
    let mut client = Client::accepted(hooks, node, transport, Vec::new())?;
    let backlogs = client.subscribe_all(&channels, &since, None, false).await?;
    let timeout = hold
        .timeout_ms
        .map(|ms| Duration::from_millis(u64::from(ms)));
    let config = &endpoints.config;
    if let Some(format) = format {
        let mut stream = Stream::open(client, backlogs, format, config.heartbeat, timeout);
        if let Some(hangup) = &conn.hangup {
            stream.hang_up_with(hangup);
        }
        return Ok(stream::into_response(stream, headers));
    }
    let timeout = timeout
        .unwrap_or(config.hold_timeout)
        .min(config.hold_timeout);
    let answer = poll::answer(&mut client, backlogs, timeout).await;
    client.closed(None, "poll answered");
    let mut response = answer?;
    for (name, value) in headers {
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

/// Upgrade `request` to a WebSocket, as the handler's accept says.
pub fn accept_websocket<B>(
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: &mut http::Request<B>,
    accept: WebSocketAccept,
    conn: &Conn,
) -> Result<Response<Body>, ApiError> {
    let checked =
        ws::check_upgrade(request).and_then(|()| endpoints.config.origins.check_websocket(request));
    if let Err(e) = checked {
        return Ok(ws::refusal(e));
    }
    let node = endpoints.node();
    let max = node.max_channels_per_connection();
    let channels = channel_list(accept.channels.iter().map(String::as_str), max)
        .map_err(|e| invalid_answer(format!("a WebSocket accept that cannot be served: {e}")))?;
    let client = Client::accepted(hooks, node, TransportKind::WebSocket, accept.session)?;
    ws::upgrade(
        client,
        endpoints,
        request,
        ws::Opening::Accepted(channels),
        conn,
    )
}
