//! The JSON report of one load generator process.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::target::{Server, Transport};

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize, Default, Clone)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One load step: a publish rate held for a measured window.
#[derive(Debug, Serialize, Clone)]
pub struct Step {
    /// The publish rate asked for (publishes/s; 0 = as fast as answers come).
    pub target_rate: f64,
    /// The measured window, seconds.
    pub seconds: f64,
    /// Publishes answered with success in the window.
    pub publishes: u64,
    /// Publishes per second achieved.
    pub publish_rate: f64,
    /// Publishes failed or refused in the window.
    pub publish_errors: u64,
    /// Messages received by this process's subscribers in the window.
    pub deliveries: u64,
    /// Deliveries per second.
    pub delivery_rate: f64,
    /// Server CPU (user + system, whole process tree) in the window, seconds.
    pub server_cpu_seconds: f64,
    /// Server CPU per delivery, µs.
    pub server_cpu_us_per_delivery: f64,
    /// Server CPU per publish, µs.
    pub server_cpu_us_per_publish: f64,
    /// CPU per delivery of the `--extra-pid` process tree, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_cpu_us_per_delivery: Option<f64>,
    /// Server resident memory at the end of the window, KiB.
    pub server_rss_kib: u64,
    /// Publish-to-deliver latency, µs.
    pub latency_us: Latency,
    /// Messages skipped, as seen by subscribers.
    pub gaps: u64,
    /// Messages seen twice or out of order.
    pub dups: u64,
}

/// The report of one process.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The server.
    pub server: Server,
    /// The transport.
    pub transport: Transport,
    /// Subscribers asked for (this shard's share).
    pub subscribers: usize,
    /// Subscribers that subscribed.
    pub connected: usize,
    /// Subscribers that failed to subscribe.
    pub connect_failures: usize,
    /// Subscribers whose connection ended during the run.
    pub disconnects: usize,
    /// Seconds to connect them all.
    pub connect_seconds: f64,
    /// Server CPU (user + system) spent while the subscribers connected and
    /// subscribed, per connected subscriber: the cost of connection set-up.
    pub server_cpu_us_per_connection: f64,
    /// Channels.
    pub channels: usize,
    /// Publisher connections (0 in other shards than the first).
    pub publishers: usize,
    /// `i/n` when the run is split over several processes.
    pub shard: String,
    /// Source addresses used.
    pub source_addrs: usize,
    /// Server RSS before connecting, KiB.
    pub rss_before_kib: u64,
    /// Server RSS after connecting and settling, KiB.
    pub rss_connected_kib: u64,
    /// (rss_connected - rss_before) / connected.
    pub kib_per_connection: f64,
    /// Server processes counted.
    pub server_processes: usize,
    /// The load steps.
    pub steps: Vec<Step>,
    /// Messages published but never received, summed over subscribers, after
    /// the last step and a drain period.
    pub missing_at_end: u64,
    /// The command line.
    pub command: String,
}
