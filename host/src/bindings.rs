//! The `comet:edge` WIT world as Rust types. The `bindgen!` output stays in a
//! private module; the rest of the host sees the re-exports below and
//! [`HandlerExports`], which calls one export without loading the others.

use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre};

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

/// Where each handler export lives in a component, resolved once per module.
///
/// bindgen's `EdgeHandlerPre::instantiate_async` type-checks all six exports
/// on every instantiation; an event calls one, so it looks up and checks only
/// that one (about 1.5 µs saved per event, see BENCHMARKS.md). The full check
/// still runs once, when the module is loaded.
#[derive(Debug, Clone)]
pub(crate) struct HandlerExports {
    on_request: ComponentExportIndex,
}

impl HandlerExports {
    /// Validate the component against the whole world and resolve the
    /// export indices.
    pub(crate) fn resolve<T: Send + 'static>(pre: &InstancePre<T>) -> wasmtime::Result<Self> {
        EdgeHandlerPre::new(pre.clone())?;
        let component: &Component = pre.component();
        let lookup = |name: &str| -> wasmtime::Result<ComponentExportIndex> {
            let iface = component
                .get_export_index(None, HANDLER_INTERFACE)
                .ok_or_else(|| wasmtime::format_err!("no `{HANDLER_INTERFACE}` export"))?;
            component
                .get_export_index(Some(&iface), name)
                .ok_or_else(|| wasmtime::format_err!("no `{name}` in `{HANDLER_INTERFACE}`"))
        };
        Ok(HandlerExports {
            on_request: lookup("on-request")?,
        })
    }

    /// Call on-request.
    pub(crate) async fn on_request<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        request: &Request,
    ) -> wasmtime::Result<RequestOutcome> {
        let func = instance
            .get_typed_func::<(&Request,), (RequestOutcome,)>(&mut *store, &self.on_request)?;
        let (outcome,) = func.call_async(&mut *store, (request,)).await?;
        Ok(outcome)
    }
}
