//! The `kv` import and the [`KvStore`] boundary behind it, with the in-memory
//! store used by default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bindings::kv::{Host, KvError};
use crate::imports::HostState;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes. kv holds counters and small documents, not blobs.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one module may hold in the memory store, so a module cannot grow
/// the host's memory without bound.
pub const MAX_KEYS_PER_NAMESPACE: usize = 100_000;

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
    /// The namespace is full.
    #[error("the store is full ({MAX_KEYS_PER_NAMESPACE} keys)")]
    Full,
    /// The module was not granted the store.
    #[error("kv is not granted to this module (set `kv = true` in its manifest entry)")]
    NotGranted,
}

impl From<StoreError> for KvError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::InvalidKey(_) => KvError::InvalidKey(msg),
            StoreError::TooLarge(_) => KvError::TooLarge(msg),
            StoreError::NotANumber | StoreError::Overflow => KvError::NotANumber(msg),
            StoreError::Full | StoreError::NotGranted => KvError::Unavailable(msg),
        }
    }
}

/// A key-value backend. Every call names the namespace (the module), so two
/// modules never see each other's keys.
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The live value under `key`.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store `value`, optionally expiring after `ttl`.
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;
    /// Remove `key`; true if a live value was there.
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError>;
    /// Add `delta` to the decimal integer under `key` (missing: 0).
    fn increment(&self, namespace: &str, key: &str, delta: i64) -> Result<i64, StoreError>;
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// The embedded store: one map per namespace behind a mutex. Expired entries
/// are dropped when read and swept when a namespace is full.
#[derive(Debug, Default)]
pub struct MemoryKv {
    namespaces: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(key.len()));
    }
    Ok(())
}

impl MemoryKv {
    fn with_namespace<R>(
        &self,
        namespace: &str,
        f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> R,
    ) -> R {
        let mut all = self
            .namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let map = all.entry(namespace.to_string()).or_default();
        f(map, Instant::now())
    }
}

/// Make room for one more key, sweeping expired entries first.
fn reserve(map: &mut HashMap<String, Entry>, key: &str, now: Instant) -> Result<(), StoreError> {
    if map.len() < MAX_KEYS_PER_NAMESPACE || map.contains_key(key) {
        return Ok(());
    }
    map.retain(|_, e| e.live(now));
    if map.len() < MAX_KEYS_PER_NAMESPACE {
        Ok(())
    } else {
        Err(StoreError::Full)
    }
}

/// The store of a module not granted kv: every call fails with
/// [`StoreError::NotGranted`].
#[derive(Debug, Default)]
pub struct DeniedKv;

impl KvStore for DeniedKv {
    fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::NotGranted)
    }

    fn set(
        &self,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        Err(StoreError::NotGranted)
    }

    fn delete(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::NotGranted)
    }

    fn increment(&self, _: &str, _: &str, _: i64) -> Result<i64, StoreError> {
        Err(StoreError::NotGranted)
    }
}

impl KvStore for MemoryKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        Ok(
            self.with_namespace(namespace, |map, now| match map.get(key) {
                Some(e) if e.live(now) => Some(e.value.clone()),
                Some(_) => {
                    map.remove(key);
                    None
                }
                None => None,
            }),
        )
    }

    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::TooLarge(value.len()));
        }
        self.with_namespace(namespace, |map, now| {
            reserve(map, key, now)?;
            let expires = ttl.map(|ttl| now + ttl);
            map.insert(key.to_string(), Entry { value, expires });
            Ok(())
        })
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        Ok(self.with_namespace(namespace, |map, now| {
            map.remove(key).is_some_and(|e| e.live(now))
        }))
    }

    fn increment(&self, namespace: &str, key: &str, delta: i64) -> Result<i64, StoreError> {
        check_key(key)?;
        self.with_namespace(namespace, |map, now| {
            let (current, expires) = match map.get(key) {
                Some(e) if e.live(now) => {
                    let n = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or(StoreError::NotANumber)?;
                    (n, e.expires)
                }
                _ => (0, None),
            };
            let next = current.checked_add(delta).ok_or(StoreError::Overflow)?;
            reserve(map, key, now)?;
            map.insert(
                key.to_string(),
                Entry {
                    value: next.to_string().into_bytes(),
                    expires,
                },
            );
            Ok(next)
        })
    }
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        Ok(self
            .services
            .kv
            .get(&self.services.name, &key)
            .map_err(Into::into))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let ttl = ttl_ms.map(Duration::from_millis);
        Ok(self
            .services
            .kv
            .set(&self.services.name, &key, value, ttl)
            .map_err(Into::into))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        Ok(self
            .services
            .kv
            .delete(&self.services.name, &key)
            .map_err(Into::into))
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, KvError>> {
        Ok(self
            .services
            .kv
            .increment(&self.services.name, &key, delta)
            .map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_separate() {
        let kv = MemoryKv::default();
        kv.set("a", "k", b"1".to_vec(), None).unwrap();
        assert_eq!(kv.get("a", "k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("b", "k").unwrap(), None);
    }

    #[test]
    fn increment_counts_and_refuses_non_numbers() {
        let kv = MemoryKv::default();
        assert_eq!(kv.increment("m", "n", 1).unwrap(), 1);
        assert_eq!(kv.increment("m", "n", 41).unwrap(), 42);
        kv.set("m", "s", b"abc".to_vec(), None).unwrap();
        assert_eq!(kv.increment("m", "s", 1), Err(StoreError::NotANumber));
        kv.set("m", "max", i64::MAX.to_string().into_bytes(), None)
            .unwrap();
        assert_eq!(kv.increment("m", "max", 1), Err(StoreError::Overflow));
    }

    #[test]
    fn expired_values_are_gone() {
        let kv = MemoryKv::default();
        kv.set("m", "t", b"x".to_vec(), Some(Duration::ZERO))
            .unwrap();
        assert_eq!(kv.get("m", "t").unwrap(), None);
        assert!(!kv.delete("m", "t").unwrap());
    }

    #[test]
    fn bad_keys_and_values_are_refused() {
        let kv = MemoryKv::default();
        assert_eq!(kv.get("m", ""), Err(StoreError::InvalidKey(0)));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(kv.get("m", &long), Err(StoreError::InvalidKey(_))));
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            kv.set("m", "k", big, None),
            Err(StoreError::TooLarge(_))
        ));
    }
}
