//! The Comet edge runtime host: serves real-time web handlers written as
//! WebAssembly components, each event in a fresh wasmtime sandbox.
//!
//! The crate map, the path of a request and the invariants are described in
//! `ARCHITECTURE.md` at the repository root.

pub mod addresses;
pub mod admin;
pub mod auth;
mod bindings;
pub mod builder;
pub mod channels;
pub mod compile_cache;
pub mod dispatch;
pub mod engine;
mod guest_output;
pub mod http;
mod implemented;
pub mod imports;
pub mod metrics;
pub mod module;
pub mod private_fs;
pub mod publish;
pub mod redis;
pub mod registry;
pub mod routes;
mod sandbox;
mod scheduler;
pub mod server;
pub mod transports;

pub use bindings::HANDLER_INTERFACE;
/// The configuration model (limits, manifest), from the `comet-config` crate.
pub use comet_config::{limits, manifest};
pub use engine::{EPOCH_TICK, EngineSettings};
pub use imports::ModuleServices;
pub use imports::kv::{KvStore, MemoryKv};
pub use limits::Limits;
pub use module::{HandlerModule, LoadError, Runtime};
pub use registry::{DeployError, ModuleSpec, Origin, Registry, RegistryConfig};
pub use routes::{Route, Routes};
pub use sandbox::EventError;
