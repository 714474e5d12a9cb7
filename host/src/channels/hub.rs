//! The hub: which local connection is subscribed to which channel, and
//! fan-out of one shared message into bounded per-connection queues. It
//! knows nothing about brokers; the node hands it what the broker delivers.
//!
//! Strategy: channels are spread over shards by name; a shard's lock covers
//! its channels' subscriber lists. Delivery queues the same `Arc<Message>`
//! in every subscriber's [`Inbox`] and never waits: a full queue fires that
//! connection's slow-consumer signal, and the connection closes with that
//! reason (its client resumes by cursor). A connection whose task waits
//! idle with an [`Outlet`](super::inbox::Outlet) is not woken: after
//! releasing the shard lock, the hub spawns drains, each of which writes the
//! message to up to [`DRAIN_CHUNK`] such connections' sockets, so one
//! message to many subscribers costs a few task wake-ups instead of one per
//! subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::broker::{MAX_PRESENCE_USERS, Member, Presence};
use super::cursor::{Position, channel_key};
use super::directory::{USER, connection_id};
use super::inbox::{Inbox, Pushed};
use super::lock;
use super::message::Message;
use super::name::ChannelName;

const SHARDS: usize = 64;

/// Most connections one drain writes to: a drain holds its worker for
/// about this many socket writes, and a large fan-out is spread over the
/// runtime's workers in drains of this size.
pub const DRAIN_CHUNK: usize = 256;

/// What the hub keeps per subscribed connection.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    pub(crate) inbox: Arc<Inbox>,
}

/// A channel's local subscribers, and the newest position seen of it.
#[derive(Debug, Default)]
struct Local {
    subscribers: Vec<Subscriber>,
    last: Option<Position>,
}

impl Local {
    fn observe(&mut self, position: Position) {
        let newer = match self.last {
            None => true,
            // Another epoch: the later observation is the broker's current.
            Some(last) => last.epoch != position.epoch || position.offset > last.offset,
        };
        if newer {
            self.last = Some(position);
        }
    }
}

type Shard = HashMap<ChannelName, Local>;

/// Local subscribers and fan-out.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    slow_consumers: Arc<AtomicU64>,
    deliveries: AtomicU64,
    /// Where drains run: the runtime the hub was made on (the I/O workers),
    /// not whichever one publishes (a hot guest publishes from the hot
    /// runtime's low-priority threads).
    runtime: Option<tokio::runtime::Handle>,
    /// The node's id: the prefix of its connections' ids.
    node_id: Arc<str>,
}

impl Hub {
    /// The hub of the node `node_id`.
    pub fn new(node_id: &str) -> Hub {
        Hub {
            node_id: node_id.into(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            slow_consumers: Arc::default(),
            deliveries: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[(channel_key(channel) % SHARDS as u64) as usize])
    }

    /// Deliver `message` to every local subscriber of its channel.
    pub fn deliver(&self, message: &Arc<Message>) {
        let mut drains: Vec<Vec<Arc<Inbox>>> = Vec::new();
        {
            let mut shard = self.shard(&message.channel);
            let Some(local) = shard.get_mut(&message.channel) else {
                return;
            };
            local.observe(message.position);
            self.deliveries
                .fetch_add(local.subscribers.len() as u64, Ordering::Relaxed);
            for s in &local.subscribers {
                match s.inbox.push(message) {
                    Pushed::Queued => {}
                    Pushed::Drain => match drains.last_mut() {
                        Some(drain) if drain.len() < DRAIN_CHUNK => drain.push(s.inbox.clone()),
                        _ => drains.push(vec![s.inbox.clone()]),
                    },
                    Pushed::Full => {
                        if s.inbox.kick_out() {
                            self.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        for inboxes in drains {
            let slow = self.slow_consumers.clone();
            let drain = move || {
                for inbox in &inboxes {
                    if !inbox.drain() && inbox.kick_out() {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            // Outside any runtime (a test calling the hub directly), here.
            let runtime = self.runtime.clone();
            match runtime.or_else(|| tokio::runtime::Handle::try_current().ok()) {
                Some(runtime) => drop(runtime.spawn(async move { drain() })),
                None => drain(),
            }
        }
    }

    pub(crate) fn add(&self, channel: &ChannelName, subscriber: Subscriber) {
        self.shard(channel)
            .entry(channel.clone())
            .or_default()
            .subscribers
            .push(subscriber);
    }

    pub(crate) fn remove(&self, channel: &str, id: u64) {
        let mut shard = self.shard(channel);
        if let Some(local) = shard.get_mut(channel) {
            local.subscribers.retain(|s| s.id != id);
            if local.subscribers.is_empty() {
                shard.remove(channel);
            }
        }
    }

    /// Note that `channel` is known to be at `position` (a subscriber read
    /// it from history).
    pub(crate) fn observe(&self, channel: &str, position: Position) {
        if let Some(local) = self.shard(channel).get_mut(channel) {
            local.observe(position);
        }
    }

    /// The `n` channels with the most local subscribers: name, subscribers
    /// and the newest offset seen (its change over time is the channel's
    /// message rate).
    pub fn top(&self, n: usize) -> Vec<(ChannelName, usize, u64)> {
        let mut all: Vec<(ChannelName, usize, u64)> = self
            .shards
            .iter()
            .flat_map(|shard| {
                lock(shard)
                    .iter()
                    .map(|(channel, local)| {
                        let offset = local.last.map_or(0, |p| p.offset);
                        (channel.clone(), local.subscribers.len(), offset)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let most_first = |a: &(ChannelName, usize, u64), b: &(ChannelName, usize, u64)| {
            b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
        };
        // Only the first `n` need an order.
        if all.len() > n && n > 0 {
            all.select_nth_unstable_by(n - 1, most_first);
        }
        all.truncate(n);
        all.sort_unstable_by(most_first);
        all
    }

    /// The local presence of every channel with local subscribers.
    pub(crate) fn presence_all(&self, max_members: usize) -> Vec<(ChannelName, Presence)> {
        self.shards
            .iter()
            .flat_map(|shard| {
                lock(shard)
                    .iter()
                    .map(|(channel, local)| {
                        (channel.clone(), self.local_presence(local, max_members))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Local subscribers of every channel with some (for `channels`).
    pub(crate) fn counts(&self) -> Vec<(ChannelName, usize)> {
        self.shards
            .iter()
            .flat_map(|shard| {
                lock(shard)
                    .iter()
                    .map(|(channel, local)| (channel.clone(), local.subscribers.len()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// `local`'s count, up to `max_members` members, and its distinct users.
    fn local_presence(&self, local: &Local, max_members: usize) -> Presence {
        let mut users = std::collections::BTreeSet::new();
        let mut members = Vec::with_capacity(local.subscribers.len().min(max_members));
        for s in &local.subscribers {
            let session = lock(&s.inbox.session);
            if users.len() < MAX_PRESENCE_USERS
                && let Some((_, user)) = session.iter().find(|(k, _)| k == USER)
            {
                users.insert(user.clone());
            }
            if members.len() < max_members {
                members.push(Member {
                    connection: connection_id(&self.node_id, s.id),
                    session: session.clone(),
                });
            }
        }
        Presence {
            connections: local.subscribers.len(),
            members,
            users: users.into_iter().collect(),
        }
    }

    /// Every channel with local subscribers, and the newest position seen.
    pub(crate) fn positions(&self) -> Vec<(ChannelName, Option<Position>)> {
        self.shards
            .iter()
            .flat_map(|shard| {
                lock(shard)
                    .iter()
                    .map(|(channel, local)| (channel.clone(), local.last))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many local connections are subscribed to `channel`, up to
    /// `max_members` of them, and their distinct users.
    pub fn presence(&self, channel: &str, max_members: usize) -> Presence {
        let shard = self.shard(channel);
        match shard.get(channel) {
            Some(local) => self.local_presence(local, max_members),
            None => Presence::default(),
        }
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Messages handed to subscribers' queues, since start.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Connections dropped for falling behind.
    pub fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }
}
