//! The `channels` capability: publish (through the channel's on-publish, by
//! the one publish path, which the host hands in as a [`GuestPublisher`]),
//! read history, and see who is subscribed.

use std::sync::{Arc, Weak};

use async_trait::async_trait;

use super::{Capability, EventInfo, Grant, Purpose};
use crate::channels::{
    ChannelError, ChannelName, Cursor, Message, Node, Payload, Presence, Published,
};

/// Most sessions listed by `presence`.
pub const MAX_PRESENCE_SESSIONS: usize = 100;

/// Most messages one `history` call returns.
pub const MAX_HISTORY_PAGE: u32 = 1000;

/// Why a channels call failed, as the guest learns it (WIT `channel-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The channel name breaks the naming rules.
    #[error("{0}")]
    InvalidChannel(String),
    /// The cursor is not one this host issued.
    #[error("{0}")]
    InvalidCursor(String),
    /// on-publish rejected the message (or the guest may not publish now).
    #[error("{0}")]
    Rejected(String),
    /// The payload is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The broker (or the module) cannot do it now.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ChannelError> for CallError {
    fn from(e: ChannelError) -> Self {
        let msg = e.to_string();
        match e {
            ChannelError::InvalidChannel(_) => CallError::InvalidChannel(msg),
            ChannelError::InvalidCursor(_) => CallError::InvalidCursor(msg),
            ChannelError::TooLarge { .. } => CallError::TooLarge(msg),
            ChannelError::TooManyChannels(_)
            | ChannelError::ConnectionLimit(_)
            | ChannelError::ChannelLimit(_)
            | ChannelError::Unavailable(_)
            | ChannelError::Closing => CallError::Unavailable(msg),
        }
    }
}

/// The publish path a guest's `channels.publish` takes: on-publish of the
/// channel's hooks module, then the node (`hooks::Publisher`).
#[async_trait]
pub trait GuestPublisher: Send + Sync + std::fmt::Debug {
    /// Publish on behalf of module `module`'s event `event_id`.
    async fn publish_for_guest(
        &self,
        module: &str,
        event_id: Arc<str>,
        channel: ChannelName,
        payload: Payload,
    ) -> Result<Published, CallError>;
}

/// A publisher for a host that has none (a module loaded on its own, as
/// the benchmarks do): every publish is refused.
pub fn no_publisher() -> Weak<dyn GuestPublisher> {
    #[derive(Debug)]
    struct Nobody;
    #[async_trait]
    impl GuestPublisher for Nobody {
        async fn publish_for_guest(
            &self,
            _: &str,
            _: Arc<str>,
            _: ChannelName,
            _: Payload,
        ) -> Result<Published, CallError> {
            Err(CallError::Unavailable("nothing publishes here".into()))
        }
    }
    Weak::<Nobody>::new()
}

/// The `channels` capability: the node, and the publish path.
#[derive(Debug)]
pub struct ChannelsCapability {
    node: Arc<Node>,
    /// Held weakly: the publisher finds modules through the registry, which
    /// holds every module's grant (and so this): a strong reference would
    /// keep the registry and all its modules alive for ever.
    publisher: Weak<dyn GuestPublisher>,
}

impl ChannelsCapability {
    /// Channels on `node`, publishing through `publisher`.
    pub fn new(node: Arc<Node>, publisher: Weak<dyn GuestPublisher>) -> ChannelsCapability {
        ChannelsCapability { node, publisher }
    }
}

/// One module's channels.
#[derive(Debug)]
pub struct ModuleChannels {
    module: Arc<str>,
    node: Arc<Node>,
    publisher: Weak<dyn GuestPublisher>,
}

/// What one event's channels calls reach.
#[derive(Debug)]
pub struct EventChannels {
    module: Arc<ModuleChannels>,
    event: Arc<str>,
    purpose: Purpose,
}

/// One page of a channel's history.
#[derive(Debug)]
pub struct HistoryPage {
    /// Messages after the cursor, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// The cursor to read the next page from.
    pub next: String,
    /// Some messages before these are gone.
    pub reset: bool,
}

impl Capability for ChannelsCapability {
    type Module = ModuleChannels;
    type Event = EventChannels;

    fn configure(&self, grant: &Grant<'_>) -> ModuleChannels {
        ModuleChannels {
            module: grant.name.clone(),
            node: self.node.clone(),
            publisher: self.publisher.clone(),
        }
    }

    fn prepare(module: &Arc<ModuleChannels>, event: &EventInfo) -> EventChannels {
        EventChannels {
            module: module.clone(),
            event: event.id.clone(),
            purpose: event.purpose,
        }
    }
}

fn channel(name: &str) -> Result<ChannelName, CallError> {
    ChannelName::new(name).map_err(|e| ChannelError::from(e).into())
}

impl EventChannels {
    /// Publish `payload` to `channel`, through its on-publish; the cursor
    /// right after the new message.
    pub async fn publish(&self, channel_name: &str, payload: Payload) -> Result<String, CallError> {
        match self.purpose {
            Purpose::Event => {}
            Purpose::PublishHook => {
                return Err(CallError::Rejected(
                    "cannot publish from inside on-publish".into(),
                ));
            }
            Purpose::StartCheck => {
                return Err(CallError::Rejected(
                    "cannot publish during the start check at deploy".into(),
                ));
            }
        }
        let channel = channel(channel_name)?;
        let Some(publisher) = self.module.publisher.upgrade() else {
            return Err(CallError::Unavailable("the host is shutting down".into()));
        };
        let published = publisher
            .publish_for_guest(&self.module.module, self.event.clone(), channel, payload)
            .await?;
        Ok(published.cursor().encode())
    }

    /// Up to `limit` messages of `channel` after `since`.
    pub async fn history(
        &self,
        channel_name: &str,
        since: Option<&str>,
        limit: u32,
    ) -> Result<HistoryPage, CallError> {
        let channel = channel(channel_name)?;
        let since = match since.map(Cursor::decode) {
            None => None,
            Some(Ok(cursor)) => cursor.get(&channel),
            Some(Err(e)) => return Err(CallError::InvalidCursor(e.to_string())),
        };
        let limit = limit.min(MAX_HISTORY_PAGE) as usize;
        let history = self.module.node.history(&channel, since, limit).await?;
        let next = history.messages.last().map_or(history.head, |m| m.position);
        Ok(HistoryPage {
            next: Cursor::single(&channel, next).encode(),
            reset: history.gap.is_some(),
            messages: history.messages,
        })
    }

    /// Up to `limit` of the newest messages of `channel`, newest first;
    /// `next` is the cursor after the newest (where a reader of what comes
    /// later starts).
    pub async fn newest(&self, channel_name: &str, limit: u32) -> Result<HistoryPage, CallError> {
        let channel = channel(channel_name)?;
        let limit = limit.min(MAX_HISTORY_PAGE) as usize;
        let history = self.module.node.newest(&channel, limit).await?;
        Ok(HistoryPage {
            next: Cursor::single(&channel, history.head).encode(),
            reset: false,
            messages: history.messages,
        })
    }

    /// Who is subscribed to `channel`, with up to
    /// [`MAX_PRESENCE_SESSIONS`] sessions.
    pub async fn presence(&self, channel_name: &str) -> Result<Presence, CallError> {
        let channel = channel(channel_name)?;
        Ok(self
            .module
            .node
            .presence(&channel, MAX_PRESENCE_SESSIONS)
            .await?)
    }
}
