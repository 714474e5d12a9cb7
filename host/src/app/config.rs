//! From what `comet run` is asked for to what a host is made of: the
//! manifest (read from a file, or made from one module's path and flags),
//! the flags over it, every check, and the defaults ([`RunFlags::plan`] to
//! a [`Plan`]); and [`HostConfig`], what [`Host::new`](super::Host::new)
//! takes, which tests fill in directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use comet_config::broker::BrokerSpec;
use comet_config::limits::{self, Limits};
use comet_config::manifest::{Manifest, ManifestError, ModuleEntry};
use comet_config::spec::{HistoryLimits, InvalidModuleName, ModuleSpec, Route};
use comet_wire::origin::Allowed;
use ipnet::IpNet;

use crate::capabilities::kv::KvStore;
use crate::channels::admission::DEFAULT_MAX_CONNECTIONS;
use crate::channels::node::{DEFAULT_POSITION_CHECK, DEFAULT_QUEUE_LEN};
use crate::channels::{Broker, MemoryBrokerConfig};
use crate::deploy::{DEFAULT_MAX_MODULE_BYTES, validate_name};
use crate::edge::{ConnectionLimits, Forwarding, TlsFiles};
use crate::http::auth::random_token;
use crate::runtime::EngineSettings;
use crate::transports::{Enabled, EndpointConfig, Origins};

/// The public listener's address when neither a flag nor the manifest
/// gives one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The admin API's address when neither a flag nor the manifest gives one:
/// loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// The data directory (uploads and the compile cache) when neither a flag
/// nor the manifest gives one, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".comet";

/// Everything a host is made from.
#[derive(Debug)]
pub struct HostConfig {
    /// Modules (specs), routes, namespaces, the channel module.
    pub manifest: Manifest,
    /// Engine-wide sandbox settings.
    pub engine: EngineSettings,
    /// Uploads and the compile cache; `None`: uploads in memory, no cache.
    pub data_dir: Option<PathBuf>,
    /// Use the compile cache in `data_dir`.
    pub compile_cache: bool,
    /// Largest module upload.
    pub max_module_bytes: usize,
    /// Per-connection queue length.
    pub queue_len: usize,
    /// Client connections held at once.
    pub max_connections: usize,
    /// How often the node checks for messages lost on the way from the
    /// broker (see `channels::node::DEFAULT_POSITION_CHECK`).
    pub position_check: Duration,
    /// Budgets of the memory broker (when no other broker is given).
    pub memory_broker: MemoryBrokerConfig,
    /// The broker; `None`: the manifest's (the memory broker, or Redis, which
    /// [`launch`](super::launch) connects to).
    pub broker: Option<Arc<dyn Broker>>,
    /// The kv store; `None`: in memory.
    pub kv: Option<Arc<dyn KvStore>>,
    /// The built-in endpoints' settings (publish token, timeouts).
    pub endpoints: EndpointConfig,
    /// Header timeout and connections per client address.
    pub connection_limits: ConnectionLimits,
    /// The public listener's certificate and key; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The admin listener's certificate and key; `None`: plain HTTP.
    pub admin_tls: Option<TlsFiles>,
    /// Trusted proxies and how they name clients.
    pub forwarding: Forwarding,
}

impl HostConfig {
    /// The defaults for `manifest`, with `publish_token` for the publish API.
    pub fn new(manifest: Manifest, publish_token: String) -> HostConfig {
        let mut memory_broker = MemoryBrokerConfig::default();
        if let Some(bytes) = manifest.history_bytes {
            memory_broker.max_history_bytes = bytes;
        }
        if let Some(max) = manifest.max_channels {
            memory_broker.max_channels = max;
        }
        HostConfig {
            engine: EngineSettings::default(),
            data_dir: manifest.data_dir.clone(),
            compile_cache: true,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            queue_len: manifest.queue_len.unwrap_or(DEFAULT_QUEUE_LEN),
            max_connections: manifest.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            position_check: DEFAULT_POSITION_CHECK,
            memory_broker,
            broker: None,
            kv: None,
            endpoints: EndpointConfig {
                origins: Origins {
                    allowed: manifest.allowed_origins.clone(),
                    credentials: manifest.allow_credentials,
                },
                ws_compression: manifest.ws_compression.unwrap_or(true),
                ..EndpointConfig::new(publish_token)
            },
            connection_limits: ConnectionLimits::default(),
            tls: manifest.tls.clone(),
            admin_tls: manifest.admin_tls.clone(),
            forwarding: Forwarding {
                trusted: manifest.trusted_proxies.clone(),
                proxy_protocol: manifest.proxy_protocol,
                header: manifest.forwarded_header,
            },
            manifest,
        }
    }
}

/// Why `comet run`'s settings cannot make a host.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The manifest does not read or check.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The module path given does not exist.
    #[error("{0} does not exist")]
    NoSuchPath(PathBuf),
    /// The module name (given, or made from the path) is not one.
    #[error("{source}; the module name comes from {path}: choose one with --name")]
    Name {
        /// The path it came from.
        path: PathBuf,
        /// Why it is not a name.
        source: InvalidModuleName,
    },
    /// A setting that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Cookies from any origin at all.
    #[error(
        "--allow-credentials cannot go with --allowed-origin '*': list the origins that may send cookies"
    )]
    CredentialsFromAny,
    /// A PROXY header expected from nobody.
    #[error(
        "--proxy-protocol needs --trusted-proxy: the header is read only from the proxies named"
    )]
    ProxyProtocolUntrusted,
}

/// Where the modules come from: an app manifest, or one module given by its
/// path with its settings on the command line.
#[derive(Debug, Clone)]
pub enum Source {
    /// A manifest file (`--config FILE`).
    Manifest(PathBuf),
    /// One module (`comet run PATH`).
    Module(ModuleFlags),
}

/// One module given on the command line, and its settings there.
#[derive(Debug, Clone)]
pub struct ModuleFlags {
    /// A `.wasm` component or a guest crate directory.
    pub path: PathBuf,
    /// Its name; `None`: made from the path ([`default_module_name`]).
    pub name: Option<String>,
    /// Wall-clock deadline of an event, ms.
    pub deadline_ms: u64,
    /// CPU budget of an event, ms.
    pub cpu_ms: u64,
    /// Events at once.
    pub max_concurrent: usize,
    /// Linear memory of an instance, MiB.
    pub memory_mib: usize,
    /// Events one instance may serve (for a module that opts in).
    pub events_per_instance: u32,
    /// Largest request body, bytes.
    pub max_request_body: usize,
    /// Largest response body, bytes.
    pub max_response_body: usize,
    /// Most response headers.
    pub max_headers: usize,
    /// `config` values.
    pub vars: Vec<(String, String)>,
    /// History kept per channel.
    pub history_len: usize,
    /// Seconds a message is kept in history.
    pub history_age_s: u64,
    /// Whether WebSocket clients may publish to channels outside any
    /// namespace.
    pub client_publish: bool,
}

/// What `comet run`'s flags say, in the configuration model's terms. A
/// `None` leaves the manifest's value, else the default.
#[derive(Debug, Clone)]
pub struct RunFlags {
    /// Where the modules come from.
    pub source: Source,
    /// Rebuild and swap in modules when their sources change.
    pub watch: bool,
    /// Build guest crates with cargo's release profile.
    pub release: bool,
    /// The public listener.
    pub listen: Option<SocketAddr>,
    /// Share the public address with other processes (`SO_REUSEPORT`).
    pub reuse_port: bool,
    /// Where channels live.
    pub broker: Option<BrokerSpec>,
    /// The admin API's address.
    pub admin_listen: Option<SocketAddr>,
    /// Serve no admin API.
    pub no_admin: bool,
    /// Also serve `/metrics` without a token here.
    pub metrics_listen: Option<SocketAddr>,
    /// The admin API's token; `None`: a random one.
    pub admin_token: Option<String>,
    /// The publish API's token; `None`: a random one.
    pub publish_token: Option<String>,
    /// The server API's key; `None`: the manifest's, else a random one.
    pub api_key: Option<String>,
    /// Uploads and the compile cache.
    pub data_dir: Option<PathBuf>,
    /// Largest upload, MiB.
    pub max_module_mib: usize,
    /// Compile every time.
    pub no_cache: bool,
    /// Messages queued per connection.
    pub queue_len: Option<usize>,
    /// Client connections at once.
    pub max_connections: Option<usize>,
    /// History of all channels, MiB.
    pub history_mib: Option<usize>,
    /// Channels known at once.
    pub max_channels: Option<usize>,
    /// Longest wait for a request head, s.
    pub header_timeout_s: u64,
    /// Connections per client address (0: no bound).
    pub max_connections_per_ip: usize,
    /// Longest a write may wait without progress, s.
    pub write_timeout_s: u64,
    /// The subscribing endpoints served.
    pub transports: Enabled,
    /// Origins allowed besides the server's own (given: instead of the
    /// manifest's).
    pub allowed_origins: Vec<Allowed>,
    /// Let allowed origins send cookies.
    pub allow_credentials: bool,
    /// Serve TLS with these files (given: instead of the manifest's).
    pub tls: Option<TlsFiles>,
    /// Serve the admin API over TLS with these files (given: instead of
    /// the manifest's).
    pub admin_tls: Option<TlsFiles>,
    /// Proxies trusted to name the client (given: instead of the
    /// manifest's).
    pub trusted_proxies: Vec<IpNet>,
    /// Trusted proxies send a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The header trusted proxies name the client in (given: instead of
    /// the manifest's).
    pub forwarded_header: Option<comet_wire::forwarded::Header>,
    /// permessage-deflate on WebSocket (given: instead of the manifest's).
    pub ws_compression: Option<bool>,
    /// Events at once, in all modules (the pool's slots).
    pub max_instances: u32,
}

/// A token, and whether it was made here (then the operator must be told
/// it).
#[derive(Debug, Clone)]
pub struct Token {
    /// The secret.
    pub value: String,
    /// Made at random: nobody chose it.
    pub generated: bool,
}

impl Token {
    fn given_or_random(given: Option<String>) -> Token {
        match given {
            Some(value) if !value.is_empty() => Token {
                value,
                generated: false,
            },
            _ => Token {
                value: random_token(),
                generated: true,
            },
        }
    }
}

/// What `comet run` starts: a host's configuration and its listeners.
#[derive(Debug)]
pub struct Plan {
    /// The host.
    pub host: HostConfig,
    /// The public listener.
    pub listen: SocketAddr,
    /// Share it with other processes.
    pub reuse_port: bool,
    /// The admin API's address and token, unless it is not served.
    pub admin: Option<(SocketAddr, Token)>,
    /// The token-less `/metrics` listener.
    pub metrics_listen: Option<SocketAddr>,
    /// The publish API's token.
    pub publish_token: Token,
    /// The server API's key.
    pub api_key: Token,
    /// Rebuild modules whose sources change.
    pub watch: bool,
    /// Build guest crates with cargo's release profile.
    pub release: bool,
}

impl RunFlags {
    /// The manifest, the flags over it, every check and the defaults.
    pub fn plan(self) -> Result<Plan, ConfigError> {
        for (value, what) in [
            (self.history_mib, "--history-mib"),
            (self.max_channels, "--max-channels"),
            (self.queue_len, "--queue-len"),
        ] {
            if value == Some(0) {
                return Err(ConfigError::Zero(what));
            }
        }
        if self.write_timeout_s == 0 {
            return Err(ConfigError::Zero("--write-timeout-s"));
        }
        if self.header_timeout_s == 0 {
            return Err(ConfigError::Zero("--header-timeout-s"));
        }
        let mut manifest = match &self.source {
            Source::Manifest(file) => Manifest::load(file)?,
            Source::Module(module) => module.manifest()?,
        };
        manifest.history_bytes = self.history_mib.map(|m| m << 20).or(manifest.history_bytes);
        manifest.max_channels = self.max_channels.or(manifest.max_channels);
        manifest.queue_len = self.queue_len.or(manifest.queue_len);
        manifest.max_connections = self.max_connections.or(manifest.max_connections);
        if let Some(broker) = self.broker {
            manifest.broker = broker;
        }
        if !self.allowed_origins.is_empty() {
            manifest.allowed_origins = self.allowed_origins;
        }
        manifest.allow_credentials |= self.allow_credentials;
        if let Some(tls) = self.tls {
            manifest.tls = Some(tls);
        }
        if let Some(tls) = self.admin_tls {
            manifest.admin_tls = Some(tls);
        }
        if !self.trusted_proxies.is_empty() {
            manifest.trusted_proxies = self.trusted_proxies;
        }
        manifest.proxy_protocol |= self.proxy_protocol;
        if let Some(header) = self.forwarded_header {
            manifest.forwarded_header = header;
        }
        if self.ws_compression.is_some() {
            manifest.ws_compression = self.ws_compression;
        }
        if manifest.proxy_protocol && manifest.trusted_proxies.is_empty() {
            return Err(ConfigError::ProxyProtocolUntrusted);
        }
        if manifest.allow_credentials && manifest.allowed_origins.contains(&Allowed::Any) {
            return Err(ConfigError::CredentialsFromAny);
        }
        let data_dir = self
            .data_dir
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
        let listen = self
            .listen
            .or(manifest.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid default"));
        let admin = (!self.no_admin).then(|| {
            let at = self
                .admin_listen
                .or(manifest.admin_listen)
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("a valid default"));
            (at, Token::given_or_random(self.admin_token))
        });
        let publish_token = Token::given_or_random(self.publish_token);
        let api_key = Token::given_or_random(self.api_key.or_else(|| manifest.api_key.clone()));
        let mut host = HostConfig::new(manifest, publish_token.value.clone());
        host.endpoints.api_key = api_key.value.clone();
        host.engine = EngineSettings {
            max_instances: self.max_instances,
            max_memory_bytes: max_memory,
            ..EngineSettings::default()
        };
        host.data_dir = Some(data_dir);
        host.compile_cache = !self.no_cache;
        host.max_module_bytes = self.max_module_mib << 20;
        host.endpoints.write_timeout = Duration::from_secs(self.write_timeout_s);
        host.endpoints.transports = self.transports;
        host.connection_limits = ConnectionLimits {
            header_timeout: Duration::from_secs(self.header_timeout_s),
            max_per_address: self.max_connections_per_ip,
        };
        Ok(Plan {
            host,
            listen,
            reuse_port: self.reuse_port,
            admin,
            metrics_listen: self.metrics_listen,
            publish_token,
            api_key,
            watch: self.watch,
            release: self.release,
        })
    }
}

impl ModuleFlags {
    /// The limits these flags set, checked.
    fn limits(&self) -> Result<Limits, ConfigError> {
        for (value, what) in [
            (self.deadline_ms, "--deadline-ms"),
            (self.cpu_ms, "--cpu-ms"),
            (self.max_concurrent as u64, "--max-concurrent"),
            (u64::from(self.events_per_instance), "--events-per-instance"),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(what));
            }
        }
        if self.memory_mib == 0 {
            return Err(ConfigError::Zero("--memory-mib"));
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

    /// The manifest of one module: it serves every path and the `/comet/`
    /// endpoints, with the history and client publishing the flags set.
    fn manifest(&self) -> Result<Manifest, ConfigError> {
        if !self.path.exists() {
            return Err(ConfigError::NoSuchPath(self.path.clone()));
        }
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| default_module_name(&self.path));
        validate_name(&name).map_err(|e| match e {
            crate::deploy::DeployError::InvalidName(source) => ConfigError::Name {
                path: self.path.clone(),
                source,
            },
            _ => unreachable!("validate_name refuses only names"),
        })?;
        let spec = ModuleSpec {
            limits: self.limits()?,
            kv: true,
            config: self.vars.iter().cloned().collect(),
        };
        let mut modules = BTreeMap::new();
        modules.insert(
            name.clone(),
            ModuleEntry {
                path: Some(self.path.clone()),
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

/// A module name made from a path: the crate directory or file stem,
/// lower-cased, with other characters turned into `-`.
pub fn default_module_name(path: &Path) -> String {
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
