//! Read-only configuration values from the module's manifest or the command
//! line (`comet run --config-value key=value`).

/// The value for `key`, if set.
pub fn get(key: &str) -> Option<String> {
    crate::bindings::comet::edge::config::get(key)
}
