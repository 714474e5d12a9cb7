//! [`HookError`]: a hook that gave no answer. A guest's own refusals (deny,
//! reject) are answers, not errors; this is a guest that failed, a module
//! with no free instance slot, or a hooks module that is not deployed.

use std::sync::Arc;

use super::Hook;

/// Why a hook gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    /// The guest failed in the event: it trapped, ran past its deadline or
    /// CPU budget, hit its memory limit, or answered something invalid (the
    /// runtime's `GuestFault`, kept as the source).
    #[error(transparent)]
    Guest(Box<dyn std::error::Error + Send + Sync>),
    /// Every instance slot (of the module, or of the engine) was taken.
    #[error("too many events are running at once")]
    Busy,
    /// The module whose hooks apply is not deployed.
    #[error("module {0:?} is not deployed")]
    NotDeployed(String),
}

/// A hook of module `module` that gave no answer.
#[derive(Debug, thiserror::Error)]
#[error("{hook} failed: {failure}")]
pub struct HookError {
    /// Which event.
    pub hook: Hook,
    /// The module that was to answer.
    pub module: Arc<str>,
    /// The event's id, when one ran (it is in the log line too).
    pub id: Option<Arc<str>>,
    /// What went wrong.
    pub failure: HookFailure,
}

impl HookError {
    /// Log it as a warning with its module, event and id, which the
    /// client's answer names too.
    pub fn log(&self) {
        tracing::warn!(
            module = &*self.module,
            event = self.hook.wit_name(),
            id = self.id.as_deref().unwrap_or_default(),
            error = %self.failure,
            "hook failed"
        );
    }
}
