//! The `comet:edge` WIT world as Rust types. The `bindgen!` output stays in a
//! private module; the rest of the host sees only the re-exports below.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "edge-handler",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub(crate) use generated::comet::edge::types::{Header, Request, RequestOutcome, Response};
pub(crate) use generated::comet::edge::{channels, config, kv, log, types};
pub(crate) use generated::{EdgeHandler, EdgeHandlerPre};

/// The WIT interface a component must export to be a Comet handler.
pub const HANDLER_INTERFACE: &str = "comet:edge/handler@0.1.0";
