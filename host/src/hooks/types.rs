//! The six events and their answers in the host's own types: what crosses
//! the [`Hooks`](super::Hooks) seam. They mirror the records of
//! `wit/types.wit`; `runtime::wit` converts between the two, so no bindgen
//! type reaches a transport.

use crate::channels::{Payload, Session, TransportKind};

/// The names of the six events a handler exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `on-request`.
    Request,
    /// `on-connect`.
    Connect,
    /// `on-subscribe`.
    Subscribe,
    /// `on-publish`.
    Publish,
    /// `on-message`.
    Message,
    /// `on-close`.
    Close,
}

impl Hook {
    /// Every event, in the order of the WIT interface.
    pub const ALL: [Hook; 6] = [
        Hook::Request,
        Hook::Connect,
        Hook::Subscribe,
        Hook::Publish,
        Hook::Message,
        Hook::Close,
    ];

    /// The name in the WIT world (and in metrics, logs and the `comet-hooks`
    /// section).
    pub fn wit_name(self) -> &'static str {
        match self {
            Hook::Request => "on-request",
            Hook::Connect => "on-connect",
            Hook::Subscribe => "on-subscribe",
            Hook::Publish => "on-publish",
            Hook::Message => "on-message",
            Hook::Close => "on-close",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wit_name())
    }
}

/// One HTTP header: the name lower-case, the value's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: String,
    /// The raw value.
    pub value: Vec<u8>,
}

impl Header {
    /// Every header of `headers`, in order.
    pub fn all(headers: &http::HeaderMap) -> Vec<Header> {
        headers
            .iter()
            .map(|(name, value)| Header {
                name: name.as_str().to_string(),
                value: value.as_bytes().to_vec(),
            })
            .collect()
    }

    /// `headers` as HTTP headers, or what is wrong with the first that is
    /// not one.
    pub fn to_http(
        headers: Vec<Header>,
    ) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
        headers
            .into_iter()
            .map(|header| {
                let name = http::HeaderName::from_bytes(header.name.as_bytes())
                    .map_err(|_| format!("an invalid header name {:?}", header.name))?;
                let value = http::HeaderValue::from_bytes(&header.value)
                    .map_err(|_| format!("an invalid value for header {:?}", header.name))?;
                Ok((name, value))
            })
            .collect()
    }
}

/// An HTTP request for on-request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request's id (also in `x-request-id` and the log).
    pub id: String,
    /// The method, upper case.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The headers, in order.
    pub headers: Vec<Header>,
    /// The whole body, within the module's limit.
    pub body: Vec<u8>,
    /// The client's address, `ip:port`.
    pub remote_addr: String,
}

/// A complete response from on-request.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code as the guest gave it (checked at the edge).
    pub status: u16,
    /// Headers (checked at the edge).
    pub headers: Vec<Header>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The SDK's default answer to a request: 404, `not found`.
    pub fn not_found() -> Response {
        Response {
            status: 404,
            headers: vec![Header {
                name: "content-type".into(),
                value: b"text/plain; charset=utf-8".to_vec(),
            }],
            body: b"not found\n".to_vec(),
        }
    }
}

/// How a held request is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Server-sent events.
    Sse,
    /// Chunked NDJSON.
    Ndjson,
    /// One long-poll answer.
    LongPoll,
}

/// A request the handler turns into a subscription the host holds.
#[derive(Debug, Clone)]
pub struct Hold {
    /// Channels, at least one.
    pub channels: Vec<String>,
    /// How it is written.
    pub format: StreamFormat,
    /// The client's cursor, passed through the handler.
    pub since: Option<String>,
    /// Longest hold in ms; `None`: the host's default.
    pub timeout_ms: Option<u32>,
    /// Extra response headers.
    pub headers: Vec<Header>,
}

/// A WebSocket upgrade the handler accepts.
#[derive(Debug, Clone)]
pub struct WebSocketAccept {
    /// Channels subscribed from the start.
    pub channels: Vec<String>,
    /// Session attributes of the connection.
    pub session: Session,
}

/// on-request's answer.
#[derive(Debug, Clone)]
pub enum RequestOutcome {
    /// Answer now.
    Respond(Response),
    /// Hold the request on channels.
    Hold(Hold),
    /// Upgrade to a WebSocket.
    Upgrade(WebSocketAccept),
}

/// A client connection as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Its id (`c` and a number unique within the process).
    pub id: String,
    /// Its transport.
    pub transport: TransportKind,
    /// Its session attributes.
    pub session: Session,
}

/// A client opening a built-in endpoint, for on-connect.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The connection (its session still empty).
    pub connection: ConnectionInfo,
    /// The request's path.
    pub path: String,
    /// Its raw query string.
    pub query: String,
    /// Its headers.
    pub headers: Vec<Header>,
    /// The client's address, `ip:port`.
    pub remote_addr: String,
}

/// A refused connection: the status and reason the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status as the guest gave it.
    pub status: u16,
    /// Why.
    pub reason: String,
}

/// on-connect's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// Let the client in, with these session attributes.
    Accept(Session),
    /// Refuse it.
    Reject(Rejection),
}

/// A client asking for a channel, for on-subscribe.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// The channel.
    pub channel: String,
    /// The client's credential, if it gave one.
    pub token: Option<String>,
}

/// on-subscribe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Subscribe.
    Allow,
    /// Refuse, with the reason.
    Deny(String),
}

/// Who publishes.
#[derive(Debug, Clone)]
pub enum PublishSource {
    /// The publish API.
    Api,
    /// A WebSocket client.
    Client(ConnectionInfo),
    /// A guest, through `channels.publish` or an on-message action.
    Guest,
}

impl PublishSource {
    /// `api`, `client` or `guest` (the metrics label).
    pub fn label(&self) -> &'static str {
        match self {
            PublishSource::Api => "api",
            PublishSource::Client(_) => "client",
            PublishSource::Guest => "guest",
        }
    }
}

/// A message about to be published, for on-publish.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The channel.
    pub channel: String,
    /// The payload.
    pub payload: Payload,
    /// Who publishes.
    pub source: PublishSource,
}

/// on-publish's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishVerdict {
    /// Publish it as it is.
    Accept,
    /// Publish this instead.
    Replace(Payload),
    /// Refuse, with the reason.
    Reject(String),
}

/// A message an on-message action publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The channel.
    pub channel: String,
    /// The payload.
    pub payload: Payload,
}

/// A WebSocket close the handler asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: u16,
    /// The reason (at most 123 bytes).
    pub reason: String,
}

/// What on-message asks the host to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a frame to this client.
    Send(Payload),
    /// Publish (through on-publish).
    Publish(Outgoing),
    /// Subscribe this client (without on-subscribe).
    Subscribe(String),
    /// Unsubscribe this client.
    Unsubscribe(String),
    /// Replace the connection's session attributes.
    SetSession(Session),
    /// Close the connection.
    Close(CloseFrame),
}

/// How a connection ended, for on-close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The WebSocket close code, if any.
    pub code: Option<u16>,
    /// Why.
    pub reason: String,
}
