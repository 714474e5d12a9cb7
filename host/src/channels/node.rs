//! The node: the channels service every transport and guest talks to. It
//! owns the broker, the hub and admission, applies the per-namespace rules
//! and budgets, and keeps the node's subscriptions at the broker.
//!
//! Strategy: a channel's first local subscriber subscribes the node at the
//! broker and its last one unsubscribes it, under a per-channel async lock,
//! so a second subscriber never reads history before the node's
//! subscription is in place. The broker delivers every message to the hub
//! (the node's [`Sink`](super::broker::Sink)); connections then check each
//! message's offset (see [`Connection`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::admission::{Admission, DEFAULT_MAX_CONNECTIONS, Ticket, TransportKind};
use super::broker::{Broker, BrokerError, BrokerStats, History, NodeInfo, Published};
use super::broker::{Presence, Sink};
use super::control::{Command, Target};
use super::cursor::Position;
use super::directory::{Directory, local_id};
use super::error::ChannelError;
use super::hub::{Hub, Subscriber};
use super::lock;
use super::message::Payload;
use super::name::ChannelName;
use super::rules::{ChannelRules, Namespaces};
use crate::metrics::Metrics;

/// Messages a connection may have queued before it counts as a slow consumer.
/// A healthy client drains its queue in microseconds; 1024 messages is seconds
/// of a busy channel.
pub const DEFAULT_QUEUE_LEN: usize = 1024;

/// Most channels one connection may be subscribed to (also the most one
/// request, hold or WebSocket accept may name, after removing repeats).
pub const DEFAULT_MAX_CHANNELS_PER_CONNECTION: usize = 100;

/// Largest payload accepted for publishing.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 << 10;

/// How often the node compares each subscribed channel's newest position at
/// the broker with the newest it delivered, and delivers what it missed. A
/// message lost on its way from the broker is otherwise noticed only when
/// the next one arrives, which may be never.
pub const DEFAULT_POSITION_CHECK: Duration = Duration::from_secs(30);

/// Tunables of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Per-connection queue length (see [`DEFAULT_QUEUE_LEN`]).
    pub queue_len: usize,
    /// Client connections held at once.
    pub max_connections: usize,
    /// Channels per connection.
    pub max_channels_per_connection: usize,
    /// History, client publishing and hooks, per namespace.
    pub namespaces: Namespaces,
    /// See [`DEFAULT_POSITION_CHECK`].
    pub position_check: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            queue_len: DEFAULT_QUEUE_LEN,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_channels_per_connection: DEFAULT_MAX_CHANNELS_PER_CONNECTION,
            namespaces: Namespaces::default(),
            position_check: DEFAULT_POSITION_CHECK,
        }
    }
}

/// What the node counted since start (for status pages and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Connections dropped for falling behind.
    pub slow_consumers: u64,
    /// Offset jumps caught up from history.
    pub catch_ups: u64,
    /// Resets sent (cursors older than history, or from another epoch).
    pub resets: u64,
    /// Messages handed to local subscribers' queues.
    pub deliveries: u64,
}

/// Sessions shared per channel with other nodes.
const MAX_SHARED_SESSIONS: usize = 100;

/// Where the broker delivers (Centrifuge's `BrokerEventHandler`): the hub,
/// and for a resubscription a nudge to the node's position check, which
/// then runs at once instead of at its next interval.
/// Commands from the server API go to the connections they name.
#[derive(Debug)]
struct NodeSink {
    hub: Arc<Hub>,
    recheck: Arc<Notify>,
    directory: Arc<Directory>,
    /// This node's id (in its connections' ids).
    node_id: String,
}

impl Sink for NodeSink {
    fn deliver(&self, message: Arc<super::message::Message>) {
        self.hub.deliver(&message);
    }

    fn resubscribed(&self) {
        // A permit is kept if the check is running now: it runs again after.
        self.recheck.notify_one();
    }

    fn command(&self, command: &[u8]) {
        let Some(command) = Command::decode(command) else {
            tracing::warn!("a node command comet cannot read (another version?)");
            return;
        };
        let inboxes = match &command.target {
            Target::User(user) => self.directory.user(user),
            Target::Connection(id) => local_id(&self.node_id, id)
                .and_then(|n| self.directory.connection(n))
                .into_iter()
                .collect(),
        };
        if !inboxes.is_empty() {
            tracing::debug!(target_ = ?command.target, connections = inboxes.len(), "node command");
        }
        for inbox in inboxes {
            if !inbox.command(command.action.clone()) {
                tracing::warn!(target_ = ?command.target, "a connection has too many commands waiting; one dropped");
            }
        }
    }
}

/// Local subscriber count of one channel, behind the channel's subscribe
/// lock.
type Subscription = Arc<tokio::sync::Mutex<usize>>;

/// The channels service of one host.
#[derive(Debug)]
pub struct Node {
    broker: Arc<dyn Broker>,
    hub: Arc<Hub>,
    admission: Arc<Admission>,
    namespaces: Namespaces,
    queue_len: usize,
    max_channels_per_connection: usize,
    subscriptions: Mutex<HashMap<ChannelName, Subscription>>,
    next_id: AtomicU64,
    /// This node's connections, by id and by user.
    directory: Arc<Directory>,
    /// Where the public listener listens (for the node registry).
    address: std::sync::OnceLock<String>,
    started: std::time::Instant,
    catch_ups: AtomicU64,
    resets: AtomicU64,
    /// Where broker operations and connections are counted.
    metrics: Arc<Metrics>,
}

impl Node {
    /// A node over `broker`, which it starts (and, inside a tokio runtime,
    /// its position check and presence sharing), counting in `metrics`.
    pub fn new(broker: Arc<dyn Broker>, config: NodeConfig, metrics: Arc<Metrics>) -> Arc<Node> {
        let hub = Arc::new(Hub::new(broker.node_id()));
        let directory = Arc::new(Directory::default());
        let node = Arc::new(Node {
            broker,
            hub,
            admission: Admission::new(config.max_connections, &metrics),
            metrics,
            namespaces: config.namespaces,
            queue_len: config.queue_len.max(1),
            max_channels_per_connection: config.max_channels_per_connection,
            subscriptions: Mutex::default(),
            next_id: AtomicU64::new(1),
            directory: directory.clone(),
            address: std::sync::OnceLock::new(),
            started: std::time::Instant::now(),
            catch_ups: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        let recheck = Arc::new(Notify::new());
        node.broker.clone().start(Arc::new(NodeSink {
            hub: node.hub.clone(),
            recheck: recheck.clone(),
            directory,
            node_id: node.id().to_string(),
        }));
        node.every(config.position_check, Some(recheck), |node| async move {
            node.check_positions().await;
        });
        if let Some(interval) = node.broker.presence_interval() {
            node.every(interval, None, |node| async move {
                let local = node.hub.presence_all(MAX_SHARED_SESSIONS);
                match node.broker.share_presence(local, node.info()).await {
                    Ok(()) => tracing::debug!("presence shared"),
                    Err(e) => tracing::warn!(error = %e, "sharing presence failed"),
                }
            });
        }
        node
    }

    /// Run `task` every `interval` while the node lives (inside a runtime),
    /// and also whenever `nudge` is notified.
    fn every<F, Fut>(self: &Arc<Self>, interval: Duration, nudge: Option<Arc<Notify>>, task: F)
    where
        F: Fn(Arc<Node>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                match &nudge {
                    Some(nudge) => tokio::select! {
                        _ = tick.tick() => {}
                        () = nudge.notified() => {}
                    },
                    None => {
                        tick.tick().await;
                    }
                }
                let Some(node) = me.upgrade() else { break };
                task(node).await;
            }
        });
    }

    /// Deliver what the broker has of each subscribed channel past the
    /// newest position this node delivered (see
    /// [`DEFAULT_POSITION_CHECK`]). Connections drop what they already have.
    pub async fn check_positions(&self) {
        for (channel, last) in self.hub.positions() {
            let Ok(head) = self.history(&channel, None, 0).await else {
                continue;
            };
            let Some(last) = last else {
                self.hub.observe(&channel, head.head);
                continue;
            };
            if head.head.epoch == last.epoch && head.head.offset <= last.offset {
                continue;
            }
            let limit = self.rules(&channel).history.max_len;
            let Ok(missed) = self.history(&channel, Some(last), limit).await else {
                continue;
            };
            tracing::debug!(%channel, ?last, head = ?head.head, "position check: delivering missed messages");
            for message in &missed.messages {
                self.hub.deliver(message);
            }
            self.hub.observe(&channel, missed.head);
        }
    }

    /// A slot for a new client connection of `kind` and its id, unless the
    /// host is full or shutting down (see `Node::connect`, in
    /// `connection`).
    pub(super) fn admit(&self, kind: TransportKind) -> Result<(Ticket, u64), ChannelError> {
        let ticket = self.admission.admit(kind)?;
        Ok((ticket, self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    /// Check a payload against the size limit.
    pub fn check_payload(&self, payload: &Payload) -> Result<(), ChannelError> {
        if payload.len() > DEFAULT_MAX_PAYLOAD {
            return Err(ChannelError::TooLarge {
                size: payload.len(),
                max: DEFAULT_MAX_PAYLOAD,
            });
        }
        Ok(())
    }

    /// Publish through the broker (which delivers it to every subscribed
    /// node, this one included). Hooks are the caller's business: see
    /// `hooks::Publisher`.
    pub async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
    ) -> Result<Published, ChannelError> {
        self.check_payload(&payload)?;
        let history = self.rules(channel).history;
        let published = self
            .timed("publish", self.broker.publish(channel, payload, history))
            .await;
        Ok(published?)
    }

    /// `call` to the broker, counted in the metrics as `op` with its outcome
    /// and time.
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let started = std::time::Instant::now();
        let result = call.await;
        self.metrics.broker(op, result.is_ok(), started.elapsed());
        result
    }

    /// Up to `limit` messages of `channel` after `since`.
    pub async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, ChannelError> {
        let history = self
            .timed("history", self.broker.history(channel, since, limit))
            .await;
        Ok(history?)
    }

    /// Subscribers of `channel` on every node, with up to `max_members`
    /// of them listed.
    pub async fn presence(
        &self,
        channel: &ChannelName,
        max_members: usize,
    ) -> Result<Presence, ChannelError> {
        let local = self.hub.presence(channel, max_members);
        let presence = self
            .timed("presence", self.broker.presence(channel, local))
            .await;
        let mut presence = presence?;
        presence.members.truncate(max_members);
        Ok(presence)
    }

    /// Up to `limit` of the newest messages of `channel`, newest first.
    pub async fn newest(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<History, ChannelError> {
        let history = self
            .timed("history", self.broker.newest(channel, limit))
            .await;
        Ok(history?)
    }

    /// Drop `channel`'s history and start a new epoch (its subscribers and
    /// every resuming client get a reset). Returns the new head.
    pub async fn remove_history(&self, channel: &ChannelName) -> Result<Position, ChannelError> {
        let head = self
            .timed("history_remove", self.broker.remove_history(channel))
            .await;
        Ok(head?)
    }

    /// Send `command` to the connections it names, on every node.
    pub async fn command(&self, command: &Command) -> Result<(), ChannelError> {
        let sent = self
            .timed("command", self.broker.send_command(&command.encode()))
            .await;
        Ok(sent?)
    }

    /// Every live node's registry entry, this one's first.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ChannelError> {
        Ok(self.broker.nodes(self.info()).await?)
    }

    /// Every channel with subscribers on some node, and how many.
    pub async fn channels(&self) -> Result<Vec<(ChannelName, usize)>, ChannelError> {
        Ok(self.broker.channels(self.hub.counts()).await?)
    }

    /// This node's id (the prefix of its connections' ids).
    pub fn id(&self) -> &str {
        self.broker.node_id()
    }

    /// Say where the public listener listens (for the node registry).
    pub fn set_address(&self, address: String) {
        let _ = self.address.set(address);
    }

    /// This node's registry entry.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id().to_string(),
            address: self.address.get().cloned().unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            connections: self.admission.count(),
            users: self.directory.user_count(),
            channels: self.hub.channel_count(),
            uptime_s: self.started.elapsed().as_secs(),
        }
    }

    pub(super) fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The rules that apply to `channel`.
    pub fn rules(&self, channel: &str) -> &ChannelRules {
        self.namespaces.rules(channel)
    }

    /// Most channels per connection.
    pub fn max_channels_per_connection(&self) -> usize {
        self.max_channels_per_connection
    }

    /// Connection counts and the shutdown signal.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Begin shutdown: every connection's next event is `Closing`, and new
    /// connections are refused.
    pub fn close_all(&self) {
        self.admission.close_all();
    }

    /// The `n` channels with the most local subscribers (name,
    /// subscribers, newest offset).
    pub fn top_channels(&self, n: usize) -> Vec<(ChannelName, usize, u64)> {
        self.hub.top(n)
    }

    /// Channels with at least one local subscriber.
    pub fn local_channel_count(&self) -> usize {
        self.hub.channel_count()
    }

    /// What the node counted since start.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            slow_consumers: self.hub.slow_consumers(),
            catch_ups: self.catch_ups.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            deliveries: self.hub.deliveries(),
        }
    }

    /// The broker's memory figures.
    pub fn broker_stats(&self) -> BrokerStats {
        self.broker.stats()
    }

    /// Messages a connection may have queued (see [`DEFAULT_QUEUE_LEN`]).
    pub fn queue_len(&self) -> usize {
        self.queue_len
    }

    /// Add `subscriber` to `channel`'s local subscribers, subscribing the
    /// node at the broker first if it is the channel's first: from here on
    /// live messages of the channel queue in its inbox.
    pub(super) async fn join(
        &self,
        channel: &ChannelName,
        subscriber: &Subscriber,
    ) -> Result<(), ChannelError> {
        self.subscribe_node(channel).await?;
        self.hub.add(channel, subscriber.clone());
        Ok(())
    }

    /// Take subscriber `id` off `channel`; the channel's last local
    /// subscriber unsubscribes the node at the broker (in the background).
    pub(super) fn leave(self: &Arc<Self>, channel: &ChannelName, id: u64) {
        self.hub.remove(channel, id);
        self.unsubscribe_node(channel);
    }

    /// Note that `channel` is at `position` at the broker (a subscriber
    /// read it from history).
    pub(super) fn observe(&self, channel: &ChannelName, position: Position) {
        self.hub.observe(channel, position);
    }

    /// Count a catch-up from history (a gap between broker and node).
    pub(super) fn count_catch_up(&self) {
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a reset sent to a client.
    pub(super) fn count_reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a local subscriber of `channel`; the first subscribes the node
    /// at the broker, and everyone waits until that is done.
    async fn subscribe_node(&self, channel: &ChannelName) -> Result<(), ChannelError> {
        let subscription = lock(&self.subscriptions)
            .entry(channel.clone())
            .or_default()
            .clone();
        let mut count = subscription.lock().await;
        if *count == 0 {
            self.broker.subscribe(channel).await?;
        }
        *count += 1;
        Ok(())
    }

    /// Count one local subscriber of `channel` less; the last unsubscribes
    /// the node at the broker (in the background: callers are in `Drop`).
    fn unsubscribe_node(self: &Arc<Self>, channel: &ChannelName) {
        let Some(subscription) = lock(&self.subscriptions).get(channel).cloned() else {
            return;
        };
        if let Ok(mut count) = subscription.try_lock()
            && *count > 1
        {
            *count -= 1;
            return;
        }
        // During shutdown the runtime may be gone: the process is ending.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let node = self.clone();
        let channel = channel.clone();
        runtime.spawn(async move {
            let mut count = subscription.lock().await;
            *count = count.saturating_sub(1);
            if *count > 0 {
                return;
            }
            if let Err(e) = node.broker.unsubscribe(&channel).await {
                tracing::warn!(%channel, error = %e, "broker unsubscribe failed");
            }
            drop(count);
            // Forget the lock unless someone is about to use it.
            let mut subscriptions = lock(&node.subscriptions);
            if Arc::strong_count(&subscription) == 2
                && subscription.try_lock().is_ok_and(|c| *c == 0)
            {
                subscriptions.remove(&channel);
            }
        });
    }
}
