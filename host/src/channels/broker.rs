//! The [`Broker`] boundary: where channel history and positions live, and
//! how messages reach this node. The shape is Centrifuge's (`broker.go`):
//!
//! - `publish` stores a message and gives it its position (epoch and next
//!   offset) atomically with announcing it;
//! - `history` reads what is kept after a position, and always answers the
//!   channel's current position, epoch included, even for a channel with no
//!   message yet;
//! - `subscribe` / `unsubscribe` say which channels this node has local
//!   subscribers for;
//! - every message published anywhere (this node's own included) comes back
//!   through the one [`Sink`] the node registered with [`Broker::start`], in
//!   offset order per channel. A broker may lose a message between storing
//!   and delivering it (a network broker can); connections notice the jump in
//!   offsets and read it from history.
//!
//! The embedded [`MemoryBroker`](super::memory::MemoryBroker) and the Redis
//! broker implement it; nothing above the node talks to a broker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::cursor::{Cursor, Position};
use super::message::{Message, Payload};
use super::name::ChannelName;

pub use comet_config::spec::{DEFAULT_HISTORY_AGE, DEFAULT_HISTORY_LEN, HistoryLimits};

/// Why messages may be missing before what a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The position is older than the oldest message kept.
    TooOld,
    /// The position is from another lifetime of the channel's history (for
    /// example before a restart of the memory broker).
    EpochChanged,
}

impl Gap {
    /// The reason as sent to clients.
    pub fn reason(self) -> &'static str {
        match self {
            Gap::TooOld => "cursor is older than the retained history",
            Gap::EpochChanged => "channel history was reset (new epoch)",
        }
    }
}

/// Messages read from history.
#[derive(Debug, Default)]
pub struct History {
    /// Messages after the position asked for, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// Set when messages before these may have been lost.
    pub gap: Option<Gap>,
    /// The channel's newest position, in its current epoch.
    pub head: Position,
}

/// A stored message's position, as its publisher learns it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The channel.
    pub channel: ChannelName,
    /// Its position.
    pub position: Position,
    /// When the broker accepted it, in ms since the Unix epoch.
    pub time_ms: u64,
}

impl Published {
    /// The cursor right after the message.
    pub fn cursor(&self) -> Cursor {
        Cursor::single(&self.channel, self.position)
    }
}

/// Why a broker call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The backend is down or refused.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker holds as many channels as it may.
    #[error("the server holds its maximum of {0} channels")]
    ChannelLimit(usize),
}

/// What the broker knows about itself, for status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// Whether every channel this node subscribed to is being delivered
    /// (false while a connection to a network broker is down).
    pub subscribed: bool,
    /// Channels with a known epoch.
    pub channels: usize,
    /// Bytes of history held.
    pub history_bytes: usize,
    /// Messages dropped to stay within the history byte budget.
    pub evicted: u64,
    /// Idle channels forgotten by the sweep.
    pub reclaimed: u64,
}

/// Who is subscribed to a channel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Subscribed connections.
    pub connections: usize,
    /// Some of them: their ids and session attributes.
    pub members: Vec<Member>,
    /// The distinct users among them (the session attribute `user`), up to
    /// [`MAX_PRESENCE_USERS`] per node.
    pub users: Vec<String>,
}

/// Most distinct users one node reports for one channel.
pub const MAX_PRESENCE_USERS: usize = 10_000;

/// One subscribed connection, as presence lists it.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its id (unique across nodes).
    pub connection: String,
    /// Its session attributes.
    pub session: Vec<(String, String)>,
}

/// What a node tells the others about itself (the node registry).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// The node's id (the prefix of its connections' ids).
    pub id: String,
    /// Where its public listener listens.
    pub address: String,
    /// The comet version it runs.
    pub version: String,
    /// Client connections open.
    pub connections: usize,
    /// Distinct users among them.
    pub users: usize,
    /// Channels with a local subscriber.
    pub channels: usize,
    /// Seconds since it started.
    pub uptime_s: u64,
}

/// Where the broker hands every message: the node, which fans it out.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// A message of a channel this node subscribed to (others may come too;
    /// the node drops what no connection wants). Must not block.
    fn deliver(&self, message: Arc<Message>);

    /// The broker re-established its subscriptions after losing them
    /// (a reconnect): messages published meanwhile never came. The node
    /// reads every subscribed channel's history after what it delivered.
    fn resubscribed(&self) {}

    /// A command some node sent to every node ([`Broker::send_command`]).
    /// Must not block.
    fn command(&self, _command: &[u8]) {}
}

/// Where channel history and positions live, and how messages reach nodes.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Begin delivering messages to `sink` (called once, by the node).
    fn start(self: Arc<Self>, sink: Arc<dyn Sink>);

    /// Store `payload` as the next message of `channel`, keep at most
    /// `history` of the channel, and deliver it to every subscribed node.
    async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        history: HistoryLimits,
    ) -> Result<Published, BrokerError>;

    /// Up to `limit` messages of `channel` after `since` (`None`: from the
    /// oldest kept), and the channel's head. Creates the channel's epoch if
    /// it has none yet, so a position read now can be checked later.
    async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, BrokerError>;

    /// Up to `limit` of the newest messages of `channel`, newest first, and
    /// the channel's head (creating its epoch as [`Broker::history`] does).
    async fn newest(&self, channel: &ChannelName, limit: usize) -> Result<History, BrokerError>;

    /// Drop `channel`'s history and start a new epoch: every cursor of the
    /// old one gets a reset. Returns the new head.
    async fn remove_history(&self, channel: &ChannelName) -> Result<Position, BrokerError>;

    /// This node's id, unique among the nodes sharing the broker.
    fn node_id(&self) -> &str;

    /// Hand `command` to every node's [`Sink::command`], this one's too.
    async fn send_command(&self, command: &[u8]) -> Result<(), BrokerError>;

    /// Every live node, given `local`: this node's own entry. With one
    /// node, that is all.
    async fn nodes(&self, local: NodeInfo) -> Result<Vec<NodeInfo>, BrokerError> {
        Ok(vec![local])
    }

    /// Every channel with subscribers on some node and their count, given
    /// `local`: this node's.
    async fn channels(
        &self,
        local: Vec<(ChannelName, usize)>,
    ) -> Result<Vec<(ChannelName, usize)>, BrokerError> {
        Ok(local)
    }

    /// This node has a local subscriber of `channel` from now on.
    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError>;

    /// This node's last local subscriber of `channel` left.
    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError>;

    /// Who is subscribed to `channel` on every node, given `local`: this
    /// node's own subscribers. With one node, that is all.
    async fn presence(
        &self,
        _channel: &ChannelName,
        local: Presence,
    ) -> Result<Presence, BrokerError> {
        Ok(local)
    }

    /// How often this node should share its presence with the others
    /// (`None`: there are no others).
    fn presence_interval(&self) -> Option<Duration> {
        None
    }

    /// This node's subscribers of every channel it has some for, and its
    /// registry entry (the heartbeat: a node that stops sharing is gone
    /// after a few intervals).
    async fn share_presence(
        &self,
        _local: Vec<(ChannelName, Presence)>,
        _node: NodeInfo,
    ) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Memory and reclamation figures.
    fn stats(&self) -> BrokerStats {
        BrokerStats::default()
    }
}
