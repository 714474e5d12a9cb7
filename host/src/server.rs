//! The public HTTP listener: accepts connections, serves HTTP/1.1 and HTTP/2
//! with hyper, sends `/comet/...` to the built-in endpoints and everything
//! else to the module its route names, and shuts down gracefully (streaming
//! clients are told to reconnect, then open connections get a bounded drain).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use http::StatusCode;
use http::header::HOST;

use crate::dispatch;
use crate::http::{ApiError, Body};
use crate::registry::Registry;
use crate::routes::Routes;
use crate::transports::{self, EndpointConfig, Hangup, direct};

/// How long in-flight requests get to finish after shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the public listener serves: routes to modules in the registry, and
/// the built-in endpoints. Deploys swap modules inside the registry; a
/// request in flight keeps the version it started with.
#[derive(Debug)]
pub struct App {
    registry: Arc<Registry>,
    routes: Routes,
    channel_module: String,
    endpoints: EndpointConfig,
}

impl App {
    /// An app over `registry`. `channel_module` runs the connection hooks
    /// (on-connect, on-message, on-close) of the `/comet/` endpoints, and the
    /// channel hooks of channels whose namespace names no other module.
    pub fn new(
        registry: Arc<Registry>,
        routes: Routes,
        channel_module: String,
        endpoints: EndpointConfig,
    ) -> Arc<App> {
        Arc::new(App {
            registry,
            routes,
            channel_module,
            endpoints,
        })
    }

    /// The modules.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The routing table.
    pub fn routes(&self) -> &Routes {
        &self.routes
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
    // Shared, not cloned into each connection's task: a task serving a
    // direct stream keeps its captures for the stream's life.
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A first request that opens an SSE stream is served without
            // hyper's per-connection buffers (see transports::direct).
            if let Some((head, len)) = direct::peek_sse(&stream).await
                && let Some(module) = app.registry.current(&app.channel_module)
            {
                direct::serve(&module, &app.endpoints, stream, head, len, remote).await;
                return;
            }
            // Boxed, so a task serving a direct stream is not sized for
            // hyper's connection state as well.
            Box::pin(serve_hyper(app, builder, watcher, stream, remote)).await;
        });
    }
    tracing::info!("shutting down: telling clients to reconnect, draining");
    let channels = app.registry.channels();
    channels.close_all();
    // WebSocket sessions and direct SSE streams are not hyper connections,
    // but each holds a channel connection until it has said goodbye.
    let drained = async { tokio::join!(graceful.shutdown(), channels.admission().drained()) };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(?drain, "connections still open after the drain timeout");
    }
    Ok(())
}

/// One connection through hyper (HTTP/1.1 or HTTP/2), hung up if one of
/// its streams is dropped as a slow consumer and cannot be written to its
/// end (see `transports::hangup`).
async fn serve_hyper(
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
) {
    let hangup = Arc::new(Hangup::default());
    let grace = app.endpoints.write_timeout;
    let service = service_fn({
        let hangup = hangup.clone();
        move |mut request: hyper::Request<Incoming>| {
            let app = app.clone();
            request.extensions_mut().insert(hangup.clone());
            async move { Ok::<_, Infallible>(route(&app, request, remote).await) }
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    match hangup
        .serve(watcher.watch(connection.into_owned()), grace)
        .await
    {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(%remote, error = %e, "connection ended with an error"),
        None => tracing::debug!(%remote, "hung up on a client that stopped reading"),
    }
}

/// The next connection. Accept errors (out of file descriptors and the like)
/// are logged and retried after a pause: the listener keeps serving.
pub(crate) async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn route(
    app: &App,
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> hyper::Response<Body> {
    let path = request.uri().path();
    let name = if path.starts_with(transports::PREFIX) {
        Some(app.channel_module.as_str())
    } else {
        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host());
        app.routes.resolve(host, path)
    };
    if name.is_some_and(str::is_empty) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "no module serves the /comet/ endpoints: set `hooks` under [channels] in the manifest",
        )
        .into_response();
    }
    let Some(name) = name else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "no-route",
            format!("no route for {path}"),
        )
        .into_response();
    };
    let Some(module) = app.registry.current(name) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-deployed",
            format!("module {name:?} is not deployed"),
        )
        .retry_after(5)
        .into_response();
    };
    if path.starts_with(transports::PREFIX) {
        return transports::handle(&module, &app.endpoints, request, remote).await;
    }
    dispatch::handle(&module, &app.endpoints, request, remote).await
}
