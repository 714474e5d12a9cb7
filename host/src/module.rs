//! Handler modules: validating and compiling a component, and running its
//! events, each in a fresh sandbox (or, for an event the component leaves
//! to the SDK's default, answering it without one: see `implemented`).
//!
//! A module that opts in to instance reuse keeps up to [`IDLE_INSTANCES`]
//! instances that ended an event well, and the next event takes one instead
//! of instantiating; each serves at most its limit `events_per_instance`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use http::StatusCode;
use wasmtime::component::{Component, Linker};

use wasmtime::component::InstancePre;

use crate::bindings::{
    Action, CloseInfo, ConnectOutcome, ConnectRequest, Connection, HANDLER_INTERFACE,
    HandlerExports, Header, Payload, Publication, PublishVerdict, Request, RequestOutcome,
    Response, SubscribeOutcome, SubscribeRequest,
};
use crate::compile_cache::{CompileCache, Compiled, content_hash};
use crate::engine::{EngineSettings, SandboxEngine, Ticker};
use crate::guest_output::{Reader, budgeted};
use crate::http::ClientError;
use crate::implemented::{Hook, Implemented};
use crate::imports::{self, HostState, ModuleServices, Purpose};
use crate::limits::Limits;
use crate::metrics::{EventMeter, Metrics};
use crate::sandbox::{Event, EventError, EventLabel, StoreState};
use crate::scheduler::{Scheduler, Turn};

/// The store data of every event.
type State = StoreState<HostState>;

/// Idle instances one module that opts in to reuse keeps at most: about the
/// events that run at once on this machine's threads. Each holds a pool
/// slot and one of the module's `max_concurrent` permits while idle; an
/// instance that ends an event with the list full is dropped.
pub const IDLE_INSTANCES: usize = 16;

/// The share of the engine's instance slots that idle instances of all
/// modules together may hold (one in four), so that the modules that
/// reuse cannot leave the others without a slot (`503 busy`).
const IDLE_SHARE_OF_SLOTS: usize = 4;

/// Idle instances held by all modules of one runtime, against their cap.
#[derive(Debug)]
struct IdleBudget {
    held: AtomicUsize,
    max: usize,
}

impl IdleBudget {
    /// Count one more idle instance, if under the cap.
    fn reserve(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Call export `$export` of `$event` (a started `Event`, moved in and handed
/// back with the result) with `$args` (moved in), within the module's output
/// budget, where the scheduler puts it: on this task while it is cool, on
/// the hot runtime once it computes for long (see `scheduler`).
macro_rules! call_export {
    ($module:expr, $event:ident, $export:ident($($arg:ident),*)) => {{
        let turn = $event.turn.clone();
        let exports = $module.exports.clone();
        let budget = $module.limits.max_output_bytes();
        let mut $event = $event;
        $module
            .scheduler
            .run(&turn, &$module.meter, async move {
                let raw = budgeted(
                    budget,
                    exports.$export(&mut $event.store, &$event.instance, $(&$arg),*),
                )
                .await;
                ($event, raw)
            })
            .await
    }};
}

/// Finds the module that serves a name now: how a module reaches the hooks
/// module of another namespace. The registry implements it; a module that
/// stands alone has none.
pub trait ModuleLookup: Send + Sync + std::fmt::Debug {
    /// The version of `name` new events should run, if deployed.
    fn current(&self, name: &str) -> Option<Arc<HandlerModule>>;
}

/// The lookup of a module that stands alone (benchmarks, tests): the hooks
/// of other namespaces are its own.
pub fn standalone() -> Weak<dyn ModuleLookup> {
    #[derive(Debug)]
    struct Nothing;
    impl ModuleLookup for Nothing {
        fn current(&self, _: &str) -> Option<Arc<HandlerModule>> {
            None
        }
    }
    Weak::<Nothing>::new()
}

/// Why a file could not be loaded as a handler. Each message says what is
/// wrong and, where there is one, the usual fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic bytes")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the handler for the \
         wasm32-wasip2 target (`cargo build --target wasm32-wasip2`), which emits a component, \
         or let `comet run DIR` build the crate (with `wasi = false` under \
         [package.metadata.comet], it makes the component of a wasm32-unknown-unknown build)"
    )]
    CoreModule,
    /// Looks like a component but does not validate or compile.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// A valid component built for some other world.
    #[error("this component is not a Comet handler: {0}")]
    WrongWorld(String),
    /// The component declares more memory than an instance slot holds.
    #[error("the component needs more memory than an instance may have ({max} bytes): {detail}")]
    MemoryOverSlot {
        /// The slot size.
        max: usize,
        /// wasmtime's account.
        detail: String,
    },
    /// The module asks for more memory than the engine's pool slots hold.
    #[error("memory limit of {asked} bytes is over the engine's maximum of {max} bytes")]
    MemoryOverEngineMax {
        /// Requested limit.
        asked: usize,
        /// The engine's slot size.
        max: usize,
    },
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

/// A hook (on-connect, on-subscribe, on-publish, on-message, on-close) that trapped, ran out of
/// time or memory, or returned something invalid: 500 `hook-failed`, or
/// 503 `busy` when every instance slot was taken.
#[derive(Debug, thiserror::Error)]
#[error("{hook} failed: {error}")]
pub struct HookError {
    /// Which hook.
    pub hook: &'static str,
    /// What went wrong.
    pub error: EventError,
    /// The event's id (also in the log line).
    pub id: Option<Arc<str>>,
}

impl HookError {
    /// Log it with the module and event id (the id is in the answer too).
    pub(crate) fn logged(
        hook: &'static str,
        module: &str,
        id: Arc<str>,
        error: EventError,
    ) -> Self {
        tracing::warn!(module, event = hook, id = &*id, %error, "hook failed");
        HookError {
            hook,
            error,
            id: Some(id),
        }
    }
}

impl ClientError for HookError {
    fn status(&self) -> StatusCode {
        match self.error {
            EventError::Busy | EventError::NotDeployed(_) => self.error.status(),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self.error {
            EventError::Busy | EventError::NotDeployed(_) => self.error.code(),
            _ => "hook-failed",
        }
    }

    fn retry_after(&self) -> Option<u32> {
        self.error.retry_after()
    }

    fn request_id(&self) -> Option<Arc<str>> {
        self.id.clone()
    }
}

/// The engine and linker shared by all modules of a host.
pub struct Runtime {
    engine: SandboxEngine,
    linker: Linker<State>,
    settings: EngineSettings,
    cache: Option<CompileCache>,
    idle: Arc<IdleBudget>,
    /// Where the modules' events are counted.
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Create the engine (pooling allocator, epoch ticker) and the linker with
    /// every import the host grants; events are counted in `metrics`.
    pub fn new(settings: EngineSettings, metrics: Arc<Metrics>) -> anyhow::Result<Runtime> {
        let engine = SandboxEngine::new(&settings).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine.engine);
        imports::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        let idle = Arc::new(IdleBudget {
            held: AtomicUsize::new(0),
            max: settings.max_instances as usize / IDLE_SHARE_OF_SLOTS,
        });
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

    /// Validate, compile and pre-link a handler component. `lookup` finds
    /// the hooks modules of other namespaces.
    pub fn load(
        &self,
        bytes: &[u8],
        services: Arc<ModuleServices>,
        limits: Limits,
        lookup: Weak<dyn ModuleLookup>,
    ) -> Result<HandlerModule, LoadError> {
        if limits.memory_bytes > self.settings.max_memory_bytes {
            return Err(LoadError::MemoryOverEngineMax {
                asked: limits.memory_bytes,
                max: self.settings.max_memory_bytes,
            });
        }
        check_header(bytes)?;
        let hash = content_hash(bytes);
        let engine = &self.engine.engine;
        let (component, compiled) = match &self.cache {
            Some(cache) => cache.load(engine, bytes, &hash),
            None => Component::new(engine, bytes).map(|c| (c, Compiled::Compiled)),
        }
        .map_err(|e| {
            let detail = format!("{e:#}");
            // wasmtime has no error type for it; its message is stable
            // within the pinned version.
            if detail.contains("does not fit in pooling allocator requirements") {
                LoadError::MemoryOverSlot {
                    max: self.settings.max_memory_bytes,
                    detail,
                }
            } else {
                LoadError::Invalid(detail)
            }
        })?;
        check_exports(&component, &self.engine.engine)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let exports = HandlerExports::resolve(&pre).map_err(|e| {
            LoadError::WrongWorld(format!(
                "its `{HANDLER_INTERFACE}` export does not match this host's: {e:#}"
            ))
        })?;
        let meter = self.metrics.meter(&services.name);
        Ok(HandlerModule {
            pre,
            exports,
            implemented: Implemented::of_component(bytes),
            services,
            limits,
            hash,
            compiled,
            lookup,
            scheduler: Scheduler::for_this_machine(),
            idle: Mutex::new(Vec::new()),
            idle_budget: self.idle.clone(),
            retired: AtomicBool::new(false),
            ticker: self.engine.ticker.clone(),
            meter,
        })
    }
}

/// Tell "not wasm" and "core module" apart from real component errors by the
/// preamble: magic, then a version (1) and layer (0 core, 1 component).
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    if layer == 0 {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

fn check_exports(component: &Component, engine: &wasmtime::Engine) -> Result<(), LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|name| name == HANDLER_INTERFACE) {
        return Ok(());
    }
    let listed = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports.join(", ")
    };
    Err(LoadError::WrongWorld(format!(
        "it does not export `{HANDLER_INTERFACE}` (it exports {listed}); \
         build it with comet-sdk and `#[comet_sdk::handler]`"
    )))
}

/// A loaded handler: compiled, linked and ready to instantiate per event.
pub struct HandlerModule {
    pre: InstancePre<State>,
    exports: HandlerExports,
    /// The events the guest defines; the others get the SDK's default
    /// answer without an instance.
    implemented: Implemented,
    services: Arc<ModuleServices>,
    limits: Limits,
    hash: String,
    compiled: Compiled,
    lookup: Weak<dyn ModuleLookup>,
    scheduler: Scheduler,
    /// Instances that served an event well and may serve another (only
    /// if the module opts in to reuse; see [`HandlerModule::reuses_instances`]).
    idle: Mutex<Vec<Event<HostState>>>,
    /// The runtime's count of idle instances, which `idle` is part of.
    idle_budget: Arc<IdleBudget>,
    /// Replaced or removed: keeps no idle instance (their pool slots and
    /// permits go back while events of this version may still run).
    retired: AtomicBool,
    /// The epoch ticker, kept awake while an event of this module runs.
    ticker: Arc<Ticker>,
    /// Its event metrics.
    meter: EventMeter,
}

impl Drop for HandlerModule {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner());
        self.idle_budget.release(idle.len());
    }
}

impl std::fmt::Debug for HandlerModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerModule")
            .field("name", &self.services.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl HandlerModule {
    /// The events the guest runs itself (WIT names); the others are
    /// answered with the SDK's defaults.
    pub fn implemented_events(&self) -> Vec<&'static str> {
        self.implemented.names()
    }

    /// Whether one instance may serve several events: the module opts in
    /// and its limit `events_per_instance` is over 1.
    pub fn reuses_instances(&self) -> bool {
        self.implemented.reuses_instances() && self.limits.events_per_instance > 1
    }

    /// Whether `hook` runs in the guest (else its default answer is fixed).
    pub(crate) fn runs(&self, hook: Hook) -> bool {
        self.implemented.runs(hook)
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.services.name
    }

    /// The module whose on-subscribe and on-publish decide for `channel`:
    /// its namespace's hooks module, else this one.
    pub(crate) fn hooks_for(self: &Arc<Self>, channel: &str) -> Result<Arc<Self>, EventError> {
        let Some(name) = self.services.channels.rules(channel).hooks.as_deref() else {
            return Ok(self.clone());
        };
        if name == self.name() {
            return Ok(self.clone());
        }
        let Some(lookup) = self.lookup.upgrade() else {
            return Ok(self.clone());
        };
        lookup
            .current(name)
            .ok_or_else(|| EventError::NotDeployed(name.to_string()))
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    /// Whether it was compiled now or read from the compile cache.
    pub fn compiled(&self) -> Compiled {
        self.compiled
    }

    /// The limits its events run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The services the module was granted.
    pub fn services(&self) -> &Arc<ModuleServices> {
        &self.services
    }

    async fn start(
        self: &Arc<Self>,
        event_id: Arc<str>,
        purpose: Purpose,
    ) -> Result<Event<HostState>, EventError> {
        let label = EventLabel {
            module: self.services.name.clone(),
            id: event_id.clone(),
        };
        let services = match purpose {
            // Whatever the check writes goes nowhere.
            Purpose::StartCheck => Arc::new(ModuleServices::new(
                self.services.name.clone(),
                Arc::new(crate::imports::kv::MemoryKv::default()),
                self.services.config.clone(),
                self.services.channels.clone(),
                &self.limits,
                self.services.metrics.clone(),
            )),
            Purpose::Event | Purpose::PublishHook => self.services.clone(),
        };
        let turn = Turn::default();
        let host = |slot| HostState {
            services,
            turn: turn.clone(),
            publisher: Arc::downgrade(self) as Weak<dyn imports::GuestPublisher>,
            event_id,
            purpose,
            log_lines: 0,
            logs_suppressed: 0,
            _slot: slot,
        };
        if purpose != Purpose::StartCheck
            && let Some(mut event) = self.take_idle()
        {
            // The idle instance kept its permit.
            let slot = event.store.data_mut().host._slot.take();
            event.store.data_mut().host = host(slot);
            event.restart(label, turn, self.ticker.ticking());
            return Ok(event);
        }
        // One module may not take every instance slot.
        let slot = self
            .services
            .events
            .clone()
            .try_acquire_owned()
            .map_err(|_| EventError::Busy)?;
        let host = host(Some(slot));
        let ticking = self.ticker.ticking();
        let event =
            Event::start(&self.pre, &self.limits, host, label, turn.clone(), ticking).await?;
        if purpose != Purpose::StartCheck {
            self.meter.instance_started();
        }
        Ok(event)
    }

    /// This version no longer takes new events (a newer one replaced it, or
    /// it was removed): drop its idle instances and keep none from now on.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        // Taken under the lock, dropped after it (a Store drop resets memory).
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        self.idle_budget.release(idle.len());
        drop(idle);
    }

    fn take_idle(&self) -> Option<Event<HostState>> {
        if !self.reuses_instances() {
            return None;
        }
        let event = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        self.idle_budget.release(1);
        Some(event)
    }

    /// Keep an instance whose event ended well for the next event, if the
    /// module reuses instances and this one may serve more; else drop it.
    fn park(&self, event: Event<HostState>) {
        if !self.reuses_instances()
            || event.store.data().host.purpose == Purpose::StartCheck
            || !event.reusable(self.limits.events_per_instance)
        {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: `retire` empties the list after setting it.
        if idle.len() < IDLE_INSTANCES
            && !self.retired.load(Ordering::Relaxed)
            && self.idle_budget.reserve()
        {
            idle.push(event);
        }
    }

    /// Instantiate once and drop the instance without calling any export:
    /// proves the module starts within its limits (and is the cost every
    /// event pays before the guest runs).
    pub async fn check_instantiate(self: &Arc<Self>) -> Result<(), EventError> {
        let mut event = self
            .start("instantiate-check".into(), Purpose::StartCheck)
            .await?;
        event.finish(Ok(()))
    }

    /// Run on-connect in a fresh instance (default: accept, no session).
    pub(crate) async fn on_connect(
        self: &Arc<Self>,
        event_id: Arc<str>,
        request: ConnectRequest,
    ) -> Result<ConnectOutcome, EventError> {
        if !self.implemented.runs(Hook::Connect) {
            return Ok(ConnectOutcome::Accept(Vec::new()));
        }
        self.observed("on-connect", async {
            let event = self.start(event_id, Purpose::Event).await?;
            let (event, raw) = call_export!(self, event, on_connect(request));
            let raw = self.end(event, raw)?;
            Reader::new(&self.limits).connect_outcome(raw)
        })
        .await
    }

    /// Run on-subscribe in a fresh instance (default: allow).
    pub(crate) async fn on_subscribe(
        self: &Arc<Self>,
        event_id: Arc<str>,
        connection: Connection,
        request: SubscribeRequest,
    ) -> Result<SubscribeOutcome, EventError> {
        if !self.implemented.runs(Hook::Subscribe) {
            return Ok(SubscribeOutcome::Allow);
        }
        self.observed("on-subscribe", async {
            let event = self.start(event_id, Purpose::Event).await?;
            let (event, raw) = call_export!(self, event, on_subscribe(connection, request));
            let raw = self.end(event, raw)?;
            Reader::new(&self.limits).subscribe_outcome(raw)
        })
        .await
    }

    /// Run on-publish in a fresh instance (default: accept). Publishing
    /// from inside on-publish is refused, so a hook cannot recurse.
    pub(crate) async fn on_publish(
        self: &Arc<Self>,
        event_id: Arc<str>,
        publication: Publication,
    ) -> Result<PublishVerdict, EventError> {
        if !self.implemented.runs(Hook::Publish) {
            return Ok(PublishVerdict::Accept);
        }
        self.observed("on-publish", async {
            let event = self.start(event_id, Purpose::PublishHook).await?;
            let (event, raw) = call_export!(self, event, on_publish(publication));
            let raw = self.end(event, raw)?;
            Reader::new(&self.limits).publish_verdict(raw)
        })
        .await
    }

    /// Run on-message in a fresh instance (default: no actions).
    pub(crate) async fn on_message(
        self: &Arc<Self>,
        event_id: Arc<str>,
        connection: Connection,
        frame: Payload,
    ) -> Result<Vec<Action>, EventError> {
        if !self.implemented.runs(Hook::Message) {
            return Ok(Vec::new());
        }
        self.observed("on-message", async {
            let event = self.start(event_id, Purpose::Event).await?;
            let (event, raw) = call_export!(self, event, on_message(connection, frame));
            let raw = self.end(event, raw)?;
            Reader::new(&self.limits).actions(raw)
        })
        .await
    }

    /// Run on-close in a fresh instance (default: nothing).
    pub(crate) async fn on_close(
        self: &Arc<Self>,
        event_id: Arc<str>,
        connection: Connection,
        info: CloseInfo,
    ) -> Result<(), EventError> {
        if !self.implemented.runs(Hook::Close) {
            return Ok(());
        }
        self.observed("on-close", async {
            let event = self.start(event_id, Purpose::Event).await?;
            let (event, result) = call_export!(self, event, on_close(connection, info));
            self.end(event, result)
        })
        .await
    }

    /// Run on-request in a fresh instance (default: 404, as the SDK's
    /// `Response::not_found`).
    pub(crate) async fn on_request(
        self: &Arc<Self>,
        event_id: Arc<str>,
        request: Request,
    ) -> Result<RequestOutcome, EventError> {
        if !self.implemented.runs(Hook::Request) {
            return Ok(RequestOutcome::Respond(Response {
                status: 404,
                headers: vec![Header {
                    name: "content-type".into(),
                    value: b"text/plain; charset=utf-8".to_vec(),
                }],
                body: b"not found\n".to_vec(),
            }));
        }
        self.observed("on-request", async {
            let event = self.start(event_id, Purpose::Event).await?;
            let (event, raw) = call_export!(self, event, on_request(request));
            let raw = self.end(event, raw)?;
            Reader::new(&self.limits).request_outcome(raw)
        })
        .await
    }

    /// Run one event of kind `event`, counting it and its outcome in the
    /// metrics.
    async fn observed<T>(
        &self,
        event: &'static str,
        run: impl std::future::Future<Output = Result<T, EventError>>,
    ) -> Result<T, EventError> {
        let started = std::time::Instant::now();
        let result = run.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.meter.event(event, outcome, started.elapsed());
        result
    }

    /// The end of an event: what the guest printed and the log lines it
    /// was not allowed are logged, a wasmtime error becomes the event's, and
    /// an instance that ended well may be kept for the next event.
    fn end<R>(
        &self,
        mut event: Event<HostState>,
        result: wasmtime::Result<R>,
    ) -> Result<R, EventError> {
        let host = &event.store.data().host;
        if host.logs_suppressed > 0 {
            tracing::warn!(
                target: "guest",
                module = self.name(),
                event = &*host.event_id,
                "suppressed {} log lines past the limit of {} per event",
                host.logs_suppressed,
                crate::imports::MAX_LOG_LINES_PER_EVENT
            );
        }
        let result = event.finish(result);
        if result.is_ok() {
            self.park(event);
        }
        result
    }

    /// Prove the module starts: run its initialisers and one real export
    /// (on-close, with a made-up connection) in a sandbox whose kv is a
    /// scratch store and which may not publish. A module whose static
    /// initialisers loop, trap or exhaust memory fails here, at deploy,
    /// instead of in every event afterwards.
    pub async fn check_starts(self: &Arc<Self>) -> Result<(), EventError> {
        let event = self
            .start("start-check".into(), Purpose::StartCheck)
            .await?;
        let connection = Connection {
            id: "start-check".into(),
            transport: crate::bindings::Transport::Websocket,
            session: Vec::new(),
        };
        let info = CloseInfo {
            code: None,
            reason: "start check at deploy".into(),
        };
        let (event, result) = call_export!(self, event, on_close(connection, info));
        self.end(event, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_larger_than_a_slot_is_a_memory_limit() {
        let runtime = Runtime::new(
            EngineSettings {
                max_instances: 2,
                ..EngineSettings::default()
            },
            Arc::default(),
        )
        .unwrap();
        // 2000 pages: 125 MiB, over the 64 MiB slot.
        let bytes = wat::parse_str(
            "(component (core module $m (memory 2000)) (core instance (instantiate $m)))",
        )
        .unwrap();
        let channels = crate::channels::Node::new(
            Arc::new(crate::channels::MemoryBroker::default()),
            crate::channels::NodeConfig::default(),
            Arc::default(),
        );
        let services = Arc::new(ModuleServices::new(
            "big".into(),
            Arc::new(crate::imports::kv::MemoryKv::default()),
            Default::default(),
            channels,
            &Limits::default(),
            Arc::default(),
        ));
        let e = runtime
            .load(&bytes, services, Limits::default(), standalone())
            .unwrap_err();
        assert!(matches!(e, LoadError::MemoryOverSlot { .. }), "{e}");
        assert_eq!(e.code(), "memory-limit");
    }

    #[test]
    fn header_check_tells_core_modules_and_junk_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0asm"), Err(LoadError::NotWasm)));
        let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
        assert!(matches!(check_header(&core), Err(LoadError::CoreModule)));
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(check_header(&component).is_ok());
    }
}
