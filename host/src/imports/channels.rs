//! The `channels` import: publish (through the module's on-publish), history
//! and presence, over the hub.

use crate::bindings::PublishSource;
use crate::bindings::channels::{ChannelError, HistoryPage, Host, PresenceInfo};
use crate::bindings::types::Payload;
use crate::channels::{Cursor, HubError};
use crate::imports::HostState;
use crate::publish::{self, PublishError};

/// Most sessions listed by `presence`.
const MAX_PRESENCE_SESSIONS: usize = 100;
/// Most messages one `history` call returns.
const MAX_HISTORY_PAGE: u32 = 1000;

impl From<HubError> for ChannelError {
    fn from(e: HubError) -> Self {
        let msg = e.to_string();
        match e {
            HubError::InvalidChannel(_) => ChannelError::InvalidChannel(msg),
            HubError::TooLarge(_) => ChannelError::TooLarge(msg),
            HubError::TooManyChannels(_)
            | HubError::Full(_)
            | HubError::Broker(_)
            | HubError::Closing => ChannelError::Unavailable(msg),
        }
    }
}

impl Host for HostState {
    async fn publish(
        &mut self,
        channel: String,
        payload: Payload,
    ) -> wasmtime::Result<Result<String, ChannelError>> {
        if self.in_publish_hook {
            return Ok(Err(ChannelError::Rejected(
                "cannot publish from inside on-publish".into(),
            )));
        }
        let result = publish::publish(
            &self.module,
            self.event_id.clone(),
            &channel,
            payload.into(),
            PublishSource::Guest,
        )
        .await;
        Ok(match result {
            Ok(message) => Ok(message.cursor().encode()),
            Err(PublishError::Hub(e)) => Err(e.into()),
            Err(PublishError::Rejected(reason)) => Err(ChannelError::Rejected(reason)),
            Err(e @ PublishError::Hook(_)) => Err(ChannelError::Unavailable(e.to_string())),
        })
    }

    async fn history(
        &mut self,
        channel: String,
        since: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<HistoryPage, ChannelError>> {
        let since = match since.as_deref().map(Cursor::decode) {
            None => None,
            Some(Ok(cursor)) => cursor.get(&channel),
            Some(Err(e)) => return Ok(Err(ChannelError::InvalidCursor(e.to_string()))),
        };
        let limit = limit.min(MAX_HISTORY_PAGE) as usize;
        let history = match self.services.hub.history(&channel, since, limit) {
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

    async fn presence(
        &mut self,
        channel: String,
    ) -> wasmtime::Result<Result<PresenceInfo, ChannelError>> {
        Ok(
            match self.services.hub.presence(&channel, MAX_PRESENCE_SESSIONS) {
                Ok(presence) => Ok(PresenceInfo {
                    connections: u32::try_from(presence.connections).unwrap_or(u32::MAX),
                    sessions: presence.sessions,
                }),
                Err(e) => Err(e.into()),
            },
        )
    }
}
