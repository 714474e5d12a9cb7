//! A host: [`Host::new`] builds the engine, the channels (node, broker) and
//! the module registry from a [`HostConfig`]; modules are then deployed into
//! [`Host::registry`]; [`Host::serve`] or [`Host::start`] runs the public
//! and admin listeners until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use tokio::net::TcpListener;

use super::config::HostConfig;
use crate::admin::{self, Admin};
use crate::capabilities::Capabilities;
use crate::capabilities::channels::GuestPublisher;
use crate::capabilities::kv::MemoryKv;
use crate::channels::node::DEFAULT_MAX_CHANNELS_PER_CONNECTION;
use crate::channels::{MemoryBroker, Node, NodeConfig};
use crate::deploy::{Registry, RegistryConfig};
use crate::edge::{self, ConnectionLimits, Edge, Forwarding, Routes, Tls, TlsError};
use crate::hooks::{Publisher, Router};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::transports::{EndpointConfig, Endpoints};

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The WebAssembly engine did not start.
    #[error("cannot start the WebAssembly engine: {0:#}")]
    Engine(anyhow::Error),
    /// The compile cache directory is not usable.
    #[error("cannot use {} as compile cache: {source}", dir.display())]
    Cache {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The public listener's certificate or key is not usable.
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A host with no listener yet: deploy modules into its registry, then
/// serve.
#[derive(Debug)]
pub struct Host {
    registry: Arc<Registry>,
    node: Arc<Node>,
    publisher: Arc<Publisher>,
    metrics: Arc<Metrics>,
    routes: Routes,
    channel_module: String,
    endpoints: EndpointConfig,
    connection_limits: ConnectionLimits,
    forwarding: Forwarding,
    tls: Option<Arc<Tls>>,
    admin_tls: Option<Arc<Tls>>,
    metrics_listener: Option<TcpListener>,
}

impl Host {
    /// Also serve `GET /metrics`, without a token, on `listener`.
    pub fn serve_metrics_on(mut self, listener: TcpListener) -> Host {
        self.metrics_listener = Some(listener);
        self
    }

    /// Build the engine, the channels and an empty registry.
    ///
    /// Strategy: the publish path finds modules through the registry, and
    /// every module's `channels` capability publishes through it, so the
    /// publisher is made with [`Arc::new_cyclic`]: the capabilities get its
    /// `Weak` (why weakly: `capabilities::channels`), then the registry,
    /// then the router and the publisher itself.
    pub fn new(config: HostConfig) -> Result<Host, StartError> {
        // One set of counters per host (a process running two hosts, as
        // tests do, counts them apart).
        let metrics = Arc::new(Metrics::default());
        let broker = config
            .broker
            .unwrap_or_else(|| Arc::new(MemoryBroker::new(config.memory_broker)));
        let manifest = config.manifest;
        let node = Node::new(
            broker,
            NodeConfig {
                queue_len: config.queue_len,
                max_connections: config.max_connections,
                max_channels_per_connection: DEFAULT_MAX_CHANNELS_PER_CONNECTION,
                namespaces: crate::channels::Namespaces::from_manifest(&manifest),
                position_check: config.position_check,
            },
            metrics.clone(),
        );
        let tls = config.tls.map(Tls::new).transpose()?;
        let admin_tls = config.admin_tls.map(Tls::new).transpose()?;
        let kv = config.kv.unwrap_or_else(|| Arc::new(MemoryKv::default()));
        let registry_config = RegistryConfig {
            specs: manifest
                .modules
                .iter()
                .map(|(name, m)| (name.clone(), m.spec.clone()))
                .collect(),
            data_dir: config.data_dir.clone(),
            in_use: manifest.uses(),
            max_module_bytes: config.max_module_bytes,
        };
        let mut runtime =
            Runtime::new(config.engine, metrics.clone()).map_err(StartError::Engine)?;
        if let (true, Some(dir)) = (config.compile_cache, &config.data_dir) {
            let dir = dir.join("cache");
            runtime
                .enable_cache(&dir)
                .map_err(|source| StartError::Cache { dir, source })?;
        }
        let mut registry = None;
        let publisher = Arc::new_cyclic(|me: &Weak<Publisher>| {
            let capabilities = Capabilities::new(
                kv,
                node.clone(),
                me.clone() as Weak<dyn GuestPublisher>,
                metrics.clone(),
            );
            let modules = Registry::new(runtime, capabilities, registry_config);
            registry = Some(modules.clone());
            Publisher::new(
                node.clone(),
                Router::new(modules, node.clone()),
                metrics.clone(),
            )
        });
        let registry = registry.expect("made in the publisher's constructor");
        Ok(Host {
            registry,
            node,
            publisher,
            metrics,
            routes: Routes::new(manifest.routes.clone()),
            channel_module: manifest.channel_module.unwrap_or_default(),
            endpoints: config.endpoints,
            connection_limits: config.connection_limits,
            forwarding: config.forwarding,
            tls,
            admin_tls,
            metrics_listener: None,
        })
    }

    /// The modules: deploy into it before serving.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Its counters (what `/metrics` serves).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The public listener's TLS, if it serves TLS: reload its
    /// certificate with [`Tls::reload`].
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// The admin listener's TLS, if it serves TLS.
    pub fn admin_tls(&self) -> Option<&Arc<Tls>> {
        self.admin_tls.as_ref()
    }

    /// The names routes and the `/comet/` endpoints serve.
    pub fn served_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .routes
            .iter()
            .map(|r| r.module.clone())
            .chain([self.channel_module.clone()])
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Serve on `public` (and the admin API on `admin`, with its token)
    /// until `shutdown` resolves; then drain (see `server::serve`).
    pub async fn serve(
        self,
        public: TcpListener,
        admin: Option<(TcpListener, String)>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Ok(address) = public.local_addr() {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            self.node.set_address(format!("{scheme}://{address}"));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        // One Admin for both listeners. Without an admin listener its token
        // is random and never given out; the metrics listener checks none.
        let (admin_listener, token) = match admin {
            Some((listener, token)) => (Some(listener), token),
            None => (None, crate::http::auth::random_token()),
        };
        let state = Admin::new(
            self.registry.clone(),
            self.node.clone(),
            self.metrics.clone(),
            self.routes.clone(),
            token,
        );
        let metrics_task = self
            .metrics_listener
            .map(|listener| tokio::spawn(admin::serve_metrics(listener, state.clone(), stopped())));
        let admin_tls = self.admin_tls;
        let admin_task = admin_listener
            .map(|listener| tokio::spawn(admin::serve(listener, state, admin_tls, stopped())));
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let endpoints = Arc::new(Endpoints {
            config: self.endpoints,
            publisher: self.publisher.clone(),
        });
        let edge = Edge::new(
            self.publisher.router().clone(),
            self.routes,
            self.channel_module,
            endpoints,
            self.connection_limits,
            self.forwarding,
            self.tls,
        );
        // The accept loop in a task of its own, on a worker thread, whoever
        // awaits this (`comet run` does on the main thread): a connection's
        // task spawned from a worker starts on that worker, while one
        // spawned from outside the runtime wakes a worker for each connection.
        let serving = edge::serve(public, edge, stopped(), edge::DEFAULT_DRAIN_TIMEOUT);
        let served = tokio::spawn(serving)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        for task in [admin_task, metrics_task].into_iter().flatten() {
            let _ = task.await;
        }
        served
    }

    /// Bind `public` (and `admin`, with its token) and serve in the
    /// background (for tests and embedders). Port 0 picks a free port.
    pub async fn start(
        self,
        public: SocketAddr,
        admin: Option<(SocketAddr, String)>,
    ) -> std::io::Result<RunningHost> {
        let listener = TcpListener::bind(public).await?;
        let addr = listener.local_addr()?;
        let (admin, admin_addr) = match admin {
            Some((at, token)) => {
                let listener = TcpListener::bind(at).await?;
                let addr = listener.local_addr()?;
                (Some((listener, token)), Some(addr))
            }
            None => (None, None),
        };
        let registry = self.registry.clone();
        let metrics = self.metrics.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, admin, async {
            let _ = stopped.await;
        }));
        Ok(RunningHost {
            addr,
            admin_addr,
            registry,
            metrics,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A host serving in the background; shut down by [`RunningHost::stop`] or
/// when dropped.
#[derive(Debug)]
pub struct RunningHost {
    /// The public address.
    pub addr: SocketAddr,
    /// The admin API's address, if it serves one.
    pub admin_addr: Option<SocketAddr>,
    /// Its modules.
    pub registry: Arc<Registry>,
    /// Its counters.
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningHost {
    /// Shut down gracefully (clients are told to reconnect) and wait.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
