//! The host functions a handler imports (`channels`, `kv`, `log`, `config`),
//! implemented over the services a module was granted.
//!
//! This module depends on the channel layer and the sandbox, never on
//! modules or the registry: publishing runs the channel's on-publish, which
//! needs a module, so it goes through the [`GuestPublisher`] the module hands
//! in with each event.

mod channels;
mod config;
pub mod kv;
mod log;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{EdgeHandler, types};
use crate::channels::Node;
use crate::metrics::Metrics;
use crate::sandbox::StoreState;
use crate::scheduler::Turn;

pub(crate) use channels::GuestPublisher;

/// What one module may reach from inside its sandbox. Shared by all of the
/// module's events.
#[derive(Debug)]
pub struct ModuleServices {
    /// The module's name: tags its log lines and namespaces its kv keys.
    pub name: Arc<str>,
    /// The key-value store (the module's namespace is applied here).
    pub kv: Arc<dyn kv::KvStore>,
    /// Values readable through the `config` import.
    pub config: BTreeMap<String, String>,
    /// The channels the module publishes to and reads from.
    pub channels: Arc<Node>,
    /// Slots for the module's events running at once
    /// ([`Limits::max_concurrent`](crate::Limits)).
    pub events: Arc<Semaphore>,
    /// Slots for its on-close events running at once
    /// ([`DEFAULT_MAX_CONCURRENT_CLOSES`](crate::limits::DEFAULT_MAX_CONCURRENT_CLOSES)).
    pub closes: Arc<Semaphore>,
    /// Where its kv operations are counted.
    pub metrics: Arc<Metrics>,
}

impl ModuleServices {
    /// The services of module `name`, its events bounded by `limits`.
    pub fn new(
        name: Arc<str>,
        kv: Arc<dyn kv::KvStore>,
        config: BTreeMap<String, String>,
        channels: Arc<Node>,
        limits: &crate::Limits,
        metrics: Arc<Metrics>,
    ) -> ModuleServices {
        ModuleServices {
            name,
            kv,
            config,
            channels,
            metrics,
            events: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            closes: Arc::new(Semaphore::new(crate::limits::DEFAULT_MAX_CONCURRENT_CLOSES)),
        }
    }
}

/// Log lines one event may write; past it they are counted, and one line
/// says how many were suppressed.
pub const MAX_LOG_LINES_PER_EVENT: u32 = 100;

/// Why an event runs: what the guest may do differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// An ordinary event.
    Event,
    /// on-publish: publishing is refused, so a hook cannot recurse.
    PublishHook,
    /// The deploy-time start check: publishing is refused, kv is scratch.
    StartCheck,
}

/// Per-event host state: the module's services plus what identifies the event
/// in logs.
#[derive(Debug)]
pub(crate) struct HostState {
    pub(crate) services: Arc<ModuleServices>,
    /// The event's place in the scheduler: host calls that wait for I/O
    /// tell it, so waiting does not count as compute.
    pub(crate) turn: Turn,
    /// The one publish path, with the channel's on-publish: the module
    /// itself, held weakly because a module keeps its idle instances (and
    /// so their host state).
    pub(crate) publisher: Weak<dyn GuestPublisher>,
    /// Why the event runs.
    pub(crate) purpose: Purpose,
    /// Request or connection id of the event, for log lines.
    pub(crate) event_id: Arc<str>,
    /// Log lines written, and those past [`MAX_LOG_LINES_PER_EVENT`].
    pub(crate) log_lines: u32,
    pub(crate) logs_suppressed: u32,
    /// The module's event slot this event holds (freed with the store).
    pub(crate) _slot: Option<OwnedSemaphorePermit>,
}

impl types::Host for HostState {}

/// Add WASI (clocks, random, stdio; no files or sockets are granted) and the
/// `comet:edge` imports to a linker.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState<HostState>>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    EdgeHandler::add_to_linker::<_, HasSelf<HostState>>(linker, |state| &mut state.host)
}
