//! The admin API, on its own listener: upload, list, inspect, remove and roll
//! back modules, the server's status and its metrics; `status_page` is the
//! live page at `/admin/`. Every request needs the admin bearer token (the
//! page itself holds no data). The endpoints are described in PROTOCOL.md.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::channels::Node;
use crate::deploy::{DeployError, Origin, Registry};
use crate::edge::{DEFAULT_HEADER_TIMEOUT, Routes, Tls};
use crate::http::auth::check_bearer;
use crate::http::{ApiError, Body, declared_length, full, read_bounded};
use crate::metrics::{Metrics, ModuleState, Snapshot};

mod status_page;

/// Path prefix of the admin API.
pub const PREFIX: &str = "/admin/";

/// What the admin listener serves.
#[derive(Debug)]
pub struct Admin {
    registry: Arc<Registry>,
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    routes: Routes,
    token: String,
    max_upload: usize,
    started: Instant,
}

impl Admin {
    /// The admin API over `registry` and `node`, serving `metrics`, guarded
    /// by `token`.
    pub fn new(
        registry: Arc<Registry>,
        node: Arc<Node>,
        metrics: Arc<Metrics>,
        routes: Routes,
        token: String,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            max_upload: registry.max_module_bytes(),
            registry,
            node,
            metrics,
            routes,
            token,
            started: Instant::now(),
        })
    }
}

/// Serve the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, tls, shutdown, move |request| {
        let admin = admin.clone();
        async move {
            match route(&admin, request).await {
                Ok(response) => response,
                Err(e) => e.into_response(),
            }
        }
    })
    .await
}

/// Serve only `GET /metrics`, without a token, on `listener` (for
/// scrapers on a private network: `--metrics-listen`).
pub async fn serve_metrics(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, None, shutdown, move |request| {
        let response = if request.uri().path() == "/metrics" {
            metrics_response(&admin, request.headers())
        } else {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "only /metrics is served here",
            )
            .into_response()
        };
        std::future::ready(response)
    })
    .await
}

/// Accept connections on `listener` (over `tls` if given: the handshake
/// within the header timeout) and answer each request with `answer` until
/// `shutdown` resolves; then let requests in flight finish.
async fn serve_with<F, A>(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
    answer: A,
) -> std::io::Result<()>
where
    A: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = crate::edge::accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let answer = answer.clone();
        let service = service_fn(move |request| {
            let answer = answer(request);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let Some(tls) = &tls else {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%remote, error = %e, "admin connection ended with an error");
                }
            });
            continue;
        };
        let handshake = tls.acceptor().accept(stream);
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(DEFAULT_HEADER_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%remote, "no TLS handshake within the timeout"),
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%remote, error = %e, "admin connection ended with an error");
            }
        });
    }
    // A deploy in flight finishes; the status page's event streams end
    // within the timeout.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

async fn route(
    admin: &Arc<Admin>,
    request: hyper::Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    // The status page itself holds no data: it asks for the token and sends
    // it with every request it makes.
    if request.method() == Method::GET && path == PREFIX {
        return Ok(status_page::page());
    }
    check_bearer(request.headers(), &admin.token, "admin token")?;
    if path == "/metrics" {
        return Ok(metrics_response(admin, request.headers()));
    }
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(not_found(&path));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let method = request.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["status"]) => Ok(json(StatusCode::OK, &status(admin))),
        (&Method::GET, ["events"]) => {
            let admin = admin.clone();
            Ok(status_page::events(move || status(&admin)))
        }
        (&Method::GET, ["modules"]) => Ok(json(StatusCode::OK, &admin.registry.list())),
        (&Method::GET, ["modules", name]) => match admin.registry.get(name) {
            Some(info) => Ok(json(StatusCode::OK, &info)),
            None => Err(DeployError::NotFound((*name).into()).into()),
        },
        (&Method::PUT, ["modules", name]) => upload(admin, name, request).await,
        (&Method::DELETE, ["modules", name]) => {
            admin.registry.remove(name).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "removed": name }),
            ))
        }
        (&Method::POST, ["modules", name, "rollback"]) => {
            let info = admin.registry.rollback(name).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "name": name, "current": info }),
            ))
        }
        (_, ["status"] | ["modules"] | ["modules", _] | ["modules", _, "rollback"]) => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{method} is not allowed on {path}"),
            ))
        }
        _ => Err(not_found(&path)),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no admin endpoint {path}"),
    )
}

async fn upload(
    admin: &Admin,
    name: &str,
    request: hyper::Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let too_large = |size: usize| {
        ApiError::from(DeployError::TooLarge {
            size,
            max: admin.max_upload,
        })
    };
    let declared = declared_length(request.headers());
    let bytes = read_bounded(declared, request.into_body(), admin.max_upload, too_large).await?;
    // Checked after reading the body (within the size limit), so the client
    // is not cut off mid-upload and sees this answer.
    crate::deploy::validate_name(name)?;
    let started = Instant::now();
    let info = match admin
        .registry
        .deploy(name, bytes.to_vec(), Origin::Upload)
        .await
    {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(module = name, error = %e, "upload refused; the current version keeps serving");
            return Err(e.into());
        }
    };
    let unrouted = !admin.registry.in_use().contains(name);
    let mut body = serde_json::json!({
        "name": name,
        "current": info,
        "swap_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    if unrouted {
        body["warning"] = format!(
            "no route or channel namespace uses module {name:?}; add one to the manifest to serve it"
        )
        .into();
    }
    Ok(json(StatusCode::CREATED, &body))
}

/// `GET /metrics`: the process's metrics and the values read now, in
/// OpenMetrics when the scraper asks for it, else the classic text format.
fn metrics_response(admin: &Admin, headers: &http::HeaderMap) -> Response<Body> {
    let openmetrics = headers.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let body = admin.metrics.encode(snapshot(admin), openmetrics);
    let mut response = Response::new(full(body));
    let kind = if openmetrics {
        crate::metrics::OPENMETRICS
    } else {
        crate::metrics::PROMETHEUS_TEXT
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// What `/metrics` reads at scrape time.
pub fn snapshot(admin: &Admin) -> Snapshot {
    let channels = &admin.node;
    let broker = channels.broker_stats();
    let node = channels.stats();
    let modules = admin
        .registry
        .list()
        .into_iter()
        .map(|info| {
            let running = admin
                .registry
                .current(&info.name)
                .map_or(0, |m| m.running());
            ModuleState {
                name: info.name,
                version: info.current.version,
                hash: info.current.hash,
                running,
            }
        })
        .collect();
    Snapshot {
        uptime_s: admin.started.elapsed().as_secs(),
        connections: channels
            .admission()
            .by_transport()
            .iter()
            .map(|(kind, n)| (kind.name(), *n))
            .collect(),
        channels: channels.local_channel_count(),
        broker: broker.kind,
        broker_up: broker.subscribed,
        broker_channels: broker.channels,
        history_bytes: broker.history_bytes,
        evicted: broker.evicted,
        reclaimed: broker.reclaimed,
        slow_consumers: node.slow_consumers,
        catch_ups: node.catch_ups,
        resets: node.resets,
        deliveries: node.deliveries,
        ws_compressions: crate::channels::message::compressions(),
        cache: admin
            .registry
            .runtime()
            .cache()
            .map(|c| (c.hits(), c.misses())),
        modules,
    }
}

fn status(admin: &Admin) -> serde_json::Value {
    let channels = &admin.node;
    let by_transport: serde_json::Map<String, serde_json::Value> = channels
        .admission()
        .by_transport()
        .iter()
        .map(|(kind, n)| (kind.name().to_string(), (*n).into()))
        .collect();
    let routes: Vec<serde_json::Value> = admin
        .routes
        .iter()
        .map(|r| serde_json::json!({ "host": r.host, "prefix": r.prefix, "module": r.module }))
        .collect();
    let broker = channels.broker_stats();
    let node = channels.stats();
    let cache = admin
        .registry
        .runtime()
        .cache()
        .map(|c| serde_json::json!({ "hits": c.hits(), "misses": c.misses() }));
    serde_json::json!({
        "uptime_s": admin.started.elapsed().as_secs(),
        "max_module_bytes": admin.max_upload,
        "version": env!("CARGO_PKG_VERSION"),
        "connections": {
            "total": channels.admission().count(),
            "by_transport": by_transport,
        },
        "channels": channels.local_channel_count(),
        "top_channels": channels
            .top_channels(10)
            .into_iter()
            .map(|(channel, subscribers, offset)| serde_json::json!({
                "channel": channel.as_str(), "subscribers": subscribers, "offset": offset,
            }))
            .collect::<Vec<_>>(),
        "events": admin.metrics.by_module(),
        "delivery": {
            "deliveries": node.deliveries,
            "slow_consumers": node.slow_consumers,
            "catch_ups": node.catch_ups,
            "resets": node.resets,
            "ws_compressions": crate::channels::message::compressions(),
        },
        "broker": {
            "kind": broker.kind,
            "subscribed": broker.subscribed,
            "channels": broker.channels,
            "history_bytes": broker.history_bytes,
            "evicted": broker.evicted,
            "reclaimed": broker.reclaimed,
        },
        "modules": admin.registry.list(),
        "routes": routes,
        "compile_cache": cache,
    })
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
