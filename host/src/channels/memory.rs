//! The embedded broker: history in memory, within budgets no client can
//! push past.
//!
//! Strategy: channels are spread over shards by name; a shard's lock covers
//! its channels' logs (epoch, top offset, kept messages). A publish appends
//! and hands the message to the sink under that lock, so delivery order is
//! offset order. Every channel gets a fresh random epoch the first time
//! anything touches it (a publish, a read, a subscription), so a cursor from
//! an earlier lifetime (before a restart) is recognised even before the
//! channel's first message.
//!
//! Budgets:
//! - history per channel: length and age (per namespace);
//! - history bytes in all: past the budget, the oldest message of the channel
//!   whose oldest message is the oldest of all is dropped, and so on (an
//!   index orders channels by the time of their oldest message);
//! - channels in all: a new channel past the cap is refused;
//! - a background sweep drops expired messages and forgets channels with no
//!   message, no subscriber and no use for [`DEFAULT_IDLE_CHANNEL_TTL`]. A
//!   cursor for a forgotten channel gets a reset, never a silent gap.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use super::broker::{
    Broker, BrokerError, BrokerStats, Gap, History, HistoryLimits, Published, Sink,
};
use super::cursor::{Position, channel_key};
use super::message::{Message, Payload};
use super::name::ChannelName;
use super::{lock, now_ms};

/// Bytes of history kept in all channels together. Past it the oldest
/// messages go first (their readers get a reset, as for any expired
/// message). 256 MiB holds a thousand busy channels' full history of small
/// messages.
pub const DEFAULT_HISTORY_BYTES: usize = 256 << 20;

/// Channels known at once (with an epoch, history or subscribers). A channel
/// costs a few hundred bytes without history.
pub const DEFAULT_MAX_CHANNELS: usize = 100_000;

/// How long a channel with no message left and no subscriber keeps its epoch
/// after it was last used. Longer than the usual reconnect, so a client that
/// comes back finds its cursor still valid.
pub const DEFAULT_IDLE_CHANNEL_TTL: Duration = Duration::from_secs(600);

/// How often the sweep runs.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

const SHARDS: usize = 64;

/// Budgets of a memory broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBrokerConfig {
    /// Bytes of history in all channels.
    pub max_history_bytes: usize,
    /// Channels known at once.
    pub max_channels: usize,
    /// How long an unused, empty channel keeps its epoch.
    pub idle_channel_ttl: Duration,
    /// How often expired history and idle channels are reclaimed.
    pub sweep_interval: Duration,
}

impl Default for MemoryBrokerConfig {
    fn default() -> Self {
        MemoryBrokerConfig {
            max_history_bytes: DEFAULT_HISTORY_BYTES,
            max_channels: DEFAULT_MAX_CHANNELS,
            idle_channel_ttl: DEFAULT_IDLE_CHANNEL_TTL,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }
}

/// One channel's history.
#[derive(Debug)]
struct Log {
    epoch: u64,
    /// Offset of the newest message (0: none yet in this epoch).
    top: u64,
    /// Messages kept, oldest first, with consecutive offsets ending at
    /// `top`, each with its publish sequence number (see `oldest`).
    messages: VecDeque<(u64, Arc<Message>)>,
    max_age_ms: u64,
    /// Nodes (here: this one) subscribed.
    subscribed: usize,
    touched_ms: u64,
}

impl Log {
    fn new(now_ms: u64) -> Log {
        Log {
            epoch: random_epoch(),
            top: 0,
            messages: VecDeque::new(),
            max_age_ms: u64::MAX,
            subscribed: 0,
            touched_ms: now_ms,
        }
    }

    /// The publish sequence number of the oldest message kept.
    fn front_seq(&self) -> Option<u64> {
        self.messages.front().map(|(seq, _)| *seq)
    }

    fn front_expired(&self, now: u64) -> bool {
        self.messages
            .front()
            .is_some_and(|(_, m)| now.saturating_sub(m.published_at_ms) > self.max_age_ms)
    }

    fn head(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.top,
        }
    }
}

type Shard = HashMap<ChannelName, Log>;

/// The embedded broker (see the module docs).
#[derive(Debug)]
pub struct MemoryBroker {
    shards: Box<[Mutex<Shard>]>,
    config: MemoryBrokerConfig,
    sink: OnceLock<Arc<dyn Sink>>,
    bytes: AtomicUsize,
    channels: AtomicUsize,
    /// Publishes so far: orders messages of all channels by age.
    sequence: AtomicU64,
    /// Channels with history, by the sequence number of their oldest
    /// message.
    oldest: Mutex<BTreeSet<(u64, ChannelName)>>,
    evicted: AtomicU64,
    reclaimed: AtomicU64,
    /// This node's id (random per process).
    node_id: String,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new(MemoryBrokerConfig::default())
    }
}

fn random_epoch() -> u64 {
    let mut b = [0u8; 8];
    // A failed getrandom leaves zeros; the time still makes epochs differ.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) ^ now_ms()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryBroker {
    /// A memory broker with these budgets.
    pub fn new(config: MemoryBrokerConfig) -> MemoryBroker {
        MemoryBroker {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            config,
            sink: OnceLock::new(),
            bytes: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            sequence: AtomicU64::new(0),
            oldest: Mutex::default(),
            evicted: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            node_id: format!("{:016x}", random_epoch()),
        }
    }

    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = (channel_key(channel) % SHARDS as u64) as usize;
        lock(&self.shards[index])
    }

    /// The channel's log, created (with a new epoch) if it has none, unless
    /// that would pass the channel cap.
    fn log<'a>(
        &self,
        shard: &'a mut Shard,
        channel: &ChannelName,
        now: u64,
    ) -> Result<&'a mut Log, BrokerError> {
        match shard.entry(channel.clone()) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let max = self.config.max_channels;
                if self.channels.fetch_add(1, Ordering::AcqRel) >= max {
                    self.channels.fetch_sub(1, Ordering::AcqRel);
                    return Err(BrokerError::ChannelLimit(max));
                }
                Ok(e.insert(Log::new(now)))
            }
        }
    }

    /// The channel's log for a read: created if need be, marked as used,
    /// its expired messages dropped.
    fn read_log<'a>(
        &self,
        shard: &'a mut Shard,
        channel: &ChannelName,
    ) -> Result<&'a mut Log, BrokerError> {
        let now = now_ms();
        let log = self.log(shard, channel, now)?;
        log.touched_ms = now;
        let before = log.front_seq();
        self.trim(channel, log, now, usize::MAX, before);
        Ok(log)
    }

    /// Drop the oldest messages past `max_len` or the channel's age, keeping
    /// the byte count and the oldest-first index right. `before` is the
    /// front message's sequence number before the caller changed the log.
    fn trim(
        &self,
        channel: &ChannelName,
        log: &mut Log,
        now: u64,
        max_len: usize,
        before: Option<u64>,
    ) {
        let mut freed = 0;
        while log.messages.len() > max_len || log.front_expired(now) {
            if let Some((_, m)) = log.messages.pop_front() {
                freed += m.size();
            }
        }
        self.bytes.fetch_sub(freed, Ordering::AcqRel);
        self.reindex(channel, before, log.front_seq());
    }

    fn reindex(&self, channel: &ChannelName, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        let mut index = lock(&self.oldest);
        if let Some(t) = before {
            index.remove(&(t, channel.clone()));
        }
        if let Some(t) = after {
            index.insert((t, channel.clone()));
        }
    }

    /// Drop the globally oldest messages until history fits its budget.
    fn enforce_budget(&self) {
        // Each pass drops a message or finds the index moved on; bound the
        // passes anyway, so a bug cannot turn into a spin.
        for _ in 0..1_000_000 {
            if self.bytes.load(Ordering::Acquire) <= self.config.max_history_bytes {
                return;
            }
            let Some((seq, channel)) = lock(&self.oldest).first().cloned() else {
                return;
            };
            let mut shard = self.shard(&channel);
            let Some(log) = shard.get_mut(&channel) else {
                lock(&self.oldest).remove(&(seq, channel));
                continue;
            };
            let before = log.front_seq();
            if before != Some(seq) {
                continue;
            }
            if let Some((_, m)) = log.messages.pop_front() {
                self.bytes.fetch_sub(m.size(), Ordering::AcqRel);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            self.reindex(&channel, before, log.front_seq());
        }
    }

    /// Drop expired messages and forget idle channels (see the module docs).
    /// Runs every [`MemoryBrokerConfig::sweep_interval`] once started.
    pub fn sweep(&self) {
        self.sweep_at(now_ms());
    }

    /// [`MemoryBroker::sweep`] as if the clock read `now` (ms since the Unix
    /// epoch).
    fn sweep_at(&self, now: u64) {
        let ttl = millis(self.config.idle_channel_ttl);
        let (bytes, channels) = (
            self.bytes.load(Ordering::Acquire),
            self.channels.load(Ordering::Acquire),
        );
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|channel, log| {
                let before = log.front_seq();
                self.trim(channel, log, now, usize::MAX, before);
                let idle = log.messages.is_empty()
                    && log.subscribed == 0
                    && now.saturating_sub(log.touched_ms) >= ttl;
                if idle {
                    self.channels.fetch_sub(1, Ordering::AcqRel);
                    self.reclaimed.fetch_add(1, Ordering::Relaxed);
                }
                !idle
            });
        }
        let after = (
            self.bytes.load(Ordering::Acquire),
            self.channels.load(Ordering::Acquire),
        );
        if after != (bytes, channels) {
            tracing::debug!(history_bytes = after.0, channels = after.1, "history swept");
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn start(self: Arc<Self>, sink: Arc<dyn Sink>) {
        let _ = self.sink.set(sink);
        // Outside a runtime (unit tests) there is no sweep; `sweep` can be
        // called by hand.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = Arc::downgrade(&self);
        let every = self.config.sweep_interval;
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = me.upgrade() else { break };
                broker.sweep();
            }
        });
    }

    async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        history: HistoryLimits,
    ) -> Result<Published, BrokerError> {
        let now = now_ms();
        let published = {
            let mut shard = self.shard(channel);
            let log = self.log(&mut shard, channel, now)?;
            log.touched_ms = now;
            log.max_age_ms = millis(history.max_age);
            log.top += 1;
            let position = log.head();
            let message = Arc::new(Message::new(channel.clone(), position, payload, now));
            let before = log.front_seq();
            let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(message.size(), Ordering::AcqRel);
            log.messages.push_back((seq, message.clone()));
            self.trim(channel, log, now, history.max_len.max(1), before);
            // Under the shard lock: subscribers see offset order.
            if let Some(sink) = self.sink.get() {
                sink.deliver(message);
            }
            Published {
                channel: channel.clone(),
                position,
                time_ms: now,
            }
        };
        self.enforce_budget();
        Ok(published)
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let mut shard = self.shard(channel);
        let log = self.read_log(&mut shard, channel)?;
        let head = log.head();
        let first_kept = log
            .messages
            .front()
            .map_or(log.top + 1, |(_, m)| m.position.offset);
        // After which offset to deliver, and whether a gap must be reported.
        let (after, gap) = match since {
            None => (0, None),
            // Another lifetime of the channel, or a position it never had.
            Some(p) if p.epoch != log.epoch || p.offset > log.top => (0, Some(Gap::EpochChanged)),
            Some(p) => (p.offset, (p.offset + 1 < first_kept).then_some(Gap::TooOld)),
        };
        let skip = usize::try_from((after + 1).saturating_sub(first_kept)).unwrap_or(usize::MAX);
        let messages = log
            .messages
            .iter()
            .skip(skip)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect();
        Ok(History {
            messages,
            gap,
            head,
        })
    }

    async fn newest(&self, channel: &ChannelName, limit: usize) -> Result<History, BrokerError> {
        let mut shard = self.shard(channel);
        let log = self.read_log(&mut shard, channel)?;
        let messages = log
            .messages
            .iter()
            .rev()
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect();
        Ok(History {
            messages,
            gap: None,
            head: log.head(),
        })
    }

    async fn remove_history(&self, channel: &ChannelName) -> Result<Position, BrokerError> {
        let now = now_ms();
        let mut shard = self.shard(channel);
        let log = self.log(&mut shard, channel, now)?;
        let before = log.front_seq();
        let freed: usize = log.messages.drain(..).map(|(_, m)| m.size()).sum();
        self.bytes.fetch_sub(freed, Ordering::AcqRel);
        self.reindex(channel, before, None);
        log.epoch = random_epoch();
        log.top = 0;
        log.touched_ms = now;
        Ok(log.head())
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn send_command(&self, command: &[u8]) -> Result<(), BrokerError> {
        if let Some(sink) = self.sink.get() {
            sink.command(command);
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let now = now_ms();
        let mut shard = self.shard(channel);
        let log = self.log(&mut shard, channel, now)?;
        log.subscribed += 1;
        log.touched_ms = now;
        Ok(())
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let mut shard = self.shard(channel);
        if let Some(log) = shard.get_mut(channel) {
            log.subscribed = log.subscribed.saturating_sub(1);
            log.touched_ms = now_ms();
        }
        Ok(())
    }

    fn stats(&self) -> BrokerStats {
        BrokerStats {
            kind: "memory",
            subscribed: true,
            channels: self.channels.load(Ordering::Acquire),
            history_bytes: self.bytes.load(Ordering::Acquire),
            evicted: self.evicted.load(Ordering::Relaxed),
            reclaimed: self.reclaimed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Payload {
        Payload::Text(s.into())
    }

    fn name(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    /// Run a future that never waits (the memory broker's never do).
    fn now<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory broker waited"),
        }
    }

    fn publish(b: &MemoryBroker, ch: &str, s: &str, limits: HistoryLimits) -> Published {
        now(b.publish(&name(ch), text(s), limits)).unwrap()
    }

    fn read(b: &MemoryBroker, ch: &str, since: Option<Position>) -> History {
        now(b.history(&name(ch), since, 1000)).unwrap()
    }

    fn texts(h: &History) -> Vec<String> {
        h.messages
            .iter()
            .map(|m| match m.payload() {
                Payload::Text(t) => t,
                Payload::Binary(_) => String::new(),
            })
            .collect()
    }

    #[test]
    fn offsets_increase_and_reads_resume() {
        let b = MemoryBroker::default();
        let m1 = publish(&b, "a", "1", HistoryLimits::default());
        let m2 = publish(&b, "a", "2", HistoryLimits::default());
        assert_eq!(m2.position.offset, m1.position.offset + 1);
        assert_eq!(m1.position.epoch, m2.position.epoch);
        let h = read(&b, "a", Some(m1.position));
        assert_eq!(texts(&h), ["2"]);
        assert_eq!(h.gap, None);
        assert_eq!(h.head, m2.position);
        assert!(read(&b, "a", Some(m2.position)).messages.is_empty());
    }

    #[test]
    fn old_and_foreign_cursors_get_a_gap() {
        let b = MemoryBroker::default();
        let limits = HistoryLimits {
            max_len: 3,
            ..HistoryLimits::default()
        };
        let first = publish(&b, "a", "0", limits);
        for i in 1..10 {
            publish(&b, "a", &i.to_string(), limits);
        }
        let h = read(&b, "a", Some(first.position));
        assert_eq!(h.gap, Some(Gap::TooOld));
        assert_eq!(texts(&h), ["7", "8", "9"]);
        let foreign = Position {
            epoch: first.position.epoch ^ 1,
            offset: 5,
        };
        let h = read(&b, "a", Some(foreign));
        assert_eq!(h.gap, Some(Gap::EpochChanged));
        assert_eq!(h.messages.len(), 3);
    }

    #[test]
    fn an_empty_channel_has_an_epoch_and_a_restart_resets_its_cursors() {
        let before_restart = MemoryBroker::default();
        let cursor = read(&before_restart, "newch", None).head;
        assert_eq!(cursor.offset, 0);
        // The same broker: nothing missed.
        assert_eq!(read(&before_restart, "newch", Some(cursor)).gap, None);
        // Another lifetime, before any message: the reset comes at once.
        let after_restart = MemoryBroker::default();
        let h = read(&after_restart, "newch", Some(cursor));
        assert_eq!(h.gap, Some(Gap::EpochChanged));
        assert_ne!(h.head.epoch, cursor.epoch);
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_messages_of_all() {
        let big = "x".repeat(10_000);
        // The largest of these messages (the longest channel name).
        let one = Message::new(name("new0"), Position::default(), text(&big), 0).size();
        let b = MemoryBroker::new(MemoryBrokerConfig {
            max_history_bytes: one * 5 + one / 2,
            ..MemoryBrokerConfig::default()
        });
        let first = publish(&b, "old", &big, HistoryLimits::default());
        publish(&b, "old", &big, HistoryLimits::default());
        for i in 0..8 {
            publish(&b, &format!("new{i}"), &big, HistoryLimits::default());
        }
        let stats = b.stats();
        assert!(stats.history_bytes <= one * 5 + one / 2, "{stats:?}");
        assert_eq!(stats.evicted, 5);
        // The oldest channel lost its messages first: its reader gets a gap.
        let h = read(&b, "old", Some(first.position.before()));
        assert_eq!(h.gap, Some(Gap::TooOld));
        assert!(h.messages.is_empty());
        assert_eq!(read(&b, "new7", None).messages.len(), 1);
    }

    #[test]
    fn the_channel_cap_refuses_new_channels_and_the_sweep_frees_them() {
        let b = MemoryBroker::new(MemoryBrokerConfig {
            max_channels: 2,
            idle_channel_ttl: Duration::ZERO,
            ..MemoryBrokerConfig::default()
        });
        let limits = HistoryLimits {
            max_age: Duration::ZERO,
            ..HistoryLimits::default()
        };
        publish(&b, "a", "1", limits);
        now(b.subscribe(&name("b"))).unwrap();
        assert_eq!(
            now(b.publish(&name("c"), text("x"), limits)).unwrap_err(),
            BrokerError::ChannelLimit(2)
        );
        // A second later, "a" is past its age of 0.
        b.sweep_at(now_ms() + 1000);
        // "a" expired and was forgotten; "b" has a subscriber and stays.
        assert_eq!(b.stats().channels, 1);
        assert_eq!(b.stats().history_bytes, 0);
        assert!(now(b.publish(&name("c"), text("x"), limits)).is_ok());
        now(b.unsubscribe(&name("b"))).unwrap();
        b.sweep_at(now_ms() + 1000);
        assert_eq!(b.stats().channels, 0);
    }
}
