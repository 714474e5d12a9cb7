//! Where each failure of the layers below gets the HTTP status and code a
//! client sees (the table in PROTOCOL.md): the [`ClientError`] impls of the
//! channel layer's, the runtime's, the hooks' and the registry's errors.
//! Those layers name no status code; this is the one place that does.

use std::sync::Arc;

use http::StatusCode;

use crate::channels::ChannelError;
use crate::deploy::DeployError;
use crate::hooks::{Hook, HookError, HookFailure, Rejected};
use crate::http::ClientError;
use crate::runtime::{EventError, LoadError};
use crate::transports::Denied;

impl ClientError for ChannelError {
    fn status(&self) -> StatusCode {
        match self {
            ChannelError::InvalidChannel(_)
            | ChannelError::InvalidCursor(_)
            | ChannelError::TooManyChannels(_) => StatusCode::BAD_REQUEST,
            ChannelError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ChannelError::ConnectionLimit(_)
            | ChannelError::ChannelLimit(_)
            | ChannelError::Unavailable(_)
            | ChannelError::Closing => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ChannelError::InvalidChannel(_) => "invalid-channel",
            ChannelError::InvalidCursor(_) => "invalid-cursor",
            ChannelError::TooLarge { .. } => "too-large",
            ChannelError::TooManyChannels(_) => "too-many-channels",
            ChannelError::ConnectionLimit(_) => "too-many-connections",
            ChannelError::ChannelLimit(_) => "channel-limit",
            ChannelError::Unavailable(_) => "unavailable",
            ChannelError::Closing => "server-restart",
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            ChannelError::ConnectionLimit(_)
            | ChannelError::ChannelLimit(_)
            | ChannelError::Closing => Some(5),
            ChannelError::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

/// A handler that gave no answer to an HTTP request: 500
/// `handler-failed`, 503 `busy` or `not-deployed`.
impl ClientError for HookFailure {
    fn status(&self) -> StatusCode {
        match self {
            HookFailure::Guest(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HookFailure::Busy | HookFailure::NotDeployed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            HookFailure::Guest(_) => "handler-failed",
            HookFailure::Busy => "busy",
            HookFailure::NotDeployed(_) => "not-deployed",
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            HookFailure::Guest(_) => None,
            HookFailure::Busy => Some(1),
            HookFailure::NotDeployed(_) => Some(5),
        }
    }
}

/// A hook that gave no answer: on-request's failure is the request's
/// (`handler-failed`, with the guest's message); the others' are 500
/// `hook-failed` (the message names the hook), or 503 `busy` /
/// `not-deployed`.
impl ClientError for HookError {
    fn status(&self) -> StatusCode {
        self.failure.status()
    }

    fn code(&self) -> &'static str {
        match (&self.failure, self.hook) {
            (HookFailure::Guest(_), Hook::Request) => "handler-failed",
            (HookFailure::Guest(_), _) => "hook-failed",
            (failure, _) => failure.code(),
        }
    }

    fn retry_after(&self) -> Option<u32> {
        self.failure.retry_after()
    }

    fn request_id(&self) -> Option<Arc<str>> {
        self.id.clone()
    }
}

impl ClientError for Rejected {
    fn status(&self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }

    fn code(&self) -> &'static str {
        "rejected"
    }
}

impl ClientError for Denied {
    fn status(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }

    fn code(&self) -> &'static str {
        "denied"
    }
}

impl ClientError for LoadError {
    fn status(&self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }

    fn code(&self) -> &'static str {
        match self {
            LoadError::NotWasm => "not-wasm",
            LoadError::CoreModule => "core-module",
            LoadError::Invalid(_) => "invalid-component",
            LoadError::WrongWorld(_) => "wrong-world",
            LoadError::MemoryOverEngineMax { .. } | LoadError::MemoryOverSlot { .. } => {
                "memory-limit"
            }
        }
    }
}

impl ClientError for DeployError {
    fn status(&self) -> StatusCode {
        match self {
            DeployError::InvalidName(_) => StatusCode::BAD_REQUEST,
            DeployError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DeployError::Load(e) => e.status(),
            DeployError::Start(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DeployError::NotFound(_) => StatusCode::NOT_FOUND,
            DeployError::NoPrevious(_) | DeployError::InUse { .. } => StatusCode::CONFLICT,
            DeployError::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            DeployError::InvalidName(_) => "invalid-name",
            DeployError::TooLarge { .. } => "too-large",
            DeployError::Load(e) => e.code(),
            DeployError::Start(_) => "does-not-start",
            DeployError::NotFound(_) => "not-found",
            DeployError::NoPrevious(_) => "no-previous-version",
            DeployError::InUse { .. } => "in-use",
            DeployError::Storage { .. } => "storage",
        }
    }
}

/// An event that could not start for want of a slot is the only failure a
/// caller outside a hook sees directly (a deploy's start check).
impl ClientError for EventError {
    fn status(&self) -> StatusCode {
        match self {
            EventError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            EventError::Fault(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            EventError::Busy => "busy",
            EventError::Fault(_) => "handler-failed",
        }
    }

    fn retry_after(&self) -> Option<u32> {
        matches!(self, EventError::Busy).then_some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ApiError;
    use crate::runtime::GuestFault;

    #[test]
    fn hook_failures_keep_their_codes() {
        let failed = |hook, failure| HookError {
            hook,
            module: "m".into(),
            id: Some("id-1".into()),
            failure,
        };
        let trap = || HookFailure::Guest(Box::new(GuestFault::Trap("boom".into())));
        let e = ApiError::from(failed(Hook::Connect, trap()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "hook-failed")
        );
        assert_eq!(e.message, "on-connect failed: the handler trapped: boom");
        assert_eq!(e.request_id.as_deref(), Some("id-1"));
        let e = ApiError::from(failed(Hook::Request, trap()));
        assert_eq!(e.code, "handler-failed");
        let e = ApiError::from(failed(Hook::Subscribe, HookFailure::Busy));
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, "busy", Some(1))
        );
        let e = ApiError::from(failed(Hook::Publish, HookFailure::NotDeployed("x".into())));
        assert_eq!((e.code, e.retry_after), ("not-deployed", Some(5)));
    }

    #[test]
    fn a_module_over_the_slot_is_a_memory_limit() {
        let e = LoadError::MemoryOverSlot {
            max: 1,
            detail: String::new(),
        };
        assert_eq!(e.code(), "memory-limit");
    }
}
