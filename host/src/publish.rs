//! The one publish path every publisher takes (the HTTP API, WebSocket
//! clients, guests through `channels.publish`, on-message actions): the
//! payload limit, the channel's on-publish exactly once, then the node.

use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;

use crate::bindings::channels::ChannelError as WitError;
use crate::bindings::{self, PublishSource, PublishVerdict};
use crate::channels::{ChannelError, ChannelName, Payload, Published};
use crate::http::ClientError;
use crate::imports::GuestPublisher;
use crate::module::{HandlerModule, HookError};

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Payload too large, or the broker failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// on-publish rejected the message.
    #[error("rejected: {0}")]
    Rejected(String),
    /// on-publish itself failed (trap, timeout...).
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl ClientError for PublishError {
    fn status(&self) -> StatusCode {
        match self {
            PublishError::Channel(e) => e.status(),
            PublishError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PublishError::Hook(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PublishError::Channel(e) => e.code(),
            PublishError::Rejected(_) => "rejected",
            PublishError::Hook(e) => e.code(),
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            PublishError::Channel(e) => e.retry_after(),
            PublishError::Hook(e) => e.retry_after(),
            PublishError::Rejected(_) => None,
        }
    }

    fn request_id(&self) -> Option<Arc<str>> {
        match self {
            PublishError::Hook(e) => e.request_id(),
            _ => None,
        }
    }
}

impl From<PublishError> for WitError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Channel(e) => e.into(),
            PublishError::Rejected(reason) => WitError::Rejected(reason),
            e @ PublishError::Hook(_) => WitError::Unavailable(e.to_string()),
        }
    }
}

/// Publish `payload` to `channel` on behalf of `source`, through on-publish
/// of the channel's hooks module.
pub async fn publish(
    module: &Arc<HandlerModule>,
    event_id: Arc<str>,
    channel: &ChannelName,
    payload: Payload,
    source: PublishSource,
) -> Result<Published, PublishError> {
    let from = match &source {
        PublishSource::Api => "api",
        PublishSource::Client(_) => "client",
        PublishSource::Guest => "guest",
    };
    let result = publish_from(module, event_id, channel, payload, source).await;
    let verdict = match &result {
        Ok(_) => "published",
        Err(PublishError::Rejected(_)) => "rejected",
        Err(e) => {
            tracing::debug!(%channel, source = from, error = %e, "publish failed");
            "failed"
        }
    };
    module.services().metrics.publish(from, verdict);
    result
}

async fn publish_from(
    module: &Arc<HandlerModule>,
    event_id: Arc<str>,
    channel: &ChannelName,
    payload: Payload,
    source: PublishSource,
) -> Result<Published, PublishError> {
    let channels = &module.services().channels;
    // Before the hook: a guest is never handed an oversized payload.
    channels.check_payload(&payload)?;
    let publication = bindings::Publication {
        channel: channel.to_string(),
        payload: (&payload).into(),
        source,
    };
    let hooks = module.hooks_for(channel).map_err(|error| HookError {
        hook: "on-publish",
        error,
        id: None,
    })?;
    let payload = match hooks.on_publish(event_id.clone(), publication).await {
        Ok(PublishVerdict::Accept) => payload,
        Ok(PublishVerdict::Replace(replacement)) => replacement.into(),
        Ok(PublishVerdict::Reject(reason)) => return Err(PublishError::Rejected(reason)),
        Err(e) => return Err(HookError::logged("on-publish", hooks.name(), event_id, e).into()),
    };
    // The node checks the (possibly replaced) payload's size again.
    Ok(channels.publish(channel, payload).await?)
}

#[async_trait]
impl GuestPublisher for HandlerModule {
    async fn publish_for_guest(
        self: Arc<Self>,
        event_id: Arc<str>,
        channel: ChannelName,
        payload: Payload,
        source: PublishSource,
    ) -> Result<String, WitError> {
        Ok(publish(&self, event_id, &channel, payload, source)
            .await?
            .cursor()
            .encode())
    }
}
