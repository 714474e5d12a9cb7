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
mod forwarding;
mod peek;
mod routes;
mod tls;

pub use addresses::{AddressTicket, DEFAULT_MAX_PER_ADDRESS, PerAddress};
pub use dispatch::handle as dispatch;
pub use forwarding::Forwarding;
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
use tokio::net::{TcpListener, TcpStream};

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
    forwarding: Forwarding,
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
        forwarding: Forwarding,
        tls: Option<Arc<Tls>>,
    ) -> Arc<Edge> {
        Arc::new(Edge {
            router,
            routes,
            channel_module,
            endpoints,
            limits,
            forwarding,
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
        // A trusted proxy is not bounded per address: its clients are.
        let ticket = if edge.forwarding.trusts(remote.ip()) {
            None
        } else {
            let Some(ticket) = per_address.admit(remote.ip()) else {
                refuse_address(&edge, &stream, per_address.max());
                continue;
            };
            Some(ticket)
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            edge: edge.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            per_address: per_address.clone(),
        };
        tokio::spawn(connection.serve(stream, remote, ticket));
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

/// What serves one connection.
struct Connection {
    edge: Arc<Edge>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    per_address: Arc<PerAddress>,
}

/// How a connection's requests count against the per-address bound.
#[derive(Clone)]
enum Charge {
    /// The connection holds its client's slot (taken at accept, or for the
    /// client a PROXY header named).
    Connection,
    /// From a trusted proxy's headers: each request takes its client's
    /// slot (held by a stream or a WebSocket for its life).
    PerRequest(Arc<PerAddress>),
}

impl Connection {
    /// Serve `stream` from `remote`, which holds `ticket` (`None`: a trusted
    /// proxy's connection).
    async fn serve(self, mut stream: TcpStream, remote: SocketAddr, ticket: Option<AddressTicket>) {
        let edge = &self.edge;
        let timeout = edge.limits.header_timeout;
        let mut peer = Peer::new(remote);
        let (ticket, charge) = match ticket {
            Some(ticket) => (Some(ticket), Charge::Connection),
            None if edge.forwarding.proxy_protocol => {
                let header = forwarding::read_proxy_header(&mut stream);
                match tokio::time::timeout(timeout, header).await {
                    Ok(Ok(client)) => {
                        // No client (a health check): the proxy itself.
                        if let Some(client) = client {
                            peer = Peer::new(client);
                        }
                    }
                    // A trusted proxy that sends none is misconfigured.
                    Ok(Err(e)) => {
                        return tracing::warn!(%remote, error = %e, "no PROXY header");
                    }
                    Err(_) => return tracing::warn!(%remote, "no PROXY header in time"),
                }
                let Some(ticket) = self.per_address.admit(peer.addr.ip()) else {
                    return refuse_address(edge, &stream, self.per_address.max());
                };
                (Some(ticket), Charge::Connection)
            }
            None => (None, Charge::PerRequest(self.per_address.clone())),
        };
        // Held by whatever serves the connection (a WebSocket outlives
        // this task): the address's slot is held until all of it ends.
        let conn = Conn {
            peer,
            slot: Arc::new(ticket),
            hangup: None,
        };
        if let Some(tls) = &edge.tls {
            let handshake = tls.acceptor().accept(stream);
            let wire = match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(stream)) => {
                    let (tcp, session) = stream.into_inner();
                    TlsWire::new(tcp, session)
                }
                Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%remote, "no TLS handshake within the timeout"),
            };
            // HTTP/2 (a browser's choice) is hyper's; an HTTP/1.1
            // connection's first request may be served raw, as below.
            if wire.alpn().as_deref() != Some(b"h2") {
                let first = tokio::time::timeout(timeout, peek::peek_tls(&wire));
                let Ok(first) = first.await else { return };
                if let Some(request) = first
                    && let Some(hooks) = edge.raw_hooks(request.endpoint)
                {
                    return serve_raw(edge, hooks, wire, request, conn, &charge).await;
                }
            }
            return Box::pin(self.serve_hyper(wire, conn, charge)).await;
        }
        // A first request that opens an SSE stream or a WebSocket is
        // served without hyper (see `transports::serve_raw`).
        let first = tokio::time::timeout(timeout, peek::peek(&stream));
        let Ok(first) = first.await else {
            // Nothing (or not a whole head) within the timeout.
            return;
        };
        if let Some(request) = first
            && let Some(hooks) = edge.raw_hooks(request.endpoint)
        {
            return serve_raw(edge, hooks, stream, request, conn, &charge).await;
        }
        // Boxed, so a task serving a raw stream is not sized for hyper's
        // connection state as well.
        Box::pin(self.serve_hyper(stream, conn, charge)).await;
    }

    /// The connection through hyper (HTTP/1.1 or HTTP/2), hung up if one of
    /// its streams is dropped as a slow consumer and cannot be written to
    /// its end (see `transports::hangup`).
    async fn serve_hyper<S>(self, stream: S, mut conn: Conn, charge: Charge)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            edge,
            builder,
            watcher,
            ..
        } = self;
        let hangup = Arc::new(Hangup::default());
        let grace = edge.endpoints.config.write_timeout;
        let remote = conn.peer.addr;
        conn.hangup = Some(hangup.clone());
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let edge = edge.clone();
            let conn = conn.clone();
            let charge = charge.clone();
            async move {
                let Charge::PerRequest(per_address) = charge else {
                    return Ok::<_, Infallible>(route(&edge, request, conn).await);
                };
                let (conn, slot) = match charged(&edge, &per_address, &conn, request.headers()) {
                    Ok(charged) => charged,
                    Err(refusal) => return Ok(refusal.into_response()),
                };
                let response = route(&edge, request, conn).await;
                Ok(forwarding::holding(response, slot))
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
}

/// A connection's first request on the raw path, charged to its client as
/// `charge` says.
async fn serve_raw<S: transports::Socket>(
    edge: &Edge,
    hooks: Arc<dyn Hooks>,
    mut socket: S,
    request: transports::RawRequest,
    conn: Conn,
    charge: &Charge,
) {
    let conn = match charge {
        Charge::Connection => conn,
        Charge::PerRequest(per_address) => {
            match charged(edge, per_address, &conn, request.request.headers()) {
                Ok((conn, _)) => conn,
                Err(refusal) => {
                    // The head read first: a socket closed with unread
                    // bytes is reset, and the proxy would not pass the
                    // refusal on.
                    use tokio::io::AsyncReadExt;
                    let mut head = vec![0u8; request.len];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let timeout = edge.endpoints.config.write_timeout;
                    return crate::http::raw::refuse(&mut socket, &refusal, &[], timeout).await;
                }
            }
        }
    };
    transports::serve_raw(hooks, &edge.endpoints, socket, request, conn).await;
}

/// A request from a trusted proxy, with `headers`, as its client's: the
/// connection's values for it, and the client's slot (also in the
/// connection's values), or why it is refused.
fn charged(
    edge: &Edge,
    per_address: &Arc<PerAddress>,
    conn: &Conn,
    headers: &http::HeaderMap,
) -> Result<(Conn, forwarding::Slot), ApiError> {
    let client = edge.forwarding.client(conn.peer.addr.ip(), headers)?;
    let ticket = per_address
        .admit(client)
        .ok_or_else(|| too_many(per_address.max()))?;
    let slot: forwarding::Slot = Arc::new(ticket);
    let conn = Conn {
        peer: Peer::forwarded(client),
        slot: slot.clone(),
        hangup: conn.hangup.clone(),
    };
    Ok((conn, slot))
}

/// The refusal of a connection or request from an address over its bound.
fn too_many(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too-many-connections",
        format!("this address holds its maximum of {max} connections"),
    )
    .retry_after(5)
}

/// Answer a connection from an address over its bound with a 503 (if the
/// socket takes it at once) and close it. Over TLS the refusal could only
/// be read after a handshake, which is what an address over its bound must
/// not cost: it is closed without one.
fn refuse_address(edge: &Edge, stream: &TcpStream, max: usize) {
    if edge.tls.is_none() {
        let _ = stream.try_write(&crate::http::raw::error_response(&too_many(max), &[]));
    }
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
