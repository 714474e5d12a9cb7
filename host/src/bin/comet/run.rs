//! `comet run`: the command line into the library's [`RunFlags`], then the
//! library launches the host; this prints what it did and serves until a
//! signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use comet_config::broker::BrokerSpec;
use comet_host::app::{
    self, BrokerInfo, CertEvent, ModuleFlags, RunFlags, Served, Source, Token, Trigger, WatchEvent,
};
use comet_host::edge::TlsFiles;
use comet_host::limits;
use comet_host::runtime::EngineSettings;
use comet_wire::origin::Allowed;
use ipnet::IpNet;

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

    /// Bearer key of the server API (`POST /comet/api/COMMAND`: disconnect,
    /// presence, history...). Default: the COMET_API_KEY environment
    /// variable, else the manifest's `api_key`, else a random key printed at
    /// start.
    #[arg(
        long,
        env = "COMET_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,

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

    /// Connections one client address may hold at once; 0 for no bound.
    /// Behind a proxy, name it with --trusted-proxy: the bound then applies
    /// to each client it forwards, not to the proxy.
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

    /// An origin whose pages may use the /comet/ endpoints (repeatable): open
    /// a WebSocket, and read streams, long-polls and /comet/client.js (CORS).
    /// `scheme://host[:port]`, `scheme://*.domain` (its subdomains), `null`,
    /// or `*` (any). Without it, only the server's own origin may open a
    /// WebSocket, and no other may read [default: the manifest's].
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    allowed_origins: Vec<Allowed>,

    /// Let the allowed origins' pages send cookies
    /// (Access-Control-Allow-Credentials); not with `*`.
    #[arg(long)]
    allow_credentials: bool,

    /// Serve TLS on the public listener with this certificate chain (PEM,
    /// the server's certificate first), offering HTTP/2 and HTTP/1.1. Re-read
    /// on SIGHUP and when the file changes [default: the manifest's [tls]].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve the admin API over TLS with this certificate chain (PEM), for
    /// an admin listener reached from elsewhere; re-read like --tls-cert
    /// [default: the manifest's [admin_tls]].
    #[arg(long, value_name = "FILE", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,

    /// The admin certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,

    /// A proxy or load balancer whose word on the client's address is taken
    /// (repeatable): an address or a CIDR block (10.0.0.0/8). Requests from
    /// it name their client in X-Forwarded-For (see --forwarded-header; the
    /// right-most address that is not a trusted proxy); the bound, logs and
    /// on-connect then see that client. Headers from other peers are not
    /// read [default: the manifest's].
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_block)]
    trusted_proxies: Vec<IpNet>,

    /// Trusted proxies send a PROXY protocol header (v1 or v2, HAProxy's)
    /// before each connection's bytes; it names the client instead of
    /// forwarding headers.
    #[arg(long, requires = "trusted_proxies")]
    proxy_protocol: bool,

    /// The one header trusted proxies name the client in: x-forwarded-for
    /// or forwarded (RFC 7239). The other is not read: a proxy passes it
    /// on as the client wrote it [default: x-forwarded-for, or the
    /// manifest's]
    #[arg(long, value_name = "HEADER", requires = "trusted_proxies")]
    forwarded_header: Option<comet_wire::forwarded::Header>,

    /// Compress WebSocket messages (permessage-deflate) for clients that
    /// offer it, as browsers do: each message once, for all of them
    /// [default: on, or the manifest's]
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    ws_compression: Option<bool>,

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

impl RunArgs {
    /// The flags, in the library's terms.
    fn flags(self) -> RunFlags {
        let source = match self.config {
            Some(file) => Source::Manifest(file),
            // clap requires one of PATH and --config.
            None => Source::Module(ModuleFlags {
                path: self.path.unwrap_or_default(),
                name: self.name,
                deadline_ms: self.limits.deadline_ms,
                cpu_ms: self.limits.cpu_ms,
                max_concurrent: self.limits.max_concurrent,
                memory_mib: self.limits.memory_mib,
                events_per_instance: self.limits.events_per_instance,
                max_request_body: self.limits.max_request_body,
                max_response_body: self.limits.max_response_body,
                max_headers: self.limits.max_headers,
                vars: self.vars,
                history_len: self.history_len,
                history_age_s: self.history_age_s,
                client_publish: self.client_publish,
            }),
        };
        RunFlags {
            source,
            watch: self.watch,
            release: !self.debug,
            listen: self.listen,
            reuse_port: self.reuse_port,
            broker: self.broker,
            admin_listen: self.admin_listen,
            no_admin: self.no_admin,
            metrics_listen: self.metrics_listen,
            admin_token: self.admin_token,
            publish_token: self.publish_token,
            api_key: self.api_key,
            data_dir: self.data_dir,
            max_module_mib: self.max_module_mib,
            no_cache: self.no_cache,
            queue_len: self.queue_len,
            max_connections: self.max_connections,
            history_mib: self.history_mib,
            max_channels: self.max_channels,
            header_timeout_s: self.header_timeout_s,
            max_connections_per_ip: self.max_connections_per_ip,
            write_timeout_s: self.write_timeout_s,
            transports: self.transports,
            allowed_origins: self.allowed_origins,
            allow_credentials: self.allow_credentials,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
            admin_tls: self
                .admin_tls_cert
                .zip(self.admin_tls_key)
                .map(|(cert, key)| TlsFiles { cert, key }),
            trusted_proxies: self.trusted_proxies,
            proxy_protocol: self.proxy_protocol,
            forwarded_header: self.forwarded_header,
            ws_compression: self.ws_compression,
            max_instances: self.max_instances,
        }
    }
}

fn parse_block(s: &str) -> Result<IpNet, String> {
    comet_config::manifest::parse_block(s)
}

fn parse_origin(s: &str) -> Result<Allowed, String> {
    Allowed::parse(s).map_err(|e| e.to_string())
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = args.flags().plan()?;
    tell_token(&plan.publish_token, "publish", "COMET_PUBLISH_TOKEN");
    tell_token(&plan.api_key, "server API", "COMET_API_KEY");
    if let Some((_, token)) = &plan.admin {
        tell_token(token, "admin", "COMET_ADMIN_TOKEN");
    }
    if let Some(files) = app::raise_open_file_limit() {
        if files.raise_failed {
            eprintln!(
                "comet: cannot raise the open file limit from {} to {}",
                files.soft, files.hard
            );
        }
        if files.hard < 4096 {
            eprintln!(
                "comet: warning: at most {} open files (ulimit -Hn); every connection takes one",
                files.hard
            );
        }
    }
    let (watch, release) = (plan.watch, plan.release);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let launched = app::launch(plan).await?;
        if let BrokerInfo::Redis { url, prefix, node } = &launched.broker {
            eprintln!(
                "comet: channels, presence and kv on Redis at {url} (prefix {prefix:?}, node {node})"
            );
        }
        if let Some(at) = launched.metrics_addr {
            println!("comet: metrics on http://{at}/metrics");
        }
        for served in &launched.started.served {
            match served {
                Served::Upload {
                    name,
                    version,
                    instead_of: Some(path),
                } => eprintln!(
                    "comet: {name}: serving uploaded version {version} (not {}); roll back or remove uploads with `comet modules`",
                    path.display()
                ),
                Served::Nothing { name } => eprintln!(
                    "comet: {name}: no path and no upload yet; deploy it with `comet deploy {name} PATH`"
                ),
                Served::Upload { .. } | Served::File { .. } => {}
            }
        }
        if let Some((listener, _)) = &launched.admin {
            let scheme = match launched.host.admin_tls() {
                Some(_) => "https",
                None => "http",
            };
            println!("comet: admin API on {scheme}://{}", listener.local_addr()?);
        }
        let registry = launched.host.registry().clone();
        let _watcher = if watch {
            let watched = launched.started.watched.clone();
            Some(app::watch(registry, watched, release, tell)?)
        } else {
            None
        };
        // The public and the admin certificate, each re-read on its own.
        let _reloaders = [("", launched.host.tls()), ("admin ", launched.host.admin_tls())]
            .into_iter()
            .filter_map(|(which, tls)| Some((which, tls?.clone())))
            .map(|(which, tls)| app::reload_certificates(tls, move |e| tell_certificate(which, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let addr = launched.listener.local_addr()?;
        let scheme = if launched.host.tls().is_some() { "https" } else { "http" };
        tracing::info!(elapsed = ?started.elapsed(), "ready");
        println!(
            "comet: serving {} on {scheme}://{addr}",
            launched.host.served_names().join(", ")
        );
        let app::Launched {
            host,
            listener,
            admin,
            ..
        } = launched;
        host.serve(listener, admin, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Print a token the operator did not choose (and how to choose one).
fn tell_token(token: &Token, what: &str, env: &str) {
    if token.generated {
        println!(
            "comet: {what} token (set {env} to choose one): {}",
            token.value
        );
    }
}

/// Print what `--watch` did.
fn tell(event: WatchEvent) {
    match event {
        WatchEvent::Watching { name, source } => {
            eprintln!("comet: watching {} for {name}", source.display())
        }
        WatchEvent::Changed { source, .. } => {
            eprintln!("comet: {} changed, rebuilding", source.display())
        }
        WatchEvent::Reloaded {
            name,
            version,
            swap,
        } => eprintln!(
            "comet: {name}: reloaded, now serving version {version} ({:.0} ms after the build)",
            swap.as_secs_f64() * 1000.0
        ),
        WatchEvent::Unchanged { name, serving } => {
            eprintln!("comet: {name}: unchanged, still serving {serving}")
        }
        WatchEvent::Failed {
            name,
            serving,
            stage,
            error,
        } => eprintln!("comet: {name}: {stage}, still serving {serving}: {error}"),
    }
}

/// Print what a certificate reload did.
fn tell_certificate(which: &str, event: CertEvent) {
    let why = |trigger| match trigger {
        Trigger::Hangup => "on SIGHUP",
        Trigger::FileChange => "after a file change",
    };
    match event {
        CertEvent::Reloaded(trigger) => {
            eprintln!("comet: {which}certificate reloaded {}", why(trigger))
        }
        CertEvent::Unchanged(trigger) => {
            eprintln!("comet: {which}certificate unchanged {}", why(trigger))
        }
        CertEvent::Failed(trigger, error) => eprintln!(
            "comet: {which}certificate not reloaded {}, keeping the one in use: {error}",
            why(trigger)
        ),
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

/// `on` or `off`.
fn parse_on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, not {other:?}")),
    }
}
