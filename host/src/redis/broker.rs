//! [`RedisBroker`]: the channel broker on Redis, for several comet
//! processes serving one set of channels.
//!
//! Strategy:
//! - **Publish** is one script (`publish.lua`): the channel's next offset
//!   (a missing meta hash means a new epoch), the history entry (a stream
//!   entry whose id is the offset, trimmed to the history length, expiring
//!   after the history age) and the PUBLISH of the encoded message to the
//!   channel's topic, atomically: the order of offsets is the order of
//!   delivery.
//! - **History** is one script (`history.lua`): the head (creating the
//!   epoch if the channel has none) and the entries after a position.
//! - **Subscriptions** are multiplexed over a few pub/sub connections
//!   (channels spread by name). Each connection has a task that reads
//!   messages into the node's sink, pings, and probes itself: when nothing
//!   arrived for a probe interval it publishes to its own probe topic, and
//!   if that does not come back by the next interval the connection is
//!   replaced. A connection that drops or is replaced reconnects with
//!   backoff, resubscribes every channel, and tells the node, which reads
//!   every channel's history after what it delivered: nothing published
//!   while it was away is lost.
//! - **Presence**: each node writes its subscribers of each channel into the
//!   channel's presence hash every few seconds with an expiry; a killed
//!   node's entries expire with it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ::redis::aio::PubSubSink;
use ::redis::{Script, Value};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Commands, RedisConfig, RedisError, redacted};
use crate::channels::cursor::channel_key;
use crate::channels::{
    Broker, BrokerError, BrokerStats, ChannelName, Gap, History, HistoryLimits, Member, Message,
    NodeInfo, Payload, Position, Presence, Published, Sink, lock, now_ms,
};

/// How often a node shares its presence.
const PRESENCE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a node's presence entries live without a refresh.
const PRESENCE_TTL: Duration = Duration::from_secs(15);

/// Most entries one history read asks Redis for.
const MAX_HISTORY_READ: usize = 10_000;

/// Channels subscribed per SUBSCRIBE when a connection resubscribes.
const RESUBSCRIBE_BATCH: usize = 512;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Key and topic names (see the module docs of `redis`).
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn stream(&self, channel: &str) -> String {
        format!("{}.s.{{{channel}}}", self.prefix)
    }
    fn meta(&self, channel: &str) -> String {
        format!("{}.m.{{{channel}}}", self.prefix)
    }
    fn topic(&self, channel: &str) -> String {
        format!("{}.t.{{{channel}}}", self.prefix)
    }
    fn presence(&self, channel: &str) -> String {
        format!("{}.p.{{{channel}}}", self.prefix)
    }
    fn presence_expiry(&self, channel: &str) -> String {
        format!("{}.pe.{{{channel}}}", self.prefix)
    }
    /// The topic of commands for every node's connections.
    fn commands(&self) -> String {
        format!("{}.cmd", self.prefix)
    }
    /// The node registry: node id to its entry (JSON). One hash tag with
    /// its expiry set, which one script reads with it (Redis Cluster).
    fn nodes(&self) -> String {
        format!("{}.{{nodes}}", self.prefix)
    }
    /// Node id to when its registry entry expires (ms).
    fn nodes_expiry(&self) -> String {
        format!("{}.{{nodes}}.e", self.prefix)
    }
    /// A node's channels: channel to its subscribers there.
    fn node_channels(&self, node: &str) -> String {
        format!("{}.nc.{node}", self.prefix)
    }
    fn probe(&self, node: &str, shard: usize) -> String {
        format!("{}.probe.{node}.{shard}", self.prefix)
    }
    /// The channel a topic belongs to.
    fn channel_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".t.{")?
            .strip_suffix('}')
    }
}

/// What one pub/sub connection carries.
#[derive(Default)]
struct Live {
    /// Where SUBSCRIBE goes while the connection is up.
    sink: Option<PubSubSink>,
    /// The channels it should be subscribed to.
    channels: HashSet<ChannelName>,
}

/// One pub/sub connection and its channels.
struct Shard {
    index: usize,
    live: tokio::sync::Mutex<Live>,
    up: AtomicBool,
}

/// Health counters of a Redis broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Pub/sub connections (re)established.
    pub connects: u64,
    /// Connections replaced because their probe did not come back.
    pub probe_failures: u64,
    /// Pub/sub messages that could not be decoded.
    pub bad_messages: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    probe_failures: AtomicU64,
    bad_messages: AtomicU64,
}

/// The Redis broker (see the module docs).
pub struct RedisBroker {
    config: RedisConfig,
    client: ::redis::Client,
    commands: Arc<Commands>,
    keys: Keys,
    node_id: String,
    shards: Box<[Arc<Shard>]>,
    sink: OnceLock<Arc<dyn Sink>>,
    /// Channels this node has shared presence for.
    shared: Mutex<HashSet<ChannelName>>,
    counters: Counters,
    publish: Script,
    history: Script,
    newest: Script,
    remove_history: Script,
    presence: Script,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.config)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Without OS randomness, the time still makes values differ.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) ^ now_ms()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBroker {
    /// Connect to Redis (and check it answers) with `config`.
    pub async fn connect(config: RedisConfig) -> Result<Arc<RedisBroker>, RedisError> {
        let client = super::client(&config)?;
        let commands = Commands::connect(client.clone(), config.clone()).await?;
        let _: String = ::redis::cmd("PING")
            .query_async(&mut commands.get())
            .await
            .map_err(|e| RedisError::Connect {
                url: redacted(&config.url),
                reason: e.to_string(),
            })?;
        let shards = (0..config.pubsub_connections.max(1))
            .map(|index| {
                Arc::new(Shard {
                    index,
                    live: tokio::sync::Mutex::default(),
                    up: AtomicBool::new(false),
                })
            })
            .collect();
        Ok(Arc::new(RedisBroker {
            keys: Keys {
                prefix: config.prefix.clone(),
            },
            node_id: format!("{:016x}", random_u64()),
            config,
            client,
            commands,
            shards,
            sink: OnceLock::new(),
            shared: Mutex::default(),
            counters: Counters::default(),
            publish: Script::new(include_str!("publish.lua")),
            history: Script::new(include_str!("history.lua")),
            newest: Script::new(include_str!("newest.lua")),
            remove_history: Script::new(include_str!("remove_history.lua")),
            presence: Script::new(include_str!("presence.lua")),
        }))
    }

    /// A kv store on the same Redis (and command connection).
    pub fn kv(&self) -> super::RedisKv {
        super::RedisKv::new(self.commands.clone(), &self.config.prefix)
    }

    /// Health counters.
    pub fn redis_stats(&self) -> RedisStats {
        RedisStats {
            connects: self.counters.connects.load(Ordering::Relaxed),
            probe_failures: self.counters.probe_failures.load(Ordering::Relaxed),
            bad_messages: self.counters.bad_messages.load(Ordering::Relaxed),
        }
    }

    /// Whether every pub/sub connection is up.
    pub fn subscribed(&self) -> bool {
        self.shards.iter().all(|s| s.up.load(Ordering::Acquire))
    }

    fn shard_of(&self, channel: &str) -> &Arc<Shard> {
        &self.shards[(channel_key(channel) % self.shards.len() as u64) as usize]
    }

    /// Turn a pub/sub message into a message of its channel.
    fn decode(&self, topic: &str, data: &[u8]) -> Option<Message> {
        let channel = ChannelName::new(self.keys.channel_of(topic)?).ok()?;
        let mut fields = data.splitn(6, |b| *b == b':');
        let number =
            |f: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(f?).ok()?.parse().ok() };
        if fields.next()? != b"c1" {
            return None;
        }
        let offset = number(fields.next())?;
        let epoch = number(fields.next())?;
        let time = number(fields.next())?;
        let kind = fields.next()?;
        let payload = payload(kind, fields.next()?)?;
        Some(Message::new(
            channel,
            Position { epoch, offset },
            payload,
            time,
        ))
    }

    /// Run one pub/sub connection for the life of the broker: connect,
    /// resubscribe, read, and start over when it fails.
    async fn run_shard(me: Weak<RedisBroker>, shard: Arc<Shard>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(broker) = me.upgrade() else { return };
            let outcome = broker.serve_shard(&shard).await;
            shard.up.store(false, Ordering::Release);
            lock_live_sink_clear(&shard).await;
            let connected = match outcome {
                Ok(()) => return,
                Err(Failure::Connect(e)) => {
                    tracing::warn!(shard = shard.index, error = %e, "redis pub/sub: cannot connect; retrying");
                    false
                }
                Err(Failure::Lost(e)) => {
                    tracing::warn!(shard = shard.index, error = %e, "redis pub/sub connection lost; reconnecting");
                    true
                }
            };
            drop(broker);
            if connected {
                backoff = Duration::from_millis(100);
            }
            // Jitter, so nodes do not reconnect in step.
            let jitter = Duration::from_millis(random_u64() % 100);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One life of a pub/sub connection.
    async fn serve_shard(&self, shard: &Arc<Shard>) -> Result<(), Failure> {
        let timeout = self.config.command_timeout;
        let pubsub = tokio::time::timeout(timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| Failure::Connect("timed out".into()))?
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let (mut sink, mut stream) = pubsub.split();
        let probe = self.keys.probe(&self.node_id, shard.index);
        let lost = |e: String| Failure::Lost(e);
        with_timeout(timeout, sink.subscribe(&probe))
            .await
            .map_err(lost)?;
        // Commands for connections come over the first connection.
        let commands = (shard.index == 0).then(|| self.keys.commands());
        if let Some(topic) = &commands {
            with_timeout(timeout, sink.subscribe(topic))
                .await
                .map_err(lost)?;
        }
        {
            // Resubscribe under the lock, so a subscribe in the meantime
            // waits and then goes to the new connection.
            let mut live = shard.live.lock().await;
            let topics: Vec<String> = live.channels.iter().map(|c| self.keys.topic(c)).collect();
            for batch in topics.chunks(RESUBSCRIBE_BATCH) {
                with_timeout(timeout, sink.subscribe(batch))
                    .await
                    .map_err(lost)?;
            }
            live.sink = Some(sink.clone());
            shard.up.store(true, Ordering::Release);
            tracing::info!(
                shard = shard.index,
                channels = topics.len(),
                "redis pub/sub subscribed"
            );
        }
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        // Whatever was published while this connection was away is in
        // history: the node reads it.
        if let Some(node) = self.sink.get() {
            node.resubscribed();
        }
        let interval = self.config.probe_interval;
        let mut probe_tick = tokio::time::interval(interval);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe_tick.tick().await;
        let mut received = 0u64;
        let mut probe_sent = false;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(lost("the connection closed".into()));
                    };
                    received += 1;
                    let topic = message.get_channel_name();
                    if topic == probe {
                        continue;
                    }
                    if commands.as_deref() == Some(topic) {
                        if let Some(sink) = self.sink.get() {
                            sink.command(message.get_payload_bytes());
                        }
                        continue;
                    }
                    match self.decode(topic, message.get_payload_bytes()) {
                        Some(m) => {
                            if let Some(sink) = self.sink.get() {
                                sink.deliver(Arc::new(m));
                            }
                        }
                        None => {
                            self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(topic, "redis pub/sub: a message comet did not publish");
                        }
                    }
                }
                _ = probe_tick.tick() => {
                    if received > 0 {
                        received = 0;
                        probe_sent = false;
                        continue;
                    }
                    if probe_sent {
                        self.counters.probe_failures.fetch_add(1, Ordering::Relaxed);
                        return Err(lost("the liveness probe did not come back".into()));
                    }
                    // Up on TCP is not enough: a message must come back.
                    // Subscribed, PING answers ["pong", ""]: any answer will do.
                    with_timeout(timeout, sink.ping::<Value>()).await.map_err(lost)?;
                    let sent: Result<i64, _> = ::redis::cmd("PUBLISH")
                        .arg(&probe)
                        .arg("probe")
                        .query_async(&mut self.commands.get())
                        .await;
                    self.commands.check(&sent);
                    // A probe Redis did not take says nothing about this
                    // connection; try again next time.
                    probe_sent = sent.is_ok();
                }
            }
        }
    }

    /// `{top, epoch, entries}` from a history script: the head and the
    /// messages.
    fn history_reply(
        &self,
        channel: &ChannelName,
        reply: ::redis::RedisResult<Vec<Value>>,
    ) -> Result<(Position, Vec<Arc<Message>>), BrokerError> {
        self.commands.check(&reply);
        let mut reply = reply.map_err(unavailable)?.into_iter();
        let top = reply
            .next()
            .and_then(as_u64)
            .ok_or_else(|| unavailable("bad history reply"))?;
        let epoch = reply
            .next()
            .and_then(as_u64)
            .ok_or_else(|| unavailable("bad history reply"))?;
        let entries = match reply.next() {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        };
        let mut messages = Vec::with_capacity(entries.len());
        for entry in entries {
            let message = entry_message(channel, epoch, entry)
                .ok_or_else(|| unavailable("bad stream entry"))?;
            messages.push(Arc::new(message));
        }
        Ok((Position { epoch, offset: top }, messages))
    }

    async fn run_history(
        &self,
        channel: &ChannelName,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let (epoch, offset) = match since {
            Some(p) => (p.epoch.to_string(), p.offset),
            None => (String::new(), 0),
        };
        let reply: ::redis::RedisResult<Vec<Value>> = self
            .history
            .key(self.keys.stream(channel))
            .key(self.keys.meta(channel))
            .arg(epoch)
            .arg(offset)
            .arg(limit.min(MAX_HISTORY_READ))
            .arg(self.config.meta_ttl.as_secs().max(1))
            .arg(random_u64())
            .arg(now_ms())
            .invoke_async(&mut self.commands.get())
            .await;
        let (head, messages) = self.history_reply(channel, reply)?;
        let top = head.offset;
        let epoch = head.epoch;
        let gap = match since {
            None => None,
            Some(p) if p.epoch != epoch || p.offset > top => Some(Gap::EpochChanged),
            Some(p) => {
                // A read of no entries (limit 0) cannot tell.
                let first = messages.first().map_or(top + 1, |m| m.position.offset);
                (limit > 0 && p.offset + 1 < first).then_some(Gap::TooOld)
            }
        };
        Ok(History {
            messages,
            gap,
            head,
        })
    }

    /// The registry's live entries (node id to JSON), expired ones removed.
    async fn live_nodes(&self) -> Result<HashMap<String, String>, BrokerError> {
        let entries: ::redis::RedisResult<HashMap<String, String>> = self
            .presence
            .key(self.keys.nodes())
            .key(self.keys.nodes_expiry())
            .arg(now_ms())
            .invoke_async(&mut self.commands.get())
            .await;
        self.commands.check(&entries);
        entries.map_err(unavailable)
    }
}

/// Why a pub/sub connection ended.
enum Failure {
    /// It never came up.
    Connect(String),
    /// It was up and went away (or stopped delivering).
    Lost(String),
}

async fn lock_live_sink_clear(shard: &Shard) {
    shard.live.lock().await.sink = None;
}

async fn with_timeout<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn as_u64(v: Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(n).ok(),
        Value::BulkString(b) => std::str::from_utf8(&b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn payload(kind: &[u8], data: &[u8]) -> Option<Payload> {
    match kind {
        b"t" => Some(Payload::Text(String::from_utf8(data.to_vec()).ok()?)),
        b"b" => Some(Payload::Binary(Bytes::copy_from_slice(data))),
        _ => None,
    }
}

/// A stream entry `[id, [field, value, ...]]` as a message.
fn entry_message(channel: &ChannelName, epoch: u64, entry: Value) -> Option<Message> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    let fields = parts.pop()?;
    let id = parts.pop()?;
    let Value::BulkString(id) = id else {
        return None;
    };
    let offset = std::str::from_utf8(&id)
        .ok()?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let mut values: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut fields = fields.into_iter();
    while let (Some(Value::BulkString(k)), Some(Value::BulkString(v))) =
        (fields.next(), fields.next())
    {
        values.insert(k, v);
    }
    let time = std::str::from_utf8(values.get(&b"t"[..])?)
        .ok()?
        .parse()
        .ok()?;
    let payload = payload(values.get(&b"k"[..])?, values.get(&b"d"[..])?)?;
    Some(Message::new(
        channel.clone(),
        Position { epoch, offset },
        payload,
        time,
    ))
}

/// One node's presence as stored: the count, some members, the users.
#[derive(serde::Serialize, serde::Deserialize)]
struct Shared {
    connections: usize,
    #[serde(default)]
    members: Vec<Member>,
    #[serde(default)]
    users: Vec<String>,
}

#[async_trait]
impl Broker for RedisBroker {
    fn start(self: Arc<Self>, sink: Arc<dyn Sink>) {
        let _ = self.sink.set(sink);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for shard in self.shards.iter() {
            runtime.spawn(RedisBroker::run_shard(Arc::downgrade(&self), shard.clone()));
        }
    }

    async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        history: HistoryLimits,
    ) -> Result<Published, BrokerError> {
        let time = now_ms();
        let (kind, data): (&str, Vec<u8>) = match payload {
            Payload::Text(t) => ("t", t.into_bytes()),
            Payload::Binary(b) => ("b", b.to_vec()),
        };
        let reply: ::redis::RedisResult<(u64, String)> = self
            .publish
            .key(self.keys.stream(channel))
            .key(self.keys.meta(channel))
            .arg(data)
            .arg(kind)
            .arg(time)
            .arg(history.max_len.max(1))
            .arg(millis(history.max_age).max(1))
            .arg(self.config.meta_ttl.as_secs().max(1))
            .arg(random_u64())
            .arg(self.keys.topic(channel))
            .invoke_async(&mut self.commands.get())
            .await;
        self.commands.check(&reply);
        let (offset, epoch) = reply.map_err(unavailable)?;
        let epoch = epoch
            .parse()
            .map_err(|_| unavailable("bad epoch in reply"))?;
        Ok(Published {
            channel: channel.clone(),
            position: Position { epoch, offset },
            time_ms: time,
        })
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        self.run_history(channel, since, limit).await
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let shard = self.shard_of(channel);
        let timeout = self.config.command_timeout;
        let mut live = tokio::time::timeout(timeout, shard.live.lock())
            .await
            .map_err(|_| unavailable("the pub/sub connection is busy reconnecting"))?;
        let Some(sink) = live.sink.as_mut() else {
            return Err(unavailable("the pub/sub connection is down"));
        };
        with_timeout(timeout, sink.subscribe(self.keys.topic(channel)))
            .await
            .map_err(unavailable)?;
        live.channels.insert(channel.clone());
        Ok(())
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let shard = self.shard_of(channel);
        let timeout = self.config.command_timeout;
        let mut live = shard.live.lock().await;
        live.channels.remove(channel);
        if let Some(sink) = live.sink.as_mut() {
            // If this fails the connection is going down; its replacement
            // will not subscribe the channel again.
            let _ = with_timeout(timeout, sink.unsubscribe(self.keys.topic(channel))).await;
        }
        Ok(())
    }

    async fn presence(
        &self,
        channel: &ChannelName,
        local: Presence,
    ) -> Result<Presence, BrokerError> {
        let entries: ::redis::RedisResult<HashMap<String, String>> = self
            .presence
            .key(self.keys.presence(channel))
            .key(self.keys.presence_expiry(channel))
            .arg(now_ms())
            .invoke_async(&mut self.commands.get())
            .await;
        self.commands.check(&entries);
        let entries = entries.map_err(unavailable)?;
        let max_members = local.members.len().max(100);
        let mut all = local;
        let mut users: std::collections::BTreeSet<String> =
            std::mem::take(&mut all.users).into_iter().collect();
        for (node, json) in entries {
            if node == self.node_id {
                continue;
            }
            if let Ok(shared) = serde_json::from_str::<Shared>(&json) {
                all.connections += shared.connections;
                let room = max_members.saturating_sub(all.members.len());
                all.members.extend(shared.members.into_iter().take(room));
                users.extend(shared.users);
            }
        }
        all.users = users.into_iter().collect();
        Ok(all)
    }

    fn presence_interval(&self) -> Option<Duration> {
        Some(PRESENCE_INTERVAL)
    }

    async fn share_presence(
        &self,
        local: Vec<(ChannelName, Presence)>,
        node: NodeInfo,
    ) -> Result<(), BrokerError> {
        let now: HashSet<ChannelName> = local.iter().map(|(c, _)| c.clone()).collect();
        let gone: Vec<ChannelName> = {
            let mut shared = lock(&self.shared);
            let gone = shared.difference(&now).cloned().collect();
            *shared = now;
            gone
        };
        let expires = now_ms() + millis(PRESENCE_TTL);
        let ttl = millis(PRESENCE_TTL);
        let mut pipe = ::redis::pipe();
        for (channel, presence) in &local {
            let json = serde_json::to_string(&Shared {
                connections: presence.connections,
                members: presence.members.clone(),
                users: presence.users.clone(),
            })
            .unwrap_or_default();
            let (hash, expiry) = (
                self.keys.presence(channel),
                self.keys.presence_expiry(channel),
            );
            pipe.hset(&hash, &self.node_id, json).ignore();
            pipe.pexpire(&hash, ttl as i64).ignore();
            pipe.zadd(&expiry, &self.node_id, expires).ignore();
            pipe.pexpire(&expiry, ttl as i64).ignore();
        }
        let channels = self.keys.node_channels(&self.node_id);
        for channel in &gone {
            pipe.hdel(self.keys.presence(channel), &self.node_id)
                .ignore();
            pipe.zrem(self.keys.presence_expiry(channel), &self.node_id)
                .ignore();
            pipe.hdel(&channels, channel.as_str()).ignore();
        }
        // The channels and the registry entry: fields replaced one by
        // one (never deleted and rewritten), so a reader never sees none.
        for (channel, presence) in &local {
            pipe.hset(&channels, channel.as_str(), presence.connections)
                .ignore();
        }
        pipe.pexpire(&channels, ttl as i64).ignore();
        let entry = serde_json::to_string(&node).unwrap_or_default();
        pipe.hset(self.keys.nodes(), &self.node_id, entry).ignore();
        pipe.zadd(self.keys.nodes_expiry(), &self.node_id, expires)
            .ignore();
        let done = pipe.query_async::<()>(&mut self.commands.get()).await;
        self.commands.check(&done);
        done.map_err(unavailable)
    }

    async fn newest(&self, channel: &ChannelName, limit: usize) -> Result<History, BrokerError> {
        let reply: ::redis::RedisResult<Vec<Value>> = self
            .newest
            .key(self.keys.stream(channel))
            .key(self.keys.meta(channel))
            .arg(limit.min(MAX_HISTORY_READ))
            .arg(self.config.meta_ttl.as_secs().max(1))
            .arg(random_u64())
            .arg(now_ms())
            .invoke_async(&mut self.commands.get())
            .await;
        let (head, messages) = self.history_reply(channel, reply)?;
        Ok(History {
            messages,
            gap: None,
            head,
        })
    }

    async fn remove_history(&self, channel: &ChannelName) -> Result<Position, BrokerError> {
        let reply: ::redis::RedisResult<String> = self
            .remove_history
            .key(self.keys.stream(channel))
            .key(self.keys.meta(channel))
            .arg(random_u64())
            .arg(self.config.meta_ttl.as_secs().max(1))
            .invoke_async(&mut self.commands.get())
            .await;
        self.commands.check(&reply);
        let epoch = reply
            .map_err(unavailable)?
            .parse()
            .map_err(|_| unavailable("bad epoch in reply"))?;
        Ok(Position { epoch, offset: 0 })
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn send_command(&self, command: &[u8]) -> Result<(), BrokerError> {
        let sent: ::redis::RedisResult<i64> = ::redis::cmd("PUBLISH")
            .arg(self.keys.commands())
            .arg(command)
            .query_async(&mut self.commands.get())
            .await;
        self.commands.check(&sent);
        sent.map(drop).map_err(unavailable)
    }

    async fn nodes(&self, local: NodeInfo) -> Result<Vec<NodeInfo>, BrokerError> {
        let entries = self.live_nodes().await?;
        let mut nodes = vec![local];
        for (id, json) in entries {
            if id == self.node_id {
                continue;
            }
            if let Ok(info) = serde_json::from_str::<NodeInfo>(&json) {
                nodes.push(info);
            }
        }
        Ok(nodes)
    }

    async fn channels(
        &self,
        local: Vec<(ChannelName, usize)>,
    ) -> Result<Vec<(ChannelName, usize)>, BrokerError> {
        let others: Vec<String> = self
            .live_nodes()
            .await?
            .into_keys()
            .filter(|id| *id != self.node_id)
            .collect();
        if others.is_empty() {
            return Ok(local);
        }
        let mut all: HashMap<ChannelName, usize> = local.into_iter().collect();
        // Every other node's channels in one round trip.
        let mut pipe = ::redis::pipe();
        for id in &others {
            pipe.hgetall(self.keys.node_channels(id));
        }
        let counts: ::redis::RedisResult<Vec<HashMap<String, usize>>> =
            pipe.query_async(&mut self.commands.get()).await;
        self.commands.check(&counts);
        for (channel, n) in counts.map_err(unavailable)?.into_iter().flatten() {
            if let Ok(channel) = ChannelName::new(&channel) {
                *all.entry(channel).or_default() += n;
            }
        }
        Ok(all.into_iter().collect())
    }

    fn stats(&self) -> BrokerStats {
        BrokerStats {
            kind: "redis",
            subscribed: self.subscribed(),
            channels: self
                .shards
                .iter()
                .map(|s| s.live.try_lock().map_or(0, |l| l.channels.len()))
                .sum(),
            ..BrokerStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_their_channel() {
        let keys = Keys {
            prefix: "app".into(),
        };
        let topic = keys.topic("chat:lobby");
        assert_eq!(topic, "app.t.{chat:lobby}");
        assert_eq!(keys.channel_of(&topic), Some("chat:lobby"));
        assert_eq!(keys.channel_of("other.t.{x}"), None);
        assert_eq!(keys.stream("a"), "app.s.{a}");
    }

    #[test]
    fn stream_entries_become_messages() {
        let channel = ChannelName::new("a").unwrap();
        let entry = Value::Array(vec![
            Value::BulkString(b"7-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"t".to_vec()),
                Value::BulkString(b"1700".to_vec()),
                Value::BulkString(b"k".to_vec()),
                Value::BulkString(b"t".to_vec()),
                Value::BulkString(b"d".to_vec()),
                Value::BulkString(b"hi: there".to_vec()),
            ]),
        ]);
        let m = entry_message(&channel, 9, entry).unwrap();
        assert_eq!(
            m.position,
            Position {
                epoch: 9,
                offset: 7
            }
        );
        assert_eq!(m.published_at_ms, 1700);
        assert_eq!(m.payload(), Payload::Text("hi: there".into()));
    }
}
