//! The WebAssembly runtime: one wasmtime engine per process, components
//! loaded into [`HandlerModule`]s, and each event run in a sandbox of its
//! own. `HandlerModule` implements the `hooks::Hooks` seam, so nothing
//! outside this folder touches wasmtime.
//!
//! Inside: `engine` (the engine and its epoch ticker), `scheduler` (how
//! guest events share the CPU), `loader` (checking and compiling a
//! component), `module` (a loaded module running its events), `reuse` (the
//! idle instances of a module that opts in), `event` (one event's store,
//! limits and deadline), `error` (the guest's faults), `implemented` (the
//! events a component defines), `compile_cache` (compiled components on
//! disk), and `wit` (the WIT world; bindgen output stays there).

pub mod compile_cache;
pub mod engine;
mod error;
mod event;
mod implemented;
mod loader;
mod module;
mod reuse;
mod scheduler;
mod wit;

use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;

pub use compile_cache::{CompileCache, Compiled, content_hash};
pub use engine::{EPOCH_TICK, EngineSettings};
pub use error::{EventError, GuestFault};
pub use loader::LoadError;
pub use module::HandlerModule;
pub use reuse::IDLE_INSTANCES;
pub use wit::{HANDLER_INTERFACE, HANDLER_INTERFACES};

use crate::capabilities::Granted;
use crate::metrics::Metrics;
use comet_config::limits::{DEFAULT_MAX_CONCURRENT_CLOSES, Limits};
use engine::SandboxEngine;
use event::StoreState;
use reuse::{IDLE_SHARE_OF_SLOTS, IdleBudget};
use wit::HostState;

/// The engine and the linker shared by all modules of a host.
pub struct Runtime {
    engine: SandboxEngine,
    linker: Linker<StoreState<HostState>>,
    settings: EngineSettings,
    cache: Option<CompileCache>,
    idle: Arc<IdleBudget>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a module name keeps across its versions: what it was granted (so
/// its kv data and budgets carry over a deploy) and its event slots.
#[derive(Debug)]
pub struct ModuleEnv {
    granted: Granted,
    /// Slots for the module's events running at once
    /// ([`Limits::max_concurrent`]).
    events: Arc<Semaphore>,
    /// Slots for its on-close events running at once
    /// ([`DEFAULT_MAX_CONCURRENT_CLOSES`]).
    closes: Arc<Semaphore>,
}

impl ModuleEnv {
    /// The environment of a module `granted` what it reaches, its events
    /// bounded by `limits`: made once per name and handed to each version
    /// [`Runtime::load`] makes.
    pub fn new(granted: Granted, limits: &Limits) -> Arc<ModuleEnv> {
        Arc::new(ModuleEnv {
            granted,
            events: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            closes: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENT_CLOSES)),
        })
    }

    /// The module's name.
    pub fn name(&self) -> &Arc<str> {
        self.granted.name()
    }
}

impl Runtime {
    /// Create the engine (pooling allocator, epoch ticker) and the linker with
    /// every import the host grants; the modules' events are counted in
    /// `metrics`.
    pub fn new(settings: EngineSettings, metrics: Arc<Metrics>) -> anyhow::Result<Runtime> {
        let engine = SandboxEngine::new(&settings).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine.engine);
        wit::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        let idle = IdleBudget::new(settings.max_instances as usize / IDLE_SHARE_OF_SLOTS);
        Ok(Runtime {
            engine,
            linker,
            settings,
            cache: None,
            idle,
            metrics,
        })
    }

    /// Keep compiled components in `dir` and read them back instead of
    /// compiling again (see [`CompileCache`]).
    pub fn enable_cache(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        self.cache = Some(CompileCache::open(dir, &self.engine.engine)?);
        Ok(())
    }

    /// Where the modules' events are counted.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The compile cache, if enabled.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }
}

#[cfg(test)]
impl Runtime {
    /// A runtime with `settings`, and capabilities whose channels are on a
    /// memory broker with nothing to publish through (a module's own tests).
    pub(crate) fn for_tests(
        settings: EngineSettings,
    ) -> (Runtime, crate::capabilities::Capabilities) {
        use crate::channels::{MemoryBroker, Node, NodeConfig};
        let metrics = Arc::new(Metrics::default());
        let node = Node::new(
            Arc::new(MemoryBroker::default()),
            NodeConfig::default(),
            metrics.clone(),
        );
        let capabilities = crate::capabilities::Capabilities::alone(node, metrics.clone());
        let runtime = Runtime::new(settings, metrics).expect("a runtime for tests");
        (runtime, capabilities)
    }
}

/// The events a component defines (WIT names) and whether it opts in to
/// instance reuse, read from its `comet-hooks` section without compiling
/// it (see `implemented`).
pub fn declared_events(bytes: &[u8]) -> (Vec<&'static str>, bool) {
    let implemented = implemented::Implemented::of_component(bytes);
    (implemented.names(), implemented.reuses_instances())
}
