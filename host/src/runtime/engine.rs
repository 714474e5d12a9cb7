//! The wasmtime engine shared by every module: component model, pooling
//! allocator, epoch interruption, and the thread that ticks the epoch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Deadlines and CPU budgets are checked at
/// this granularity, and a guest that computes without calling the host
/// yields to the tokio scheduler this often (and, once hot, runs on the hot
/// runtime, see `scheduler`). 1 ms: with 5 ms, a bystander's request behind a spinning guest
/// waited up to a whole tick (p99 5.4 ms against 0.35 ms alone); with 1 ms
/// the p99 is 2 ms (bench/scripts/fairness.py).
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How often the epoch advances while no guest computes through ticks (every
/// event short, as most are): a guest that starts computing gets its first
/// epoch callback at most this late, and from then on the epoch advances
/// every [`EPOCH_TICK`]. Waking a thread a thousand times a second cost 12
/// ms of CPU per second here, about 5 % of the CPU of opening a connection
/// at 3,000 a second (BENCHMARKS.md).
pub const EPOCH_TICK_SLOW: Duration = Duration::from_millis(4);

/// Ticks at [`EPOCH_TICK`] kept after the last one a guest computed through.
const FAST_TICKS: u32 = 10;

/// Instances (events) that may run at once. Each holds one pool slot; past
/// this, events fail fast with "busy" instead of queueing unboundedly.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;

/// Native stack a guest may use. Deep recursion past this traps with a stack
/// overflow instead of crashing the host.
pub const DEFAULT_MAX_STACK_BYTES: usize = 512 << 10;

/// Bytes at the start of each recycled linear memory that are reset in place
/// (the pages an event wrote: memset, or a copy from the image) instead of
/// being released with madvise and faulted in again by the next event.
/// Guests built by comet get a 64 KiB stack (see
/// `comet_guest_build::GUEST_STACK_BYTES`), so this covers the top of the stack,
/// the static data and the first heap pages: the pages every event touches.
/// Measured in BENCHMARKS.md: 33 µs -> 20 µs per trivial event. A guest
/// built without WASI starts with 192 KiB
/// (`comet_guest_build::NO_WASI_INITIAL_MEMORY_BYTES`), and its allocator writes
/// the last page of that first heap in every event; the window covers it.
/// A wasip2 guest starts with 128 KiB: the pages its heap grows into up to
/// 192 KiB are now reset in place too (with `PAGEMAP_SCAN`, only those
/// written) and stay resident in the pool, up to 64 KiB more per slot.
pub const DEFAULT_KEEP_RESIDENT_BYTES: usize = 192 << 10;

const _: () = assert!(
    DEFAULT_KEEP_RESIDENT_BYTES >= comet_guest_build::NO_WASI_INITIAL_MEMORY_BYTES,
    "the resident window must cover the initial memory of guests built without WASI"
);

/// Engine-wide settings, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instances that may be alive at once.
    pub max_instances: u32,
    /// Largest linear memory any module may be given (the pool's slot size).
    pub max_memory_bytes: usize,
    /// Wasm stack limit.
    pub max_stack_bytes: usize,
    /// Low bytes of a linear memory kept resident between events.
    pub keep_resident_bytes: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_instances: DEFAULT_MAX_INSTANCES,
            max_memory_bytes: comet_config::limits::DEFAULT_MEMORY_BYTES,
            max_stack_bytes: DEFAULT_MAX_STACK_BYTES,
            keep_resident_bytes: DEFAULT_KEEP_RESIDENT_BYTES,
        }
    }
}

/// Time with no event in flight after which the ticker sleeps until the
/// next event: an idle server does not wake at all (1.1 % of a core when it
/// ticked every millisecond), and a busy one never pays for waking it.
const QUIET_BEFORE_SLEEP: Duration = Duration::from_millis(100);

/// A configured engine plus the background epoch ticker (stopped on drop).
#[derive(Debug)]
pub(crate) struct SandboxEngine {
    pub(crate) engine: Engine,
    pub(crate) ticker: Arc<Ticker>,
}

/// The epoch ticker's demand: how many events are in flight, whether a
/// guest computed through a tick lately, and whether the ticker thread
/// sleeps for want of events or ticks slowly for want of computing guests.
#[derive(Debug, Default)]
pub(crate) struct Ticker {
    in_flight: AtomicUsize,
    asleep: AtomicBool,
    /// Set by a guest's epoch callback that counted a tick of compute.
    computed: AtomicBool,
    /// Ticking every [`EPOCH_TICK`] (else every [`EPOCH_TICK_SLOW`]).
    fast: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

/// Held by an event while its guest may run: the epoch keeps advancing, so
/// its deadline and CPU budget are enforced.
#[derive(Debug)]
pub(crate) struct Ticking(Arc<Ticker>);

impl Ticker {
    /// Demand ticks until the returned guard is dropped, waking the ticker
    /// if it sleeps.
    pub(crate) fn ticking(self: &Arc<Self>) -> Ticking {
        // SeqCst with the ticker's `asleep` store and `in_flight` load:
        // either it sees this event, or this sees it asleep and wakes it.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(self.clone())
    }

    /// A guest computed through a tick: advance the epoch every
    /// [`EPOCH_TICK`] from now on, for a while (waking the ticker if it
    /// ticks slowly).
    pub(crate) fn computed(&self) {
        let told = self.computed.swap(true, Ordering::AcqRel);
        if !told
            && !self.fast.load(Ordering::Relaxed)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    fn run(&self, engine: &Engine) {
        let mut quiet = Duration::ZERO;
        let mut fast_left = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let tick = if fast_left > 0 {
                EPOCH_TICK
            } else {
                EPOCH_TICK_SLOW
            };
            // An unpark (a guest computing, an event after a sleep) ends a
            // tick early: one more epoch callback, which costs a short
            // event nothing.
            std::thread::park_timeout(tick);
            engine.increment_epoch();
            if self.computed.swap(false, Ordering::AcqRel) {
                fast_left = FAST_TICKS;
            } else {
                fast_left = fast_left.saturating_sub(1);
            }
            self.fast.store(fast_left > 0, Ordering::Relaxed);
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                quiet = Duration::ZERO;
                continue;
            }
            quiet += tick;
            if quiet >= QUIET_BEFORE_SLEEP {
                self.asleep.store(true, Ordering::SeqCst);
                // An unpark between these two lines makes park return.
                if self.in_flight.load(Ordering::SeqCst) == 0 && !self.stop.load(Ordering::Relaxed)
                {
                    tracing::debug!("epoch ticker idle: parked until the next event");
                    std::thread::park();
                }
                self.asleep.store(false, Ordering::SeqCst);
                quiet = Duration::ZERO;
            }
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

impl Ticking {
    /// The ticker, for an epoch callback to tell it of a guest computing.
    pub(crate) fn ticker(&self) -> Arc<Ticker> {
        self.0.clone()
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SandboxEngine {
    pub(crate) fn new(settings: &EngineSettings) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(settings.max_instances)
            .total_core_instances(settings.max_instances * 4)
            .total_memories(settings.max_instances)
            .total_tables(settings.max_instances * 4)
            .total_stacks(settings.max_instances)
            .max_memory_size(settings.max_memory_bytes)
            // Keep the low pages of a recycled slot mapped and reset them
            // with memset: the next event touches them anyway (see
            // DEFAULT_KEEP_RESIDENT_BYTES).
            .linear_memory_keep_resident(settings.keep_resident_bytes)
            .table_keep_resident(64 << 10)
            // Reset only the pages of that window an event wrote (Linux 6.7+,
            // `PAGEMAP_SCAN`; elsewhere all of it). Most of the window is the
            // guest's stack, of which an event writes a few pages: 5 % off a
            // trivial event (BENCHMARKS.md, "The slot reset and the delivery
            // path").
            .pagemap_scan(Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(settings.max_stack_bytes)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let ticker = Arc::new(Ticker::default());
        let (ticker_engine, thread_ticker) = (engine.clone(), ticker.clone());
        let handle = std::thread::Builder::new()
            .name("comet-epoch".into())
            .spawn(move || thread_ticker.run(&ticker_engine))?;
        // Set before any event can exist: the engine is not returned yet.
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(SandboxEngine { engine, ticker })
    }
}

impl Drop for SandboxEngine {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}
