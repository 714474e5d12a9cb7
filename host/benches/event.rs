//! Per-event cost of a fresh sandbox: instantiate, call on-request, drop.
//!
//! Run with `cargo bench -p comet-host --bench event`. The groups separate
//! wasmtime's own floor (an empty component), instantiating our guests without
//! calling them, and whole on-request events through the HTTP dispatch path,
//! in a fresh instance and in a reused one (for a module that opts in), and
//! one guest built with WASI and without.

use std::sync::Arc;

use bytes::Bytes;
use comet_host::capabilities::Capabilities;
use comet_host::channels::{MemoryBroker, Node, NodeConfig};
use comet_host::hooks::{Hooks, Modules, Publisher, Router};
use comet_host::http::Peer;
use comet_host::limits::Limits;
use comet_host::metrics::Metrics;
use comet_host::runtime::{EngineSettings, HandlerModule, ModuleEnv, Runtime};
use comet_host::transports::{Conn, EndpointConfig, Endpoints};
use comet_testkit::guests;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::Full;

/// Modules loaded on their own, with no registry to find others in.
#[derive(Debug)]
struct Alone;

impl Modules for Alone {
    fn current(&self, _: &str) -> Option<Arc<dyn Hooks>> {
        None
    }
}

/// A runtime, what its modules are granted, and the built-in endpoints'
/// shared state, as a host has them.
struct Setup {
    runtime: Runtime,
    capabilities: Capabilities,
    endpoints: Endpoints,
}

impl Setup {
    fn new() -> Setup {
        let metrics = Arc::new(Metrics::default());
        let node = Node::new(
            Arc::new(MemoryBroker::default()),
            NodeConfig::default(),
            metrics.clone(),
        );
        let capabilities = Capabilities::alone(node.clone(), metrics.clone());
        let runtime = Runtime::new(EngineSettings::default(), metrics.clone()).expect("engine");
        let router = Router::new(Arc::new(Alone), node.clone());
        let endpoints = Endpoints {
            config: EndpointConfig::new("bench".into()),
            publisher: Arc::new(Publisher::new(node, router, metrics)),
        };
        Setup {
            runtime,
            capabilities,
            endpoints,
        }
    }

    fn load(&self, name: &str, path: &str) -> Arc<HandlerModule> {
        self.load_with(name, path, Limits::default())
    }

    fn load_with(&self, name: &str, path: &str, limits: Limits) -> Arc<HandlerModule> {
        let bytes = std::fs::read(path).expect("guest built by comet-testkit");
        let granted = self
            .capabilities
            .configure(name.into(), &Default::default());
        let env = ModuleEnv::new(granted, &limits);
        Arc::new(self.runtime.load(&bytes, env, limits).expect("load guest"))
    }
}

fn request(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn events(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let setup = Setup::new();
    let trivial = setup.load("misbehave", guests::MISBEHAVE);
    // The hello example opts in to reuse; these benchmarks measure a fresh
    // instance per event, so it is turned off here.
    let one_event = Limits {
        events_per_instance: 1,
        ..Limits::default()
    };
    let hello = setup.load_with("hello", guests::HELLO, one_event.clone());
    let conn = Conn {
        peer: Peer::new("127.0.0.1:9".parse().expect("addr")),
        slot: Arc::new(()),
        hangup: None,
    };

    let mut group = c.benchmark_group("event");
    group.bench_function("wasmtime_floor_empty_component", |b| {
        let floor = EmptyComponent::new();
        b.iter(|| rt.block_on(floor.instantiate()))
    });
    group.bench_function("instantiate_only", |b| {
        b.iter(|| {
            rt.block_on(trivial.check_instantiate())
                .expect("instantiate")
        })
    });
    // One whole event through the HTTP dispatch path; it must answer 200.
    let serve = |module: &Arc<HandlerModule>, uri: &str| {
        let hooks: Arc<dyn Hooks> = module.clone();
        let dispatched =
            comet_host::edge::dispatch(hooks, &setup.endpoints, request(uri), conn.clone());
        let response = rt.block_on(dispatched);
        assert_eq!(response.status(), 200);
    };
    group.bench_function("on_request_trivial", |b| b.iter(|| serve(&trivial, "/ok")));
    // A guest that opts in to instance reuse, served both ways: the same
    // component, its events in a fresh instance each (events_per_instance
    // 1) and in a reused one.
    let fresh = setup.load_with("reuse-fresh", guests::REUSE_APP, one_event.clone());
    let reused = setup.load("reuse", guests::REUSE_APP);
    assert!(reused.reuses_instances() && !fresh.reuses_instances());
    group.bench_function("on_request_opted_in_fresh", |b| {
        b.iter(|| serve(&fresh, "/ok"))
    });
    group.bench_function("on_request_reused_instance", |b| {
        b.iter(|| serve(&reused, "/ok"))
    });
    // One crate built both ways: for wasm32-wasip2, and without WASI (its
    // component imports only comet's interfaces).
    for (name, path) in [
        ("wasip2", guests::NO_WASI_APP_WASIP2),
        ("no_wasi", guests::NO_WASI_APP),
    ] {
        let module = setup.load_with(name, path, one_event.clone());
        group.bench_function(format!("instantiate_only_{name}"), |b| {
            b.iter(|| {
                rt.block_on(module.check_instantiate())
                    .expect("instantiate")
            })
        });
        group.bench_function(format!("on_request_hello_{name}"), |b| {
            b.iter(|| serve(&module, "/hello?name=bench"))
        });
    }
    let mut junk = vec![0u8; 4 << 20];
    group.bench_function("on_request_hello_cold_cache", |b| {
        b.iter_batched(
            || {
                for (i, x) in junk.iter_mut().enumerate().step_by(64) {
                    *x = i as u8;
                }
            },
            |()| serve(&hello, "/hello?name=bench"),
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("on_request_hello", |b| {
        b.iter(|| serve(&hello, "/hello?name=bench"))
    });
    group.finish();
}

/// wasmtime's own floor on this machine: an empty component instantiated from
/// an `InstancePre` with the same engine features (pooling, epochs), no WASI.
struct EmptyComponent {
    engine: wasmtime::Engine,
    pre: wasmtime::component::InstancePre<()>,
}

impl EmptyComponent {
    fn new() -> Self {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true).allocation_strategy(
            wasmtime::InstanceAllocationStrategy::Pooling(
                wasmtime::PoolingAllocationConfig::default(),
            ),
        );
        let engine = wasmtime::Engine::new(&config).expect("engine");
        let component =
            wasmtime::component::Component::new(&engine, "(component)").expect("component");
        let linker = wasmtime::component::Linker::new(&engine);
        let pre = linker.instantiate_pre(&component).expect("pre");
        EmptyComponent { engine, pre }
    }

    async fn instantiate(&self) {
        let mut store = wasmtime::Store::new(&self.engine, ());
        store.set_epoch_deadline(1);
        self.pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
    }
}

criterion_group!(benches, events);
criterion_main!(benches);
