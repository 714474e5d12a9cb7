//! One client connection's membership in the channels: its bounded queue,
//! the channels it is subscribed to and its position in each, and the rules
//! that make delivery exactly once and in order.
//!
//! Strategy (Centrifuge's `client.go`, with the queue as the buffer):
//! - **Subscribe**: register with the hub first (live messages start
//!   queueing), then read history after the client's cursor. Every message
//!   is in the history read, in the queue, or both; the connection records
//!   where the history read ended, and drops queued messages at or before
//!   that offset.
//! - **Live**: each message must carry the next offset of its channel. A
//!   lower one is a duplicate and dropped; a higher one (or another epoch)
//!   means something was lost between broker and node, so the channel is
//!   read from history after the last delivered position: the missing
//!   messages, or an explicit reset when they are gone.
//! - A catch-up changes nothing until its read completes, so `next` stays
//!   cancel-safe (transports race it against sockets and timers).
//! - The queue and the positions live in the connection's [`Inbox`], shared
//!   with the hub, whose drains may write live messages straight to a
//!   transport's [`Outlet`] while the task waits (see `inbox`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::admission::{Ticket, TransportKind};
use super::broker::Gap;
use super::control::{Action, Disconnect};
use super::cursor::{Cursor, Position};
use super::directory::{USER, connection_id};
use super::error::ChannelError;
use super::hub::Subscriber;
use super::inbox::{Inbox, Outlet, Popped, Session};
use super::lock;
use super::message::Message;
use super::name::ChannelName;
use super::node::Node;
use super::signal::{Listener, Watch};

/// Messages before this point of a channel may be missing: the client
/// resumes from `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// The channel.
    pub channel: ChannelName,
    /// Why.
    pub gap: Gap,
    /// Where the channel resumes (just before the first message kept).
    pub position: Position,
}

impl Reset {
    /// `{"type":"reset","channel":..,"reason":..,"cursor":..}`.
    pub fn json(&self) -> Bytes {
        serde_json::json!({
            "type": "reset",
            "channel": self.channel.as_str(),
            "reason": self.gap.reason(),
            "cursor": Cursor::single(&self.channel, self.position).encode(),
        })
        .to_string()
        .into()
    }
}

/// What a new subscription delivers before live messages.
#[derive(Debug)]
pub struct Backlog {
    /// The channel.
    pub channel: ChannelName,
    /// The position before the first message below (where the client's
    /// cursor for this channel stands once the reset, if any, is sent).
    pub start: Position,
    /// Set when messages before `start` may be missing.
    pub reset: Option<Reset>,
    /// Messages after `start`, oldest first.
    pub messages: Vec<Arc<Message>>,
}

/// The next thing a connection must handle.
#[derive(Debug)]
pub enum Event {
    /// The next message of one of its channels.
    Message(Arc<Message>),
    /// Messages of a channel were lost before what follows.
    Reset(Reset),
    /// The connection fell behind and was dropped from its channels.
    SlowConsumer,
    /// The server is shutting down: tell the client to reconnect.
    Closing,
    /// A lost message could not be read back (the broker is down): the
    /// client should reconnect with its cursor.
    Unavailable(String),
    /// The server API disconnects this connection.
    Disconnect(Disconnect),
    /// The server API subscribes this connection to a channel: the
    /// transport subscribes it (no on-subscribe) and answers as for a
    /// client's own subscription.
    Subscribe(ChannelName, Option<Position>),
    /// The server API unsubscribed this connection from a channel.
    Unsubscribed(ChannelName),
}

/// One client connection (see the module docs). Dropping it unsubscribes
/// from everything.
#[derive(Debug)]
pub struct Connection {
    node: Arc<Node>,
    me: Subscriber,
    /// Set while messages were lost on the way and are being read back.
    recovery: Option<Box<Recovery>>,
    /// This connection's standing registration for the shutdown signal.
    closing: Watch,
    _ticket: Ticket,
}

/// What a connection catching up from history holds.
#[derive(Debug, Default)]
struct Recovery {
    /// Channels to read from history before any more of their messages.
    behind: Vec<ChannelName>,
    /// Events read from history, to hand out before anything else.
    ready: VecDeque<Event>,
}

impl Node {
    /// A new client connection, unless the host is full or shutting down.
    pub fn connect(self: &Arc<Self>, kind: TransportKind) -> Result<Connection, ChannelError> {
        let (ticket, id) = self.admit(kind)?;
        let inbox = Arc::new(Inbox::new(self.queue_len()));
        self.directory().add(id, inbox.clone());
        Ok(Connection {
            node: self.clone(),
            me: Subscriber { id, inbox },
            recovery: None,
            closing: Watch::default(),
            _ticket: ticket,
        })
    }
}

impl Connection {
    /// Id unique within this process.
    pub fn local_id(&self) -> u64 {
        self.me.id
    }

    /// Id unique across nodes: the node's id and the local one.
    pub fn id(&self) -> String {
        connection_id(self.node.id(), self.me.id)
    }

    /// The node it belongs to.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Store session attributes (seen by presence); the attribute
    /// [`USER`] names the connection's user.
    pub fn set_session(&self, session: Session) {
        let user = session.iter().find(|(k, _)| k == USER).map(|(_, v)| v);
        self.node
            .directory()
            .set_user(self.me.id, user.map(String::as_str));
        *lock(&self.me.inbox.session) = session;
    }

    /// Let the hub write live messages to `outlet` while this connection's
    /// task waits in [`Connection::next`] with nothing in hand; `None`
    /// stops it. Everything else still comes from `next`.
    pub fn set_outlet(&self, outlet: Option<Arc<dyn Outlet>>) {
        self.me.inbox.set_outlet(outlet);
    }

    /// The channels subscribed to.
    pub fn channels(&self) -> Vec<ChannelName> {
        self.me
            .inbox
            .positions()
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    fn position(&self, channel: &str) -> Option<Position> {
        self.me.inbox.position(channel)
    }

    /// Channels being caught up from history.
    fn behind(&self) -> &[ChannelName] {
        self.recovery.as_ref().map_or(&[], |r| &r.behind)
    }

    /// Forget that `channel` must be caught up; drop the recovery state
    /// once nothing is left in it.
    fn caught_up(&mut self, channel: &str) {
        if let Some(r) = &mut self.recovery {
            r.behind.retain(|c| c.as_str() != channel);
            if r.behind.is_empty() && r.ready.is_empty() {
                self.recovery = None;
            }
        }
    }

    /// How many channels it is subscribed to.
    pub fn channel_count(&self) -> usize {
        self.me.inbox.channel_count()
    }

    /// Where it is in every channel: the cursor to resume from.
    pub fn cursor(&self) -> Cursor {
        let mut cursor = Cursor::new();
        for (channel, position) in self.me.inbox.positions() {
            cursor.set(&channel, position);
        }
        cursor
    }

    /// Subscribe to `channel` from `since` (`None`: from now on). Returns
    /// what to deliver before live messages; live ones then come from
    /// [`Connection::next`], none twice and none missed.
    pub async fn subscribe(
        &mut self,
        channel: &ChannelName,
        since: Option<Position>,
    ) -> Result<Backlog, ChannelError> {
        // What follows (the backlog) goes out before any live message.
        self.me.inbox.busy();
        let new = self.position(channel).is_none();
        // Until the position is recorded below, a failed or cancelled
        // subscription leaves the channel again (a transport may race this
        // call against its socket and drop it half way).
        let mut joined = None;
        if new {
            let max = self.node.max_channels_per_connection();
            if self.channel_count() >= max {
                return Err(ChannelError::TooManyChannels(max));
            }
            self.node.join(channel, &self.me).await?;
            joined = Some(Joined {
                node: &self.node,
                channel,
                id: self.me.id,
            });
        }
        let limit = match since {
            Some(_) => self.node.rules(channel).history.max_len,
            None => 0,
        };
        let history = self.node.history(channel, since, limit).await?;
        let (start, reset) = match (history.gap, since) {
            (Some(gap), _) => {
                self.node.count_reset();
                let position = history
                    .messages
                    .first()
                    .map_or(history.head, |m| m.position.before());
                let reset = Reset {
                    channel: channel.clone(),
                    gap,
                    position,
                };
                (position, Some(reset))
            }
            (None, Some(p)) => (p, None),
            (None, None) => (history.head, None),
        };
        let end = history.messages.last().map_or(start, |m| m.position);
        self.node.observe(channel, history.head);
        self.me.inbox.set_position(channel, end);
        // Subscribed: the channel stays.
        std::mem::forget(joined);
        self.caught_up(channel);
        tracing::debug!(%channel, "subscribed");
        Ok(Backlog {
            channel: channel.clone(),
            start,
            reset,
            messages: history.messages,
        })
    }

    /// Leave `channel`; true if it was subscribed.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        let Some(channel) = self.me.inbox.remove(channel) else {
            return false;
        };
        if let Some(r) = &mut self.recovery {
            r.ready.retain(|event| match event {
                Event::Message(m) => m.channel != channel,
                Event::Reset(r) => r.channel != channel,
                _ => true,
            });
        }
        self.caught_up(&channel);
        self.leave(&channel);
        true
    }

    fn leave(&self, channel: &ChannelName) {
        self.node.leave(channel, self.me.id);
    }

    /// Wait for the next event. Cancel-safe.
    pub async fn next(&mut self) -> Event {
        loop {
            if self.me.inbox.kick.is_set() {
                return Event::SlowConsumer;
            }
            if let Some(r) = &mut self.recovery {
                if let Some(event) = r.ready.pop_front() {
                    return event;
                }
                if let Some(channel) = r.behind.first().cloned() {
                    if let Err(e) = self.catch_up(&channel).await {
                        return Event::Unavailable(e.to_string());
                    }
                    continue;
                }
                self.recovery = None;
            }
            // No wait on the slow-consumer signal: the hub fires it when
            // this queue (or the outlet) is full, and wakes this task, whose
            // wait on the queue then ends. Shutdown is
            // watched with a standing registration: waiting here at every
            // delivery joins no shared list.
            let (node, closing) = (&self.node, &mut self.closing);
            let inbox = &self.me.inbox;
            let popped = tokio::select! {
                biased;
                () = std::future::poll_fn(|cx| node.admission().poll_closing(closing, cx)) => {
                    return Event::Closing;
                }
                popped = std::future::poll_fn(|cx| inbox.poll_pop(cx, &[])) => popped,
            };
            match popped {
                Popped::Next(message) => return Event::Message(message),
                Popped::Jump(channel) => self.fall_behind(channel),
                Popped::Kicked => return Event::SlowConsumer,
                Popped::Command(action) => {
                    if let Some(event) = self.command(action) {
                        return event;
                    }
                }
            }
        }
    }

    /// The next event if one is ready without waiting (to batch a burst
    /// into one write); `None` also when a catch-up must run first.
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            if let Some(r) = &mut self.recovery {
                if let Some(event) = r.ready.pop_front() {
                    return Some(event);
                }
                if !r.behind.is_empty() {
                    return None;
                }
            }
            if self.me.inbox.kick.is_set() {
                return None;
            }
            match self.me.inbox.try_pop(self.behind())? {
                Popped::Next(message) => return Some(Event::Message(message)),
                Popped::Jump(channel) => self.fall_behind(channel),
                Popped::Kicked => return None,
                Popped::Command(action) => {
                    if let Some(event) = self.command(action) {
                        return Some(event);
                    }
                }
            }
        }
    }

    /// What a command from the server API means here (`None`: nothing,
    /// such as unsubscribing a channel it is not subscribed to).
    fn command(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Disconnect(disconnect) => Some(Event::Disconnect(disconnect)),
            Action::Subscribe { channel, since } => {
                let channel = ChannelName::new(&channel).ok()?;
                let since = since.map(|(epoch, offset)| Position { epoch, offset });
                Some(Event::Subscribe(channel, since))
            }
            Action::Unsubscribe { channel } => {
                let channel = ChannelName::new(&channel).ok()?;
                self.unsubscribe(&channel)
                    .then_some(Event::Unsubscribed(channel))
            }
        }
    }

    /// Messages of `channel` were lost on the way here: read it from
    /// history before any more of its messages.
    fn fall_behind(&mut self, channel: ChannelName) {
        self.recovery.get_or_insert_default().behind.push(channel);
    }

    /// Read `channel` from history after its position; queue what was
    /// missed (and a reset if some of it is gone).
    async fn catch_up(&mut self, channel: &ChannelName) -> Result<(), ChannelError> {
        let Some(have) = self.position(channel) else {
            self.caught_up(channel);
            return Ok(());
        };
        let limit = self.node.rules(channel).history.max_len;
        // Through the node, so catch-up reads are counted with the others.
        let history = self.node.history(channel, Some(have), limit).await?;
        // Nothing changed before this point: a cancelled read is redone.
        self.node.count_catch_up();
        let recovery = self.recovery.get_or_insert_default();
        recovery.behind.retain(|c| c != channel);
        let mut position = have;
        if let Some(gap) = history.gap {
            self.node.count_reset();
            position = history
                .messages
                .first()
                .map_or(history.head, |m| m.position.before());
            recovery.ready.push_back(Event::Reset(Reset {
                channel: channel.clone(),
                gap,
                position,
            }));
        }
        for message in history.messages {
            position = message.position;
            recovery.ready.push_back(Event::Message(message));
        }
        self.me.inbox.set_position(channel, position);
        Ok(())
    }

    /// Resolves once the hub has dropped this connection as a slow consumer
    /// (for transports that must notice it while blocked writing).
    pub fn kicked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let inbox = self.me.inbox.clone();
        async move { inbox.kick.wait().await }
    }

    /// Tell `listener` when this connection is dropped as a slow consumer.
    pub fn on_kick(&self, listener: &Arc<dyn Listener>) {
        self.me.inbox.kick.listen(listener);
    }

    /// Whether it was dropped as a slow consumer.
    pub fn is_kicked(&self) -> bool {
        self.me.inbox.kick.is_set()
    }

    /// Resolves once the server begins shutting down.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let admission = self.node.admission().clone();
        async move { admission.closing().await }
    }
}

/// A channel joined by a subscription not complete yet: dropped, it leaves.
struct Joined<'a> {
    node: &'a Arc<Node>,
    channel: &'a ChannelName,
    id: u64,
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        self.node.leave(self.channel, self.id);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.node.directory().remove(self.me.id);
        self.me.inbox.set_outlet(None);
        for (channel, _) in self.me.inbox.take_positions() {
            self.leave(&channel);
        }
    }
}
