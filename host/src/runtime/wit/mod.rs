//! The `comet:edge` WIT world. The `bindgen!` output stays in the private
//! `generated` module and never leaves this folder: `exports` calls one
//! handler export without loading the others, `lift` copies a guest's
//! answer out of its memory within the event's output budget, `convert`
//! turns records into the host's types and back, and `imports` serves the
//! guest's calls of the `comet:edge` imports from the capabilities.

mod convert;
mod exports;
mod imports;
mod lift;

pub(super) use convert::Reader;
pub(super) use exports::HandlerExports;
pub(super) use imports::{HostState, add_to_linker};
pub(super) use lift::budgeted;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "edge-handler",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The WIT interface a component must export to be a Comet handler (as of
/// this host's WIT package).
pub const HANDLER_INTERFACE: &str = "comet:edge/handler@0.1.1";

/// Every version of [`HANDLER_INTERFACE`] this host serves, newest first:
/// additions only (see ARCHITECTURE.md, "Evolving the WIT world"), so a
/// component built against an older one is served as it is. Its imports
/// resolve by semver: the linker's `@0.1.1` instances satisfy `@0.1.0`
/// imports, which ask for a subset of them.
pub const HANDLER_INTERFACES: [&str; 2] = [HANDLER_INTERFACE, "comet:edge/handler@0.1.0"];
