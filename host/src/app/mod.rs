//! The composition root: from what `comet run` is asked for (or what a test
//! sets) to a serving host. `config` turns the flags and the manifest into
//! a [`Plan`] (every check, every default); `host` builds a [`Host`] from
//! its [`HostConfig`]; `startup` decides which version each module name
//! serves; `watch` rebuilds modules whose sources change; `certs` re-reads
//! the public listener's certificate; [`launch`] does
//! all of it in order, the broker choice (Redis) included, and binds the
//! listeners. The `comet` binary only parses arguments and prints.

mod certs;
mod config;
mod host;
mod startup;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use comet_config::broker::BrokerSpec;
use tokio::net::TcpListener;

pub use certs::{CertEvent, CertReloader, Trigger, reload_certificates};
pub use config::{
    ConfigError, DEFAULT_ADMIN_LISTEN, DEFAULT_DATA_DIR, DEFAULT_LISTEN, HostConfig, ModuleFlags,
    Plan, RunFlags, Source, Token, default_module_name,
};
pub use host::{Host, RunningHost, StartError};
pub use startup::{
    Served, SourceError, Started, StartupError, component, component_file, serve_versions,
};
pub use watch::{WatchError, WatchEvent, Watcher, spawn as watch};

use crate::redis::{RedisBroker, RedisConfig, RedisError, redacted};

/// Why `comet run` could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Redis could not be used as the broker.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The host could not be built.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A module could not be served.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// An address could not be listened on.
    #[error("cannot listen on {addr} {what}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What for, and how to choose another.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where the channels of a launched host live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerInfo {
    /// In this process.
    Memory,
    /// On Redis.
    Redis {
        /// The URL, password hidden.
        url: String,
        /// The key prefix.
        prefix: String,
        /// This node's id.
        node: String,
    },
}

/// A host ready to serve: its listeners bound, its modules deployed.
#[derive(Debug)]
pub struct Launched {
    /// The host.
    pub host: Host,
    /// The public listener.
    pub listener: TcpListener,
    /// The admin API's listener and token.
    pub admin: Option<(TcpListener, String)>,
    /// The token-less metrics listener's address, if one serves.
    pub metrics_addr: Option<SocketAddr>,
    /// What each module name serves.
    pub started: Started,
    /// Where the channels live.
    pub broker: BrokerInfo,
}

/// Build the host `plan` describes (connecting to Redis if the manifest or
/// the flags name it), deploy what each name serves at start, and bind the
/// listeners.
pub async fn launch(plan: Plan) -> Result<Launched, LaunchError> {
    let mut config = plan.host;
    let mut broker = BrokerInfo::Memory;
    if config.broker.is_none()
        && let BrokerSpec::Redis { url, prefix } = &config.manifest.broker
    {
        let mut redis = RedisConfig::new(url.as_str());
        redis.prefix = prefix.clone();
        let connected = RedisBroker::connect(redis).await?;
        broker = BrokerInfo::Redis {
            url: redacted(url),
            prefix: prefix.clone(),
            node: crate::channels::Broker::node_id(&*connected).to_string(),
        };
        config.kv = Some(Arc::new(connected.kv()));
        config.broker = Some(connected);
    }
    let manifest = config.manifest.clone();
    let mut host = Host::new(config)?;
    let mut metrics_addr = None;
    if let Some(at) = plan.metrics_listen {
        let listener = TcpListener::bind(at)
            .await
            .map_err(|source| LaunchError::Listen {
                addr: at,
                what: "for metrics (--metrics-listen)",
                source,
            })?;
        metrics_addr = Some(listener.local_addr().unwrap_or(at));
        host = host.serve_metrics_on(listener);
    }
    let started = serve_versions(host.registry(), &manifest, plan.watch, plan.release).await?;
    let listener = bind(plan.listen, plan.reuse_port).map_err(|source| LaunchError::Listen {
        addr: plan.listen,
        what: "(choose another with --listen)",
        source,
    })?;
    let admin = match plan.admin {
        Some((at, token)) => {
            let listener = TcpListener::bind(at)
                .await
                .map_err(|source| LaunchError::Listen {
                    addr: at,
                    what: "for the admin API (choose another with --admin-listen, or --no-admin)",
                    source,
                })?;
            Some((listener, token.value))
        }
        None => None,
    };
    Ok(Launched {
        host,
        listener,
        admin,
        metrics_addr,
        started,
        broker,
    })
}

/// A listener on `addr`, shared with other processes if `reuse_port`.
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
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

/// The open-file limits before and after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit it was.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// Whether raising the soft limit to the hard one failed.
    pub raise_failed: bool,
}

/// Most open files comet can use: every connection is one. The soft limit
/// is raised to the hard one.
pub fn raise_open_file_limit() -> Option<OpenFiles> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let raise_failed = soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err();
    Some(OpenFiles {
        soft,
        hard,
        raise_failed,
    })
}
