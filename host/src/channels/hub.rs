//! The hub: which local connection is subscribed to which channel, and
//! fan-out of one shared message into bounded per-connection queues. It
//! knows nothing about brokers; the node hands it what the broker delivers.
//!
//! Strategy: channels are spread over shards by name; a shard's lock covers
//! its channels' subscriber lists. Delivery `try_send`s the same
//! `Arc<Message>` to every subscriber and never waits: a full queue fires
//! that connection's slow-consumer signal, and the connection closes with
//! that reason (its client resumes by cursor).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::broker::Sink;
use super::cursor::channel_key;
use super::lock;
use super::message::Message;
use super::name::ChannelName;
use super::signal::Signal;

const SHARDS: usize = 64;

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

/// What the hub keeps per subscribed connection.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<Arc<Message>>,
    pub(crate) kick: Arc<Signal>,
    pub(crate) session: Arc<Mutex<Session>>,
}

type Shard = HashMap<ChannelName, Vec<Subscriber>>;

/// Local subscribers and fan-out.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Hub {
    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[(channel_key(channel) % SHARDS as u64) as usize])
    }

    /// Deliver `message` to every local subscriber of its channel.
    pub fn deliver(&self, message: &Arc<Message>) {
        let shard = self.shard(&message.channel);
        if let Some(subscribers) = shard.get(&message.channel) {
            for s in subscribers {
                if s.tx.try_send(message.clone()).is_err() {
                    s.kick.fire();
                }
            }
        }
    }

    pub(crate) fn add(&self, channel: &ChannelName, subscriber: Subscriber) {
        self.shard(channel)
            .entry(channel.clone())
            .or_default()
            .push(subscriber);
    }

    pub(crate) fn remove(&self, channel: &str, id: u64) {
        let mut shard = self.shard(channel);
        if let Some(subscribers) = shard.get_mut(channel) {
            subscribers.retain(|s| s.id != id);
            if subscribers.is_empty() {
                shard.remove(channel);
            }
        }
    }

    /// How many local connections are subscribed to `channel`, and the
    /// sessions of up to `max_sessions` of them.
    pub fn presence(&self, channel: &str, max_sessions: usize) -> Presence {
        let shard = self.shard(channel);
        let Some(subscribers) = shard.get(channel) else {
            return Presence::default();
        };
        let sessions = subscribers
            .iter()
            .take(max_sessions)
            .map(|s| lock(&s.session).clone())
            .collect();
        Presence {
            connections: subscribers.len(),
            sessions,
        }
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

impl Sink for Hub {
    fn deliver(&self, message: Arc<Message>) {
        Hub::deliver(self, &message);
    }
}
