//! Prometheus metrics (`GET /metrics`): what the host counts as it works
//! (events, publishes, connections, broker and kv operations), and what it
//! reads from the channel layer, the broker and the registry at each scrape.
//!
//! [`Metrics`] is a value: the host makes one and hands it to what counts
//! (the channels service, the runtime, the publish path, kv), so two hosts in
//! one process (tests) count apart. `comet run` has one host, so its
//! `/metrics` is the process's, as a Prometheus target expects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output with `openmetrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`encode`]'s output without: the classic text
/// format, which older scrapers and `promtool check metrics` read.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    module: Arc<str>,
    event: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventKind {
    module: Arc<str>,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabel {
    module: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishLabels {
    source: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Buckets from 20 µs to about 0.7 s: events take microseconds, and the
/// deadline is a second.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_02, 2.0, 16))
}

/// Events and failures of one module, for the status page.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ModuleCounts {
    /// Events run.
    pub events: u64,
    /// Events that trapped, timed out or hit a limit.
    pub failures: u64,
}

/// The host's own counters.
#[derive(Debug)]
pub struct Metrics {
    events: Family<EventLabels, Counter>,
    event_seconds: Family<EventKind, Histogram, fn() -> Histogram>,
    hot: Family<ModuleLabel, Counter>,
    instances: Family<ModuleLabel, Counter>,
    publishes: Family<PublishLabels, Counter>,
    opened: Family<TransportLabel, Counter>,
    closed: Family<TransportLabel, Counter>,
    refused: Family<TransportLabel, Counter>,
    broker_ops: Family<OpLabels, Counter>,
    broker_seconds: Family<OpLabel, Histogram, fn() -> Histogram>,
    kv_ops: Family<OpLabel, Counter>,
    kv_written: Counter,
    by_module: Mutex<BTreeMap<String, Arc<LiveCounts>>>,
}

/// [`ModuleCounts`] as they are counted.
#[derive(Debug, Default)]
struct LiveCounts {
    events: AtomicU64,
    failures: AtomicU64,
}

impl LiveCounts {
    fn add(&self, outcome: &str) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if outcome != "ok" {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> ModuleCounts {
        ModuleCounts {
            events: self.events.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// The event kinds of the `event` label, in [`EventMeter`]'s order.
const EVENT_KINDS: [&str; 6] = [
    "on-request",
    "on-connect",
    "on-subscribe",
    "on-publish",
    "on-message",
    "on-close",
];

/// One module's event metrics, kept by the module: the series an event
/// that ends well adds to, looked up on its first such event and held, so
/// later ones take no label lookup and no lock (the lookups and the
/// process-wide lock of [`Metrics::event`] were 1.6 % of a kept-alive
/// request's CPU). A failed event goes through [`Metrics::event`].
#[derive(Debug)]
pub struct EventMeter {
    metrics: Arc<Metrics>,
    module: Arc<str>,
    /// Per kind of [`EVENT_KINDS`]: its `ok` counter and its latency.
    ok: [OnceLock<(Counter, Histogram)>; EVENT_KINDS.len()],
    instances: OnceLock<Counter>,
    hot: OnceLock<Counter>,
    /// Its line of the status page's counts, added on its first event.
    counts: OnceLock<Arc<LiveCounts>>,
}

impl EventMeter {
    /// An event of kind `event` ended with `outcome` after `took`.
    pub fn event(&self, event: &'static str, outcome: &'static str, took: Duration) {
        let kind = EVENT_KINDS.iter().position(|k| *k == event);
        let metrics = &self.metrics;
        let (Some(kind), "ok") = (kind, outcome) else {
            return metrics.event(&self.module, event, outcome, took);
        };
        let (ok, seconds) =
            self.ok[kind].get_or_init(|| metrics.event_series(&self.module, event, outcome));
        ok.inc();
        seconds.observe(took.as_secs_f64());
        self.counts
            .get_or_init(|| metrics.counts_of(&self.module).unwrap_or_default())
            .add(outcome);
    }

    /// An event computed long enough to move to the hot runtime (see
    /// `runtime::scheduler`).
    pub fn hot(&self) {
        self.hot
            .get_or_init(|| {
                self.metrics
                    .hot
                    .get_or_create(&ModuleLabel {
                        module: self.module.clone(),
                    })
                    .clone()
            })
            .inc();
    }

    /// An event started a fresh instance (it did not take an idle one:
    /// with `comet_events_total`, shows how much reuse saves).
    pub fn instance_started(&self) {
        self.instances
            .get_or_init(|| {
                self.metrics
                    .instances
                    .get_or_create(&ModuleLabel {
                        module: self.module.clone(),
                    })
                    .clone()
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events: Family::default(),
            event_seconds: Family::new_with_constructor(latency_histogram),
            hot: Family::default(),
            instances: Family::default(),
            publishes: Family::default(),
            opened: Family::default(),
            closed: Family::default(),
            refused: Family::default(),
            broker_ops: Family::default(),
            broker_seconds: Family::new_with_constructor(latency_histogram),
            kv_ops: Family::default(),
            kv_written: Counter::default(),
            by_module: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The counters of one transport's connections, looked up once (by the
/// channels service's admission) and added to without a label lookup.
#[derive(Debug, Clone, Default)]
pub struct ConnectionCounters {
    /// Connections admitted.
    pub opened: Counter,
    /// Connections ended.
    pub closed: Counter,
    /// Connections refused at the connection limit.
    pub refused: Counter,
}

impl Metrics {
    /// One guest event of `module` ended with `outcome` (`ok`, or the
    /// failure's kind) after `took`. Allocates only the first time a label
    /// set is seen.
    pub fn event(
        &self,
        module: &Arc<str>,
        event: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let (count, seconds) = self.event_series(module, event, outcome);
        count.inc();
        seconds.observe(took.as_secs_f64());
        if let Some(counts) = self.counts_of(module) {
            counts.add(outcome);
        }
    }

    /// The series a `module` event of kind `event` ending with `outcome`
    /// adds to: its count, and the kind's latency.
    fn event_series(
        &self,
        module: &Arc<str>,
        event: &'static str,
        outcome: &'static str,
    ) -> (Counter, Histogram) {
        let count = self.events.get_or_create(&EventLabels {
            module: module.clone(),
            event,
            outcome,
        });
        let seconds = self.event_seconds.get_or_create(&EventKind {
            module: module.clone(),
            event,
        });
        (count.clone(), seconds.clone())
    }

    /// The live counts of `module`, added on first use.
    fn counts_of(&self, module: &str) -> Option<Arc<LiveCounts>> {
        let mut by_module = self.by_module.lock().ok()?;
        if let Some(counts) = by_module.get(module) {
            return Some(counts.clone());
        }
        let counts = Arc::<LiveCounts>::default();
        by_module.insert(module.to_string(), counts.clone());
        Some(counts)
    }

    /// The event metrics of `module`, for it to keep (see [`EventMeter`]).
    pub fn meter(self: &Arc<Self>, module: &Arc<str>) -> EventMeter {
        EventMeter {
            metrics: self.clone(),
            module: module.clone(),
            ok: Default::default(),
            instances: OnceLock::new(),
            hot: OnceLock::new(),
            counts: OnceLock::new(),
        }
    }

    /// Events and failures per module since start.
    pub fn by_module(&self) -> BTreeMap<String, ModuleCounts> {
        let Ok(by_module) = self.by_module.lock() else {
            return BTreeMap::new();
        };
        by_module
            .iter()
            .map(|(module, counts)| (module.clone(), counts.snapshot()))
            .collect()
    }

    /// A publish from `source` (`api`, `client`, `guest`) ended with
    /// `verdict` (`published`, `rejected`, `failed`).
    pub fn publish(&self, source: &'static str, verdict: &'static str) {
        self.publishes
            .get_or_create(&PublishLabels { source, verdict })
            .inc();
    }

    /// The connection counters of `transport` (`sse`, `stream`, `poll`,
    /// `websocket`).
    pub fn connections(&self, transport: &'static str) -> ConnectionCounters {
        let label = TransportLabel { transport };
        ConnectionCounters {
            opened: self.opened.get_or_create(&label).clone(),
            closed: self.closed.get_or_create(&label).clone(),
            refused: self.refused.get_or_create(&label).clone(),
        }
    }

    /// A broker operation took `took` and succeeded or not.
    pub fn broker(&self, op: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.broker_ops
            .get_or_create(&OpLabels { op, result })
            .inc();
        self.broker_seconds
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }

    /// A guest kv operation, writing `bytes`.
    pub fn kv(&self, op: &'static str, bytes: usize) {
        self.kv_ops.get_or_create(&OpLabel { op }).inc();
        self.kv_written.inc_by(bytes as u64);
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "comet_events",
            "Guest events by module, event and outcome (ok, trap, timeout, cpu-limit, memory-limit, invalid-output, busy, not-deployed, instantiate)",
            self.events.clone(),
        );
        registry.register(
            "comet_event_duration_seconds",
            "Wall-clock time of guest events, instantiation included",
            self.event_seconds.clone(),
        );
        registry.register(
            "comet_events_hot",
            "Guest events that computed for over 5 ms and finished on the hot runtime (nice 19), by module",
            self.hot.clone(),
        );
        registry.register(
            "comet_instances_started",
            "Fresh instances started for guest events, by module (fewer than events when the module reuses instances)",
            self.instances.clone(),
        );
        registry.register(
            "comet_publishes",
            "Publishes by source (api, client, guest) and verdict (published, rejected, failed)",
            self.publishes.clone(),
        );
        registry.register(
            "comet_connections_opened",
            "Client connections admitted, by transport",
            self.opened.clone(),
        );
        registry.register(
            "comet_connections_closed",
            "Client connections ended, by transport",
            self.closed.clone(),
        );
        registry.register(
            "comet_connections_refused",
            "Client connections refused at the connection limits, by transport",
            self.refused.clone(),
        );
        registry.register(
            "comet_broker_operations",
            "Broker operations (publish, history) by result",
            self.broker_ops.clone(),
        );
        registry.register(
            "comet_broker_operation_duration_seconds",
            "Time of broker operations",
            self.broker_seconds.clone(),
        );
        registry.register(
            "comet_kv_operations",
            "Guest kv operations by kind",
            self.kv_ops.clone(),
        );
        registry.register(
            "comet_kv_written_bytes",
            "Bytes of values written to kv by guests",
            self.kv_written.clone(),
        );
    }
}

/// One deployed module at scrape time.
#[derive(Debug, Clone)]
pub struct ModuleState {
    /// Its name.
    pub name: String,
    /// The serving version's number.
    pub version: u64,
    /// The serving version's content hash.
    pub hash: String,
    /// Its events running now (instance slots in use).
    pub running: usize,
}

/// Values read at scrape time from the channel layer, the broker and the
/// registry.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds since start.
    pub uptime_s: u64,
    /// Open client connections by transport.
    pub connections: Vec<(&'static str, usize)>,
    /// Channels with a local subscriber.
    pub channels: usize,
    /// `memory` or `redis`.
    pub broker: &'static str,
    /// Whether the broker delivers every subscribed channel.
    pub broker_up: bool,
    /// Channels the broker knows.
    pub broker_channels: usize,
    /// Bytes of history held (memory broker).
    pub history_bytes: usize,
    /// Messages dropped to keep the history budget.
    pub evicted: u64,
    /// Idle channels forgotten.
    pub reclaimed: u64,
    /// Connections dropped as slow consumers.
    pub slow_consumers: u64,
    /// Gaps caught up from history.
    pub catch_ups: u64,
    /// Resets sent.
    pub resets: u64,
    /// Messages handed to connections (queued for their socket).
    pub deliveries: u64,
    /// Messages compressed for WebSocket clients (once each).
    pub ws_compressions: u64,
    /// Compile cache hits and misses, when the cache is on.
    pub cache: Option<(u64, u64)>,
    /// Deployed modules.
    pub modules: Vec<ModuleState>,
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        gauge(
            e,
            "comet_uptime_seconds",
            "Seconds since the process started",
            self.uptime_s as i64,
        )?;
        {
            let kind = ConstGauge::new(0i64).metric_type();
            let mut family = e.encode_descriptor(
                "comet_connections",
                "Open client connections by transport",
                None,
                kind,
            )?;
            for (transport, n) in &self.connections {
                ConstGauge::new(as_i64(*n))
                    .encode(family.encode_family(&[("transport", *transport)])?)?;
            }
        }
        gauge(
            e,
            "comet_channels",
            "Channels with a subscriber on this node",
            as_i64(self.channels),
        )?;
        {
            let mut family = e.encode_descriptor(
                "comet_broker_up",
                "1 while the broker delivers every subscribed channel",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            ConstGauge::new(i64::from(self.broker_up))
                .encode(family.encode_family(&[("broker", self.broker)])?)?;
        }
        gauge(
            e,
            "comet_broker_channels",
            "Channels the broker knows",
            as_i64(self.broker_channels),
        )?;
        gauge(
            e,
            "comet_history_bytes",
            "Bytes of history held by the memory broker",
            as_i64(self.history_bytes),
        )?;
        counter(
            e,
            "comet_history_evicted",
            "Messages dropped to keep the history byte budget",
            self.evicted,
        )?;
        counter(
            e,
            "comet_channels_reclaimed",
            "Idle channels forgotten",
            self.reclaimed,
        )?;
        counter(
            e,
            "comet_slow_consumers",
            "Connections dropped for falling behind",
            self.slow_consumers,
        )?;
        counter(
            e,
            "comet_catch_ups",
            "Gaps between broker and node caught up from history",
            self.catch_ups,
        )?;
        counter(
            e,
            "comet_resets",
            "Resets sent to clients (history gone, or a new epoch)",
            self.resets,
        )?;
        counter(
            e,
            "comet_deliveries",
            "Messages queued for subscribed connections",
            self.deliveries,
        )?;
        counter(
            e,
            "comet_ws_compressions",
            "Messages compressed for WebSocket clients (once each, however many receive it)",
            self.ws_compressions,
        )?;
        if let Some((hits, misses)) = self.cache {
            counter(
                e,
                "comet_compile_cache_hits",
                "Modules whose native code came from the compile cache",
                hits,
            )?;
            counter(
                e,
                "comet_compile_cache_misses",
                "Modules compiled because the cache had no code for them",
                misses,
            )?;
        }
        {
            let mut family = e.encode_descriptor(
                "comet_module_info",
                "Deployed modules: the serving version and its content hash",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for m in &self.modules {
                let version = m.version.to_string();
                let labels = [
                    ("module", m.name.as_str()),
                    ("version", &version),
                    ("hash", &m.hash),
                ];
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = e.encode_descriptor(
            "comet_events_running",
            "Events running now (instance slots in use), by module",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for m in &self.modules {
            ConstGauge::new(as_i64(m.running))
                .encode(family.encode_family(&[("module", m.name.as_str())])?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// The counters and `snapshot` in the OpenMetrics text format
    /// ([`OPENMETRICS`]), or with `openmetrics` false in the classic text
    /// format ([`PROMETHEUS_TEXT`]).
    pub fn encode(&self, snapshot: Snapshot, openmetrics: bool) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        if openmetrics { out } else { classic(&out) }
    }
}

/// OpenMetrics text as the classic format: a counter family `x` is
/// described as `x_total` (the name of its samples), and there is no
/// `# EOF`. The two formats agree on everything else this host writes.
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = described
            && let Some((name, tail)) = rest.split_once(' ')
            && counters.contains(name)
        {
            out.push_str(&format!("{prefix}{name}_total {tail}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modules_meter_counts_into_the_shared_series() {
        let metrics = Arc::new(Metrics::default());
        let module: Arc<str> = "meter-test".into();
        let meter = metrics.meter(&module);
        // A module shows in the status page's counts from its first event.
        assert!(!metrics.by_module().contains_key("meter-test"));
        meter.event("on-request", "ok", Duration::from_micros(30));
        meter.event("on-request", "ok", Duration::from_micros(30));
        meter.event("on-request", "timeout", Duration::from_secs(1));
        // A second version of the module, as after a deploy, counts on.
        metrics
            .meter(&module)
            .event("on-request", "ok", Duration::from_micros(30));
        meter.instance_started();
        meter.hot();

        let counts = metrics.by_module()["meter-test"];
        assert_eq!((counts.events, counts.failures), (4, 1));
        let text = metrics.encode(Snapshot::default(), false);
        let sample = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .map(str::to_owned)
        };
        let events = |outcome: &str| {
            sample(&format!(
                "comet_events_total{{module=\"meter-test\",event=\"on-request\",outcome=\"{outcome}\"}}"
            ))
        };
        assert_eq!(events("ok").as_deref(), Some("3"), "{text}");
        assert_eq!(events("timeout").as_deref(), Some("1"), "{text}");
        let latency =
            "comet_event_duration_seconds_count{module=\"meter-test\",event=\"on-request\"}";
        assert_eq!(sample(latency).as_deref(), Some("4"), "{text}");
        let started = "comet_instances_started_total{module=\"meter-test\"}";
        assert_eq!(sample(started).as_deref(), Some("1"), "{text}");
        let hot = "comet_events_hot_total{module=\"meter-test\"}";
        assert_eq!(sample(hot).as_deref(), Some("1"), "{text}");
    }

    #[test]
    fn two_values_count_apart() {
        let (a, b) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
        a.connections("sse").opened.inc();
        a.publish("api", "published");
        let line = |m: &Metrics, series: &str| {
            m.encode(Snapshot::default(), false)
                .lines()
                .any(|l| l.starts_with(series))
        };
        assert!(line(
            &a,
            "comet_connections_opened_total{transport=\"sse\"} 1"
        ));
        assert!(!line(
            &b,
            "comet_connections_opened_total{transport=\"sse\"} 1"
        ));
        assert!(line(&a, "comet_publishes_total{"));
        assert!(!line(&b, "comet_publishes_total{"));
    }
}
