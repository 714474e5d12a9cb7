//! Structured log lines in the host's log, tagged with the module and the
//! current request or connection.
//!
//! ```no_run
//! comet_sdk::log::info("user joined", &[("room", "lobby")]);
//! ```

use crate::bindings::comet::edge::log as raw;
pub use crate::bindings::comet::edge::log::Level;

/// Write a line at `level` with key-value fields.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    raw::log(level, message, &fields);
}

/// A debug line.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// An info line.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// A warning.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// An error line.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}
