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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use http::StatusCode;
use http::header::HOST;

use crate::addresses::{AddressTicket, DEFAULT_MAX_PER_ADDRESS, PerAddress};
use crate::dispatch;
use crate::http::{ApiError, Body, Peer};
use crate::registry::Registry;
use crate::routes::Routes;
use crate::transports::{self, EndpointConfig, Hangup, direct};

/// How long in-flight requests get to finish after shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a client may take to send a request head, and longest an idle
/// HTTP/1 connection (between requests) is kept. A socket that sends
/// nothing, or half a head, does not hold a file descriptor for minutes.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits on the connections themselves (before any request is served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// Connections one client address may hold (0: no bound); see
    /// `addresses::DEFAULT_MAX_PER_ADDRESS`.
    pub max_per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_per_address: DEFAULT_MAX_PER_ADDRESS,
        }
    }
}

/// What the public listener serves: routes to modules in the registry, and
/// the built-in endpoints. Deploys swap modules inside the registry; a
/// request in flight keeps the version it started with.
#[derive(Debug)]
pub struct App {
    registry: Arc<Registry>,
    routes: Routes,
    channel_module: String,
    endpoints: EndpointConfig,
    limits: ConnectionLimits,
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
        limits: ConnectionLimits,
    ) -> Arc<App> {
        Arc::new(App {
            registry,
            routes,
            channel_module,
            endpoints,
            limits,
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A dead peer is noticed by a missing ping answer.
        .keep_alive_interval(Some(DEFAULT_HEADER_TIMEOUT * 3))
        .keep_alive_timeout(DEFAULT_HEADER_TIMEOUT);
    let builder = Arc::new(builder);
    let per_address = PerAddress::new(app.limits.max_per_address);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let Some(ticket) = per_address.admit(remote.ip()) else {
            refuse_address(&stream, per_address.max());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // Shared with a WebSocket the connection is upgraded to, which
        // outlives this task: the address's slot is held until both end.
        let ticket = Arc::new(ticket);
        tokio::spawn(async move {
            // A first request that opens an SSE stream or a WebSocket is
            // served without hyper (see transports::direct).
            let first = tokio::time::timeout(app.limits.header_timeout, direct::peek(&stream));
            let Ok(first) = first.await else {
                // Nothing (or not a whole head) within the timeout.
                return;
            };
            if let Some(head) = first
                && app.endpoints.transports.serves(head.endpoint())
                && let Some(module) = app.registry.current(&app.channel_module)
            {
                direct::serve(&module, &app.endpoints, stream, head, remote, ticket).await;
                return;
            }
            // Boxed, so a task serving a direct stream is not sized for
            // hyper's connection state as well.
            Box::pin(serve_hyper(app, builder, watcher, stream, remote, ticket)).await;
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
    ticket: Arc<AddressTicket>,
) {
    let hangup = Arc::new(Hangup::default());
    let grace = app.endpoints.write_timeout;
    let peer = Peer::new(remote);
    let service = service_fn({
        let hangup = hangup.clone();
        move |mut request: hyper::Request<Incoming>| {
            let app = app.clone();
            request.extensions_mut().insert(hangup.clone());
            request.extensions_mut().insert(ticket.clone());
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(route(&app, request, &peer).await) }
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

/// Answer a connection from an address over its bound with a 503 (if the
/// socket takes it at once) and close it.
fn refuse_address(stream: &tokio::net::TcpStream, max: usize) {
    let body = format!(
        "{{\"error\":\"too-many-connections\",\"message\":\"this address holds its maximum of {max} connections\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
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

async fn route(app: &App, request: hyper::Request<Incoming>, peer: &Peer) -> hyper::Response<Body> {
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
        return transports::handle(&module, &app.endpoints, request, peer.addr).await;
    }
    dispatch::handle(&module, &app.endpoints, request, peer).await
}
