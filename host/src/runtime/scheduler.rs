//! How guest events share the CPU.
//!
//! Strategy: an event's epoch callback runs when a tick (1 ms) passes while
//! its guest is computing. [`Turn::tick`] counts the ticks the guest really
//! computed (at least half a tick of its thread's CPU time since it last
//! resumed: a callback right after waiting for a worker, or for a core the
//! kernel gave to another thread, is not compute) and yields to tokio after
//! each; the sandbox cuts an event off past its CPU budget in those ticks
//! as well as past its wall-clock deadline. An event that has computed for
//! more than five ticks is *hot*: [`Scheduler::run`] moves it off the I/O
//! workers onto the hot runtime, whose threads (one fewer than the cores)
//! run at nice 19, the lowest CPU priority short of `SCHED_IDLE`. Hot events
//! take turns there a tick at a time and get little more than the CPU
//! nothing else wants: accepts, reads, writes and every short event keep
//! the I/O workers and take a core from a hot guest the moment they wake, so
//! guests spinning in a loop cannot delay a bystander's request or anyone's
//! sockets. The price: on a saturated machine a hot event gets about 1.5 %
//! of a core, and may reach its deadline first.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use wasmtime::UpdateDeadline;

use super::engine::EPOCH_TICK;
use crate::metrics::EventMeter;

/// Ticks an event may compute before it counts as hot: 5 ms. An ordinary
/// event that crosses a tick or two (a slow host call, a busy machine)
/// stays where it is; a guest computing in a loop is moved within 5 ms.
const COOL_TICKS: u64 = 5;

/// The nice value of the hot runtime's threads: the lowest priority there is
/// short of `SCHED_IDLE` (with which a hot event could wait indefinitely on a
/// busy machine; both measured alike in bench/scripts/fairness.py).
const HOT_NICE: libc::c_int = 19;

/// Where hot events run: the one hot runtime of the process.
#[derive(Debug, Clone)]
pub(crate) struct Scheduler {
    hot: Handle,
}

/// One event's place in the scheduler: the ticks it computed, when it
/// last resumed, whether it is hot. Shared by its epoch callback, its host
/// calls ([`Turn::waiting`]) and [`Scheduler::run`].
#[derive(Debug, Clone)]
pub(crate) struct Turn {
    state: Arc<TurnState>,
}

#[derive(Debug)]
struct TurnState {
    started: Instant,
    /// Nanoseconds from `started` to when the guest last resumed, moved on
    /// by the time its host calls waited for I/O since.
    resumed: AtomicU64,
    /// The thread the guest last resumed on ([`thread_clock`]'s id, 0 for
    /// none yet) and that thread's CPU time then: from the first counted
    /// tick on, compute is measured in CPU time, which does not pass while
    /// the kernel runs another thread (on a loaded machine, wall-clock time
    /// made preempted events look busy, turn hot and miss their deadlines).
    cpu_thread: AtomicU64,
    cpu_resumed: AtomicU64,
    ticks: AtomicU64,
    hot: AtomicBool,
}

impl Default for Turn {
    fn default() -> Self {
        Turn::started_at(Instant::now())
    }
}

impl Turn {
    fn started_at(started: Instant) -> Turn {
        Turn {
            state: Arc::new(TurnState {
                started,
                resumed: AtomicU64::new(0),
                cpu_thread: AtomicU64::new(0),
                cpu_resumed: AtomicU64::new(0),
                ticks: AtomicU64::new(0),
                hot: AtomicBool::new(false),
            }),
        }
    }

    fn is_hot(&self) -> bool {
        self.state.hot.load(Ordering::Relaxed)
    }

    fn since_start(&self) -> u64 {
        self.state.started.elapsed().as_nanos() as u64
    }

    /// Ticks the guest has computed so far.
    pub(crate) fn ticks(&self) -> u64 {
        self.state.ticks.load(Ordering::Relaxed)
    }

    /// Await `io`, a host call that may wait for I/O (kv, history,
    /// presence, publish): if it had to wait, the time it took does not
    /// count as the guest's compute. One that completes at once (the
    /// memory kv store copying a value) is work done for the guest, and
    /// counts.
    pub(crate) async fn waiting<F: Future>(&self, io: F) -> F::Output {
        let started = Instant::now();
        let mut waited = false;
        let mut io = std::pin::pin!(io);
        let out = std::future::poll_fn(|cx| {
            let polled = io.as_mut().poll(cx);
            waited |= polled.is_pending();
            polled
        })
        .await;
        if waited {
            self.state
                .resumed
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            // It may go on on another thread.
            self.mark_cpu();
        }
        out
    }

    /// Note the thread the guest goes on computing on, and its CPU time now.
    fn mark_cpu(&self) {
        let (thread, cpu) = thread_clock().unwrap_or((0, 0));
        self.state.cpu_thread.store(thread, Ordering::Relaxed);
        self.state.cpu_resumed.store(cpu, Ordering::Relaxed);
    }

    /// Nanoseconds the guest computed since it last resumed: CPU time if it
    /// resumed on this thread since its first counted tick, else wall-clock
    /// time.
    fn ran(&self) -> u64 {
        let marked = self.state.cpu_thread.load(Ordering::Relaxed);
        if marked != 0
            && let Some((thread, cpu)) = thread_clock()
            && thread == marked
        {
            return cpu.saturating_sub(self.state.cpu_resumed.load(Ordering::Relaxed));
        }
        self.since_start()
            .saturating_sub(self.state.resumed.load(Ordering::Relaxed))
    }

    /// What the epoch callback does when a tick has passed: if the guest
    /// computed through it, count it, mark the event hot past the cool
    /// ticks, and yield (noting when the guest resumes); else carry on to
    /// the next tick.
    pub(crate) fn tick(&self) -> UpdateDeadline {
        if self.ran() < EPOCH_TICK.as_nanos() as u64 / 2 {
            return UpdateDeadline::Continue(1);
        }
        if self.state.ticks.fetch_add(1, Ordering::Relaxed) + 1 > COOL_TICKS {
            self.state.hot.store(true, Ordering::Relaxed);
        }
        let turn = self.clone();
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                turn.state
                    .resumed
                    .store(turn.since_start(), Ordering::Relaxed);
                turn.mark_cpu();
            }),
        )
    }
}

impl Scheduler {
    /// The process's hot runtime, started on first use with one thread
    /// fewer than the machine's cores (at least one).
    pub(crate) fn for_this_machine() -> Scheduler {
        static HOT: OnceLock<Runtime> = OnceLock::new();
        let runtime = HOT.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores.saturating_sub(1).max(1))
                .thread_name("comet-hot")
                .on_thread_start(lowest_priority)
                .enable_all()
                .build()
                .expect("cannot start the runtime of hot guest events")
        });
        Scheduler {
            hot: runtime.handle().clone(),
        }
    }

    /// Run `call`, the guest part of one event, here until its callback
    /// marks it hot, then on the hot runtime. Dropping the returned future
    /// stops the call wherever it runs.
    pub(crate) async fn run<F>(&self, turn: &Turn, meter: &EventMeter, call: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut call = Box::pin(call);
        let here = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            // It has just yielded at a tick: it resumes on the hot runtime.
            Poll::Pending if turn.is_hot() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        match here {
            Some(out) => out,
            None => {
                meter.hot();
                Hot(self.hot.spawn(call)).await
            }
        }
    }
}

/// The calling thread (a number unique in the process, never 0) and the CPU
/// time it has used, in nanoseconds; `None` if the clock cannot be read
/// (then compute is measured in wall-clock time). Not in the vDSO, so a
/// system call: it runs once per counted tick, never on an event that ends
/// within one.
fn thread_clock() -> Option<(u64, u64)> {
    static THREADS: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static THREAD: u64 = THREADS.fetch_add(1, Ordering::Relaxed);
    }
    let cpu = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some((THREAD.with(|t| *t), Duration::from(cpu).as_nanos() as u64))
}

/// A call moved to the hot runtime: its result, and its end if the event
/// is dropped (a client went away).
struct Hot<T>(JoinHandle<T>);

impl<T> Future for Hot<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(Ok(out)) => Poll::Ready(out),
            Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The hot runtime is never shut down, and only Drop aborts.
            Poll::Ready(Err(e)) => panic!("a hot guest event was cancelled: {e}"),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for Hot<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Give the calling thread the lowest nice value (19): any thread of normal
/// priority that wakes takes the core from it, and while both compute it
/// gets about 1.5 % of the core (the kernel's weights are 15 against 1024),
/// so a hot event still makes progress on a saturated machine. Raising
/// one's own nice value needs no privilege; if it fails anyway, hot events
/// still leave the I/O workers, at normal priority.
#[allow(unsafe_code)]
fn lowest_priority() {
    // SAFETY: gettid and setpriority take and return plain integers; with
    // PRIO_PROCESS and a thread id, Linux changes only that thread.
    let failed = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HOT_NICE) != 0
    };
    if failed {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the priority of hot guest events; they keep normal priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compute_counts_and_events_turn_hot_after_the_cool_ticks() {
        let turn = Turn::default();
        // Resumed just now: a tick that passes at once is not compute.
        turn.state
            .resumed
            .store(turn.since_start(), Ordering::Relaxed);
        assert!(matches!(turn.tick(), UpdateDeadline::Continue(1)));
        assert_eq!(turn.ticks(), 0);
        // An event that has run for a second since it last resumed.
        let turn = Turn::started_at(Instant::now() - std::time::Duration::from_secs(1));
        for tick in 1..=COOL_TICKS + 1 {
            assert!(matches!(turn.tick(), UpdateDeadline::YieldCustom(1, _)));
            assert_eq!(turn.ticks(), tick);
            assert_eq!(turn.is_hot(), tick > COOL_TICKS, "tick {tick}");
        }
    }

    #[test]
    fn time_the_thread_did_not_run_is_not_compute() {
        // Wall-clock time says it has computed for a second since it
        // resumed; the thread's CPU clock, read at the resume just now, says
        // it has not (as after the kernel ran another thread).
        let turn = Turn::started_at(Instant::now() - std::time::Duration::from_secs(1));
        turn.mark_cpu();
        assert!(matches!(turn.tick(), UpdateDeadline::Continue(1)));
        assert_eq!(turn.ticks(), 0);
        // Computing through a tick counts.
        let cpu = || thread_clock().expect("thread CPU clock").1;
        let from = cpu();
        while cpu() - from < EPOCH_TICK.as_nanos() as u64 {
            std::hint::black_box(0u64);
        }
        assert!(matches!(turn.tick(), UpdateDeadline::YieldCustom(1, _)));
        assert_eq!(turn.ticks(), 1);
    }

    #[tokio::test]
    async fn waiting_for_io_is_not_compute() {
        let turn = Turn::started_at(Instant::now() - std::time::Duration::from_secs(1));
        // Work that completes at once counts.
        turn.waiting(async {}).await;
        assert_eq!(turn.state.resumed.load(Ordering::Relaxed), 0);
        // A call that had to wait (Pending once) moves the guest's compute
        // clock on by the time it took, never past now.
        let before = turn.since_start();
        turn.waiting(tokio::task::yield_now()).await;
        let moved = turn.state.resumed.load(Ordering::Relaxed);
        assert!(moved > 0, "{moved}");
        assert!(moved <= turn.since_start() - before, "{moved}");
    }

    #[tokio::test]
    async fn a_hot_call_finishes_on_the_hot_runtime() {
        let scheduler = Scheduler::for_this_machine();
        let turn = Turn::default();
        let marked = turn.clone();
        let meter = Arc::new(crate::metrics::Metrics::default()).meter(&"test".into());
        let name = scheduler
            .run(&turn, &meter, async move {
                // Computes, is marked hot, yields.
                marked.state.hot.store(true, Ordering::Relaxed);
                tokio::task::yield_now().await;
                std::thread::current().name().map(str::to_owned)
            })
            .await;
        assert_eq!(name.as_deref(), Some("comet-hot"));

        let cool = scheduler
            .run(&Turn::default(), &meter, async {
                tokio::task::yield_now().await;
                std::thread::current().name().map(str::to_owned)
            })
            .await;
        assert_ne!(cool.as_deref(), Some("comet-hot"));
    }
}
