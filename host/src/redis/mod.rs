//! Redis as the shared engine of several comet processes: the channel
//! broker (history in streams, offsets and epochs in a meta hash, fan-out
//! over pub/sub), presence across nodes, and the kv store.
//!
//! Keys carry the channel (or module) in a `{hash tag}` after a
//! configurable prefix, so every key of one channel lands in one Redis
//! Cluster slot and a script may touch them all:
//!
//! | key | what |
//! |---|---|
//! | `PREFIX.s.{CHANNEL}` | the channel's history: a stream, entry id = offset |
//! | `PREFIX.m.{CHANNEL}` | the channel's meta hash: `e` epoch, `s` newest offset, `a` history age |
//! | `PREFIX.t.{CHANNEL}` | the pub/sub topic of the channel's messages |
//! | `PREFIX.p.{CHANNEL}`, `PREFIX.pe.{CHANNEL}` | presence: node id to subscribers, node id to expiry |
//! | `PREFIX.probe.NODE.N` | the liveness probe topic of one of a node's pub/sub connections |
//! | `PREFIX.cmd` | the topic of commands for connections (the server API), on every node's first pub/sub connection |
//! | `PREFIX.{nodes}`, `PREFIX.{nodes}.e` | the node registry: node id to its entry, node id to its expiry |
//! | `PREFIX.nc.NODE` | a node's channels and their subscribers there |
//! | `PREFIX.kv.{MODULE}.KEY`, `PREFIX.kvi.{MODULE}`, `PREFIX.kvs.{MODULE}` | a module's kv values, their expiry index and their sizes |

mod broker;
mod kv;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::ConnectionManager;

pub use broker::{RedisBroker, RedisStats};
pub use kv::RedisKv;

pub use comet_config::broker::{DEFAULT_PREFIX, redacted};

/// Pub/sub connections per node by default. One carries tens of thousands
/// of channels; more spread the decoding over more tasks.
pub const DEFAULT_PUBSUB_CONNECTIONS: usize = 2;

/// How long a channel's epoch outlives its last use. Long: a cursor is
/// reset when its channel's epoch is gone.
pub const DEFAULT_META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often a quiet pub/sub connection is probed (a message published to
/// itself must come back within the next interval, or the connection is
/// replaced): a subscription can be up on TCP and deliver nothing.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Longest one Redis command may take before it counts as failed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node reaches Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key and topic.
    pub prefix: String,
    /// Pub/sub connections (see [`DEFAULT_PUBSUB_CONNECTIONS`]).
    pub pubsub_connections: usize,
    /// See [`DEFAULT_META_TTL`].
    pub meta_ttl: Duration,
    /// See [`DEFAULT_PROBE_INTERVAL`].
    pub probe_interval: Duration,
    /// See [`DEFAULT_COMMAND_TIMEOUT`].
    pub command_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisConfig")
            .field("url", &redacted(&self.url))
            .field("prefix", &self.prefix)
            .field("pubsub_connections", &self.pubsub_connections)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: DEFAULT_PREFIX.into(),
            pubsub_connections: DEFAULT_PUBSUB_CONNECTIONS,
            meta_ttl: DEFAULT_META_TTL,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL does not parse.
    #[error("invalid Redis URL {url}: {reason}")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// Why.
        reason: String,
    },
    /// Redis could not be reached or refused.
    #[error("cannot reach Redis at {url}: {reason}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Open a client for `config.url`, installing the TLS crypto provider first
/// (rustls needs one process-wide, once).
pub(crate) fn client(config: &RedisConfig) -> Result<::redis::Client, RedisError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ::redis::Client::open(config.url.as_str()).map_err(|e| RedisError::Url {
        url: redacted(&config.url),
        reason: e.to_string(),
    })
}

async fn manager(
    client: &::redis::Client,
    config: &RedisConfig,
) -> Result<ConnectionManager, RedisError> {
    let manager_config = ::redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.command_timeout))
        .set_connection_timeout(Some(config.command_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    client
        .get_connection_manager_with_config(manager_config)
        .await
        .map_err(|e| RedisError::Connect {
            url: redacted(&config.url),
            reason: e.to_string(),
        })
}

/// The command connection: a [`ConnectionManager`] (which reconnects when
/// the connection drops), replaced when a command times out. The manager
/// alone would keep a connection that went silent (half-open TCP, a
/// failover to an address that no longer answers) forever.
pub(crate) struct Commands {
    client: ::redis::Client,
    config: RedisConfig,
    current: Mutex<ConnectionManager>,
    replacing: AtomicBool,
    /// The runtime the connection was made on, where a replacement is made:
    /// a timeout may be noticed by a guest's kv call on the hot runtime
    /// (see `scheduler`), whose nice-19 threads must not drive it.
    runtime: Option<tokio::runtime::Handle>,
}

impl Commands {
    pub(crate) async fn connect(
        client: ::redis::Client,
        config: RedisConfig,
    ) -> Result<Arc<Commands>, RedisError> {
        let current = manager(&client, &config).await?;
        Ok(Arc::new(Commands {
            client,
            config,
            current: Mutex::new(current),
            replacing: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }))
    }

    /// The connection to send on.
    pub(crate) fn get(&self) -> ConnectionManager {
        crate::channels::lock(&self.current).clone()
    }

    /// Note a command's outcome: after a timeout, replace the connection
    /// (in the background, once at a time).
    pub(crate) fn check<T>(self: &Arc<Self>, result: &::redis::RedisResult<T>) {
        let Err(e) = result else { return };
        if !e.is_timeout() || self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(runtime) = &self.runtime else {
            self.replacing.store(false, Ordering::Release);
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            match manager(&me.client, &me.config).await {
                Ok(fresh) => {
                    *crate::channels::lock(&me.current) = fresh;
                    tracing::warn!(
                        "redis: a command timed out; the command connection was replaced"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis: cannot replace the command connection")
                }
            }
            me.replacing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert!(!format!("{:?}", RedisConfig::new("redis://u:pw@h")).contains("pw"));
    }
}
