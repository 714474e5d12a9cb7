//! The seam between the transports and the handlers: the [`Hooks`] trait
//! (the six events, in the host's own types), where a channel's hooks come
//! from ([`Router`], by namespace, over the [`Modules`] deployed), and the
//! one publish path ([`Publisher`]).
//!
//! The runtime implements `Hooks` for a loaded module; transports and the
//! edge know nothing but this trait, so they are tested with a fake one
//! (`transports`' unit tests) and never load a component to do it.

mod error;
mod publish;
mod router;
mod types;

use std::sync::Arc;

use async_trait::async_trait;

pub use error::{HookError, HookFailure};
pub use publish::{PublishError, Publisher, Rejected};
pub use router::{Routed, Router};
pub use types::{
    Action, CloseFrame, CloseInfo, ConnectOutcome, ConnectRequest, ConnectionInfo, Header, Hold,
    Hook, Outgoing, Publication, PublishSource, PublishVerdict, Rejection, Request, RequestOutcome,
    Response, StreamFormat, SubscribeOutcome, SubscribeRequest, WebSocketAccept,
};

use crate::channels::Payload;

/// What decides for a request, a connection and a message: a handler
/// module (the runtime's `HandlerModule`), or in tests a fake. Each event
/// gets an id from its caller, which a failure carries back.
#[async_trait]
pub trait Hooks: Send + Sync + std::fmt::Debug {
    /// The module's name, for logs and errors.
    fn name(&self) -> &str;

    /// The largest request body on-request is handed (past it: 413).
    fn max_request_body(&self) -> usize;

    /// An HTTP request: respond, hold it on channels, or upgrade it.
    async fn on_request(&self, id: Arc<str>, request: Request)
    -> Result<RequestOutcome, HookError>;

    /// A client opens a built-in endpoint.
    async fn on_connect(
        &self,
        id: Arc<str>,
        request: ConnectRequest,
    ) -> Result<ConnectOutcome, HookError>;

    /// A connected client asks for a channel.
    async fn on_subscribe(
        &self,
        id: Arc<str>,
        connection: &ConnectionInfo,
        request: SubscribeRequest,
    ) -> Result<SubscribeOutcome, HookError>;

    /// A message is about to be published (once per publish).
    async fn on_publish(
        &self,
        id: Arc<str>,
        publication: &Publication,
    ) -> Result<PublishVerdict, HookError>;

    /// A WebSocket client sent a frame that is not a built-in operation.
    async fn on_message(
        &self,
        id: Arc<str>,
        connection: &ConnectionInfo,
        frame: Payload,
    ) -> Result<Vec<Action>, HookError>;

    /// A connection ended. Nothing waits for the answer: the
    /// implementation runs it in the background (bounded), with an id of its
    /// own, or not at all.
    fn on_close(self: Arc<Self>, connection: ConnectionInfo, info: CloseInfo);
}

/// The modules deployed now, by name: where the edge and the router find the
/// hooks of a route or a namespace. The registry implements it.
pub trait Modules: Send + Sync + std::fmt::Debug {
    /// The version of `name` new events should run, if deployed.
    fn current(&self, name: &str) -> Option<Arc<dyn Hooks>>;
}
