//! Per-module sandbox limits, with the defaults the CLI starts from.

use std::time::Duration;

/// Wall-clock time one event may run. Events are meant to take microseconds;
/// a handler still running after a second is stuck, and holding it longer
/// only keeps a pool slot busy.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);

/// Linear memory one instance may grow to. A fresh instance per event needs
/// little; 64 MiB leaves room for JSON documents of several megabytes.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// Largest request body handed to a handler. Real-time handlers take small
/// messages; bigger uploads belong to a storage service.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;

/// Largest response body a handler may return.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 4 << 20;

/// Most headers a handler may set on one response.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Most actions one on-message call may return.
pub const DEFAULT_MAX_ACTIONS: usize = 64;

/// What one module's events may use and return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one event.
    pub deadline: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest request body passed to on-request, in bytes (larger: 413).
    pub max_request_body: usize,
    /// Largest response body on-request may return, in bytes.
    pub max_response_body: usize,
    /// Most headers on one response.
    pub max_headers: usize,
    /// Most actions from one on-message call.
    pub max_actions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_headers: DEFAULT_MAX_HEADERS,
            max_actions: DEFAULT_MAX_ACTIONS,
        }
    }
}
