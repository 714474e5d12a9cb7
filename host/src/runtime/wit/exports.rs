//! Calling one handler export: where each export lives in a component,
//! resolved once per module, and the typed calls, which take the host's
//! event types and return the guest's answer lifted within the output
//! budget (`lift::raw`), for `convert::Reader` to check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Store;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower,
    TypedFunc,
};

use super::convert;
use super::generated::EdgeHandlerPre;
use super::generated::comet::edge::types::{
    CloseInfo, ConnectRequest, Connection, Payload, Publication, Request, SubscribeRequest,
};
use super::lift::List;
use super::lift::raw::{
    RawAction, RawConnectOutcome, RawPublishVerdict, RawRequestOutcome, RawSubscribeOutcome,
};
use super::{HANDLER_INTERFACE, HANDLER_INTERFACES};
use crate::hooks;

/// Where each handler export lives in a component, resolved once per module.
/// The calls return the guest's answer as `lift::raw` types:
/// the caller copies them out within the limits.
///
/// bindgen's `EdgeHandlerPre::instantiate_async` type-checks all six exports
/// on every instantiation; an event calls one, so it looks up only that one
/// (about 1.5 µs saved per event, see BENCHMARKS.md). Its types are checked
/// on the first call of the module and not again: every instance of a module
/// comes from the one `InstancePre` this was resolved from, so they are the
/// same types (the check was 2 % of an HTTP request's CPU). The whole world
/// is still checked once, when the module is loaded.
#[derive(Debug, Clone)]
pub(crate) struct HandlerExports(Arc<Exports>);

#[derive(Debug)]
struct Exports {
    on_request: Export,
    on_connect: Export,
    on_subscribe: Export,
    on_publish: Export,
    on_message: Export,
    on_close: Export,
}

/// One export: where it is, and whether its types were checked.
#[derive(Debug)]
struct Export {
    index: ComponentExportIndex,
    checked: AtomicBool,
}

impl Export {
    /// This export of `instance` as a function from `P` to `R`: checked the
    /// first time, taken as such after.
    fn typed<T, P, R>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
    ) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        if !self.checked.load(Ordering::Acquire) {
            let func = instance.get_typed_func::<P, R>(&mut *store, &self.index)?;
            self.checked.store(true, Ordering::Release);
            return Ok(func);
        }
        let func = instance
            .get_func(&mut *store, self.index)
            .ok_or_else(|| wasmtime::format_err!("the handler export went missing"))?;
        // SAFETY: `func` is this export of an instance of the component
        // `index` was resolved in (a module's instances all come from its
        // one `InstancePre`), and a call of this export with these `P` and
        // `R` (each export is called with one pair, below) passed
        // `get_typed_func`'s check above; bindgen's calls rest on the same
        // argument.
        #[allow(unsafe_code)]
        let func = unsafe { TypedFunc::new_unchecked(func) };
        Ok(func)
    }
}

impl HandlerExports {
    /// Validate the component against the whole world and resolve the
    /// export indices.
    pub(crate) fn resolve<T: Send + 'static>(pre: &InstancePre<T>) -> wasmtime::Result<Self> {
        EdgeHandlerPre::new(pre.clone())?;
        let component: &Component = pre.component();
        let lookup = |name: &str| -> wasmtime::Result<Export> {
            let iface = HANDLER_INTERFACES
                .iter()
                .find_map(|version| component.get_export_index(None, version))
                .ok_or_else(|| wasmtime::format_err!("no `{HANDLER_INTERFACE}` export"))?;
            let index = component
                .get_export_index(Some(&iface), name)
                .ok_or_else(|| wasmtime::format_err!("no `{name}` in `{HANDLER_INTERFACE}`"))?;
            Ok(Export {
                index,
                checked: AtomicBool::new(false),
            })
        };
        Ok(HandlerExports(Arc::new(Exports {
            on_request: lookup("on-request")?,
            on_connect: lookup("on-connect")?,
            on_subscribe: lookup("on-subscribe")?,
            on_publish: lookup("on-publish")?,
            on_message: lookup("on-message")?,
            on_close: lookup("on-close")?,
        })))
    }

    /// Call on-request.
    pub(crate) async fn on_request<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        request: hooks::Request,
    ) -> wasmtime::Result<RawRequestOutcome> {
        let request = convert::request(request);
        let func = self
            .0
            .on_request
            .typed::<_, (&Request,), (RawRequestOutcome,)>(store, instance)?;
        Ok(func.call_async(&mut *store, (&request,)).await?.0)
    }

    /// Call on-connect.
    pub(crate) async fn on_connect<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        request: hooks::ConnectRequest,
    ) -> wasmtime::Result<RawConnectOutcome> {
        let request = convert::connect_request(request);
        let func = self
            .0
            .on_connect
            .typed::<_, (&ConnectRequest,), (RawConnectOutcome,)>(store, instance)?;
        Ok(func.call_async(&mut *store, (&request,)).await?.0)
    }

    /// Call on-subscribe.
    pub(crate) async fn on_subscribe<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        connection: hooks::ConnectionInfo,
        request: hooks::SubscribeRequest,
    ) -> wasmtime::Result<RawSubscribeOutcome> {
        let connection = convert::connection(connection);
        let request = convert::subscribe_request(request);
        let func = self
            .0
            .on_subscribe
            .typed::<_, (&Connection, &SubscribeRequest), (RawSubscribeOutcome,)>(
                store, instance,
            )?;
        Ok(func
            .call_async(&mut *store, (&connection, &request))
            .await?
            .0)
    }

    /// Call on-publish.
    pub(crate) async fn on_publish<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        publication: hooks::Publication,
    ) -> wasmtime::Result<RawPublishVerdict> {
        let publication = convert::publication(publication);
        let func = self
            .0
            .on_publish
            .typed::<_, (&Publication,), (RawPublishVerdict,)>(store, instance)?;
        Ok(func.call_async(&mut *store, (&publication,)).await?.0)
    }

    /// Call on-message.
    pub(crate) async fn on_message<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        connection: hooks::ConnectionInfo,
        frame: crate::channels::Payload,
    ) -> wasmtime::Result<List<RawAction>> {
        let connection = convert::connection(connection);
        let frame = convert::payload(frame);
        let func = self
            .0
            .on_message
            .typed::<_, (&Connection, &Payload), (List<RawAction>,)>(store, instance)?;
        Ok(func.call_async(&mut *store, (&connection, &frame)).await?.0)
    }

    /// Call on-close.
    pub(crate) async fn on_close<T: Send>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
        connection: hooks::ConnectionInfo,
        info: hooks::CloseInfo,
    ) -> wasmtime::Result<()> {
        let connection = convert::connection(connection);
        let info = convert::close_info(info);
        let func = self
            .0
            .on_close
            .typed::<_, (&Connection, &CloseInfo), ()>(store, instance)?;
        func.call_async(&mut *store, (&connection, &info)).await
    }
}
