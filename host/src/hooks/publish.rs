//! The one publish path every publisher takes (the publish API, WebSocket
//! clients, guests through `channels.publish`, on-message actions): the
//! payload limit, the channel's on-publish exactly once, then the node.

use std::sync::Arc;

use async_trait::async_trait;

use super::{HookError, Hooks, Publication, PublishSource, PublishVerdict, Router};
use crate::capabilities::channels::{CallError, GuestPublisher};
use crate::channels::{ChannelError, ChannelName, Node, Payload, Published};
use crate::http::composite_error;
use crate::metrics::Metrics;

/// on-publish refused the message, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rejected: {0}")]
pub struct Rejected(pub String);

composite_error! {
    /// Why a publish did not happen.
    pub enum PublishError {
        /// The payload is too large, or the broker failed.
        Channel(ChannelError),
        /// on-publish rejected the message.
        Rejected(Rejected),
        /// on-publish itself failed (trap, timeout...).
        Hook(HookError),
    }
}

impl From<PublishError> for CallError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Channel(e) => e.into(),
            PublishError::Rejected(Rejected(reason)) => CallError::Rejected(reason),
            e @ PublishError::Hook(_) => CallError::Unavailable(e.to_string()),
        }
    }
}

/// Publishes through on-publish (see the module docs).
#[derive(Debug)]
pub struct Publisher {
    node: Arc<Node>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// Publish to `node`; the hooks of a guest's publish are found with
    /// `router`; publishes are counted in `metrics`.
    pub fn new(node: Arc<Node>, router: Arc<Router>, metrics: Arc<Metrics>) -> Publisher {
        Publisher {
            node,
            router,
            metrics,
        }
    }

    /// The channels published to.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where the hooks of a module and its channels are found.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Publish `payload` to `channel` on behalf of `source`, through the
    /// on-publish `hooks` route to (a connection's or a module's hooks,
    /// routed by channel).
    pub async fn publish(
        &self,
        hooks: &dyn Hooks,
        event_id: Arc<str>,
        channel: &ChannelName,
        payload: Payload,
        source: PublishSource,
    ) -> Result<Published, PublishError> {
        let from = source.label();
        let result = self
            .publish_from(hooks, event_id, channel, payload, source)
            .await;
        let verdict = match &result {
            Ok(_) => "published",
            Err(PublishError::Rejected(_)) => "rejected",
            Err(e) => {
                tracing::debug!(%channel, source = from, error = %e, "publish failed");
                "failed"
            }
        };
        self.metrics.publish(from, verdict);
        result
    }

    async fn publish_from(
        &self,
        hooks: &dyn Hooks,
        event_id: Arc<str>,
        channel: &ChannelName,
        payload: Payload,
        source: PublishSource,
    ) -> Result<Published, PublishError> {
        // Before the hook: a guest is never handed an oversized payload.
        self.node.check_payload(&payload)?;
        let publication = Publication {
            channel: channel.to_string(),
            payload,
            source,
        };
        let payload = match hooks.on_publish(event_id, &publication).await? {
            PublishVerdict::Accept => publication.payload,
            PublishVerdict::Replace(replacement) => replacement,
            PublishVerdict::Reject(reason) => return Err(Rejected(reason).into()),
        };
        // The node checks the (possibly replaced) payload's size again.
        Ok(self.node.publish(channel, payload).await?)
    }
}

#[async_trait]
impl GuestPublisher for Publisher {
    async fn publish_for_guest(
        &self,
        module: &str,
        event_id: Arc<str>,
        channel: ChannelName,
        payload: Payload,
    ) -> Result<Published, CallError> {
        let Some(own) = self.router.modules().current(module) else {
            return Err(CallError::Unavailable(format!(
                "module {module:?} is being removed"
            )));
        };
        let hooks = self.router.route(own);
        Ok(self
            .publish(&*hooks, event_id, &channel, payload, PublishSource::Guest)
            .await?)
    }
}
