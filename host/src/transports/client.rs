//! A client connection's life on any transport: opened through on-connect
//! (or accepted because on-request already decided), subscribed through
//! on-subscribe, and reported to on-close when it ends.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;

use crate::bindings::{self, ConnectOutcome, SubscribeOutcome, Transport};
use crate::channels::{
    Backlog, ChannelError, ChannelName, Connection, Cursor, Position, TransportKind,
};
use crate::http::{ApiError, ClientError, next_request_id};
use crate::implemented::Hook;
use crate::module::{HandlerModule, HookError};

/// What on-connect is told about the request, copied out of it. Streams and
/// polls drop the request before running any hook: its header values are
/// slices of hyper's read buffer, and a buffer still shared when hyper next
/// reads makes it allocate a second one for the life of the connection
/// (16 KiB instead of 8 KiB per idle stream, measured with heaptrack).
#[derive(Debug)]
pub(crate) struct RequestInfo {
    path: String,
    query: String,
    headers: Vec<bindings::Header>,
    remote: SocketAddr,
}

impl RequestInfo {
    pub(crate) fn of<B>(request: &http::Request<B>, remote: SocketAddr) -> RequestInfo {
        RequestInfo {
            path: request.uri().path().to_string(),
            query: request.uri().query().unwrap_or_default().to_string(),
            headers: bindings::guest_headers(request.headers()),
            remote,
        }
    }
}

/// A client connection being opened or open: its channel membership and
/// what guests see of it.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) module: Arc<HandlerModule>,
    pub(crate) conn: Connection,
    pub(crate) info: bindings::Connection,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("subscription to {channel} denied: {reason}")]
    Denied {
        channel: ChannelName,
        reason: String,
    },
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl ClientError for SubscribeError {
    fn status(&self) -> StatusCode {
        match self {
            SubscribeError::Channel(e) => e.status(),
            SubscribeError::Denied { .. } => StatusCode::FORBIDDEN,
            SubscribeError::Hook(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            SubscribeError::Channel(e) => e.code(),
            SubscribeError::Denied { .. } => "denied",
            SubscribeError::Hook(e) => e.code(),
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            SubscribeError::Channel(e) => e.retry_after(),
            SubscribeError::Hook(e) => e.retry_after(),
            SubscribeError::Denied { .. } => None,
        }
    }

    fn request_id(&self) -> Option<Arc<str>> {
        match self {
            SubscribeError::Hook(e) => e.request_id(),
            _ => None,
        }
    }
}

fn kind(transport: Transport) -> TransportKind {
    match transport {
        Transport::Sse => TransportKind::Sse,
        Transport::HttpStream => TransportKind::Stream,
        Transport::LongPoll => TransportKind::Poll,
        Transport::Websocket => TransportKind::WebSocket,
    }
}

impl Client {
    /// A connection accepted without asking on-connect (a guest hold or
    /// WebSocket accept, where on-request already decided).
    pub(crate) fn accepted(
        module: &Arc<HandlerModule>,
        transport: Transport,
        session: Vec<(String, String)>,
    ) -> Result<Client, ApiError> {
        let conn = module.services().channels.connect(kind(transport))?;
        conn.set_session(session.clone());
        let info = bindings::Connection {
            id: format!("c{}", conn.id()),
            transport,
            session,
        };
        Ok(Client {
            module: module.clone(),
            conn,
            info,
        })
    }

    /// Ask on-connect whether this client may open `transport`.
    pub(crate) async fn connect(
        module: &Arc<HandlerModule>,
        transport: Transport,
        request: RequestInfo,
    ) -> Result<Client, ApiError> {
        let mut client = Client::accepted(module, transport, Vec::new())?;
        let connect = bindings::ConnectRequest {
            connection: client.info.clone(),
            path: request.path,
            query: request.query,
            headers: request.headers,
            remote_addr: request.remote.to_string(),
        };
        let id = next_request_id();
        match module.on_connect(id.clone(), connect).await {
            Ok(ConnectOutcome::Accept(session)) => {
                client.conn.set_session(session.clone());
                client.info.session = session;
                Ok(client)
            }
            Ok(ConnectOutcome::Reject(r)) => {
                let status = StatusCode::from_u16(r.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                Err(ApiError::new(status, "rejected", r.reason))
            }
            Err(e) => Err(HookError::logged("on-connect", module.name(), id, e).into()),
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
            let request = bindings::SubscribeRequest {
                channel: channel.to_string(),
                token,
            };
            let hooks = self.module.hooks_for(channel).map_err(|error| HookError {
                hook: "on-subscribe",
                error,
                id: None,
            })?;
            let id = next_request_id();
            match hooks
                .on_subscribe(id.clone(), self.info.clone(), request)
                .await
            {
                Ok(SubscribeOutcome::Allow) => {}
                Ok(SubscribeOutcome::Deny(reason)) => {
                    return Err(SubscribeError::Denied {
                        channel: channel.clone(),
                        reason,
                    });
                }
                Err(e) => {
                    return Err(HookError::logged("on-subscribe", hooks.name(), id, e).into());
                }
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

    /// Tell the module the connection ended (in the background), unless it
    /// leaves on-close to the SDK's default (nothing to tell, no task).
    pub(crate) fn closed(&self, code: Option<u16>, reason: &str) {
        if !self.module.runs(Hook::Close) {
            return;
        }
        let module = self.module.clone();
        let connection = self.info.clone();
        let info = bindings::CloseInfo {
            code,
            reason: reason.to_string(),
        };
        // During shutdown the runtime may already be gone: then there is no
        // one left to tell, and spawning would panic.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A bound per module, so connecting and closing in a loop cannot
        // pile up guest work: past it this on-close is skipped.
        let Ok(slot) = module.services().closes.clone().try_acquire_owned() else {
            tracing::debug!(module = module.name(), connection = %connection.id, "on-close skipped: too many running");
            return;
        };
        runtime.spawn(async move {
            let _slot = slot;
            let id = next_request_id();
            match module.on_close(id.clone(), connection, info).await {
                Ok(()) => tracing::debug!(module = module.name(), %id, "on-close ran"),
                Err(e) => {
                    HookError::logged("on-close", module.name(), id, e);
                }
            }
        });
    }
}
