//! The hub: which local connection is subscribed to which channel, publishing
//! through the broker, and fan-out into bounded per-connection queues.
//!
//! Strategy: channels are spread over shards by name hash; each shard's lock
//! covers its channels' subscriber lists. Publishing to a channel appends to
//! the broker and delivers to every subscriber while holding that channel's
//! shard lock, so every subscriber sees a channel's messages in offset order.
//! Subscribing registers the connection and reads the backlog under the same
//! lock, so a resuming client gets each message exactly once: from the backlog
//! if it was published before, from its queue if after. Delivery never waits:
//! a full queue marks the connection as a slow consumer and it is closed with
//! that reason (it resumes by cursor).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use super::broker::{Broker, BrokerError, History};
use super::cursor::Position;
use super::message::{Message, Payload};
use super::name::{self, NameError};
use super::rules::{ChannelRules, Namespaces};

/// Messages a connection may have queued before it counts as a slow consumer.
/// A healthy client drains its queue in microseconds; 1024 messages is seconds
/// of a busy channel.
pub const DEFAULT_QUEUE_LEN: usize = 1024;

/// Most channels one connection may be subscribed to.
pub const DEFAULT_MAX_CHANNELS_PER_CONNECTION: usize = 100;

/// Client connections one host holds at once by default; past it new ones get
/// 503. Below the common 20,000 file descriptor limit, leaving room for
/// publishers and the admin side.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_000;

/// Largest payload accepted for publishing.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 << 10;

const SHARDS: usize = 64;

/// Why a hub operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// Bad channel name.
    #[error(transparent)]
    InvalidChannel(#[from] NameError),
    /// The payload is over the limit.
    #[error("payload of {0} bytes is over the {DEFAULT_MAX_PAYLOAD} byte limit")]
    TooLarge(usize),
    /// The connection has too many subscriptions.
    #[error("a connection may subscribe to at most {0} channels")]
    TooManyChannels(usize),
    /// The host holds as many connections as it may.
    #[error("the server holds its maximum of {0} connections")]
    Full(usize),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The server is shutting down.
    #[error("the server is shutting down; reconnect shortly")]
    Closing,
}

/// The kind of client connection, for counting by transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Server-sent events.
    Sse,
    /// Chunked NDJSON streaming.
    Stream,
    /// Long-poll (and guest holds answered as one response).
    Poll,
    /// WebSocket.
    WebSocket,
}

impl TransportKind {
    /// Every kind, in the order of [`Hub::connections_by_transport`].
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Sse,
        TransportKind::Stream,
        TransportKind::Poll,
        TransportKind::WebSocket,
    ];

    /// Lower-case name (`sse`, `stream`, `poll`, `websocket`).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Sse => "sse",
            TransportKind::Stream => "stream",
            TransportKind::Poll => "poll",
            TransportKind::WebSocket => "websocket",
        }
    }
}

/// Session attributes of a connection.
pub type Session = Vec<(String, String)>;

/// Who is subscribed to a channel on this host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Subscribed connections.
    pub connections: usize,
    /// Sessions of some of them.
    pub sessions: Vec<Session>,
}

/// Set when the hub drops a connection for falling behind.
#[derive(Debug, Default)]
struct Kick {
    kicked: AtomicBool,
    notify: Notify,
}

impl Kick {
    /// Set the flag and wake every waiter; true the first time.
    fn fire(&self) -> bool {
        let first = !self.kicked.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    fn is_set(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Register before checking the flag, so a kick in between is not lost.
        notified.as_mut().enable();
        if self.kicked.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// What the hub keeps per subscribed connection.
#[derive(Debug, Clone)]
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Message>>,
    kick: Arc<Kick>,
    session: Arc<Mutex<Session>>,
}

type Shard = Mutex<HashMap<Arc<str>, Vec<Subscriber>>>;

/// Tunables of a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Per-connection queue length (see [`DEFAULT_QUEUE_LEN`]).
    pub queue_len: usize,
    /// History, client publishing and hooks, per namespace.
    pub namespaces: Namespaces,
    /// Client connections held at once.
    pub max_connections: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_len: DEFAULT_QUEUE_LEN,
            namespaces: Namespaces::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Channels, subscribers and fan-out for one host.
#[derive(Debug)]
pub struct Hub {
    broker: Arc<dyn Broker>,
    shards: Box<[Shard]>,
    next_id: AtomicU64,
    queue_len: usize,
    namespaces: Namespaces,
    connections: AtomicUsize,
    by_transport: [AtomicUsize; 4],
    max_connections: usize,
    closing: Kick,
}

impl Hub {
    /// A hub over `broker`.
    pub fn new(broker: Arc<dyn Broker>, config: HubConfig) -> Arc<Hub> {
        Arc::new(Hub {
            broker,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_id: AtomicU64::new(1),
            queue_len: config.queue_len.max(1),
            namespaces: config.namespaces,
            connections: AtomicUsize::new(0),
            by_transport: Default::default(),
            max_connections: config.max_connections,
            closing: Kick::default(),
        })
    }

    fn shard(
        &self,
        channel: &str,
    ) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Subscriber>>> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        let index = usize::try_from(h.finish()).unwrap_or(0) % self.shards.len();
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection with its own bounded queue, unless the host already
    /// holds its maximum.
    pub fn connect(self: &Arc<Self>, kind: TransportKind) -> Result<Connection, HubError> {
        if self.closing.is_set() {
            return Err(HubError::Closing);
        }
        let taken = self.connections.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(HubError::Full(self.max_connections));
        }
        self.by_transport[kind as usize].fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = mpsc::channel(self.queue_len);
        Ok(Connection {
            hub: self.clone(),
            kind,
            me: Subscriber {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                tx,
                kick: Arc::default(),
                session: Arc::default(),
            },
            rx,
            channels: HashSet::new(),
        })
    }

    /// Client connections held now.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Client connections held now, by transport, in the order of
    /// [`TransportKind::ALL`].
    pub fn connections_by_transport(&self) -> [(TransportKind, usize); 4] {
        TransportKind::ALL.map(|k| (k, self.by_transport[k as usize].load(Ordering::Acquire)))
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// The rules that apply to `channel`.
    pub fn rules(&self, channel: &str) -> &ChannelRules {
        self.namespaces.rules(channel)
    }

    /// Begin shutdown: every connection's next event is
    /// [`Event::Closing`], and new connections are refused.
    pub fn close_all(&self) {
        self.closing.fire();
    }

    /// Publish `payload` to `channel` and deliver it to every local subscriber.
    pub fn publish(&self, channel: &str, payload: Payload) -> Result<Arc<Message>, HubError> {
        name::validate(channel)?;
        if payload.len() > DEFAULT_MAX_PAYLOAD {
            return Err(HubError::TooLarge(payload.len()));
        }
        let channel: Arc<str> = channel.into();
        let shard = self.shard(&channel);
        let message = self
            .broker
            .append(&channel, payload, self.rules(&channel).history)?;
        if let Some(subscribers) = shard.get(&channel) {
            for s in subscribers {
                if s.tx.try_send(message.clone()).is_err() {
                    s.kick.fire();
                }
            }
        }
        Ok(message)
    }

    /// Up to `limit` messages of `channel` after `since`.
    pub fn history(
        &self,
        channel: &str,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, HubError> {
        name::validate(channel)?;
        Ok(self.broker.read(channel, since, limit)?)
    }

    /// How many local connections are subscribed to `channel`, and the
    /// sessions of up to `max_sessions` of them.
    pub fn presence(&self, channel: &str, max_sessions: usize) -> Result<Presence, HubError> {
        name::validate(channel)?;
        let shard = self.shard(channel);
        let Some(subscribers) = shard.get(channel) else {
            return Ok(Presence::default());
        };
        let sessions = subscribers
            .iter()
            .take(max_sessions)
            .map(|s| s.session.lock().map(|v| v.clone()).unwrap_or_default())
            .collect();
        Ok(Presence {
            connections: subscribers.len(),
            sessions,
        })
    }

    fn remove(&self, channel: &str, id: u64) {
        let mut shard = self.shard(channel);
        if let Some(subscribers) = shard.get_mut(channel) {
            subscribers.retain(|s| s.id != id);
            if subscribers.is_empty() {
                shard.remove(channel);
            }
        }
    }
}

/// One client connection's membership in the hub: its queue and its
/// channels. Dropping it unsubscribes from everything.
#[derive(Debug)]
pub struct Connection {
    hub: Arc<Hub>,
    kind: TransportKind,
    me: Subscriber,
    rx: mpsc::Receiver<Arc<Message>>,
    channels: HashSet<Arc<str>>,
}

/// The next thing a connection must handle.
#[derive(Debug)]
pub enum Event {
    /// A message from one of its channels.
    Message(Arc<Message>),
    /// The connection fell behind and was dropped from its channels.
    SlowConsumer,
    /// The server is shutting down: tell the client to reconnect.
    Closing,
}

impl Connection {
    /// Id unique within this process.
    pub fn id(&self) -> u64 {
        self.me.id
    }

    /// Store session attributes (seen by presence).
    pub fn set_session(&self, session: Session) {
        if let Ok(mut s) = self.me.session.lock() {
            *s = session;
        }
    }

    /// The channels subscribed to.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|c| &**c)
    }

    /// Subscribe to `channel`. With `since`, returns the messages after it
    /// (and whether some were lost); new messages arrive through
    /// [`Connection::next`], none twice and none missed.
    pub fn subscribe(
        &mut self,
        channel: &str,
        since: Option<Position>,
    ) -> Result<History, HubError> {
        name::validate(channel)?;
        if !self.channels.contains(channel)
            && self.channels.len() >= DEFAULT_MAX_CHANNELS_PER_CONNECTION
        {
            return Err(HubError::TooManyChannels(
                DEFAULT_MAX_CHANNELS_PER_CONNECTION,
            ));
        }
        let key: Arc<str> = channel.into();
        let mut shard = self.hub.shard(channel);
        let history = match since {
            Some(p) => {
                self.hub
                    .broker
                    .read(channel, Some(p), self.hub.rules(channel).history.max_len)?
            }
            None => {
                // Only new messages: the head is where this client starts.
                let mut h = self.hub.broker.read(channel, None, 0)?;
                h.messages.clear();
                h
            }
        };
        if self.channels.insert(key.clone()) {
            shard.entry(key).or_default().push(self.me.clone());
        }
        Ok(history)
    }

    /// Leave `channel`.
    pub fn unsubscribe(&mut self, channel: &str) -> bool {
        let removed = self.channels.remove(channel);
        if removed {
            self.hub.remove(channel, self.me.id);
        }
        removed
    }

    /// Wait for the next message, or for being dropped as a slow consumer.
    pub async fn next(&mut self) -> Event {
        let kick = self.me.kick.clone();
        let hub = self.hub.clone();
        tokio::select! {
            biased;
            () = kick.wait() => Event::SlowConsumer,
            () = hub.closing.wait() => Event::Closing,
            message = self.rx.recv() => match message {
                Some(m) => Event::Message(m),
                // The hub holds a sender for as long as this connection exists.
                None => Event::SlowConsumer,
            },
        }
    }

    /// Resolves once the hub has dropped this connection as a slow consumer
    /// (for transports that must notice it while blocked writing).
    pub fn kicked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let kick = self.me.kick.clone();
        async move { kick.wait().await }
    }

    /// A message already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Arc<Message>> {
        self.rx.try_recv().ok()
    }

    /// Resolves once the server begins shutting down.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let hub = self.hub.clone();
        async move { hub.closing.wait().await }
    }

    /// The hub this connection belongs to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for channel in self.channels.drain() {
            self.hub.remove(&channel, self.me.id);
        }
        self.hub.connections.fetch_sub(1, Ordering::AcqRel);
        self.hub.by_transport[self.kind as usize].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::broker::MemoryBroker;

    fn hub() -> Arc<Hub> {
        Hub::new(Arc::new(MemoryBroker::default()), HubConfig::default())
    }

    fn text(m: &Message) -> &str {
        match &m.payload {
            Payload::Text(t) => t,
            Payload::Binary(_) => "",
        }
    }

    #[tokio::test]
    async fn subscribers_get_messages_in_order() {
        let hub = hub();
        let mut a = hub.connect(TransportKind::Sse).unwrap();
        let mut b = hub.connect(TransportKind::Sse).unwrap();
        a.subscribe("x", None).unwrap();
        b.subscribe("x", None).unwrap();
        b.subscribe("y", None).unwrap();
        for i in 0..5 {
            hub.publish("x", Payload::Text(i.to_string())).unwrap();
        }
        hub.publish("y", Payload::Text("why".into())).unwrap();
        for i in 0..5 {
            let Event::Message(m) = a.next().await else {
                panic!("kicked")
            };
            assert_eq!(text(&m), i.to_string());
        }
        let got: Vec<String> = (0..6)
            .map(|_| b.try_next().map(|m| text(&m).to_string()).unwrap())
            .collect();
        assert_eq!(got, ["0", "1", "2", "3", "4", "why"]);
        assert!(a.try_next().is_none());
    }

    #[test]
    fn resume_gets_the_backlog_then_live_messages_once() {
        let hub = hub();
        let first = hub.publish("x", Payload::Text("1".into())).unwrap();
        hub.publish("x", Payload::Text("2".into())).unwrap();
        let mut c = hub.connect(TransportKind::Sse).unwrap();
        let backlog = c.subscribe("x", Some(first.position)).unwrap();
        assert_eq!(backlog.messages.len(), 1);
        assert_eq!(text(&backlog.messages[0]), "2");
        hub.publish("x", Payload::Text("3".into())).unwrap();
        assert_eq!(
            c.try_next().map(|m| text(&m).to_string()).as_deref(),
            Some("3")
        );
        assert!(c.try_next().is_none());
    }

    #[tokio::test]
    async fn a_full_queue_kicks_only_that_connection() {
        let hub = hub();
        let mut slow = hub.connect(TransportKind::Sse).unwrap();
        let mut fast = hub.connect(TransportKind::Sse).unwrap();
        slow.subscribe("x", None).unwrap();
        fast.subscribe("x", None).unwrap();
        for i in 0..DEFAULT_QUEUE_LEN + 1 {
            hub.publish("x", Payload::Text(i.to_string())).unwrap();
            while fast.try_next().is_some() {}
        }
        assert!(matches!(slow.next().await, Event::SlowConsumer));
        hub.publish("x", Payload::Text("after".into())).unwrap();
        assert!(matches!(fast.next().await, Event::Message(_)));
    }

    #[test]
    fn dropping_a_connection_unsubscribes_it() {
        let hub = hub();
        let mut c = hub.connect(TransportKind::Sse).unwrap();
        c.subscribe("x", None).unwrap();
        assert_eq!(hub.presence("x", 10).unwrap().connections, 1);
        drop(c);
        assert_eq!(hub.presence("x", 10).unwrap().connections, 0);
    }

    #[test]
    fn bad_names_and_big_payloads_are_refused() {
        let hub = hub();
        assert!(matches!(
            hub.publish("a b", Payload::Text("x".into())),
            Err(HubError::InvalidChannel(_))
        ));
        let big = Payload::Binary(vec![0u8; DEFAULT_MAX_PAYLOAD + 1].into());
        assert!(matches!(hub.publish("a", big), Err(HubError::TooLarge(_))));
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use crate::channels::broker::MemoryBroker;

    #[test]
    fn the_connection_limit_is_enforced_and_released() {
        let config = HubConfig {
            max_connections: 2,
            ..HubConfig::default()
        };
        let hub = Hub::new(Arc::new(MemoryBroker::default()), config);
        let a = hub.connect(TransportKind::Sse).unwrap();
        let _b = hub.connect(TransportKind::Sse).unwrap();
        assert!(matches!(
            hub.connect(TransportKind::Sse),
            Err(HubError::Full(2))
        ));
        drop(a);
        assert_eq!(hub.connection_count(), 1);
        assert!(hub.connect(TransportKind::Sse).is_ok());
    }
}
