//! `comet run`: turn the command line or an app manifest into a running
//! server (engine, hub, registry, public and admin listeners), optionally
//! watching the modules' sources.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use comet_config::broker::BrokerSpec;
use comet_host::app::{Host, HostConfig};
use comet_host::channels::HistoryLimits;
use comet_host::deploy::{ModuleSpec, Origin, Registry};
use comet_host::edge::Route;
use comet_host::http::auth;
use comet_host::limits::{self, Limits};
use comet_host::manifest::{Manifest, ModuleEntry};
use comet_host::redis::{RedisBroker, RedisConfig, redacted};
use comet_host::runtime::EngineSettings;

use crate::source::resolve_component;

/// Default admin listener: loopback only.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// Default public listener.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Default data directory (uploads and the compile cache), relative to the
/// working directory.
const DEFAULT_DATA_DIR: &str = ".comet";

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A .wasm component, or a directory holding a guest crate (Cargo.toml).
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    path: Option<PathBuf>,

    /// An app manifest (TOML): modules, routes, namespaces, limits, grants,
    /// listeners. See app.example.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Rebuild and swap in a module when its source changes (a guest crate
    /// directory or a .wasm file). The old version keeps serving when a build
    /// fails.
    #[arg(long)]
    watch: bool,

    /// Address to serve HTTP on [default: 127.0.0.1:8080, or the manifest's].
    /// Port 0 picks a free port; the address in use is printed on start.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Let several comet processes listen on the same address (SO_REUSEPORT):
    /// the kernel spreads connections over them. Give them one Redis broker
    /// so they serve one set of channels.
    #[arg(long)]
    reuse_port: bool,

    /// Where channels, history, presence and kv live: `memory` (this
    /// process) or a Redis URL shared by several comet processes,
    /// `redis://[user[:password]@]host[:port][/db]` (`rediss://` for TLS)
    /// [default: memory, or the manifest's].
    #[arg(long, value_name = "memory|URL", value_parser = BrokerSpec::from_flag)]
    broker: Option<BrokerSpec>,

    /// Address of the admin API [default: 127.0.0.1:9090, or the manifest's].
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,

    /// Do not serve the admin API.
    #[arg(long, conflicts_with = "admin_listen")]
    no_admin: bool,

    /// Also serve Prometheus metrics (`GET /metrics`) without a token on
    /// ADDR, for scrapers on a private network; the admin API serves them
    /// with its token either way.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Bearer token of the admin API. Default: the COMET_ADMIN_TOKEN
    /// environment variable, else a random token printed at start.
    #[arg(
        long,
        env = "COMET_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,

    /// Where uploaded modules and the compile cache are kept [default: .comet,
    /// or the manifest's].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Largest module the admin API accepts, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = comet_host::deploy::DEFAULT_MAX_MODULE_BYTES >> 20)]
    max_module_mib: usize,

    /// Compile every time instead of using the compile cache.
    #[arg(long)]
    no_cache: bool,

    /// Module name, used in logs, the admin API and as the kv namespace.
    /// Default: the file or crate directory name.
    #[arg(long, conflicts_with = "config")]
    name: Option<String>,

    /// Build guest crates with cargo's dev profile instead of --release.
    #[arg(long)]
    debug: bool,

    /// Bearer token for `POST /comet/publish/CHANNEL`. Default: the
    /// COMET_PUBLISH_TOKEN environment variable, else a random token printed
    /// at start.
    #[arg(
        long,
        env = "COMET_PUBLISH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    publish_token: Option<String>,

    /// Messages a client may have queued, or waiting on its socket, before
    /// it is dropped as a slow consumer (it can resume by cursor)
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    queue_len: Option<usize>,

    /// Client connections (streams, polls, WebSockets) held at once; more get
    /// 503 [default: 16000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Messages of history kept per channel, for resuming clients.
    #[arg(long, value_name = "N", default_value_t = comet_host::channels::broker::DEFAULT_HISTORY_LEN, conflicts_with = "config")]
    history_len: usize,

    /// Seconds a message is kept in history.
    #[arg(long, value_name = "S", default_value_t = comet_host::channels::broker::DEFAULT_HISTORY_AGE.as_secs(), conflicts_with = "config")]
    history_age_s: u64,

    /// Let WebSocket clients publish (the `publish` operation) to channels
    /// outside any namespace; on-publish still decides. Off by default: an
    /// anonymous client could otherwise create channels and fill history.
    #[arg(long, conflicts_with = "config")]
    client_publish: bool,

    /// History kept in all channels together, in MiB; past it the oldest
    /// messages go first [default: 256].
    #[arg(long, value_name = "MIB")]
    history_mib: Option<usize>,

    /// Channels the server knows at once; more are refused (503
    /// `channel-limit`) [default: 100000].
    #[arg(long, value_name = "N")]
    max_channels: Option<usize>,

    /// Longest a client may take to send a request head, and longest an idle
    /// HTTP/1 connection is kept between requests, in seconds.
    #[arg(long, value_name = "S", default_value_t = comet_host::edge::DEFAULT_HEADER_TIMEOUT.as_secs())]
    header_timeout_s: u64,

    /// Connections one client address may hold at once; 0 for no bound
    /// (behind a proxy every client has the proxy's address).
    #[arg(long, value_name = "N", default_value_t = comet_host::edge::DEFAULT_MAX_PER_ADDRESS)]
    max_connections_per_ip: usize,

    /// Longest a write to a client may wait without progress, in seconds,
    /// before the client is disconnected (it resumes by cursor).
    #[arg(long, value_name = "S", default_value_t = comet_host::transports::DEFAULT_WRITE_TIMEOUT.as_secs())]
    write_timeout_s: u64,

    /// Built-in subscribing endpoints to serve, comma-separated: websocket,
    /// sse, stream, poll. Clients of one left out get 403
    /// transport-disabled (the browser client falls back to the next).
    #[arg(long, value_name = "LIST", default_value = "websocket,sse,stream,poll", value_parser = comet_host::transports::Enabled::parse)]
    transports: comet_host::transports::Enabled,

    /// A configuration value the handler reads with `config::get`
    /// (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var, conflicts_with = "config")]
    vars: Vec<(String, String)>,

    /// Events that may run at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = EngineSettings::default().max_instances)]
    max_instances: u32,

    #[command(flatten)]
    limits: LimitArgs,
}

/// Sandbox limits of the module given as PATH (with --config, each module's
/// limits come from the manifest).
#[derive(Debug, Args)]
#[command(next_help_heading = "Sandbox limits (PATH only; manifests set them per module)")]
struct LimitArgs {
    /// Wall-clock deadline of one event, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = limits::DEFAULT_DEADLINE.as_millis() as u64, conflicts_with = "config")]
    deadline_ms: u64,

    /// CPU time one event may use, in milliseconds (counted while it
    /// computes; below the deadline, so a spinning guest is cut off sooner).
    #[arg(long, value_name = "MS", default_value_t = limits::DEFAULT_CPU.as_millis() as u64, conflicts_with = "config")]
    cpu_ms: u64,

    /// Events of the module that may run at once; more get 503 busy.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_MAX_CONCURRENT, conflicts_with = "config")]
    max_concurrent: usize,

    /// Linear memory one instance may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = limits::DEFAULT_MEMORY_BYTES >> 20, conflicts_with = "config")]
    memory_mib: usize,

    /// Events one instance may serve if the module opts in to instance
    /// reuse (`#[comet_sdk::handler(reuse_instances)]`); 1 turns reuse off.
    /// Modules that do not opt in get a fresh instance per event.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_EVENTS_PER_INSTANCE, conflicts_with = "config")]
    events_per_instance: u32,

    /// Largest request body passed to the handler, in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = limits::DEFAULT_MAX_REQUEST_BODY, conflicts_with = "config")]
    max_request_body: usize,

    /// Largest response body the handler may return, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = limits::DEFAULT_MAX_RESPONSE_BODY, conflicts_with = "config")]
    max_response_body: usize,

    /// Most headers the handler may set on one response.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_MAX_HEADERS, conflicts_with = "config")]
    max_headers: usize,
}

impl LimitArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
        if self.deadline_ms == 0 {
            bail!("--deadline-ms must be at least 1");
        }
        if self.memory_mib == 0 {
            bail!("--memory-mib must be at least 1");
        }
        if self.cpu_ms == 0 || self.max_concurrent == 0 || self.events_per_instance == 0 {
            bail!("--cpu-ms, --max-concurrent and --events-per-instance must be at least 1");
        }
        Ok(Limits {
            deadline: Duration::from_millis(self.deadline_ms),
            cpu: Duration::from_millis(self.cpu_ms),
            max_concurrent: self.max_concurrent,
            memory_bytes: self.memory_mib << 20,
            events_per_instance: self.events_per_instance,
            max_request_body: self.max_request_body,
            max_response_body: self.max_response_body,
            max_headers: self.max_headers,
            ..Limits::default()
        })
    }
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl RunArgs {
    /// The manifest: read from --config, or made from PATH and the flags.
    fn manifest(&self) -> anyhow::Result<Manifest> {
        if let Some(file) = &self.config {
            return Ok(Manifest::load(file)?);
        }
        let path = self.path.clone().context("give PATH or --config")?;
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        let name = self.name.clone().unwrap_or_else(|| default_name(&path));
        comet_host::deploy::validate_name(&name).with_context(|| {
            format!(
                "the module name comes from {}; choose one with --name",
                path.display()
            )
        })?;
        let spec = ModuleSpec {
            limits: self.limits.limits()?,
            kv: true,
            config: self.vars.iter().cloned().collect(),
        };
        let mut modules = BTreeMap::new();
        modules.insert(
            name.clone(),
            ModuleEntry {
                path: Some(path),
                spec,
            },
        );
        Ok(Manifest {
            channel_module: Some(name.clone()),
            default_history: Some(HistoryLimits {
                max_len: self.history_len,
                max_age: Duration::from_secs(self.history_age_s),
            }),
            client_publish: self.client_publish,
            modules,
            routes: vec![Route {
                host: None,
                prefix: "/".into(),
                module: name,
            }],
            ..Manifest::default()
        })
    }
}

/// Make the module name from a path: the crate directory or file stem,
/// lower-cased, with other characters turned into `-`.
fn default_name(path: &Path) -> String {
    let stem = if path.is_dir() {
        path.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
    } else {
        path.file_stem().map(|s| s.to_string_lossy().into_owned())
    };
    let name: String = stem
        .unwrap_or_else(|| "handler".into())
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_start_matches(['-', '_'])
        .chars()
        .take(63)
        .collect()
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut manifest = args.manifest()?;
    if args.history_mib == Some(0) || args.max_channels == Some(0) || args.queue_len == Some(0) {
        bail!("--history-mib, --max-channels and --queue-len must be at least 1");
    }
    if args.write_timeout_s == 0 || args.header_timeout_s == 0 {
        bail!("--write-timeout-s and --header-timeout-s must be at least 1");
    }
    manifest.history_bytes = args.history_mib.map(|m| m << 20).or(manifest.history_bytes);
    manifest.max_channels = args.max_channels.or(manifest.max_channels);
    manifest.queue_len = args.queue_len.or(manifest.queue_len);
    manifest.max_connections = args.max_connections.or(manifest.max_connections);
    if let Some(broker) = args.broker.clone() {
        manifest.broker = broker;
    }
    raise_fd_limit();
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| manifest.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

    // The pool's slot size must fit the largest module's memory.
    let max_memory = manifest
        .modules
        .values()
        .map(|m| m.spec.limits.memory_bytes)
        .chain([limits::DEFAULT_MEMORY_BYTES])
        .max()
        .unwrap_or(limits::DEFAULT_MEMORY_BYTES);
    let listen = args
        .listen
        .or(manifest.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
    let admin_listen = (!args.no_admin).then(|| {
        args.admin_listen
            .or(manifest.admin_listen)
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("valid default"))
    });
    let release = !args.debug;

    let publish_token = token(args.publish_token.clone(), "publish", "COMET_PUBLISH_TOKEN");
    let mut config = HostConfig::new(manifest.clone(), publish_token);
    config.engine = EngineSettings {
        max_instances: args.max_instances,
        max_memory_bytes: max_memory,
        ..EngineSettings::default()
    };
    config.data_dir = Some(data_dir);
    config.compile_cache = !args.no_cache;
    config.max_module_bytes = args.max_module_mib << 20;
    config.endpoints.write_timeout = Duration::from_secs(args.write_timeout_s);
    config.endpoints.transports = args.transports;
    config.connection_limits = comet_host::edge::ConnectionLimits {
        header_timeout: Duration::from_secs(args.header_timeout_s),
        max_per_address: args.max_connections_per_ip,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        if let BrokerSpec::Redis { url, prefix } = &manifest.broker {
            let mut redis = RedisConfig::new(url.as_str());
            redis.prefix = prefix.clone();
            let broker = RedisBroker::connect(redis).await?;
            eprintln!(
                "comet: channels, presence and kv on Redis at {} (prefix {prefix:?}, node {})",
                redacted(url),
                broker.node_id()
            );
            config.kv = Some(Arc::new(broker.kv()));
            config.broker = Some(broker);
        }
        let mut host = Host::new(config)?;
        if let Some(at) = args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} for metrics (--metrics-listen)"))?;
            println!("comet: metrics on http://{}/metrics", listener.local_addr()?);
            host = host.serve_metrics_on(listener);
        }
        let registry = host.registry().clone();
        let watched = load_modules(&registry, &manifest, args.watch, release).await?;
        let listener = bind(listen, args.reuse_port)
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let admin = match admin_listen {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen on {at} for the admin API (choose another with --admin-listen, or --no-admin)"))?;
                let token = token(args.admin_token.clone(), "admin", "COMET_ADMIN_TOKEN");
                println!("comet: admin API on http://{}", listener.local_addr()?);
                Some((listener, token))
            }
            None => None,
        };
        let _watcher = if args.watch {
            Some(crate::watch::spawn(registry.clone(), watched, release)?)
        } else {
            None
        };
        tracing::info!(elapsed = ?started.elapsed(), "ready");
        println!(
            "comet: serving {} on http://{addr}",
            host.served_names().join(", ")
        );
        host.serve(listener, admin, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Load every module: its latest upload if one is stored (unless watching,
/// where the source is the truth), else its path. Returns what to watch.
async fn load_modules(
    registry: &Arc<Registry>,
    manifest: &Manifest,
    watching: bool,
    release: bool,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let stored = registry.stored_names();
    let mut watched = Vec::new();
    for (name, ModuleEntry { path, .. }) in &manifest.modules {
        let has_upload = stored.contains(name);
        if has_upload && !(watching && path.is_some()) {
            let info = registry
                .restore(name)
                .await
                .with_context(|| format!("cannot load the stored upload of {name}"))?;
            if let (Some(info), Some(path)) = (info, path) {
                eprintln!(
                    "comet: {name}: serving uploaded version {} (not {}); roll back or remove uploads with `comet modules`",
                    info.version,
                    path.display()
                );
            }
            continue;
        }
        let Some(path) = path else {
            eprintln!(
                "comet: {name}: no path and no upload yet; deploy it with `comet deploy {name} PATH`"
            );
            continue;
        };
        let wasm = resolve_component(path, release)?;
        let bytes =
            std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
        registry
            .deploy(name, bytes, Origin::File(wasm.clone()))
            .await
            .with_context(|| format!("cannot load {}", wasm.display()))?;
        watched.push((name.clone(), path.clone()));
    }
    // Uploads of names the manifest does not list are served too (the admin
    // API shows them; routes decide whether anything reaches them).
    for name in stored {
        if !manifest.modules.contains_key(&name) {
            registry
                .restore(&name)
                .await
                .with_context(|| format!("cannot load the stored upload of {name}"))?;
        }
    }
    Ok(watched)
}

/// A token from the flag or environment, else a random one printed for the
/// operator.
fn token(given: Option<String>, what: &str, env: &str) -> String {
    match given {
        Some(t) if !t.is_empty() => t,
        _ => {
            let token = auth::random_token();
            println!("comet: {what} token (set {env} to choose one): {token}");
            token
        }
    }
}

/// A listener on `addr`, shared with other processes if `reuse_port`.
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    // The kernel caps this at net.core.somaxconn.
    socket.listen(4096)
}

/// Most open files comet can use: every connection is one. The soft limit
/// is raised to the hard one; a low hard limit is worth a warning.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        eprintln!("comet: cannot raise the open file limit from {soft} to {hard}");
    }
    if hard < 4096 {
        eprintln!(
            "comet: warning: at most {hard} open files (ulimit -Hn); every connection takes one"
        );
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
