//! What can go wrong in one event: the guest's own faults ([`GuestFault`]),
//! and an event that could not get an instance ([`EventError::Busy`]).
//! Only that event fails; the host and every other connection carry on.

use std::time::Duration;

use crate::hooks::{Hook, HookError, HookFailure};

/// What a guest did wrong in one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFault {
    /// The guest was still running at its deadline and was interrupted.
    #[error("the handler ran past its {} ms deadline", .0.as_millis())]
    Timeout(Duration),
    /// The guest computed past its CPU budget and was interrupted.
    #[error("the handler used more than its {} ms of CPU time", .0.as_millis())]
    CpuLimit(Duration),
    /// The guest tried to grow its memory past the limit.
    #[error("the handler tried to use more than its {limit} byte memory limit")]
    MemoryLimit {
        /// The limit in bytes.
        limit: usize,
    },
    /// The guest trapped (panic, `unreachable`, stack overflow...).
    #[error("the handler trapped: {0}")]
    Trap(String),
    /// The guest returned something over the limits or malformed.
    #[error("the handler returned {0}")]
    InvalidOutput(String),
    /// Instantiation failed (its start function trapped, say).
    #[error("the handler could not be started: {0}")]
    Instantiate(String),
}

impl GuestFault {
    /// A short name of the fault, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GuestFault::Timeout(_) => "timeout",
            GuestFault::CpuLimit(_) => "cpu-limit",
            GuestFault::MemoryLimit { .. } => "memory-limit",
            GuestFault::Trap(_) => "trap",
            GuestFault::InvalidOutput(_) => "invalid-output",
            GuestFault::Instantiate(_) => "instantiate",
        }
    }
}

/// Why an event gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The guest failed.
    #[error(transparent)]
    Fault(#[from] GuestFault),
    /// All instance slots (of the module, or of the engine) are taken.
    #[error("too many events are running at once")]
    Busy,
}

impl EventError {
    /// A short name of the failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EventError::Fault(fault) => fault.kind(),
            EventError::Busy => "busy",
        }
    }

    /// The seam's error for event `hook` of `module`, whose id is `id`.
    pub fn into_hook_error(
        self,
        hook: Hook,
        module: &std::sync::Arc<str>,
        id: std::sync::Arc<str>,
    ) -> HookError {
        HookError {
            hook,
            module: module.clone(),
            id: Some(id),
            failure: match self {
                EventError::Fault(fault) => HookFailure::Guest(Box::new(fault)),
                EventError::Busy => HookFailure::Busy,
            },
        }
    }
}

/// The error a lift of a guest's answer stops with past the event's output
/// budget (raised in `wit::lift`, classified as [`GuestFault::InvalidOutput`]).
#[derive(Debug, thiserror::Error)]
#[error("more than {0} bytes of output")]
pub(crate) struct OutputTooLarge(pub(crate) usize);
