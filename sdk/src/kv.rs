//! The module's key-value store: small values shared by all events of a module
//! (and only that module), with optional expiry.
//!
//! ```no_run
//! let visits = comet_sdk::kv::increment("visits", 1).unwrap_or(0);
//! ```

use crate::bindings::comet::edge::kv as raw;
pub use crate::bindings::comet::edge::kv::KvError;

/// The value under `key`.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    raw::get(key)
}

/// The value under `key` as UTF-8 text.
pub fn get_string(key: &str) -> Result<Option<String>, KvError> {
    Ok(raw::get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Store `value` under `key`, forever.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
    raw::set(key, value.as_ref(), None)
}

/// Store `value` under `key`; it expires after `ttl`.
pub fn set_with_ttl(
    key: &str,
    value: impl AsRef<[u8]>,
    ttl: core::time::Duration,
) -> Result<(), KvError> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    raw::set(key, value.as_ref(), Some(ms))
}

/// Remove `key`; true if it existed.
pub fn delete(key: &str) -> Result<bool, KvError> {
    raw::delete(key)
}

/// Atomically add `delta` to the integer under `key` (missing counts as 0).
pub fn increment(key: &str, delta: i64) -> Result<i64, KvError> {
    raw::increment(key, delta)
}

/// [`increment`], and a key it creates expires after `ttl` (an existing
/// key keeps its expiry): a fixed-window counter for rate limits, in one
/// atomic step.
///
/// ```no_run
/// use std::time::Duration;
/// let sent = comet_sdk::kv::increment_with_ttl("sent:ann", 1, Duration::from_secs(10));
/// if sent.is_ok_and(|n| n > 20) { /* over 20 in this 10 s window */ }
/// ```
pub fn increment_with_ttl(
    key: &str,
    delta: i64,
    ttl: core::time::Duration,
) -> Result<i64, KvError> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    raw::increment_with_ttl(key, delta, ms)
}
