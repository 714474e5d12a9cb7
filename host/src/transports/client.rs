//! A client connection's life on any transport: opened through on-connect
//! (or accepted because on-request already decided), subscribed through
//! on-subscribe, and reported to on-close when it ends.

use std::sync::Arc;

use http::StatusCode;

use crate::channels::{
    Backlog, ChannelError, ChannelName, Connection, Cursor, Node, Position, TransportKind,
};
use crate::hooks::{
    CloseInfo, ConnectOutcome, ConnectRequest, ConnectionInfo, Header, HookError, Hooks,
    SubscribeOutcome, SubscribeRequest,
};
use crate::http::{ApiError, Peer, composite_error, next_request_id};

/// What on-connect is told about the request, copied out of it. Streams and
/// polls drop the request before running any hook: its header values are
/// slices of hyper's read buffer, and a buffer still shared when hyper next
/// reads makes it allocate a second one for the life of the connection
/// (16 KiB instead of 8 KiB per idle stream, measured with heaptrack).
#[derive(Debug)]
pub(crate) struct RequestInfo {
    path: String,
    query: String,
    headers: Vec<Header>,
    remote: Arc<str>,
}

impl RequestInfo {
    pub(crate) fn of<B>(request: &http::Request<B>, peer: &Peer) -> RequestInfo {
        RequestInfo {
            path: request.uri().path().to_string(),
            query: request.uri().query().unwrap_or_default().to_string(),
            headers: Header::all(request.headers()),
            remote: peer.text.clone(),
        }
    }
}

/// A client connection being opened or open: its channel membership, the
/// hooks that decide for it, and what they see of it.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) hooks: Arc<dyn Hooks>,
    pub(crate) conn: Connection,
    pub(crate) info: ConnectionInfo,
}

/// on-subscribe refused a channel, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subscription to {channel} denied: {reason}")]
pub struct Denied {
    /// The channel.
    pub channel: ChannelName,
    /// on-subscribe's reason.
    pub reason: String,
}

composite_error! {
    /// Why a subscription was refused.
    pub(crate) enum SubscribeError {
        /// A bad name or cursor, a limit, or the broker.
        Channel(ChannelError),
        /// on-subscribe said no.
        Denied(Denied),
        /// on-subscribe failed.
        Hook(HookError),
    }
}

impl Client {
    /// A connection accepted without asking on-connect (a handler's hold or
    /// WebSocket accept, where on-request already decided).
    pub(crate) fn accepted(
        hooks: &Arc<dyn Hooks>,
        node: &Arc<Node>,
        transport: TransportKind,
        session: Vec<(String, String)>,
    ) -> Result<Client, ApiError> {
        let conn = node.connect(transport)?;
        conn.set_session(session.clone());
        let info = ConnectionInfo {
            id: conn.id(),
            transport,
            session,
        };
        Ok(Client {
            hooks: hooks.clone(),
            conn,
            info,
        })
    }

    /// Ask on-connect whether this client may open `transport`.
    pub(crate) async fn connect(
        hooks: &Arc<dyn Hooks>,
        node: &Arc<Node>,
        transport: TransportKind,
        request: RequestInfo,
    ) -> Result<Client, ApiError> {
        let mut client = Client::accepted(hooks, node, transport, Vec::new())?;
        let connect = ConnectRequest {
            connection: client.info.clone(),
            path: request.path,
            query: request.query,
            headers: request.headers,
            remote_addr: request.remote.to_string(),
        };
        match hooks.on_connect(next_request_id(), connect).await? {
            ConnectOutcome::Accept(session) => {
                client.conn.set_session(session.clone());
                client.info.session = session;
                Ok(client)
            }
            ConnectOutcome::Reject(r) => {
                let status = StatusCode::from_u16(r.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                Err(ApiError::new(status, "rejected", r.reason))
            }
        }
    }

    /// Subscribe to `channel` from `since`, after on-subscribe allows it
    /// (unless the handler already chose the channel).
    pub(crate) async fn subscribe(
        &mut self,
        channel: &ChannelName,
        since: Option<Position>,
        token: Option<String>,
        ask_guest: bool,
    ) -> Result<Backlog, SubscribeError> {
        if ask_guest {
            let request = SubscribeRequest {
                channel: channel.to_string(),
                token,
            };
            let outcome = self
                .hooks
                .on_subscribe(next_request_id(), &self.info, request)
                .await?;
            if let SubscribeOutcome::Deny(reason) = outcome {
                return Err(Denied {
                    channel: channel.clone(),
                    reason,
                }
                .into());
            }
        }
        Ok(self.conn.subscribe(channel, since).await?)
    }

    /// Subscribe to every channel of a request, answering the first failure.
    pub(crate) async fn subscribe_all(
        &mut self,
        channels: &[ChannelName],
        since: &Cursor,
        token: Option<&str>,
        ask_guest: bool,
    ) -> Result<Vec<Backlog>, ApiError> {
        let mut backlogs = Vec::with_capacity(channels.len());
        for channel in channels {
            let backlog = self
                .subscribe(
                    channel,
                    since.get(channel),
                    token.map(str::to_string),
                    ask_guest,
                )
                .await?;
            backlogs.push(backlog);
        }
        Ok(backlogs)
    }

    /// Tell the hooks the connection ended (they run on-close in the
    /// background, if at all).
    pub(crate) fn closed(&self, code: Option<u16>, reason: &str) {
        let info = CloseInfo {
            code,
            reason: reason.to_string(),
        };
        self.hooks.clone().on_close(self.info.clone(), info);
    }
}
