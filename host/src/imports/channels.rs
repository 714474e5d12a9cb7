//! The `channels` import: publish (through the channel's on-publish),
//! history and presence.

use std::sync::Arc;

use async_trait::async_trait;

use crate::bindings::PublishSource;
use crate::bindings::channels::{ChannelError as WitError, HistoryPage, Host, PresenceInfo};
use crate::bindings::types::Payload;
use crate::channels::{ChannelError, ChannelName, Cursor};
use crate::imports::HostState;

/// Most sessions listed by `presence`.
const MAX_PRESENCE_SESSIONS: usize = 100;
/// Most messages one `history` call returns.
const MAX_HISTORY_PAGE: u32 = 1000;

/// The publish path a guest's `channels.publish` takes: on-publish of the
/// channel's hooks module, then the node. Implemented by `crate::publish`.
#[async_trait]
pub(crate) trait GuestPublisher: Send + Sync + std::fmt::Debug {
    /// Publish on behalf of the guest running event `event_id`; the cursor
    /// after the new message, or why not.
    async fn publish_for_guest(
        self: Arc<Self>,
        event_id: Arc<str>,
        channel: ChannelName,
        payload: crate::channels::Payload,
        source: PublishSource,
    ) -> Result<String, WitError>;
}

impl From<ChannelError> for WitError {
    fn from(e: ChannelError) -> Self {
        let msg = e.to_string();
        match e {
            ChannelError::InvalidChannel(_) => WitError::InvalidChannel(msg),
            ChannelError::InvalidCursor(_) => WitError::InvalidCursor(msg),
            ChannelError::TooLarge { .. } => WitError::TooLarge(msg),
            ChannelError::TooManyChannels(_)
            | ChannelError::ConnectionLimit(_)
            | ChannelError::ChannelLimit(_)
            | ChannelError::Unavailable(_)
            | ChannelError::Closing => WitError::Unavailable(msg),
        }
    }
}

fn channel(name: &str) -> Result<ChannelName, WitError> {
    ChannelName::new(name).map_err(|e| ChannelError::from(e).into())
}

impl Host for HostState {
    async fn publish(
        &mut self,
        name: String,
        payload: Payload,
    ) -> wasmtime::Result<Result<String, WitError>> {
        match self.purpose {
            crate::imports::Purpose::Event => {}
            crate::imports::Purpose::PublishHook => {
                return Ok(Err(WitError::Rejected(
                    "cannot publish from inside on-publish".into(),
                )));
            }
            crate::imports::Purpose::StartCheck => {
                return Ok(Err(WitError::Rejected(
                    "cannot publish during the start check at deploy".into(),
                )));
            }
        }
        let channel = match channel(&name) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        // The module runs this event, so it is still there.
        let Some(publisher) = self.publisher.upgrade() else {
            return Ok(Err(WitError::Unavailable(
                "the module is being removed".into(),
            )));
        };
        let publish = publisher.publish_for_guest(
            self.event_id.clone(),
            channel,
            payload.into(),
            PublishSource::Guest,
        );
        Ok(self.turn.waiting(publish).await)
    }

    async fn history(
        &mut self,
        name: String,
        since: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<HistoryPage, WitError>> {
        let channel = match channel(&name) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let since = match since.as_deref().map(Cursor::decode) {
            None => None,
            Some(Ok(cursor)) => cursor.get(&channel),
            Some(Err(e)) => return Ok(Err(WitError::InvalidCursor(e.to_string()))),
        };
        let limit = limit.min(MAX_HISTORY_PAGE) as usize;
        let read = self.services.channels.history(&channel, since, limit);
        let history = match self.turn.waiting(read).await {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.into())),
        };
        let next = history.messages.last().map_or(history.head, |m| m.position);
        Ok(Ok(HistoryPage {
            messages: history.messages.iter().map(|m| (&**m).into()).collect(),
            next: Cursor::single(&channel, next).encode(),
            reset: history.gap.is_some(),
        }))
    }

    async fn presence(&mut self, name: String) -> wasmtime::Result<Result<PresenceInfo, WitError>> {
        let channel = match channel(&name) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let read = self
            .services
            .channels
            .presence(&channel, MAX_PRESENCE_SESSIONS);
        let presence = match self.turn.waiting(read).await {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(Ok(PresenceInfo {
            connections: u32::try_from(presence.connections).unwrap_or(u32::MAX),
            sessions: presence.sessions,
        }))
    }
}
