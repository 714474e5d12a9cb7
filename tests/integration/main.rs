//! Integration tests: each starts the real `comet` binary on a free port and
//! talks to it over real HTTP.

// The hello example: routes, query parameters, JSON, kv, config.
mod hello;
// Misbehaving guests are contained to one event each.
mod sandbox;
// The command line: bad module files, crate directories, help.
mod cli;
// Guests built without WASI: imports, building, serving, panics.
mod no_wasi;
// Channels on every transport: order, resume, hooks, holds, backpressure.
mod channels;
// The chat example: page, moderation, nicknames, private rooms.
mod chat;
// The browser client in headless Chromium: each transport, fallback,
// restarts, offline and online.
mod browser;
// Operators' view: Prometheus metrics and the live status page.
mod observe;
// Deploying: admin API, swaps under load, persistence, cache, CLI, shutdown,
// manifests.
mod deploy;
// `comet run --watch`: rebuild on change, keep serving on a broken build.
mod watch;
// A host in this process, with a broker the test chooses.
mod inproc;
// No silent loss: restarts, and messages lost between broker and node.
mod resume;
// Budgets no client can push past: history bytes, repeated names, cursors.
mod budgets;
// Slow consumers are dropped the same way on every transport.
mod slow;
// Several comet processes on one real redis-server.
mod redis;
// The server API for backends: commands to one node acting on another's
// clients, the node registry, errors.
mod server_api;
// Hostile clients: timeouts, bounds, handshakes, floods, file permissions.
mod hostile;
// Instance reuse, for modules that opt in: what is kept and what ends it.
mod reuse;
// Chaos: clients of every transport dropping and resuming under load while
// the module is swapped.
mod chaos;
// Evolving the WIT world: a component built against 0.1.0 still runs.
mod wit;
// Pages on other origins in headless Chromium: allowed, or refused; over
// plain HTTP and over comet's own TLS (HTTP/2).
mod origins;
// comet's own TLS: every transport, reloads, bad files.
mod tls;
// Behind a real nginx: each client's own address, the per-address bound
// per client, the PROXY protocol.
mod proxies;
// permessage-deflate: Python websockets (thousands of clients), Chromium,
// and the compressed frames on the wire.
mod compression;

/// The `comet` binary under test.
const COMET: &str = env!("CARGO_BIN_EXE_comet");
