//! [`RedisKv`]: the kv store on Redis, shared by every node, with the same
//! per-module budgets as the memory store. Each module's keys carry the
//! module in a hash tag; an index (key to expiry), the sizes and the total
//! are kept next to them by scripts, so a set checks the budgets in one
//! round trip, and expired keys give their bytes back the next time the
//! module writes.

use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;

use std::sync::Arc;

use super::Commands;
use crate::capabilities::kv::{
    ENTRY_OVERHEAD_BYTES, KvStore, MAX_BYTES_PER_NAMESPACE, MAX_KEYS_PER_NAMESPACE, StoreError,
    check_key, check_value, entry_bytes,
};
use crate::channels::now_ms;

/// kv on Redis.
pub struct RedisKv {
    commands: Arc<Commands>,
    prefix: String,
    set: Script,
    increment: Script,
    delete: Script,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisKv {
    /// A store over `commands`, with keys under `prefix`.
    pub(crate) fn new(commands: Arc<Commands>, prefix: &str) -> RedisKv {
        RedisKv {
            commands,
            prefix: prefix.to_string(),
            set: Script::new(include_str!("kv_set.lua")),
            increment: Script::new(include_str!("kv_incr.lua")),
            delete: Script::new(include_str!("kv_del.lua")),
        }
    }

    fn value_key(&self, namespace: &str, key: &str) -> String {
        format!("{}.kv.{{{namespace}}}.{key}", self.prefix)
    }

    /// The index, sizes and total keys of a namespace.
    fn meta_keys(&self, namespace: &str) -> [String; 3] {
        [
            format!("{}.kvi.{{{namespace}}}", self.prefix),
            format!("{}.kvs.{{{namespace}}}", self.prefix),
            format!("{}.kvb.{{{namespace}}}", self.prefix),
        ]
    }

    fn invocation<'a>(
        &self,
        script: &'a Script,
        namespace: &str,
        key: &str,
    ) -> ::redis::ScriptInvocation<'a> {
        let mut invocation = script.key(self.value_key(namespace, key));
        for k in self.meta_keys(namespace) {
            invocation.key(k);
        }
        invocation.arg(key);
        invocation
    }
}

#[async_trait]
impl KvStore for RedisKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let value = ::redis::cmd("GET")
            .arg(self.value_key(namespace, key))
            .query_async(&mut self.commands.get())
            .await;
        self.commands.check(&value);
        value.map_err(unavailable)
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
        let size = entry_bytes(key, &value);
        let ttl_ms = ttl.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        let mut invocation = self.invocation(&self.set, namespace, key);
        invocation
            .arg(value)
            .arg(ttl_ms)
            .arg(now_ms())
            .arg(MAX_KEYS_PER_NAMESPACE)
            .arg(MAX_BYTES_PER_NAMESPACE)
            .arg(size);
        let verdict: ::redis::RedisResult<String> =
            invocation.invoke_async(&mut self.commands.get()).await;
        self.commands.check(&verdict);
        let verdict = verdict.map_err(unavailable)?;
        match verdict.as_str() {
            "ok" => Ok(()),
            "full" => Err(StoreError::Full),
            _ => Err(StoreError::FullBytes),
        }
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let existed: ::redis::RedisResult<i64> = self
            .invocation(&self.delete, namespace, key)
            .invoke_async(&mut self.commands.get())
            .await;
        self.commands.check(&existed);
        let existed = existed.map_err(unavailable)?;
        Ok(existed > 0)
    }

    async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StoreError> {
        check_key(key)?;
        let mut invocation = self.invocation(&self.increment, namespace, key);
        let ttl_ms = ttl.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        invocation
            .arg(delta)
            .arg(ttl_ms)
            .arg(now_ms())
            .arg(MAX_KEYS_PER_NAMESPACE)
            .arg(MAX_BYTES_PER_NAMESPACE)
            .arg(key.len() + ENTRY_OVERHEAD_BYTES);
        let reply: ::redis::RedisResult<Vec<String>> =
            invocation.invoke_async(&mut self.commands.get()).await;
        self.commands.check(&reply);
        let reply = reply.map_err(unavailable)?;
        match reply.first().map(String::as_str) {
            Some("ok") => reply
                .get(1)
                .and_then(|v| v.parse().ok())
                .ok_or(StoreError::NotANumber),
            Some("full") => Err(StoreError::Full),
            Some("overflow") => Err(StoreError::Overflow),
            _ => Err(StoreError::NotANumber),
        }
    }
}
