//! `POST /comet/api/COMMAND`: the server API, for the application's
//! backend. JSON in (the command's parameters), JSON out (`{"result": ..}`
//! or the one error shape), behind its own bearer key, without CORS.
//!
//! Commands that act on connections (subscribe, unsubscribe, disconnect)
//! go through the broker to every node, which applies them to its own
//! connections (`channels::control`); the others read or write the
//! channels through this node. Every command therefore works whichever
//! node receives it. PROTOCOL.md has each command's request and answer.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Endpoints;
use crate::channels::control::{
    DISCONNECT_CODES, MAX_REASON_BYTES, NO_RECONNECT_CODES, SLOW_CONSUMER_CODE,
};
use crate::channels::{
    Action, ChannelError, ChannelName, Command, Cursor, Disconnect, Message, Payload, Position,
    Published, Target,
};
use crate::hooks::{Hooks, PublishSource};
use crate::http::auth::check_bearer;
use crate::http::{ApiError, Body, declared_length, full, next_request_id, read_bounded};

/// Largest request body: a batch of commands, each up to a payload.
pub const MAX_API_BODY: usize = 1 << 20;

/// Most commands in one batch, and most channels in one broadcast.
pub const MAX_BATCH: usize = 100;

/// Most connections `presence` lists (it counts them all).
pub const MAX_PRESENCE_CLIENTS: usize = 100;

/// `POST /comet/api/COMMAND`.
pub(super) async fn serve<B>(
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if request.method() != http::Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "server API commands are POSTed",
        ));
    }
    check_bearer(request.headers(), &endpoints.config.api_key, "API key")?;
    let method = request
        .uri()
        .path()
        .strip_prefix("/comet/api/")
        .unwrap_or_default()
        .to_string();
    let too_large = |_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("a server API request is at most {MAX_API_BODY} bytes"),
        )
    };
    let declared = declared_length(request.headers());
    let body = read_bounded(declared, request.into_body(), MAX_API_BODY, too_large).await?;
    let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not JSON: {e}")))?
    };
    let result = Api { hooks, endpoints }.run(&method, params).await?;
    let mut response = Response::new(full(json!({ "result": result }).to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn bad(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
}

/// The command's parameters as `T`, or a 400 naming what is wrong.
fn params<T: for<'de> Deserialize<'de>>(method: &str, params: Value) -> Result<T, ApiError> {
    if !params.is_object() {
        return Err(bad(format!("{method}: the parameters are a JSON object")));
    }
    serde_json::from_value(params).map_err(|e| bad(format!("{method}: {e}")))
}

fn channel(name: &str) -> Result<ChannelName, ApiError> {
    Ok(ChannelName::new(name).map_err(ChannelError::from)?)
}

/// `data` (text) or `data_b64` (binary), exactly one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Data {
    data: Option<String>,
    data_b64: Option<String>,
}

impl Data {
    fn payload(self) -> Result<Payload, ApiError> {
        match (self.data, self.data_b64) {
            (Some(text), None) => Ok(Payload::Text(text)),
            (None, Some(b64)) => STANDARD
                .decode(b64)
                .map(|b| Payload::Binary(b.into()))
                .map_err(|e| bad(format!("data_b64: {e}"))),
            _ => Err(bad("give exactly one of data and data_b64")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishParams {
    channel: String,
    #[serde(flatten)]
    data: Data,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastParams {
    channels: Vec<String>,
    #[serde(flatten)]
    data: Data,
}

/// `user` or `connection`, exactly one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Whom {
    user: Option<String>,
    connection: Option<String>,
}

impl Whom {
    fn target(self) -> Result<Target, ApiError> {
        match (self.user, self.connection) {
            (Some(user), None) if !user.is_empty() => Ok(Target::User(user)),
            (None, Some(id)) if !id.is_empty() => Ok(Target::Connection(id)),
            _ => Err(bad("give exactly one of user and connection")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    #[serde(flatten)]
    whom: Whom,
    channel: String,
    since: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeParams {
    #[serde(flatten)]
    whom: Whom,
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectParams {
    #[serde(flatten)]
    whom: Whom,
    code: Option<u16>,
    reason: Option<String>,
    reconnect: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelParams {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    channel: String,
    since: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsParams {
    pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchParams {
    commands: Vec<BatchCommand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCommand {
    method: String,
    #[serde(default = "empty_object")]
    params: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// `since` read for `channel`: a cursor that names the channel.
fn since(channel: &ChannelName, cursor: Option<&str>) -> Result<Option<Position>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let cursor = Cursor::decode(cursor).map_err(ChannelError::from)?;
    match cursor.get(channel) {
        Some(position) => Ok(Some(position)),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-cursor",
            format!("the cursor has no position in {channel}"),
        )),
    }
}

fn published(p: &Published) -> Value {
    json!({ "channel": p.channel.as_str(), "cursor": p.cursor().encode(), "time": p.time_ms })
}

/// A message as the subscribing endpoints send it.
fn message_json(message: &Message) -> Value {
    serde_json::from_slice(&message.json()).unwrap_or(Value::Null)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters.
fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// One request's view of the host.
struct Api<'a> {
    hooks: &'a Arc<dyn Hooks>,
    endpoints: &'a Endpoints,
}

impl Api<'_> {
    async fn run(&self, method: &str, p: Value) -> Result<Value, ApiError> {
        if method == "batch" {
            let batch: BatchParams = params(method, p)?;
            if batch.commands.len() > MAX_BATCH {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "too-many",
                    format!("a batch holds at most {MAX_BATCH} commands"),
                ));
            }
            let mut replies = Vec::with_capacity(batch.commands.len());
            for command in batch.commands {
                let reply = match command.method.as_str() {
                    "batch" => Err(bad("a batch cannot hold a batch")),
                    m => Box::pin(self.one(m, command.params)).await,
                };
                replies.push(match reply {
                    Ok(result) => json!({ "result": result }),
                    Err(e) => e.body(),
                });
            }
            return Ok(json!({ "replies": replies }));
        }
        self.one(method, p).await
    }

    async fn one(&self, method: &str, p: Value) -> Result<Value, ApiError> {
        let node = self.endpoints.node();
        match method {
            "publish" => {
                let p: PublishParams = params(method, p)?;
                let channel = channel(&p.channel)?;
                Ok(published(&self.publish(&channel, p.data.payload()?).await?))
            }
            "broadcast" => {
                let p: BroadcastParams = params(method, p)?;
                if p.channels.is_empty() || p.channels.len() > MAX_BATCH {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "too-many",
                        format!("broadcast to 1 to {MAX_BATCH} channels"),
                    ));
                }
                let channels = p
                    .channels
                    .iter()
                    .map(|c| channel(c))
                    .collect::<Result<Vec<_>, _>>()?;
                let payload = p.data.payload()?;
                let mut results = Vec::with_capacity(channels.len());
                for channel in &channels {
                    results.push(match self.publish(channel, payload.clone()).await {
                        Ok(p) => published(&p),
                        Err(e) => {
                            let mut body = e.body();
                            body["channel"] = Value::from(channel.as_str());
                            body
                        }
                    });
                }
                Ok(json!({ "results": results }))
            }
            "subscribe" => {
                let p: SubscribeParams = params(method, p)?;
                let channel = channel(&p.channel)?;
                let since = since(&channel, p.since.as_deref())?;
                let target = p.whom.target()?;
                self.command(target, Action::subscribe(&channel, since))
                    .await
            }
            "unsubscribe" => {
                let p: UnsubscribeParams = params(method, p)?;
                let channel = channel(&p.channel)?;
                let target = p.whom.target()?;
                let action = Action::Unsubscribe {
                    channel: channel.to_string(),
                };
                self.command(target, action).await
            }
            "disconnect" => {
                let p: DisconnectParams = params(method, p)?;
                let target = p.whom.target()?;
                let code = match (p.code, p.reconnect) {
                    (None, Some(true)) => DISCONNECT_CODES.start().to_owned(),
                    (None, _) => NO_RECONNECT_CODES,
                    (Some(SLOW_CONSUMER_CODE), _) => {
                        return Err(bad(format!(
                            "code {SLOW_CONSUMER_CODE} means a slow consumer; choose another"
                        )));
                    }
                    (Some(code), _) if !DISCONNECT_CODES.contains(&code) => {
                        return Err(bad(format!(
                            "code {code} is not a disconnect code ({}..={})",
                            DISCONNECT_CODES.start(),
                            DISCONNECT_CODES.end()
                        )));
                    }
                    (Some(code), Some(reconnect)) if (code < NO_RECONNECT_CODES) != reconnect => {
                        return Err(bad(format!(
                            "code {code} says the client {} reconnect; reconnect says otherwise",
                            if code < NO_RECONNECT_CODES {
                                "may"
                            } else {
                                "must not"
                            }
                        )));
                    }
                    (Some(code), _) => code,
                };
                let reason = p
                    .reason
                    .unwrap_or_else(|| "disconnected by the server".to_string());
                if reason.len() > MAX_REASON_BYTES {
                    return Err(bad(format!(
                        "a reason is at most {MAX_REASON_BYTES} bytes (it travels in a WebSocket close frame)"
                    )));
                }
                self.command(target, Action::Disconnect(Disconnect { code, reason }))
                    .await
            }
            "presence" => {
                let p: ChannelParams = params(method, p)?;
                let channel = channel(&p.channel)?;
                let presence = node.presence(&channel, MAX_PRESENCE_CLIENTS).await?;
                let clients: Vec<Value> = presence
                    .members
                    .iter()
                    .map(|m| {
                        let session: serde_json::Map<String, Value> = m
                            .session
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                            .collect();
                        let user = m
                            .session
                            .iter()
                            .find(|(k, _)| k == crate::channels::USER)
                            .map(|(_, v)| v.as_str());
                        json!({ "connection": m.connection, "user": user, "session": session })
                    })
                    .collect();
                Ok(json!({
                    "channel": channel.as_str(),
                    "connections": presence.connections,
                    "users": presence.users,
                    "clients": clients,
                }))
            }
            "presence_stats" => {
                let p: ChannelParams = params(method, p)?;
                let channel = channel(&p.channel)?;
                let presence = node.presence(&channel, 0).await?;
                Ok(json!({
                    "channel": channel.as_str(),
                    "connections": presence.connections,
                    "users": presence.users.len(),
                }))
            }
            "history" => {
                let p: HistoryParams = params(method, p)?;
                let channel = channel(&p.channel)?;
                let max = node.rules(&channel).history.max_len;
                let limit = p.limit.unwrap_or(max).min(max);
                let history = if p.reverse {
                    if p.since.is_some() {
                        return Err(bad("reverse reads the newest messages: give no since"));
                    }
                    node.newest(&channel, limit).await?
                } else {
                    let since = since(&channel, p.since.as_deref())?;
                    // Without a cursor: from the oldest kept.
                    node.history(&channel, since, limit).await?
                };
                let mut answer = json!({
                    "channel": channel.as_str(),
                    "messages": history.messages.iter().map(|m| message_json(m)).collect::<Vec<_>>(),
                    "cursor": Cursor::single(&channel, history.head).encode(),
                });
                if let Some(gap) = history.gap {
                    let start = history
                        .messages
                        .first()
                        .map_or(history.head, |m| m.position.before());
                    answer["reset"] = json!({
                        "reason": gap.reason(),
                        "cursor": Cursor::single(&channel, start).encode(),
                    });
                }
                Ok(answer)
            }
            "history_remove" => {
                let p: ChannelParams = params(method, p)?;
                let channel = channel(&p.channel)?;
                let head = node.remove_history(&channel).await?;
                Ok(json!({
                    "channel": channel.as_str(),
                    "cursor": Cursor::single(&channel, head).encode(),
                }))
            }
            "channels" => {
                let p: ChannelsParams = params(method, p)?;
                let mut channels = node.channels().await?;
                if let Some(pattern) = &p.pattern {
                    channels.retain(|(c, _)| matches(pattern, c.as_str()));
                }
                channels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let channels: Vec<Value> = channels
                    .iter()
                    .map(|(c, n)| json!({ "channel": c.as_str(), "subscribers": n }))
                    .collect();
                Ok(json!({ "channels": channels }))
            }
            "info" => {
                let _: Empty = params(method, p)?;
                let nodes = node.nodes().await?;
                Ok(json!({ "node": node.id(), "nodes": nodes }))
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown-command",
                format!(
                    "no server API command `{method}`: publish, broadcast, subscribe, unsubscribe, \
                     disconnect, presence, presence_stats, history, history_remove, channels, info, batch"
                ),
            )),
        }
    }

    async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
    ) -> Result<Published, ApiError> {
        Ok(self
            .endpoints
            .publisher
            .publish(
                &**self.hooks,
                next_request_id(),
                channel,
                payload,
                PublishSource::Api,
            )
            .await?)
    }

    async fn command(&self, target: Target, action: Action) -> Result<Value, ApiError> {
        let command = Command { target, action };
        self.endpoints.node().command(&command).await?;
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_with_stars() {
        assert!(matches("chat:*", "chat:lobby"));
        assert!(matches("*", "anything"));
        assert!(matches("a*c", "abc"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(!matches("chat:*", "news"));
        assert!(!matches("a*bc", "abc_"));
        assert!(!matches("ab*ba", "aba"));
    }
}
