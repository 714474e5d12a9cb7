//! The load generator of the peer comparison: N subscribers (SSE, WebSocket
//! or long-poll) over C channels, a publisher at fixed rates, and a JSON
//! report with latency, gaps, duplicates, server memory and server CPU per
//! delivery. See BENCHMARKS.md ("Peer comparison") and bench/run-all.sh.
//!
//! Example: `loadgen --server comet --addr 127.0.0.1:18100 --server-pid PID
//! --token T --transport ws --subscribers 10000 --rates 1,2,5 --out r.json`

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use comet_bench::publisher::{Counters, Publisher};
use comet_bench::report::{Latency, Report, Step};
use comet_bench::stats::Stats;
use comet_bench::target::{Server, Target, Transport};
use comet_bench::tls::{SharedH2, Tls};
use comet_bench::transport::{Sink, Subscriber};
use comet_bench::{net, procstat};
use tokio::sync::{Semaphore, oneshot, watch};

/// A subscriber that is not subscribed by then counts as failed.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(about = "Load generator for comet and its peers")]
struct Args {
    /// The server flavour (URLs, framing, publish request).
    #[arg(long, value_enum)]
    server: Server,
    /// Where subscribers connect.
    #[arg(long)]
    addr: SocketAddr,
    /// Where the publisher connects (default: --addr).
    #[arg(long)]
    publish_addr: Option<SocketAddr>,
    /// comet's publish token.
    #[arg(long, env = "COMET_PUBLISH_TOKEN", default_value = "")]
    token: String,
    /// The server's pid: its process tree's RSS and CPU time are sampled.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Another process (and its children) whose CPU time is measured over
    /// each step, reported apart: a Redis server, say.
    #[arg(long)]
    extra_pid: Option<u32>,
    /// Subscriber transport.
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// Subscribers in total (over all shards).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Channels; subscriber i subscribes to channel i % channels.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Publisher connections (each owns channels c with c % publishers == its index).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Publish rates to hold in turn, total publishes/s (0 = as fast as the
    /// server answers). None: an idle run (memory only).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Measured seconds per rate.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds at each rate before the window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait after connecting before sampling memory.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Seconds to keep the connections open at the end (multi-process runs).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// New connections per second.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Connections being set up at once, at most.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Spread client sockets over 127.0.0.1..=127.0.0.M.
    #[arg(long, default_value_t = 1)]
    source_addrs: usize,
    /// This process's share: `i/n` opens subscribers i, i+n, ...; only shard 0 publishes.
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Speak TLS to the server (comet's --tls-cert), trusting the
    /// certificate in this PEM file for the name `localhost`.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// Over TLS, make a full handshake on every connection (no session
    /// resumption).
    #[arg(long, requires = "tls_ca")]
    tls_no_resume: bool,
    /// Over TLS, SSE subscribers share HTTP/2 connections of this many
    /// streams each (0: one HTTP/1.1 connection each).
    #[arg(long, default_value_t = 0, requires = "tls_ca")]
    h2_streams: usize,
    /// WebSocket subscribers offer permessage-deflate and inflate what
    /// comes compressed (comet; the server must agree).
    #[arg(long)]
    ws_deflate: bool,
    /// Pad payloads with words (text that compresses as prose does, about
    /// 3:1) instead of `x` (which compresses 100:1).
    #[arg(long)]
    payload_words: bool,
    /// Write the JSON report here (default: stdout).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = net::raise_fd_limit()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args, limit))?;
    let json = serde_json::to_string_pretty(&report)?;
    match &args.out {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    // Do not wait for thousands of connection tasks to wind down.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    let (i, n) = s.split_once('/').context("--shard is i/n")?;
    let (i, n): (usize, usize) = (i.parse()?, n.parse()?);
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= i < n");
    }
    Ok((i, n))
}

/// Counts of the connect phase.
#[derive(Debug, Default)]
struct Connects {
    ready: AtomicUsize,
    failed: AtomicUsize,
    ended: AtomicUsize,
}

fn sample(pid: Option<u32>) -> procstat::Sample {
    pid.map(procstat::sample).unwrap_or_default()
}

fn progress(label: &str, start: Instant, connects: &Connects, want: usize, stats: &Stats) {
    eprintln!(
        "[{label}] {:6.1}s connected {}/{} failed {} ended {} received {}",
        start.elapsed().as_secs_f64(),
        connects.ready.load(Ordering::Relaxed),
        want,
        connects.failed.load(Ordering::Relaxed),
        connects.ended.load(Ordering::Relaxed),
        stats.total.load(Ordering::Relaxed),
    );
}

async fn run(args: &Args, fd_limit: u64) -> anyhow::Result<Report> {
    let (shard, shards) = parse_shard(&args.shard)?;
    let label = format!(
        "loadgen {:?} {:?} {}",
        args.server, args.transport, args.shard
    );
    let target = Arc::new(Target {
        server: args.server,
        addr: args.addr,
        publish_addr: args.publish_addr.unwrap_or(args.addr),
        token: args.token.clone(),
        tls: args
            .tls_ca
            .as_deref()
            .map(|ca| Tls::new(ca, args.tls_no_resume))
            .transpose()?,
        h2: (args.h2_streams > 0).then(|| Arc::new(SharedH2::new(args.h2_streams))),
        ws_deflate: args.ws_deflate,
    });
    target.subscribe_path(args.transport, "probe")?;
    let channels: Arc<Vec<String>> = Arc::new(
        (0..args.channels.max(1))
            .map(|c| format!("bench-{c}"))
            .collect(),
    );
    let mine: Vec<usize> = (shard..args.subscribers).step_by(shards).collect();
    if mine.len() as u64 + 100 > fd_limit {
        eprintln!(
            "[{label}] warning: {} sockets for an open-files limit of {fd_limit}: use more shards",
            mine.len()
        );
    }
    let stats = Arc::new(Stats::new());
    let connects = Arc::new(Connects::default());
    let before = sample(args.server_pid);

    // Connect at a bounded rate and concurrency.
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut lasts = Vec::with_capacity(mine.len());
    let period = Duration::from_secs_f64(1.0 / args.connect_rate.max(1.0));
    let mut due = tokio::time::Instant::now();
    let mut last_progress = Instant::now();
    for &i in &mine {
        let permit = permits.clone().acquire_owned().await?;
        due += period;
        tokio::time::sleep_until(due).await;
        let channel = i % channels.len();
        let last_seq = Arc::new(AtomicU64::new(0));
        lasts.push((channel, last_seq.clone()));
        let subscriber = Subscriber {
            target: target.clone(),
            transport: args.transport,
            channel: channels[channel].clone(),
            source: (args.source_addrs > 1).then(|| net::source_addr(i, args.source_addrs)),
        };
        let sink = Sink {
            stats: stats.clone(),
            last_seq,
        };
        let task_connects = connects.clone();
        tokio::spawn(async move {
            let connects = task_connects;
            let mut permit = Some(permit);
            for attempt in 0..3 {
                let (tx, mut rx) = oneshot::channel();
                let run = subscriber.clone().run(sink.clone(), tx);
                tokio::pin!(run);
                let failure = tokio::select! {
                    result = &mut run => result.err(),
                    ready = &mut rx => {
                        if ready.is_ok() {
                            connects.ready.fetch_add(1, Ordering::Relaxed);
                            drop(permit.take());
                            let _ = run.await;
                            connects.ended.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        None
                    }
                    _ = tokio::time::sleep(SUBSCRIBE_TIMEOUT) => {
                        Some(anyhow::anyhow!("not subscribed after {SUBSCRIBE_TIMEOUT:?}"))
                    }
                };
                if attempt == 2 {
                    if let Some(e) = failure
                        && connects.failed.load(Ordering::Relaxed) < 3
                    {
                        eprintln!("subscribe failed: {e:#}");
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            connects.failed.fetch_add(1, Ordering::Relaxed);
        });
        if last_progress.elapsed() >= Duration::from_secs(2) {
            progress(&label, start, &connects, mine.len(), &stats);
            last_progress = Instant::now();
        }
    }
    while connects.ready.load(Ordering::Relaxed) + connects.failed.load(Ordering::Relaxed)
        < mine.len()
    {
        if start.elapsed() > Duration::from_secs(300) {
            eprintln!("[{label}] giving up waiting for the last subscribers");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last_progress.elapsed() >= Duration::from_secs(2) {
            progress(&label, start, &connects, mine.len(), &stats);
            last_progress = Instant::now();
        }
    }
    let connect_seconds = start.elapsed().as_secs_f64();
    // Sampled before the settle pause, so idle time is not charged to set-up.
    let setup_sample = sample(args.server_pid);
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let connected_sample = sample(args.server_pid);
    let connected = connects.ready.load(Ordering::Relaxed);
    progress(&label, start, &connects, mine.len(), &stats);
    println!("ready {connected}");
    let _ = std::io::stdout().flush();

    // Publish at each rate in turn (first shard only).
    let mut steps = Vec::new();
    let seqs: Arc<Vec<AtomicU64>> = Arc::new(channels.iter().map(|_| AtomicU64::new(0)).collect());
    let counters = Arc::new(Counters::default());
    let publishing = shard == 0 && !args.rates.is_empty();
    if publishing {
        let publisher = Arc::new(Publisher {
            target: target.clone(),
            channels: channels.clone(),
            seqs: seqs.clone(),
            counters: counters.clone(),
            payload_len: args.payload_bytes,
            payload_words: args.payload_words,
        });
        let (rate_tx, rate_rx) = watch::channel(None);
        publisher.start(args.publishers, &rate_rx);
        for &rate in &args.rates {
            rate_tx.send_replace(Some(rate));
            tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
            stats.take();
            let cpu0 = sample(args.server_pid);
            let extra0 = sample(args.extra_pid);
            let pub0 = counters.published.load(Ordering::Relaxed);
            let err0 = counters.errors.load(Ordering::Relaxed);
            let t0 = Instant::now();
            let window = Duration::from_secs_f64(args.duration);
            let mut seen = stats.total.load(Ordering::Relaxed);
            while t0.elapsed() < window {
                let tick = Duration::from_secs(1).min(window.saturating_sub(t0.elapsed()));
                tokio::time::sleep(tick).await;
                let total = stats.total.load(Ordering::Relaxed);
                eprintln!(
                    "[{label}] rate {rate}/s {:5.1}s published {} received {:.0}/s ended {}",
                    t0.elapsed().as_secs_f64(),
                    counters.published.load(Ordering::Relaxed) - pub0,
                    (total - seen) as f64 / tick.as_secs_f64().max(0.001),
                    connects.ended.load(Ordering::Relaxed),
                );
                seen = total;
            }
            let seconds = t0.elapsed().as_secs_f64();
            let w = stats.take();
            let cpu1 = sample(args.server_pid);
            let extra = args
                .extra_pid
                .map(|_| sample(args.extra_pid).cpu_seconds - extra0.cpu_seconds);
            let publishes = counters.published.load(Ordering::Relaxed) - pub0;
            let cpu = cpu1.cpu_seconds - cpu0.cpu_seconds;
            steps.push(Step {
                target_rate: rate,
                seconds,
                publishes,
                publish_rate: publishes as f64 / seconds,
                publish_errors: counters.errors.load(Ordering::Relaxed) - err0,
                deliveries: w.deliveries,
                delivery_rate: w.deliveries as f64 / seconds,
                server_cpu_seconds: cpu,
                server_cpu_us_per_delivery: cpu * 1e6 / w.deliveries.max(1) as f64,
                server_cpu_us_per_publish: cpu * 1e6 / publishes.max(1) as f64,
                extra_cpu_us_per_delivery: extra.map(|e| e * 1e6 / w.deliveries.max(1) as f64),
                server_rss_kib: cpu1.rss_kib,
                latency_us: Latency::from(&w.histogram),
                gaps: w.gaps,
                dups: w.dups,
            });
        }
        rate_tx.send_replace(None);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let missing_at_end = if publishing {
        lasts
            .iter()
            .map(|(c, last)| {
                seqs[*c]
                    .load(Ordering::Relaxed)
                    .saturating_sub(last.load(Ordering::Relaxed))
            })
            .sum()
    } else {
        0
    };
    if args.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    let grown = connected_sample.rss_kib.saturating_sub(before.rss_kib);
    Ok(Report {
        server: args.server,
        transport: args.transport,
        subscribers: mine.len(),
        connected,
        connect_failures: connects.failed.load(Ordering::Relaxed),
        disconnects: connects.ended.load(Ordering::Relaxed),
        connect_seconds,
        server_cpu_us_per_connection: (setup_sample.cpu_seconds - before.cpu_seconds) * 1e6
            / connected.max(1) as f64,
        channels: channels.len(),
        publishers: if publishing { args.publishers } else { 0 },
        shard: args.shard.clone(),
        source_addrs: args.source_addrs,
        rss_before_kib: before.rss_kib,
        rss_connected_kib: connected_sample.rss_kib,
        kib_per_connection: grown as f64 / connected.max(1) as f64,
        server_processes: connected_sample.processes,
        steps,
        missing_at_end,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })
}
