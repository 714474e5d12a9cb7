//! The public HTTP listener: accepts connections, serves HTTP/1.1 and HTTP/2
//! with hyper, sends `/comet/...` to the built-in endpoints and everything
//! else to the current handler module, and shuts down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::dispatch;
use crate::module::HandlerModule;
use crate::transports::{self, EndpointConfig};

/// How long in-flight requests get to finish after shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server serves. The module can be replaced while serving; a
/// request in flight keeps the version it started with.
#[derive(Debug)]
pub struct App {
    module: RwLock<Arc<HandlerModule>>,
    endpoints: EndpointConfig,
}

impl App {
    /// An app serving one handler module and the built-in endpoints.
    pub fn new(module: HandlerModule, endpoints: EndpointConfig) -> Arc<App> {
        Arc::new(App {
            module: RwLock::new(Arc::new(module)),
            endpoints,
        })
    }

    /// The module new requests go to.
    pub fn module(&self) -> Arc<HandlerModule> {
        self.module
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Send new requests to `module`; requests in flight finish on the old one.
    pub fn replace_module(&self, module: HandlerModule) {
        *self
            .module
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(module);
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting
/// and give open connections up to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(&app, request, remote).await) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining open connections");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "connections still open after the drain timeout");
    }
    Ok(())
}

async fn route(
    app: &App,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> hyper::Response<dispatch::Body> {
    let module = app.module();
    if request.uri().path().starts_with(transports::PREFIX) {
        return transports::handle(&module, &app.endpoints, request, remote).await;
    }
    dispatch::handle(&module, &app.endpoints, request, remote).await
}
