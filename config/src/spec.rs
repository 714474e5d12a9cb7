//! The checked values the manifest sets for modules, routes and channel
//! history, with their defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits::Limits;

/// Messages kept per channel by default. Enough for a client that drops off
/// for a few seconds of a busy channel to resume without a gap.
pub const DEFAULT_HISTORY_LEN: usize = 1000;
/// How long messages are kept by default.
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(300);

/// How much history one channel keeps (set per namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept.
    pub max_len: usize,
    /// Oldest message kept.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_len: DEFAULT_HISTORY_LEN,
            max_age: DEFAULT_HISTORY_AGE,
        }
    }
}

/// What a module name's events may use: set per module by the manifest.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    /// Sandbox limits of every event.
    pub limits: Limits,
    /// Whether the `kv` import works (else it answers "not granted").
    pub kv: bool,
    /// Values readable through the `config` import.
    pub config: BTreeMap<String, String>,
}

impl Default for ModuleSpec {
    fn default() -> Self {
        ModuleSpec {
            limits: Limits::default(),
            kv: true,
            config: BTreeMap::new(),
        }
    }
}

/// One route: requests for `prefix` (and, if set, `host`) go to `module`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Host name to match (without port, any case); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries: `/api` matches `/api` and
    /// `/api/x`, not `/apix`. `/` matches everything.
    pub prefix: String,
    /// The module name.
    pub module: String,
}

/// A module name that is not one (with at most its first 80 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid module name {0:?}: use 1 to 63 of a-z 0-9 - _, starting with a letter or digit")]
pub struct InvalidModuleName(pub String);

/// Check a module name: it becomes a directory and a URL segment.
pub fn validate_module_name(name: &str) -> Result<(), InvalidModuleName> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(InvalidModuleName(name.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        for ok in ["a", "chat", "my-app_2", "0x"] {
            assert!(validate_module_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a/b", "a.b", &"a".repeat(64)] {
            assert!(validate_module_name(bad).is_err(), "{bad}");
        }
    }
}
