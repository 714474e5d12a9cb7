//! Long-poll: answer at once when the client is behind (or has a reset
//! pending), else hold until a message arrives or the timeout passes. The
//! JSON answer carries the messages, the resets and the cursor to poll with
//! next.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use super::client::{Client, RequestInfo};
use super::{Conn, Endpoints, query};
use crate::channels::{Backlog, Cursor, Disconnect, Event, Message, Reset, TransportKind};
use crate::hooks::Hooks;
use crate::http::{ApiError, Body, full};

/// `GET /comet/poll`: on-connect, the subscriptions the query asks for,
/// then the answer; the connection ends with it.
pub(super) async fn serve<B>(
    hooks: Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
    conn: Conn,
) -> Result<Response<Body>, ApiError> {
    let node = endpoints.node();
    let config = &endpoints.config;
    let ask = query::parse(
        request.uri().query(),
        request.headers(),
        node.max_channels_per_connection(),
    )?;
    let timeout = ask
        .timeout
        .unwrap_or(config.hold_timeout)
        .min(config.hold_timeout);
    let info = RequestInfo::of(&request, &conn.peer);
    drop(request);
    let mut client = Client::connect(&hooks, node, TransportKind::Poll, info).await?;
    let backlogs = client
        .subscribe_all(&ask.channels, &ask.since, ask.token.as_deref(), true)
        .await?;
    let answer = answer(&mut client, backlogs, timeout).await;
    client.closed(None, "poll answered");
    answer
}

/// What one poll answers.
#[derive(Default)]
struct Answer {
    cursor: Cursor,
    messages: Vec<Arc<Message>>,
    resets: Vec<serde_json::Value>,
}

impl Answer {
    fn message(&mut self, m: Arc<Message>) {
        self.cursor.set(&m.channel, m.position);
        self.messages.push(m);
    }

    fn reset(&mut self, r: &Reset) {
        self.cursor.set(&r.channel, r.position);
        self.resets
            .push(serde_json::json!({ "channel": r.channel.as_str(), "reason": r.gap.reason() }));
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.resets.is_empty()
    }

    /// `{"messages": [...], "cursor": "...", "resets": [...]}`, splicing in
    /// the messages' JSON as encoded once at publish.
    fn into_response(self) -> Response<Body> {
        let mut body = Vec::with_capacity(
            64 + self
                .messages
                .iter()
                .map(|m| m.json().len() + 1)
                .sum::<usize>(),
        );
        body.extend_from_slice(b"{\"messages\":[");
        for (i, m) in self.messages.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&m.json());
        }
        body.extend_from_slice(b"],\"cursor\":");
        body.extend_from_slice(
            serde_json::Value::from(self.cursor.encode())
                .to_string()
                .as_bytes(),
        );
        body.extend_from_slice(b",\"resets\":");
        body.extend_from_slice(serde_json::Value::from(self.resets).to_string().as_bytes());
        body.push(b'}');
        let mut response = Response::new(full(Bytes::from(body)));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// The answer to a poll the server API disconnected: `403` if the client
/// must not poll again, else `503` with `Retry-After`, and the code and
/// reason in the one error shape.
fn disconnected(d: &Disconnect) -> Response<Body> {
    let mut response = Response::new(full(d.json().to_string()));
    *response.status_mut() = if d.reconnect() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::FORBIDDEN
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if d.reconnect() {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(1));
    }
    response
}

/// Answer with the backlog, or wait up to `timeout` for the first live
/// event and answer with it (and whatever else is ready).
pub(crate) async fn answer(
    client: &mut Client,
    backlogs: Vec<Backlog>,
    timeout: Duration,
) -> Result<Response<Body>, ApiError> {
    let mut answer = Answer::default();
    for backlog in &backlogs {
        answer.cursor.set(&backlog.channel, backlog.start);
    }
    for backlog in backlogs {
        if let Some(reset) = &backlog.reset {
            answer.reset(reset);
        }
        for m in backlog.messages {
            answer.message(m);
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    // Until something to answer with: events a poll ignores (the server
    // API's subscriptions) do not end the wait.
    while answer.is_empty() {
        let Ok(first) = tokio::time::timeout_at(deadline, client.conn.next()).await else {
            break;
        };
        let mut first = Some(first);
        while let Some(event) = first.take().or_else(|| client.conn.try_next()) {
            match event {
                Event::Message(m) => answer.message(m),
                Event::Reset(r) => answer.reset(&r),
                Event::SlowConsumer => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "slow-consumer",
                        "this client fell behind; poll again with your cursor",
                    ));
                }
                Event::Unavailable(why) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("{why}; poll again with your cursor"),
                    )
                    .retry_after(1));
                }
                // Shutting down: answer now with what there is; the client
                // polls again (elsewhere) with the cursor.
                Event::Closing => return Ok(answer.into_response()),
                Event::Disconnect(d) => return Ok(disconnected(&d)),
                // A poll names its channels each time: the server API's
                // subscriptions are for standing connections.
                Event::Subscribe(..) | Event::Unsubscribed(_) => {}
            }
        }
    }
    Ok(answer.into_response())
}
