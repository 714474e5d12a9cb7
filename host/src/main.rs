//! The `comet` command line: build or load a handler and serve it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use comet_host::channels::{HistoryLimits, Hub, HubConfig, MemoryBroker};
use comet_host::transports::{self, EndpointConfig};
use comet_host::{
    EngineSettings, Limits, MemoryKv, ModuleServices, Runtime, guest_build, limits, server,
};

/// Comet: a WebAssembly edge runtime for real-time web handlers.
///
/// Handlers are WebAssembly components built with the comet-sdk crate for
/// wasm32-wasip2. Each HTTP request runs in a fresh sandbox with a deadline
/// and a memory limit.
#[derive(Debug, Parser)]
#[command(name = "comet", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a handler: a .wasm component, or a guest crate directory that is
    /// built with cargo first.
    ///
    /// Example: comet run guest-examples/hello --listen 127.0.0.1:8080
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A .wasm component, or a directory holding a guest crate (Cargo.toml).
    path: PathBuf,

    /// Address to serve HTTP on. Port 0 picks a free port; the address in use
    /// is printed on start.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,

    /// Module name, used in logs and as the kv namespace. Default: the file
    /// or crate directory name.
    #[arg(long)]
    name: Option<String>,

    /// Build a guest crate with cargo's dev profile instead of --release.
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

    /// Messages a client may have queued before it is dropped as a slow
    /// consumer (it can resume by cursor).
    #[arg(long, value_name = "N", default_value_t = comet_host::channels::hub::DEFAULT_QUEUE_LEN)]
    queue_len: usize,

    /// Client connections (streams, polls, WebSockets) held at once; more get
    /// 503.
    #[arg(long, value_name = "N", default_value_t = comet_host::channels::hub::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Messages of history kept per channel, for resuming clients.
    #[arg(long, value_name = "N", default_value_t = comet_host::channels::broker::DEFAULT_HISTORY_LEN)]
    history_len: usize,

    /// A configuration value the handler reads with `config::get`
    /// (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,

    #[command(flatten)]
    limits: LimitArgs,
}

/// Sandbox limits for every event of the module.
#[derive(Debug, Args)]
#[command(next_help_heading = "Sandbox limits")]
struct LimitArgs {
    /// Wall-clock deadline of one event, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = limits::DEFAULT_DEADLINE.as_millis() as u64)]
    deadline_ms: u64,

    /// Linear memory one instance may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = limits::DEFAULT_MEMORY_BYTES >> 20)]
    memory_mib: usize,

    /// Largest request body passed to the handler, in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = limits::DEFAULT_MAX_REQUEST_BODY)]
    max_request_body: usize,

    /// Largest response body the handler may return, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = limits::DEFAULT_MAX_RESPONSE_BODY)]
    max_response_body: usize,

    /// Most headers the handler may set on one response.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_MAX_HEADERS)]
    max_headers: usize,

    /// Events that may run at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = comet_host::EngineSettings::default().max_instances)]
    max_instances: u32,
}

impl LimitArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
        if self.deadline_ms == 0 {
            bail!("--deadline-ms must be at least 1");
        }
        if self.memory_mib == 0 {
            bail!("--memory-mib must be at least 1");
        }
        Ok(Limits {
            deadline: Duration::from_millis(self.deadline_ms),
            memory_bytes: self.memory_mib << 20,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let limits = args.limits.limits()?;
    let wasm_path = resolve_component(&args.path, !args.debug)?;
    let bytes = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.path));

    let settings = EngineSettings {
        max_instances: args.limits.max_instances,
        max_memory_bytes: limits.memory_bytes,
        ..EngineSettings::default()
    };
    let runtime = Runtime::new(settings).context("cannot start the WebAssembly engine")?;
    let hub = Hub::new(
        Arc::new(MemoryBroker::default()),
        HubConfig {
            queue_len: args.queue_len,
            max_connections: args.max_connections,
            history: HistoryLimits {
                max_len: args.history_len,
                ..HistoryLimits::default()
            },
        },
    );
    let services = Arc::new(ModuleServices {
        name: name.as_str().into(),
        kv: Arc::new(MemoryKv::default()),
        config: args.vars.into_iter().collect::<BTreeMap<_, _>>(),
        hub,
    });
    let publish_token = match args.publish_token {
        Some(t) if !t.is_empty() => t,
        _ => {
            let token = random_token();
            println!("comet: publish token (set COMET_PUBLISH_TOKEN to choose one): {token}");
            token
        }
    };
    let endpoints = EndpointConfig {
        publish_token,
        heartbeat: transports::DEFAULT_HEARTBEAT,
        hold_timeout: transports::DEFAULT_HOLD_TIMEOUT,
    };
    let started = Instant::now();
    let module = runtime
        .load(&bytes, services, limits)
        .with_context(|| format!("cannot load {}", wasm_path.display()))?;
    tracing::info!(module = %name, elapsed = ?started.elapsed(), "module compiled");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("comet: serving {name} on http://{addr}");
        let app = server::App::new(module, endpoints);
        server::serve(
            listener,
            app,
            shutdown_signal(),
            server::DEFAULT_DRAIN_TIMEOUT,
        )
        .await?;
        // Keep the engine (and its epoch ticker) alive until serving stops.
        drop(runtime);
        Ok(())
    })
}

/// 128 random bits as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // Without OS randomness there is no safe token: refuse to run.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `.wasm` file as it is; a crate directory built first.
fn resolve_component(path: &Path, release: bool) -> anyhow::Result<PathBuf> {
    if path.is_dir() {
        eprintln!(
            "comet: building {} for {}",
            path.display(),
            guest_build::GUEST_TARGET
        );
        return Ok(guest_build::build_crate(path, release)?);
    }
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    Ok(path.to_path_buf())
}

fn default_name(path: &Path) -> String {
    let stem = if path.is_dir() {
        path.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
    } else {
        path.file_stem().map(|s| s.to_string_lossy().into_owned())
    };
    stem.unwrap_or_else(|| "handler".into())
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
