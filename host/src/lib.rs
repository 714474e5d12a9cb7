//! The Comet edge runtime host: serves real-time web handlers written as
//! WebAssembly components, each event in a fresh wasmtime sandbox.
//!
//! The folders, bottom to top (each uses only those below it):
//! `metrics`, `http` (the HTTP vocabulary), `private_fs`; `channels` (the
//! channels service and the `Broker` boundary); `capabilities` (what a
//! handler may reach); `redis` (the shared engine: a broker and a kv
//! store); `hooks` (the seam between transports and handlers, and the one
//! publish path); `runtime` (wasmtime: modules and their events); `deploy`
//! (the modules each name serves); `transports` (the `/comet/` endpoints);
//! `edge` (the public listener); `admin`; `app` (composition). The map, the
//! path of a request and of a published message, and the invariants are in
//! `ARCHITECTURE.md` at the repository root.

pub mod admin;
pub mod app;
pub mod capabilities;
pub mod channels;
pub mod deploy;
pub mod edge;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod private_fs;
pub mod redis;
pub mod runtime;
pub mod transports;

/// The configuration model (limits, manifest), from the `comet-config` crate.
pub use comet_config::{limits, manifest};
