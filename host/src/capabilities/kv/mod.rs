//! The `kv` capability: a small key-value store namespaced per module, the
//! [`KvStore`] boundary behind it, and the in-memory store used by default
//! (the Redis store is `crate::redis::RedisKv`).
//!
//! Every module has its own namespace and its own budget: at most
//! [`MAX_KEYS_PER_NAMESPACE`] keys and [`MAX_BYTES_PER_NAMESPACE`] bytes
//! (keys and values). In memory, each namespace has its own lock, so a module
//! filling its store does not slow another one, and a set on a full
//! namespace costs a lookup, not a scan: expired entries leave through an
//! index ordered by expiry.

mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use memory::{DeniedKv, MemoryKv};

use super::{Capability, EventInfo, Grant, Purpose};
use crate::metrics::Metrics;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes. kv holds counters and small documents, not blobs.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one module may hold.
pub const MAX_KEYS_PER_NAMESPACE: usize = 100_000;
/// Most bytes (keys, values and a fixed overhead per entry) one module may
/// hold: a module cannot grow the host's memory (or Redis's) without bound.
pub const MAX_BYTES_PER_NAMESPACE: usize = 32 << 20;
/// What an entry costs on top of its key and value, for the byte budget.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Empty or too long key.
    #[error("key must be 1..={MAX_KEY_BYTES} bytes, got {0}")]
    InvalidKey(usize),
    /// Value over [`MAX_VALUE_BYTES`].
    #[error("value of {0} bytes is over the {MAX_VALUE_BYTES} byte limit")]
    TooLarge(usize),
    /// `increment` on a value that is not a decimal i64.
    #[error("value is not a decimal 64-bit integer")]
    NotANumber,
    /// `increment` would overflow.
    #[error("increment overflows a 64-bit integer")]
    Overflow,
    /// The namespace holds its maximum of keys.
    #[error("the store is full ({MAX_KEYS_PER_NAMESPACE} keys)")]
    Full,
    /// The namespace holds its maximum of bytes.
    #[error("the store is full ({MAX_BYTES_PER_NAMESPACE} bytes)")]
    FullBytes,
    /// The module was not granted the store.
    #[error("kv is not granted to this module (set `kv = true` in its manifest entry)")]
    NotGranted,
    /// The backend is down.
    #[error("kv unavailable: {0}")]
    Unavailable(String),
}

/// A key-value backend. Every call names the namespace (the module), so two
/// modules never see each other's keys.
#[async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The live value under `key`.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store `value`, optionally expiring after `ttl`.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;
    /// Remove `key`; true if a live value was there.
    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError>;
    /// Add `delta` to the decimal integer under `key` (missing: 0). Keeps
    /// the key's expiry; a key it creates expires after `ttl`, if given.
    async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StoreError>;
}

/// Check a key against the rules.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(key.len()));
    }
    Ok(())
}

/// Check a value against the size limit.
pub(crate) fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::TooLarge(value.len()));
    }
    Ok(())
}

/// What an entry costs against the byte budget.
pub(crate) fn entry_bytes(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD_BYTES
}

/// The `kv` capability: the host's store, and where operations are counted.
#[derive(Debug)]
pub struct KvCapability {
    store: Arc<dyn KvStore>,
    metrics: Arc<Metrics>,
}

impl KvCapability {
    /// kv in `store`, counted in `metrics`.
    pub fn new(store: Arc<dyn KvStore>, metrics: Arc<Metrics>) -> KvCapability {
        KvCapability { store, metrics }
    }
}

/// One module's kv: its namespace in the store, or the refusing store when
/// its manifest entry says `kv = false`.
#[derive(Debug)]
pub struct ModuleKv {
    namespace: Arc<str>,
    store: Arc<dyn KvStore>,
    metrics: Arc<Metrics>,
}

/// What one event's kv calls reach: the module's namespace, or for the
/// deploy-time start check a scratch store whose writes go nowhere.
#[derive(Debug)]
pub struct EventKv {
    module: Arc<ModuleKv>,
    scratch: Option<Arc<MemoryKv>>,
}

impl Capability for KvCapability {
    type Module = ModuleKv;
    type Event = EventKv;

    fn configure(&self, grant: &Grant<'_>) -> ModuleKv {
        let store: Arc<dyn KvStore> = if grant.spec.kv {
            self.store.clone()
        } else {
            Arc::new(DeniedKv)
        };
        ModuleKv {
            namespace: grant.name.clone(),
            store,
            metrics: self.metrics.clone(),
        }
    }

    fn prepare(module: &Arc<ModuleKv>, event: &EventInfo) -> EventKv {
        EventKv {
            module: module.clone(),
            scratch: (event.purpose == Purpose::StartCheck).then(Arc::default),
        }
    }
}

impl EventKv {
    fn store(&self) -> &dyn KvStore {
        match &self.scratch {
            Some(scratch) => &**scratch,
            None => &*self.module.store,
        }
    }

    /// The live value under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.module.metrics.kv("get", 0);
        self.store().get(&self.module.namespace, key).await
    }

    /// Store `value` under `key`, expiring after `ttl` if given.
    pub async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.module.metrics.kv("set", value.len());
        self.store()
            .set(&self.module.namespace, key, value, ttl)
            .await
    }

    /// Remove `key`; true if a live value was there.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.module.metrics.kv("delete", 0);
        self.store().delete(&self.module.namespace, key).await
    }

    /// Add `delta` to the integer under `key`; a key it creates expires
    /// after `ttl`, if given.
    pub async fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StoreError> {
        self.module.metrics.kv("increment", 0);
        self.store()
            .increment(&self.module.namespace, key, delta, ttl)
            .await
    }
}
