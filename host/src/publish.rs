//! The one publish path every publisher takes (the HTTP API, WebSocket
//! clients, guests through `channels.publish`, on-message actions): channel
//! rules, the module's on-publish exactly once, then the hub's fan-out.

use std::sync::Arc;

use crate::bindings::{self, PublishSource, PublishVerdict};
use crate::channels::{HubError, Message, Payload, name};
use crate::module::HandlerModule;
use crate::sandbox::EventError;

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Bad channel name, payload too large, or the broker failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// on-publish rejected the message.
    #[error("rejected: {0}")]
    Rejected(String),
    /// on-publish itself failed (trap, timeout...).
    #[error("on-publish failed: {0}")]
    Hook(#[from] EventError),
}

/// Publish `payload` to `channel` on behalf of `source`.
pub async fn publish(
    module: &Arc<HandlerModule>,
    event_id: Arc<str>,
    channel: &str,
    payload: Payload,
    source: PublishSource,
) -> Result<Arc<Message>, PublishError> {
    name::validate(channel).map_err(HubError::from)?;
    if payload.len() > crate::channels::hub::DEFAULT_MAX_PAYLOAD {
        return Err(HubError::TooLarge(payload.len()).into());
    }
    let publication = bindings::Publication {
        channel: channel.to_string(),
        payload: (&payload).into(),
        source,
    };
    let hooks = module.hooks_for(channel)?;
    let payload = match hooks.on_publish(event_id, &publication).await? {
        PublishVerdict::Accept => payload,
        PublishVerdict::Replace(replacement) => replacement.into(),
        PublishVerdict::Reject(reason) => return Err(PublishError::Rejected(reason)),
    };
    Ok(module.services().hub.publish(channel, payload)?)
}
