//! Where a channel's on-subscribe and on-publish run: the module its
//! namespace names as `hooks`, else the module in hand (the one serving the
//! connection, or publishing).

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Action, CloseInfo, ConnectOutcome, ConnectRequest, ConnectionInfo, Hook, HookError,
    HookFailure, Hooks, Modules, Publication, PublishVerdict, Request, RequestOutcome,
    SubscribeOutcome, SubscribeRequest,
};
use crate::channels::{Node, Payload};

/// Finds a channel's hooks module among the modules deployed now, by the
/// channel's namespace rules.
#[derive(Debug)]
pub struct Router {
    modules: Arc<dyn Modules>,
    node: Arc<Node>,
}

impl Router {
    /// A router over `modules`, with `node`'s namespace rules.
    pub fn new(modules: Arc<dyn Modules>, node: Arc<Node>) -> Arc<Router> {
        Arc::new(Router { modules, node })
    }

    /// The modules deployed now.
    pub fn modules(&self) -> &Arc<dyn Modules> {
        &self.modules
    }

    /// The hooks that decide `hook` (on-subscribe or on-publish) for
    /// `channel`: its namespace's hooks module, else `own`.
    pub fn hooks_for(
        &self,
        channel: &str,
        own: &Arc<dyn Hooks>,
        hook: Hook,
    ) -> Result<Arc<dyn Hooks>, HookError> {
        let Some(name) = self.node.rules(channel).hooks.as_deref() else {
            return Ok(own.clone());
        };
        if name == own.name() {
            return Ok(own.clone());
        }
        self.modules.current(name).ok_or_else(|| HookError {
            hook,
            module: name.into(),
            id: None,
            failure: HookFailure::NotDeployed(name.to_string()),
        })
    }

    /// `own`'s hooks, with each channel's on-subscribe and on-publish sent
    /// where this router says.
    pub fn route(self: &Arc<Self>, own: Arc<dyn Hooks>) -> Arc<dyn Hooks> {
        Arc::new(Routed {
            own,
            router: self.clone(),
        })
    }
}

/// One module's hooks, with on-subscribe and on-publish routed by channel
/// (see [`Router::route`]).
#[derive(Debug)]
pub struct Routed {
    own: Arc<dyn Hooks>,
    router: Arc<Router>,
}

#[async_trait]
impl Hooks for Routed {
    fn name(&self) -> &str {
        self.own.name()
    }

    fn max_request_body(&self) -> usize {
        self.own.max_request_body()
    }

    async fn on_request(
        &self,
        id: Arc<str>,
        request: Request,
    ) -> Result<RequestOutcome, HookError> {
        self.own.on_request(id, request).await
    }

    async fn on_connect(
        &self,
        id: Arc<str>,
        request: ConnectRequest,
    ) -> Result<ConnectOutcome, HookError> {
        self.own.on_connect(id, request).await
    }

    async fn on_subscribe(
        &self,
        id: Arc<str>,
        connection: &ConnectionInfo,
        request: SubscribeRequest,
    ) -> Result<SubscribeOutcome, HookError> {
        let hooks = self
            .router
            .hooks_for(&request.channel, &self.own, Hook::Subscribe)?;
        hooks.on_subscribe(id, connection, request).await
    }

    async fn on_publish(
        &self,
        id: Arc<str>,
        publication: &Publication,
    ) -> Result<PublishVerdict, HookError> {
        let hooks = self
            .router
            .hooks_for(&publication.channel, &self.own, Hook::Publish)?;
        hooks.on_publish(id, publication).await
    }

    async fn on_message(
        &self,
        id: Arc<str>,
        connection: &ConnectionInfo,
        frame: Payload,
    ) -> Result<Vec<Action>, HookError> {
        self.own.on_message(id, connection, frame).await
    }

    fn on_close(self: Arc<Self>, connection: ConnectionInfo, info: CloseInfo) {
        self.own.clone().on_close(connection, info);
    }
}
