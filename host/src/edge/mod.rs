//! The edge: the public listener. It accepts connections (within the
//! per-address bound, `addresses`), peeks at a first request the transports
//! serve straight on the socket (`peek`), serves everything else with hyper
//! (HTTP/1.1 and HTTP/2), sends `/comet/...` to the built-in endpoints and
//! every other path to the module its route names (`routes`, `dispatch`),
//! and shuts down gracefully (streaming clients are told to reconnect, then
//! open connections get a bounded drain). `errors` is where the layers
//! below get their HTTP status.
//!
//! With TLS (`tls`), the handshake comes first, and the connection is a
//! `transports::TlsWire` from then on: HTTP/2 (ALPN) goes to hyper, an
//! HTTP/1.1 connection's first request is looked at as on plain TCP.
//!
//! What the edge knows of a connection (the client's address, its address
//! slot, its hang-up signal) travels to the transports as a value,
//! `transports::Conn`.

mod addresses;
mod dispatch;
mod errors;
mod peek;
mod routes;
mod tls;

pub use addresses::{AddressTicket, DEFAULT_MAX_PER_ADDRESS, PerAddress};
pub use dispatch::handle as dispatch;
pub use routes::{Route, Routes};
pub use tls::{Reloaded, Tls, TlsError, TlsFiles};

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

use crate::channels::Node;
use crate::hooks::{Hooks, Modules, Router};
use crate::http::{ApiError, Body, Peer};
use crate::transports::{self, Conn, Endpoints, Hangup, TlsWire};

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

/// What the public listener serves: routes to the modules deployed now,
/// and the built-in endpoints. Deploys swap modules behind `modules`; a
/// request in flight keeps the version it started with.
#[derive(Debug)]
pub struct Edge {
    router: Arc<Router>,
    routes: Routes,
    channel_module: String,
    endpoints: Arc<Endpoints>,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
}

impl Edge {
    /// An edge over the modules `router` finds. `channel_module` runs the
    /// connection hooks (on-connect, on-message, on-close) of the `/comet/`
    /// endpoints, and the channel hooks of channels whose namespace names
    /// no other module.
    pub fn new(
        router: Arc<Router>,
        routes: Routes,
        channel_module: String,
        endpoints: Arc<Endpoints>,
        limits: ConnectionLimits,
        tls: Option<Arc<Tls>>,
    ) -> Arc<Edge> {
        Arc::new(Edge {
            router,
            routes,
            channel_module,
            endpoints,
            limits,
            tls,
        })
    }

    fn modules(&self) -> &Arc<dyn Modules> {
        self.router.modules()
    }

    fn node(&self) -> &Arc<Node> {
        self.endpoints.node()
    }

    /// The hooks that serve `endpoint` as a connection's first request on
    /// the raw path, if it is served there.
    fn raw_hooks(&self, endpoint: comet_wire::head::Endpoint) -> Option<Arc<dyn Hooks>> {
        if !transports::serves_raw(&self.endpoints, endpoint) {
            return None;
        }
        let module = self.modules().current(&self.channel_module)?;
        Some(self.router.route(module))
    }
}

/// Serve `edge` on `listener` until `shutdown` resolves, then stop accepting
/// and give open connections up to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    // Shared, not cloned into each connection's task: a task serving a
    // raw stream keeps its captures for the stream's life.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(edge.limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A dead peer is noticed by a missing ping answer.
        .keep_alive_interval(Some(DEFAULT_HEADER_TIMEOUT * 3))
        .keep_alive_timeout(DEFAULT_HEADER_TIMEOUT);
    let builder = Arc::new(builder);
    let per_address = PerAddress::new(edge.limits.max_per_address);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let Some(ticket) = per_address.admit(remote.ip()) else {
            // Over TLS the refusal could only be read after a handshake,
            // which is what an address over its bound must not cost: closed.
            if edge.tls.is_none() {
                refuse_address(&stream, per_address.max());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held by whatever serves the connection (a WebSocket outlives
            // this task): the address's slot is held until all of it ends.
            let conn = Conn {
                peer: Peer::new(remote),
                slot: Arc::new(ticket),
                hangup: None,
            };
            if let Some(tls) = &edge.tls {
                let handshake = tls.acceptor().accept(stream);
                let wire = match tokio::time::timeout(edge.limits.header_timeout, handshake).await {
                    Ok(Ok(stream)) => {
                        let (tcp, session) = stream.into_inner();
                        TlsWire::new(tcp, session)
                    }
                    Ok(Err(e)) => {
                        return tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        return tracing::debug!(%remote, "no TLS handshake within the timeout");
                    }
                };
                // HTTP/2 (a browser's choice) is hyper's; an HTTP/1.1
                // connection's first request may be served raw, as below.
                if wire.alpn().as_deref() != Some(b"h2") {
                    let first =
                        tokio::time::timeout(edge.limits.header_timeout, peek::peek_tls(&wire));
                    let Ok(first) = first.await else { return };
                    if let Some(request) = first
                        && let Some(hooks) = edge.raw_hooks(request.endpoint)
                    {
                        transports::serve_raw(hooks, &edge.endpoints, wire, request, conn).await;
                        return;
                    }
                }
                Box::pin(serve_hyper(edge, builder, watcher, wire, conn)).await;
                return;
            }
            // A first request that opens an SSE stream or a WebSocket is
            // served without hyper (see `transports::serve_raw`).
            let first = tokio::time::timeout(edge.limits.header_timeout, peek::peek(&stream));
            let Ok(first) = first.await else {
                // Nothing (or not a whole head) within the timeout.
                return;
            };
            if let Some(request) = first
                && let Some(hooks) = edge.raw_hooks(request.endpoint)
            {
                transports::serve_raw(hooks, &edge.endpoints, stream, request, conn).await;
                return;
            }
            // Boxed, so a task serving a raw stream is not sized for
            // hyper's connection state as well.
            Box::pin(serve_hyper(edge, builder, watcher, stream, conn)).await;
        });
    }
    tracing::info!("shutting down: telling clients to reconnect, draining");
    let channels = edge.node();
    channels.close_all();
    // WebSocket sessions and raw SSE streams are not hyper connections,
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
async fn serve_hyper<S>(
    edge: Arc<Edge>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: S,
    mut conn: Conn,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let hangup = Arc::new(Hangup::default());
    let grace = edge.endpoints.config.write_timeout;
    let remote = conn.peer.addr;
    conn.hangup = Some(hangup.clone());
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let edge = edge.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(route(&edge, request, conn).await) }
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
    let error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too-many-connections",
        format!("this address holds its maximum of {max} connections"),
    )
    .retry_after(5);
    let _ = stream.try_write(&crate::http::raw::error_response(&error, &[]));
}

/// The next connection. Accept errors (out of file descriptors and the like)
/// are logged and retried after a pause: the listener keeps serving.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
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
    edge: &Edge,
    request: hyper::Request<Incoming>,
    conn: Conn,
) -> hyper::Response<Body> {
    let path = request.uri().path();
    let name = if path.starts_with(transports::PREFIX) {
        Some(edge.channel_module.as_str())
    } else {
        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host());
        edge.routes.resolve(host, path)
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
    let Some(module) = edge.modules().current(name) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-deployed",
            format!("module {name:?} is not deployed"),
        )
        .retry_after(5)
        .into_response();
    };
    let hooks = edge.router.route(module);
    if path.starts_with(transports::PREFIX) {
        return transports::serve(hooks, &edge.endpoints, request, conn).await;
    }
    dispatch::handle(hooks, &edge.endpoints, request, conn).await
}
