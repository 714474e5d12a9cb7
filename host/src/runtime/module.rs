//! A loaded module running its events: each in a fresh sandbox, or in an
//! idle instance of its own for a module that opts in to reuse (`reuse`),
//! or, for an event the component leaves to the SDK's default, answered
//! without one (`implemented`). [`HandlerModule`] implements the
//! `hooks::Hooks` seam.

use std::sync::Arc;

use async_trait::async_trait;
use wasmtime::component::InstancePre;

use super::compile_cache::Compiled;
use super::engine::Ticker;
use super::error::{EventError, GuestFault};
use super::event::{Event, EventLabel, StoreState};
use super::implemented::Implemented;
use super::reuse::Idle;
use super::scheduler::{Scheduler, Turn};
use super::wit::{HandlerExports, HostState, Reader, budgeted};
use super::{ModuleEnv, Runtime};
use crate::capabilities::{EventInfo, Purpose};
use crate::channels::Payload;
use crate::hooks::{
    Action, CloseInfo, ConnectOutcome, ConnectRequest, ConnectionInfo, Hook, HookError, Hooks,
    Publication, PublishVerdict, Request, RequestOutcome, Response, SubscribeOutcome,
    SubscribeRequest,
};
use crate::http::next_request_id;
use crate::metrics::EventMeter;
use comet_config::limits::Limits;

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
                    exports.$export(&mut $event.store, &$event.instance, $($arg),*),
                )
                .await;
                ($event, raw)
            })
            .await
    }};
}

/// Run event `$hook` of `$module` in a sandbox started for `$purpose`: call
/// export `$export` with `$args` (owned), read the answer with
/// `Reader::$read`, and count and log it (`observed`).
macro_rules! run_event {
    ($module:expr, $hook:expr, $id:ident, $purpose:expr, $export:ident($($arg:ident),*) => $read:ident) => {
        $module
            .observed($hook, $id.clone(), async {
                let event = $module.start($id, $purpose).await?;
                let (event, raw) = call_export!($module, event, $export($($arg),*));
                let raw = $module.end(event, raw)?;
                Ok(Reader::new(&$module.limits).$read(raw)?)
            })
            .await
    };
}

/// A loaded handler: compiled, linked and ready to instantiate per event.
pub struct HandlerModule {
    pre: InstancePre<StoreState<HostState>>,
    exports: HandlerExports,
    /// The events the guest defines; the others get the SDK's default
    /// answer without an instance.
    implemented: Implemented,
    env: Arc<ModuleEnv>,
    limits: Limits,
    hash: String,
    compiled: Compiled,
    scheduler: Scheduler,
    /// Instances that served an event well and may serve another (only
    /// if the module opts in to reuse; see [`HandlerModule::reuses_instances`]).
    idle: Idle<HostState>,
    /// The epoch ticker, kept awake while an event of this module runs.
    ticker: Arc<Ticker>,
    /// Its event metrics.
    meter: EventMeter,
}

impl std::fmt::Debug for HandlerModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerModule")
            .field("name", self.env.name())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl HandlerModule {
    /// A module of `runtime` (see `Runtime::load`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        pre: InstancePre<StoreState<HostState>>,
        exports: HandlerExports,
        implemented: Implemented,
        env: Arc<ModuleEnv>,
        limits: Limits,
        hash: String,
        compiled: Compiled,
        runtime: &Runtime,
    ) -> HandlerModule {
        HandlerModule {
            meter: runtime.metrics.meter(env.name()),
            pre,
            exports,
            implemented,
            env,
            limits,
            hash,
            compiled,
            scheduler: Scheduler::for_this_machine(),
            idle: Idle::new(runtime.idle.clone()),
            ticker: runtime.engine.ticker.clone(),
        }
    }

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

    /// The module's name.
    pub fn name(&self) -> &str {
        self.env.name()
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

    /// What its name keeps across versions (grants, event slots).
    pub fn env(&self) -> &Arc<ModuleEnv> {
        &self.env
    }

    /// Events of the module (all its versions) running now.
    pub fn running(&self) -> usize {
        self.limits
            .max_concurrent
            .max(1)
            .saturating_sub(self.env.events.available_permits())
    }

    /// Idle instances kept now (for a module that reuses them).
    pub fn idle_instances(&self) -> usize {
        self.idle.len()
    }

    async fn start(
        &self,
        event_id: Arc<str>,
        purpose: Purpose,
    ) -> Result<Event<HostState>, EventError> {
        let label = EventLabel {
            module: self.env.name().clone(),
            id: event_id.clone(),
        };
        let turn = Turn::default();
        let info = EventInfo {
            id: event_id,
            purpose,
        };
        let host = |slot| HostState {
            caps: self.env.granted.prepare(&info),
            turn: turn.clone(),
            purpose,
            slot,
        };
        if purpose != Purpose::StartCheck
            && self.reuses_instances()
            && let Some(mut event) = self.idle.take()
        {
            // The idle instance kept its permit.
            let slot = event.store.data_mut().host.slot.take();
            event.store.data_mut().host = host(slot);
            event.restart(label, turn, self.ticker.ticking());
            return Ok(event);
        }
        // One module may not take every instance slot.
        let slot = self
            .env
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
    pub fn retire(&self) {
        self.idle.retire();
    }

    /// Keep an instance whose event ended well for the next event, if the
    /// module reuses instances and this one may serve more; else drop it.
    fn park(&self, event: Event<HostState>) {
        if self.reuses_instances()
            && event.store.data().host.purpose != Purpose::StartCheck
            && event.reusable(self.limits.events_per_instance)
        {
            self.idle.park(event);
        }
    }

    /// Instantiate once and drop the instance without calling any export:
    /// proves the module starts within its limits (and is the cost every
    /// event pays before the guest runs).
    pub async fn check_instantiate(&self) -> Result<(), EventError> {
        let mut event = self
            .start("instantiate-check".into(), Purpose::StartCheck)
            .await?;
        Ok(event.finish(Ok(()))?)
    }

    /// Prove the module starts: run its initialisers and one real export
    /// (on-close, with a made-up connection) in a sandbox whose kv is a
    /// scratch store and which may not publish. A module whose static
    /// initialisers loop, trap or exhaust memory fails here, at deploy,
    /// instead of in every event afterwards.
    pub async fn check_starts(&self) -> Result<(), EventError> {
        let event = self
            .start("start-check".into(), Purpose::StartCheck)
            .await?;
        let connection = ConnectionInfo {
            id: "start-check".into(),
            transport: crate::channels::TransportKind::WebSocket,
            session: Vec::new(),
        };
        let info = CloseInfo {
            code: None,
            reason: "start check at deploy".into(),
        };
        let (event, result) = call_export!(self, event, on_close(connection, info));
        Ok(self.end(event, result)?)
    }

    /// Run one event of kind `hook`, counting it and its outcome in the
    /// metrics; a failure is logged (but on-request's: the edge logs it
    /// with the answer it gives) and carries the event's id.
    async fn observed<T>(
        &self,
        hook: Hook,
        id: Arc<str>,
        run: impl std::future::Future<Output = Result<T, EventError>>,
    ) -> Result<T, HookError> {
        let started = std::time::Instant::now();
        let result = run.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.meter
            .event(hook.wit_name(), outcome, started.elapsed());
        result.map_err(|e| {
            let error = e.into_hook_error(hook, self.env.name(), id);
            if hook != Hook::Request {
                error.log();
            }
            error
        })
    }

    /// The end of an event: what the guest printed and the log lines it
    /// was not allowed are logged, a wasmtime error becomes the event's
    /// fault, and an instance that ended well may be kept for the next
    /// event.
    fn end<R>(
        &self,
        mut event: Event<HostState>,
        result: wasmtime::Result<R>,
    ) -> Result<R, GuestFault> {
        event.store.data().host.caps.log.finish();
        let result = event.finish(result);
        if result.is_ok() {
            self.park(event);
        }
        result
    }
}

/// Each event runs in the guest only if the component defines it; else the
/// answer is the SDK's default (`sdk/src/lib.rs`, `Handler`), which these
/// defaults must match: on-request 404, on-connect accept with no session,
/// on-subscribe allow, on-publish accept, on-message no actions, on-close
/// nothing.
#[async_trait]
impl Hooks for HandlerModule {
    fn name(&self) -> &str {
        self.env.name()
    }

    fn max_request_body(&self) -> usize {
        self.limits.max_request_body
    }

    async fn on_request(
        &self,
        id: Arc<str>,
        request: Request,
    ) -> Result<RequestOutcome, HookError> {
        if !self.implemented.runs(Hook::Request) {
            return Ok(RequestOutcome::Respond(Response::not_found()));
        }
        run_event!(self, Hook::Request, id, Purpose::Event, on_request(request) => request_outcome)
    }

    async fn on_connect(
        &self,
        id: Arc<str>,
        request: ConnectRequest,
    ) -> Result<ConnectOutcome, HookError> {
        if !self.implemented.runs(Hook::Connect) {
            return Ok(ConnectOutcome::Accept(Vec::new()));
        }
        run_event!(self, Hook::Connect, id, Purpose::Event, on_connect(request) => connect_outcome)
    }

    async fn on_subscribe(
        &self,
        id: Arc<str>,
        connection: &ConnectionInfo,
        request: SubscribeRequest,
    ) -> Result<SubscribeOutcome, HookError> {
        if !self.implemented.runs(Hook::Subscribe) {
            return Ok(SubscribeOutcome::Allow);
        }
        let connection = connection.clone();
        run_event!(self, Hook::Subscribe, id, Purpose::Event, on_subscribe(connection, request) => subscribe_outcome)
    }

    /// Publishing from inside on-publish is refused, so a hook cannot
    /// recurse.
    async fn on_publish(
        &self,
        id: Arc<str>,
        publication: &Publication,
    ) -> Result<PublishVerdict, HookError> {
        if !self.implemented.runs(Hook::Publish) {
            return Ok(PublishVerdict::Accept);
        }
        let publication = publication.clone();
        run_event!(self, Hook::Publish, id, Purpose::PublishHook, on_publish(publication) => publish_verdict)
    }

    async fn on_message(
        &self,
        id: Arc<str>,
        connection: &ConnectionInfo,
        frame: Payload,
    ) -> Result<Vec<Action>, HookError> {
        if !self.implemented.runs(Hook::Message) {
            return Ok(Vec::new());
        }
        let connection = connection.clone();
        run_event!(self, Hook::Message, id, Purpose::Event, on_message(connection, frame) => actions)
    }

    /// Run in the background, bounded per module (past the bound it is
    /// skipped, so connecting and closing in a loop cannot pile up guest
    /// work); not at all when the module leaves on-close to the SDK.
    fn on_close(self: Arc<Self>, connection: ConnectionInfo, info: CloseInfo) {
        if !self.implemented.runs(Hook::Close) {
            return;
        }
        // During shutdown the runtime may already be gone: then there is no
        // one left to tell, and spawning would panic.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(slot) = self.env.closes.clone().try_acquire_owned() else {
            tracing::debug!(module = self.name(), connection = %connection.id, "on-close skipped: too many running");
            return;
        };
        runtime.spawn(async move {
            let _slot = slot;
            let id = next_request_id();
            let ran = self
                .observed(Hook::Close, id.clone(), async {
                    let event = self.start(id.clone(), Purpose::Event).await?;
                    let (event, result) = call_export!(self, event, on_close(connection, info));
                    Ok(self.end(event, result)?)
                })
                .await;
            if ran.is_ok() {
                tracing::debug!(module = self.name(), %id, "on-close ran");
            }
        });
    }
}
