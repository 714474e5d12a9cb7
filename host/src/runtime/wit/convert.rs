//! The WIT world's records and the host's own types, both ways: the event
//! records the host hands a guest are made here from `hooks` types (moved,
//! not copied, where they can be), and a guest's answers, lifted within the
//! output budget (`lift`), are checked against the module's limits and
//! turned into `hooks` types by [`Reader`]. No bindgen type leaves `wit`.

use super::generated::comet::edge::types as wit;
use super::generated::comet::edge::{channels as wit_channels, kv as wit_kv, log as wit_log};
use super::lift::raw::*;
use super::lift::{Bytes, List, Text};
use crate::capabilities::channels::CallError;
use crate::capabilities::kv::StoreError;
use crate::capabilities::log::Level;
use crate::channels::{Message, Payload, TransportKind};
use crate::hooks::{
    Action, CloseFrame, CloseInfo, ConnectOutcome, ConnectRequest, ConnectionInfo, Header, Hold,
    Outgoing, Publication, PublishSource, PublishVerdict, Rejection, Request, RequestOutcome,
    Response, StreamFormat, SubscribeOutcome, SubscribeRequest, WebSocketAccept,
};
use crate::runtime::error::GuestFault;
use comet_config::limits::Limits;

fn headers(headers: Vec<Header>) -> Vec<wit::Header> {
    headers
        .into_iter()
        .map(|h| wit::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn transport(kind: TransportKind) -> wit::Transport {
    match kind {
        TransportKind::Sse => wit::Transport::Sse,
        TransportKind::Stream => wit::Transport::HttpStream,
        TransportKind::Poll => wit::Transport::LongPoll,
        TransportKind::WebSocket => wit::Transport::Websocket,
    }
}

/// A payload for the guest (binary payloads are copied out of the shared
/// buffer into the guest's list).
pub(super) fn payload(p: Payload) -> wit::Payload {
    match p {
        Payload::Text(t) => wit::Payload::Text(t),
        Payload::Binary(b) => wit::Payload::Binary(b.to_vec()),
    }
}

/// A payload the guest handed to an import.
pub(super) fn payload_from(p: wit::Payload) -> Payload {
    match p {
        wit::Payload::Text(t) => Payload::Text(t),
        wit::Payload::Binary(b) => Payload::Binary(b.into()),
    }
}

pub(super) fn request(r: Request) -> wit::Request {
    wit::Request {
        id: r.id,
        method: r.method,
        path: r.path,
        query: r.query,
        headers: headers(r.headers),
        body: r.body,
        remote_addr: r.remote_addr,
    }
}

pub(super) fn connection(c: ConnectionInfo) -> wit::Connection {
    wit::Connection {
        id: c.id,
        transport: transport(c.transport),
        session: c.session,
    }
}

pub(super) fn connect_request(r: ConnectRequest) -> wit::ConnectRequest {
    wit::ConnectRequest {
        connection: connection(r.connection),
        path: r.path,
        query: r.query,
        headers: headers(r.headers),
        remote_addr: r.remote_addr,
    }
}

pub(super) fn subscribe_request(r: SubscribeRequest) -> wit::SubscribeRequest {
    wit::SubscribeRequest {
        channel: r.channel,
        token: r.token,
    }
}

pub(super) fn publication(p: Publication) -> wit::Publication {
    wit::Publication {
        channel: p.channel,
        payload: payload(p.payload),
        source: match p.source {
            PublishSource::Api => wit::PublishSource::Api,
            PublishSource::Client(c) => wit::PublishSource::Client(connection(c)),
            PublishSource::Guest => wit::PublishSource::Guest,
        },
    }
}

pub(super) fn close_info(i: CloseInfo) -> wit::CloseInfo {
    wit::CloseInfo {
        code: i.code,
        reason: i.reason,
    }
}

/// A message of a channel's history, for the guest.
pub(super) fn message(m: &Message) -> wit::Message {
    wit::Message {
        channel: m.channel.to_string(),
        payload: payload(m.payload()),
        cursor: m.cursor().encode(),
        published_at_ms: m.published_at_ms,
    }
}

pub(super) fn level(l: wit_log::Level) -> Level {
    match l {
        wit_log::Level::Trace => Level::Trace,
        wit_log::Level::Debug => Level::Debug,
        wit_log::Level::Info => Level::Info,
        wit_log::Level::Warn => Level::Warn,
        wit_log::Level::Error => Level::Error,
    }
}

pub(super) fn kv_error(e: &StoreError) -> wit_kv::KvError {
    let msg = e.to_string();
    match e {
        StoreError::InvalidKey(_) => wit_kv::KvError::InvalidKey(msg),
        StoreError::TooLarge(_) | StoreError::FullBytes => wit_kv::KvError::TooLarge(msg),
        StoreError::NotANumber | StoreError::Overflow => wit_kv::KvError::NotANumber(msg),
        StoreError::Full | StoreError::NotGranted | StoreError::Unavailable(_) => {
            wit_kv::KvError::Unavailable(msg)
        }
    }
}

pub(super) fn channel_error(e: CallError) -> wit_channels::ChannelError {
    match e {
        CallError::InvalidChannel(m) => wit_channels::ChannelError::InvalidChannel(m),
        CallError::InvalidCursor(m) => wit_channels::ChannelError::InvalidCursor(m),
        CallError::Rejected(m) => wit_channels::ChannelError::Rejected(m),
        CallError::TooLarge(m) => wit_channels::ChannelError::TooLarge(m),
        CallError::Unavailable(m) => wit_channels::ChannelError::Unavailable(m),
    }
}

/// Longest channel name, cursor or reason a guest may return.
const MAX_SHORT_TEXT: usize = 16 << 10;

/// Checks the shape of a lifted output against the module's limits and
/// turns it into the host's types.
pub(crate) struct Reader<'l> {
    limits: &'l Limits,
}

/// `9 headers, over the limit of 8`.
fn over(what: &str, count: usize, max: usize) -> GuestFault {
    GuestFault::InvalidOutput(format!("{count} {what}, over the limit of {max}"))
}

/// `a response body of 100001 bytes, over the 100000 byte limit`.
fn too_big(what: &str, size: usize, max: usize) -> GuestFault {
    GuestFault::InvalidOutput(format!("{what} of {size} bytes, over the {max} byte limit"))
}

fn text(t: Text, max: usize, what: &str) -> Result<String, GuestFault> {
    if t.0.len() > max {
        return Err(too_big(what, t.0.len(), max));
    }
    Ok(t.0)
}

fn bytes(b: Bytes, max: usize, what: &str) -> Result<Vec<u8>, GuestFault> {
    if b.0.len() > max {
        return Err(too_big(what, b.0.len(), max));
    }
    Ok(b.0)
}

impl<'l> Reader<'l> {
    pub(crate) fn new(limits: &'l Limits) -> Self {
        Reader { limits }
    }

    fn headers(&self, list: List<RawHeader>) -> Result<Vec<Header>, GuestFault> {
        let max = self.limits.max_header_bytes;
        if list.0.len() > self.limits.max_headers {
            return Err(over("headers", list.0.len(), self.limits.max_headers));
        }
        let total: usize = list
            .0
            .iter()
            .map(|h| h.name.0.len() + h.value.0.len())
            .sum();
        if total > max {
            return Err(too_big("headers", total, max));
        }
        Ok(list
            .0
            .into_iter()
            .map(|h| Header {
                name: h.name.0,
                value: h.value.0,
            })
            .collect())
    }

    fn attributes(&self, list: List<(Text, Text)>) -> Result<Vec<(String, String)>, GuestFault> {
        let max = self.limits.max_session_bytes;
        let total: usize = list.0.iter().map(|(k, v)| k.0.len() + v.0.len()).sum();
        if total > max {
            return Err(too_big("session attributes", total, max));
        }
        Ok(list.0.into_iter().map(|(k, v)| (k.0, v.0)).collect())
    }

    fn channels(&self, list: List<Text>) -> Result<Vec<String>, GuestFault> {
        list.0
            .into_iter()
            .map(|c| text(c, MAX_SHORT_TEXT, "a channel name"))
            .collect()
    }

    fn payload(&self, p: RawPayload, max: usize, what: &str) -> Result<Payload, GuestFault> {
        Ok(match p {
            RawPayload::Text(t) => Payload::Text(text(t, max, what)?),
            RawPayload::Binary(b) => Payload::Binary(bytes(b, max, what)?.into()),
        })
    }

    /// on-request's answer.
    pub(crate) fn request_outcome(
        &self,
        raw: RawRequestOutcome,
    ) -> Result<RequestOutcome, GuestFault> {
        Ok(match raw {
            RawRequestOutcome::Respond(r) => RequestOutcome::Respond(Response {
                status: r.status,
                headers: self.headers(r.headers)?,
                body: bytes(r.body, self.limits.max_response_body, "a response body")?,
            }),
            RawRequestOutcome::Hold(h) => RequestOutcome::Hold(Hold {
                channels: self.channels(h.channels)?,
                format: match h.format {
                    RawStreamFormat::Sse => StreamFormat::Sse,
                    RawStreamFormat::Ndjson => StreamFormat::Ndjson,
                    RawStreamFormat::LongPoll => StreamFormat::LongPoll,
                },
                since: h
                    .since
                    .map(|s| text(s, MAX_SHORT_TEXT, "a cursor"))
                    .transpose()?,
                timeout_ms: h.timeout_ms,
                headers: self.headers(h.headers)?,
            }),
            RawRequestOutcome::Upgrade(a) => RequestOutcome::Upgrade(WebSocketAccept {
                channels: self.channels(a.channels)?,
                session: self.attributes(a.session)?,
            }),
        })
    }

    /// on-connect's answer.
    pub(crate) fn connect_outcome(
        &self,
        raw: RawConnectOutcome,
    ) -> Result<ConnectOutcome, GuestFault> {
        Ok(match raw {
            RawConnectOutcome::Accept(session) => ConnectOutcome::Accept(self.attributes(session)?),
            RawConnectOutcome::Reject(r) => ConnectOutcome::Reject(Rejection {
                status: r.status,
                reason: text(r.reason, MAX_SHORT_TEXT, "a rejection reason")?,
            }),
        })
    }

    /// on-subscribe's answer.
    pub(crate) fn subscribe_outcome(
        &self,
        raw: RawSubscribeOutcome,
    ) -> Result<SubscribeOutcome, GuestFault> {
        Ok(match raw {
            RawSubscribeOutcome::Allow => SubscribeOutcome::Allow,
            RawSubscribeOutcome::Deny(r) => {
                SubscribeOutcome::Deny(text(r, MAX_SHORT_TEXT, "a denial reason")?)
            }
        })
    }

    /// on-publish's answer.
    pub(crate) fn publish_verdict(
        &self,
        raw: RawPublishVerdict,
    ) -> Result<PublishVerdict, GuestFault> {
        Ok(match raw {
            RawPublishVerdict::Accept => PublishVerdict::Accept,
            RawPublishVerdict::Replace(p) => PublishVerdict::Replace(self.payload(
                p,
                self.limits.max_payload_bytes,
                "a replacement payload",
            )?),
            RawPublishVerdict::Reject(r) => {
                PublishVerdict::Reject(text(r, MAX_SHORT_TEXT, "a rejection reason")?)
            }
        })
    }

    /// on-message's actions.
    pub(crate) fn actions(&self, raw: List<RawAction>) -> Result<Vec<Action>, GuestFault> {
        if raw.0.len() > self.limits.max_actions {
            return Err(over("actions", raw.0.len(), self.limits.max_actions));
        }
        let (max_send, max_payload) = (self.limits.max_send_bytes, self.limits.max_payload_bytes);
        raw.0
            .into_iter()
            .map(|a| {
                Ok(match a {
                    RawAction::Send(p) => {
                        Action::Send(self.payload(p, max_send, "a sent frame")?)
                    }
                    RawAction::Publish(o) => Action::Publish(Outgoing {
                        channel: text(o.channel, MAX_SHORT_TEXT, "a channel name")?,
                        payload: self.payload(o.payload, max_payload, "a published payload")?,
                    }),
                    RawAction::Subscribe(c) => {
                        Action::Subscribe(text(c, MAX_SHORT_TEXT, "a channel name")?)
                    }
                    RawAction::Unsubscribe(c) => {
                        Action::Unsubscribe(text(c, MAX_SHORT_TEXT, "a channel name")?)
                    }
                    RawAction::SetSession(s) => Action::SetSession(self.attributes(s)?),
                    RawAction::Close(f) => Action::Close(CloseFrame {
                        code: f.code,
                        // A close reason is at most 123 bytes on the wire.
                        reason: text(f.reason, 123, "a close reason")?,
                    }),
                })
            })
            .collect()
    }
}
