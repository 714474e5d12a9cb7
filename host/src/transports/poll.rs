//! Long-poll: answer at once when the client is behind, else hold until a
//! message arrives or the timeout passes. The JSON answer carries the
//! messages and the cursor to poll with next.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;

use super::{Client, EndpointConfig, RequestInfo, error, parse_ask};
use crate::bindings::Transport;
use crate::channels::{Cursor, Event, Message};
use crate::dispatch::{Body, full};
use crate::module::HandlerModule;

/// Answer one long-poll request.
pub(super) async fn serve(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let ask = match parse_ask(request.uri().query(), request.headers()) {
        Ok(ask) => ask,
        Err(response) => return response,
    };
    let timeout = ask
        .timeout
        .unwrap_or(config.hold_timeout)
        .min(config.hold_timeout);
    let info = RequestInfo::of(&request, remote);
    drop(request);
    let mut client = match Client::connect(module, Transport::LongPoll, info).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let backlogs = match client.subscribe_all(&ask).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let response = hold(&mut client, ask.since, backlogs, timeout).await;
    client.closed(None, "poll answered");
    response
}

/// Collect the backlog, or wait for the first live message, and answer.
pub(crate) async fn hold(
    client: &mut Client,
    since: Cursor,
    backlogs: Vec<super::Backlog>,
    timeout: std::time::Duration,
) -> Response<Body> {
    let mut cursor = Cursor::new();
    let mut messages: Vec<Arc<Message>> = Vec::new();
    let mut resets = Vec::new();
    for backlog in backlogs {
        cursor.set(
            &backlog.channel,
            since.get(&backlog.channel).unwrap_or(backlog.head),
        );
        if let Some(gap) = backlog.gap {
            cursor.set(&backlog.channel, backlog.head);
            resets.push(serde_json::json!({ "channel": backlog.channel, "reason": gap.reason() }));
        }
        if backlog.messages.is_empty() {
            cursor.set(&backlog.channel, backlog.head);
        }
        messages.extend(backlog.messages);
    }
    if messages.is_empty() && resets.is_empty() {
        match tokio::time::timeout(timeout, client.conn.next()).await {
            Ok(Event::Message(m)) => {
                messages.push(m);
                while let Some(m) = client.conn.try_next() {
                    messages.push(m);
                }
            }
            Ok(Event::SlowConsumer) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "slow-consumer",
                    "poll again with your cursor",
                );
            }
            // Shutting down: answer now with what there is; the client
            // polls again (elsewhere) with the cursor.
            Ok(Event::Closing) | Err(_) => {}
        }
    }
    for m in &messages {
        cursor.set(&m.channel, m.position);
    }
    // The messages are already JSON: splice them in rather than re-encoding.
    let mut body =
        Vec::with_capacity(64 + messages.iter().map(|m| m.json().len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"messages\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&m.json());
    }
    body.extend_from_slice(b"],\"cursor\":");
    body.extend_from_slice(
        serde_json::Value::from(cursor.encode())
            .to_string()
            .as_bytes(),
    );
    body.extend_from_slice(b",\"resets\":");
    body.extend_from_slice(serde_json::Value::from(resets).to_string().as_bytes());
    body.push(b'}');
    let mut response = Response::new(full(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
