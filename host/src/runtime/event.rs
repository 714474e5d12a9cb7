//! One event in its own sandbox: a fresh store and instance with a deadline and
//! a memory limit, and the classification of everything that can go wrong.
//!
//! Strategy: `Event::start` instantiates from the module's `InstancePre` into a
//! new `Store` whose epoch callback yields to tokio every tick and interrupts
//! the guest once the wall-clock deadline has passed; the store's resource
//! limiter refuses memory growth past the limit with a typed error. The caller
//! invokes one export and hands the result to `Event::finish`, which turns
//! wasmtime's errors into a [`GuestFault`]. The store is dropped afterwards,
//! so nothing survives from one event to the next, unless the module opted
//! in to instance reuse: then `HandlerModule` keeps an instance that ended
//! well ([`Event::reusable`]) and [`Event::restart`] arms it for the next
//! event with a new deadline, CPU budget and label.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use std::sync::Arc;

use wasmtime::component::{Instance, InstancePre};

use super::engine::{EPOCH_TICK, Ticking};
use super::error::{EventError, GuestFault, OutputTooLarge};
use super::scheduler::Turn;
use comet_config::limits::Limits;

/// The trap raised when an event uses up its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("CPU budget spent")]
struct CpuLimitHit;

/// A typed trap raised by the resource limiter, so that a memory-limit hit is
/// told apart from any other trap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired})")]
struct MemoryLimitHit {
    limit: usize,
    desired: usize,
}

/// Refuses linear-memory growth past the module's limit.
#[derive(Debug)]
struct EventLimiter {
    memory_bytes: usize,
}

impl ResourceLimiter for EventLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitHit {
                limit: self.memory_bytes,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// Everything a store holds for one event: WASI, the limiter, and the
/// embedder's own state `T` (the imports' host state).
pub(crate) struct StoreState<T> {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: EventLimiter,
    pub(crate) host: T,
}

impl<T: Send> WasiView for StoreState<T> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Most bytes of stdout/stderr kept from one event (panic messages, stray
/// prints); they are logged with the event id when the event ends.
const MAX_GUEST_OUTPUT: usize = 16 << 10;

/// What names an event in the log: its module and its request or
/// connection id.
#[derive(Debug, Clone)]
pub(crate) struct EventLabel {
    pub(crate) module: Arc<str>,
    pub(crate) id: Arc<str>,
}

/// A live instance for one event.
pub(crate) struct Event<T: 'static> {
    pub(crate) store: Store<StoreState<T>>,
    pub(crate) instance: Instance,
    /// Whether it is hot (see `scheduler`).
    pub(crate) turn: Turn,
    limits: Limits,
    output: MemoryOutputPipe,
    label: EventLabel,
    /// Events this instance has served, the running one included.
    events: u32,
    /// Whether the guest has printed anything in any event so far (set by
    /// `finish`, which reads the pipe once per event).
    printed: bool,
    /// Keeps the epoch advancing while this event runs; released by
    /// `finish`, so an idle instance does not keep the ticker awake.
    ticking: Option<Ticking>,
}

impl<T: Send + 'static> Event<T> {
    /// Instantiate a fresh sandbox for one event.
    pub(crate) async fn start(
        pre: &InstancePre<StoreState<T>>,
        limits: &Limits,
        host: T,
        label: EventLabel,
        turn: Turn,
        ticking: Ticking,
    ) -> Result<Event<T>, EventError> {
        // No preopened directories, no environment, no sockets: only clocks,
        // random, and stdout/stderr captured for the log.
        let output = MemoryOutputPipe::new(MAX_GUEST_OUTPUT);
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .build();
        let state = StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: EventLimiter {
                memory_bytes: limits.memory_bytes,
            },
            host,
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        arm(&mut store, limits, &turn, &ticking);
        let instance = match pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                return Err(EventError::Busy);
            }
            Err(e) => return Err(classify(&e, limits).into()),
        };
        Ok(Event {
            store,
            instance,
            turn,
            limits: limits.clone(),
            output,
            label,
            events: 1,
            printed: false,
            ticking: Some(ticking),
        })
    }

    /// Arm an instance that ended its last event well for one more: a new
    /// deadline, CPU budget, scheduler turn and label. The caller replaces
    /// the host state.
    pub(crate) fn restart(&mut self, label: EventLabel, turn: Turn, ticking: Ticking) {
        arm(&mut self.store, &self.limits, &turn, &ticking);
        self.ticking = Some(ticking);
        self.turn = turn;
        self.label = label;
        self.events += 1;
    }

    /// Whether this instance may serve another event: it has served fewer
    /// than `limit` and printed nothing (its output pipe is not emptied
    /// between events; guests print on a panic, so output is rare). Asked
    /// only after an event that ended well, and after `finish`: one that
    /// trapped or hit a limit leaves its instance unusable or suspect.
    pub(crate) fn reusable(&self, limit: u32) -> bool {
        self.events < limit && !self.printed
    }

    /// Turn the result of an export call into the event's result, logging
    /// whatever the guest printed (a panic message, say) with the event id.
    pub(crate) fn finish<R>(&mut self, result: wasmtime::Result<R>) -> Result<R, GuestFault> {
        self.ticking = None;
        let printed = self.output.contents();
        if !printed.is_empty() {
            self.printed = true;
            for line in String::from_utf8_lossy(&printed).lines() {
                tracing::warn!(
                    target: "guest",
                    module = &*self.label.module,
                    event = &*self.label.id,
                    "guest output: {line}"
                );
            }
        }
        result.map_err(|e| classify(&e, &self.limits))
    }
}

/// Give one event its wall-clock deadline and CPU budget: the epoch callback
/// runs when a tick passes while the guest computes (see `scheduler`).
fn arm<T>(store: &mut Store<StoreState<T>>, limits: &Limits, turn: &Turn, ticking: &Ticking) {
    let deadline = Instant::now() + limits.deadline;
    let cpu_ticks = limits
        .cpu
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis())
        .max(1) as u64;
    let turn = turn.clone();
    let ticker = ticking.ticker();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        let next = turn.tick();
        if matches!(next, UpdateDeadline::YieldCustom(..)) {
            // It computed through the tick: keep the ticks fine-grained.
            ticker.computed();
        }
        if turn.ticks() > cpu_ticks {
            return Err(wasmtime::Error::new(CpuLimitHit));
        }
        Ok(next)
    });
}

fn classify(error: &wasmtime::Error, limits: &Limits) -> GuestFault {
    if let Some(hit) = error.downcast_ref::<MemoryLimitHit>() {
        return GuestFault::MemoryLimit { limit: hit.limit };
    }
    if error.is::<OutputTooLarge>() {
        return GuestFault::InvalidOutput(format!(
            "more than {} bytes in all (its output limit)",
            limits.max_output_bytes()
        ));
    }
    if error.is::<CpuLimitHit>() {
        return GuestFault::CpuLimit(limits.cpu);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => GuestFault::Timeout(limits.deadline),
        // Rust guests keep their stack at the bottom of linear memory: an
        // overflow wraps the stack pointer and faults as an out-of-bounds
        // access, which wasmtime cannot tell from a bad pointer.
        Some(Trap::MemoryOutOfBounds) => GuestFault::Trap(
            "out of bounds memory access (most often a stack overflow: deep recursion or \
             large locals on the guest's stack; else a bad pointer)"
                .into(),
        ),
        Some(Trap::StackOverflow) => GuestFault::Trap("stack overflow (call depth)".into()),
        Some(trap) => GuestFault::Trap(trap.to_string()),
        None => GuestFault::Trap(format!("{error:#}")),
    }
}
