//! What a handler's on-request may turn a request into: a hold on channels
//! (GRIP style: SSE, NDJSON or long-poll, exactly as the built-in
//! endpoints serve them) or an accepted WebSocket.

use std::sync::Arc;
use std::time::Duration;

use http::Response;

use super::client::Client;
use super::hangup::Hangup;
use super::query::channel_list;
use super::stream::{self, Format, Stream};
use super::{EndpointConfig, poll, ws};
use crate::bindings::{self, StreamFormat, Transport};
use crate::channels::{ChannelError, Cursor};
use crate::http::{ApiError, Body};
use crate::module::HandlerModule;
use crate::sandbox::EventError;

/// Serve `hold`, which the handler answered on-request with.
pub(crate) async fn hold(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    hold: bindings::Hold,
    hangup: Option<Arc<Hangup>>,
) -> Result<Response<Body>, ApiError> {
    let headers = bindings::http_headers(hold.headers).map_err(EventError::InvalidOutput)?;
    // The client's cursor, passed through the handler.
    let since = match hold.since.as_deref() {
        None => Cursor::new(),
        Some(s) => Cursor::decode(s).map_err(ChannelError::from)?,
    };
    if hold.channels.is_empty() {
        return Err(EventError::InvalidOutput("a hold with no channels".into()).into());
    }
    let max = module.services().channels.max_channels_per_connection();
    let channels = channel_list(hold.channels.iter().map(String::as_str), max)
        .map_err(|e| EventError::InvalidOutput(format!("a hold that cannot be served: {e}")))?;
    let (transport, format) = match hold.format {
        StreamFormat::Sse => (Transport::Sse, Some(Format::Sse)),
        StreamFormat::Ndjson => (Transport::HttpStream, Some(Format::Ndjson)),
        StreamFormat::LongPoll => (Transport::LongPoll, None),
    };
    let mut client = Client::accepted(module, transport, Vec::new())?;
    let backlogs = client.subscribe_all(&channels, &since, None, false).await?;
    let timeout = hold
        .timeout_ms
        .map(|ms| Duration::from_millis(u64::from(ms)));
    if let Some(format) = format {
        let mut stream = Stream::open(client, backlogs, format, config.heartbeat, timeout);
        if let Some(hangup) = hangup {
            stream.hang_up_with(&hangup);
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
pub(crate) fn accept_websocket<B>(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: &mut http::Request<B>,
    accept: bindings::WebsocketAccept,
) -> Result<Response<Body>, ApiError> {
    if let Err(e) = ws::check_upgrade(request) {
        return Ok(ws::refusal(e));
    }
    let max = module.services().channels.max_channels_per_connection();
    let channels = ws::accepted_channels(&accept.channels, max).map_err(|e| {
        EventError::InvalidOutput(format!("a WebSocket accept that cannot be served: {e}"))
    })?;
    let client = Client::accepted(module, Transport::Websocket, accept.session)?;
    ws::upgrade(
        client,
        request,
        ws::Opening::Accepted(channels),
        config.write_timeout,
    )
}
