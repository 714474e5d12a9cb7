//! The embedded kv store ([`MemoryKv`]: one space per namespace, each
//! behind its own lock, expired entries leaving through an index ordered by
//! expiry), and the store of a module not granted kv ([`DeniedKv`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    KvStore, MAX_BYTES_PER_NAMESPACE, MAX_KEYS_PER_NAMESPACE, StoreError, check_key, check_value,
    entry_bytes,
};
use crate::channels::lock;

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

/// One module's entries.
#[derive(Debug, Default)]
struct Space {
    entries: HashMap<String, Entry>,
    bytes: usize,
    /// Entries with an expiry, soonest first.
    expiring: BTreeSet<(Instant, String)>,
}

impl Space {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.bytes -= entry_bytes(key, &entry.value);
        if let Some(at) = entry.expires {
            self.expiring.remove(&(at, key.to_string()));
        }
        Some(entry)
    }

    /// Drop every expired entry (oldest expiry first; stops at the first
    /// live one).
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.expiring.first().cloned() {
            if at > now {
                break;
            }
            self.remove(&key);
        }
    }

    /// Put `value` under `key` if the budgets allow.
    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), StoreError> {
        self.expire(now);
        let old = self
            .entries
            .get(key)
            .map_or(0, |e| entry_bytes(key, &e.value));
        if old == 0 && self.entries.len() >= MAX_KEYS_PER_NAMESPACE {
            return Err(StoreError::Full);
        }
        let new = entry_bytes(key, &value);
        if self.bytes - old + new > MAX_BYTES_PER_NAMESPACE {
            return Err(StoreError::FullBytes);
        }
        self.remove(key);
        if let Some(at) = expires {
            self.expiring.insert((at, key.to_string()));
        }
        self.bytes += new;
        self.entries
            .insert(key.to_string(), Entry { value, expires });
        Ok(())
    }

    fn live(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.remove(key);
        }
        self.entries.get(key)
    }
}

/// The embedded store: one space per namespace, each behind its own lock.
#[derive(Debug, Default)]
pub struct MemoryKv {
    spaces: Mutex<HashMap<String, Arc<Mutex<Space>>>>,
}

impl MemoryKv {
    fn space(&self, namespace: &str) -> Arc<Mutex<Space>> {
        let mut spaces = lock(&self.spaces);
        match spaces.get(namespace) {
            Some(space) => space.clone(),
            None => spaces.entry(namespace.to_string()).or_default().clone(),
        }
    }

    /// Bytes `namespace` holds (for tests and status).
    pub fn bytes(&self, namespace: &str) -> usize {
        lock(&self.space(namespace)).bytes
    }
}

/// The store of a module not granted kv: every call fails with
/// [`StoreError::NotGranted`].
#[derive(Debug, Default)]
pub struct DeniedKv;

#[async_trait]
impl KvStore for DeniedKv {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::NotGranted)
    }

    async fn set(
        &self,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: Option<Duration>,
    ) -> Result<(), StoreError> {
        Err(StoreError::NotGranted)
    }

    async fn delete(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::NotGranted)
    }

    async fn increment(
        &self,
        _: &str,
        _: &str,
        _: i64,
        _: Option<Duration>,
    ) -> Result<i64, StoreError> {
        Err(StoreError::NotGranted)
    }
}

#[async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let space = self.space(namespace);
        let mut space = lock(&space);
        Ok(space.live(key, Instant::now()).map(|e| e.value.clone()))
    }

    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(&value)?;
        let now = Instant::now();
        let space = self.space(namespace);
        let mut space = lock(&space);
        space.put(key, value, ttl.map(|ttl| now + ttl), now)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let now = Instant::now();
        let space = self.space(namespace);
        let mut space = lock(&space);
        Ok(space.remove(key).is_some_and(|e| e.live(now)))
    }

    async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StoreError> {
        check_key(key)?;
        let now = Instant::now();
        let space = self.space(namespace);
        let mut space = lock(&space);
        let (current, expires) = match space.live(key, now) {
            Some(e) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or(StoreError::NotANumber)?;
                (n, e.expires)
            }
            None => (0, ttl.map(|ttl| now + ttl)),
        };
        let next = current.checked_add(delta).ok_or(StoreError::Overflow)?;
        space.put(key, next.to_string().into_bytes(), expires, now)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
    use super::*;

    #[tokio::test]
    async fn namespaces_are_separate() {
        let kv = MemoryKv::default();
        kv.set("a", "k", b"1".to_vec(), None).await.unwrap();
        assert_eq!(kv.get("a", "k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("b", "k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn increment_counts_and_refuses_non_numbers() {
        let kv = MemoryKv::default();
        assert_eq!(kv.increment("m", "n", 1, None).await.unwrap(), 1);
        assert_eq!(kv.increment("m", "n", 41, None).await.unwrap(), 42);
        kv.set("m", "s", b"abc".to_vec(), None).await.unwrap();
        assert_eq!(
            kv.increment("m", "s", 1, None).await,
            Err(StoreError::NotANumber)
        );
        kv.set("m", "max", i64::MAX.to_string().into_bytes(), None)
            .await
            .unwrap();
        assert_eq!(
            kv.increment("m", "max", 1, None).await,
            Err(StoreError::Overflow)
        );
    }

    #[tokio::test]
    async fn an_increment_with_a_ttl_is_a_fixed_window() {
        let kv = MemoryKv::default();
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(kv.increment("m", "w", 1, hour).await.unwrap(), 1);
        // An existing key keeps its expiry, whatever the ttl now.
        assert_eq!(
            kv.increment("m", "w", 1, Some(Duration::ZERO))
                .await
                .unwrap(),
            2
        );
        assert_eq!(kv.increment("m", "w", 1, None).await.unwrap(), 3);
        // A window that already ended: each increment starts a new one.
        let ended = Some(Duration::ZERO);
        assert_eq!(kv.increment("m", "z", 5, ended).await.unwrap(), 5);
        assert_eq!(kv.increment("m", "z", 5, ended).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn expired_values_are_gone_and_give_their_bytes_back() {
        let kv = MemoryKv::default();
        kv.set("m", "t", b"x".to_vec(), Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(kv.get("m", "t").await.unwrap(), None);
        assert!(!kv.delete("m", "t").await.unwrap());
        assert_eq!(kv.bytes("m"), 0);
    }

    #[tokio::test]
    async fn bad_keys_and_values_are_refused() {
        let kv = MemoryKv::default();
        assert_eq!(kv.get("m", "").await, Err(StoreError::InvalidKey(0)));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            kv.get("m", &long).await,
            Err(StoreError::InvalidKey(_))
        ));
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            kv.set("m", "k", big, None).await,
            Err(StoreError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn the_byte_budget_holds_and_overwrites_count_once() {
        let kv = MemoryKv::default();
        let mb = vec![7u8; MAX_VALUE_BYTES];
        let fit = MAX_BYTES_PER_NAMESPACE / entry_bytes("k00", &mb);
        for i in 0..fit {
            kv.set("m", &format!("k{i:02}"), mb.clone(), None)
                .await
                .unwrap();
        }
        assert_eq!(
            kv.set("m", "one-more", mb.clone(), None).await,
            Err(StoreError::FullBytes)
        );
        // Replacing a value costs only the difference.
        kv.set("m", "k00", mb.clone(), None).await.unwrap();
        // Another module is not affected.
        kv.set("other", "k", mb.clone(), None).await.unwrap();
        kv.delete("m", "k00").await.unwrap();
        kv.set("m", "one-more", mb, None).await.unwrap();
        assert!(kv.bytes("m") <= MAX_BYTES_PER_NAMESPACE);
    }
}
