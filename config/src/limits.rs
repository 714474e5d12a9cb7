//! Per-module sandbox limits, with the defaults the CLI starts from.

use std::time::Duration;

/// Wall-clock time one event may run. Events are meant to take microseconds;
/// a handler still running after a second is stuck, and holding it longer
/// only keeps a pool slot busy.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);

/// CPU time one event may use (counted in epoch ticks while it computes).
/// Below the deadline: a guest that computes the whole time is cut off
/// sooner than one that waits, and takes less from everyone else.
pub const DEFAULT_CPU: Duration = Duration::from_millis(200);

/// Events of one module that may run at once; more get 503 `busy`. Below
/// the engine's instance slots, so one module cannot take them all.
pub const DEFAULT_MAX_CONCURRENT: usize = 512;

/// on-close events of one module that may run at once; past it a closing
/// connection's on-close is skipped (and counted): a client that connects
/// and closes in a loop cannot queue up guest work without bound.
pub const DEFAULT_MAX_CONCURRENT_CLOSES: usize = 32;

/// Linear memory one instance may grow to. A fresh instance per event needs
/// little; 64 MiB leaves room for JSON documents of several megabytes.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// Events one instance may serve when its module opts in to instance reuse
/// (`#[comet_sdk::handler(reuse_instances)]`); then it is dropped and the
/// next event gets a fresh one, so whatever a guest leaks is bounded.
/// Modules that do not opt in run every event in a fresh instance whatever
/// this says; 1 turns reuse off for a module that does.
pub const DEFAULT_EVENTS_PER_INSTANCE: u32 = 1000;

/// Largest request body handed to a handler. Real-time handlers take small
/// messages; bigger uploads belong to a storage service.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;

/// Largest response body a handler may return.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 4 << 20;

/// Most headers a handler may set on one response.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Most actions one on-message call may return.
pub const DEFAULT_MAX_ACTIONS: usize = 64;

/// Most bytes of header names and values on one response (or hold).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;

/// Most bytes of session attributes one connection may carry: they are
/// kept with the connection for its whole life.
pub const DEFAULT_MAX_SESSION_BYTES: usize = 4 << 10;

/// Largest frame on-message may send (as large as the frames a client may
/// send).
pub const DEFAULT_MAX_SEND_BYTES: usize = 68 << 10;

/// Largest payload on-publish may put in place of the published one, or
/// on-message may publish (the channel payload limit).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 << 10;

/// What one module's events may use and return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one event.
    pub deadline: Duration,
    /// CPU time one event may use.
    pub cpu: Duration,
    /// Events of the module that may run at once.
    pub max_concurrent: usize,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Events one instance may serve if the module opts in to reuse (1:
    /// a fresh instance per event even then).
    pub events_per_instance: u32,
    /// Largest request body passed to on-request, in bytes (larger: 413).
    pub max_request_body: usize,
    /// Largest response body on-request may return, in bytes.
    pub max_response_body: usize,
    /// Most headers on one response.
    pub max_headers: usize,
    /// Most actions from one on-message call.
    pub max_actions: usize,
    /// Most header bytes on one response.
    pub max_header_bytes: usize,
    /// Most bytes of session attributes.
    pub max_session_bytes: usize,
    /// Largest frame on-message may send.
    pub max_send_bytes: usize,
    /// Largest payload a hook may publish or put in place of another.
    pub max_payload_bytes: usize,
}

impl Limits {
    /// Most bytes one event's output may hold in all (every string and
    /// list it returns), whatever it is made of.
    pub fn max_output_bytes(&self) -> usize {
        self.max_response_body + self.max_header_bytes + self.max_session_bytes
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: DEFAULT_DEADLINE,
            cpu: DEFAULT_CPU,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            events_per_instance: DEFAULT_EVENTS_PER_INSTANCE,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_headers: DEFAULT_MAX_HEADERS,
            max_actions: DEFAULT_MAX_ACTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
            max_send_bytes: DEFAULT_MAX_SEND_BYTES,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}
