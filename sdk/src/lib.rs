//! The Comet guest SDK: write edge handlers in Rust and compile them to a
//! `wasm32-wasip2` component that the `comet` host runs in a sandbox.
//!
//! A handler implements [`Handler`], overriding only the events it cares about
//! (every event has a sensible default), and exports itself with one line,
//! the [`handler`] attribute on the impl:
//!
//! ```no_run
//! use comet_sdk::{Handler, Reply, Request, Response};
//!
//! struct App;
//!
//! #[comet_sdk::handler]
//! impl Handler for App {
//!     fn on_request(request: Request) -> Reply {
//!         match request.path.as_str() {
//!             "/hello" => {
//!                 let name = request.query_param("name").unwrap_or_else(|| "world".into());
//!                 Response::text(format!("hello, {name}")).into()
//!             }
//!             _ => Response::not_found().into(),
//!         }
//!     }
//! }
//! ```
//!
//! The attribute also tells the host which events the impl defines, so the
//! host answers the others with their defaults without starting an instance
//! (a connection to a handler that only decides subscriptions then runs one
//! sandbox instead of three). [`export_handler!`] exports a handler without
//! that record: every event then runs in the guest, defaults included.
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (or let
//! `comet run path/to/crate` do it) and serve it with `comet run`.
//!
//! A handler that needs no WASI (no stdio, clock, environment or OS
//! randomness of Rust's std) may set `wasi = false` under
//! `[package.metadata.comet]` in its `Cargo.toml`: `comet run` then builds it
//! for `wasm32-unknown-unknown` and makes a component that imports only
//! comet's interfaces, which is cheaper to instantiate. For that target the
//! SDK supplies the global allocator (dlmalloc, using the heap in the
//! module's initial memory first) and sends panic messages to the log.
//!
//! Each event runs in a fresh instance, so statics do not survive between
//! events: keep state in [`kv`], in channels ([`channels`]) or in a
//! connection's session attributes.
//!
//! A handler whose code keeps nothing from one event to the next may opt in
//! to instance reuse with `#[comet_sdk::handler(reuse_instances)]`: the host
//! then runs up to `events_per_instance` events (1000 by default; one at a
//! time) in one instance before it starts a fresh one, which saves most of
//! an event's cost (instantiation and the reset of its memory). The
//! trade-off is isolation: whatever one event leaves in statics, the heap
//! or a cache is seen by the next event of the same module, which may come
//! from another client. Use it only for code that holds no per-request data
//! past the event (and never as a cache you rely on: which events share an
//! instance is up to the host). An event that traps, fails or prints
//! anything ends its instance; the next event gets a fresh one.

mod http;
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
mod lean;
mod realtime;

pub mod channels;
pub mod config;
pub mod kv;
pub mod log;

#[doc(hidden)]
pub mod bindings {
    //! Raw wit-bindgen output for the `comet:edge/edge-handler` world. Use the
    //! re-exports at the crate root instead.
    wit_bindgen::generate!({
        path: "../wit",
        world: "edge-handler",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "comet_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

use bindings::exports::comet::edge::handler::Guest;

pub use bindings::comet::edge::types::{
    Action, Attributes, CloseFrame, CloseInfo, ConnectOutcome, ConnectRequest, Connection, Cursor,
    Header, Hold, Message, Outgoing, Payload, Publication, PublishSource, PublishVerdict,
    Rejection, Request, RequestOutcome as Reply, Response, StreamFormat, SubscribeOutcome,
    SubscribeRequest, Transport, WebsocketAccept,
};
pub use http::{JsonError, cookie};

/// Export a [`Handler`] impl and record which events it defines.
///
/// Put it on the impl, in place of [`export_handler!`]:
///
/// ```ignore
/// struct App;
///
/// #[comet_sdk::handler]
/// impl comet_sdk::Handler for App {
///     fn on_subscribe(connection: Connection, request: SubscribeRequest) -> SubscribeOutcome {
///         // ...
///     }
/// }
/// ```
///
/// The names of the events the impl defines go into the component's
/// `comet-hooks` custom section. The host runs those in the guest as
/// always, and answers every other event the way [`Handler`]'s default
/// does (`on-connect`: accept with no session attributes; `on-subscribe`:
/// allow; `on-publish`: accept; `on-message`: no actions; `on-close`:
/// nothing; `on-request`: 404) without starting an instance.
///
/// `#[comet_sdk::handler(reuse_instances)]` also opts in to instance reuse
/// (see the crate docs for the trade-off).
pub use comet_sdk_macros::handler;

/// serde, re-exported so handlers need no version of their own
/// (derive with `#[serde(crate = "comet_sdk::serde")]`).
pub use serde;
/// serde_json, re-exported for handlers.
pub use serde_json as json;

/// A Comet edge handler. Every event has a default, so implement only what
/// the application needs, then export the impl with the [`handler`]
/// attribute.
///
/// The methods take no `self`: each event runs in a fresh sandboxed instance
/// with nothing carried over from the previous one.
///
/// The host gives the same default answers itself for a handler exported
/// with [`handler`] (`HandlerModule` in comet-host): a change to a default
/// here must be made there too.
pub trait Handler {
    /// An HTTP request to any path that is not a built-in `/comet/...`
    /// endpoint. Default: `404 Not Found`.
    fn on_request(request: Request) -> Reply {
        let _ = request;
        Response::not_found().into()
    }

    /// A client opens a built-in endpoint. Default: accept with no session
    /// attributes.
    fn on_connect(request: ConnectRequest) -> ConnectOutcome {
        let _ = request;
        ConnectOutcome::Accept(Vec::new())
    }

    /// A connected client asks for a channel. Default: allow.
    fn on_subscribe(connection: Connection, request: SubscribeRequest) -> SubscribeOutcome {
        let _ = (connection, request);
        SubscribeOutcome::Allow
    }

    /// A message is about to be published (once per publish, never per
    /// subscriber). Default: accept unchanged.
    fn on_publish(publication: Publication) -> PublishVerdict {
        let _ = publication;
        PublishVerdict::Accept
    }

    /// A WebSocket frame that is not a built-in operation. The returned
    /// actions run in order. Default: no actions.
    fn on_message(connection: Connection, frame: Payload) -> Vec<Action> {
        let _ = (connection, frame);
        Vec::new()
    }

    /// A connection ended. Default: nothing.
    fn on_close(connection: Connection, info: CloseInfo) {
        let _ = (connection, info);
    }
}

/// Adapts any [`Handler`] to the generated export trait. Used by
/// [`export_handler!`]; not meant to be named directly.
#[doc(hidden)]
#[derive(Debug)]
pub struct Export<H>(core::marker::PhantomData<H>);

impl<H: Handler> Guest for Export<H> {
    fn on_request(request: Request) -> Reply {
        prepare();
        H::on_request(request)
    }
    fn on_connect(request: ConnectRequest) -> ConnectOutcome {
        prepare();
        H::on_connect(request)
    }
    fn on_subscribe(connection: Connection, request: SubscribeRequest) -> SubscribeOutcome {
        prepare();
        H::on_subscribe(connection, request)
    }
    fn on_publish(publication: Publication) -> PublishVerdict {
        prepare();
        H::on_publish(publication)
    }
    fn on_message(connection: Connection, frame: Payload) -> Vec<Action> {
        prepare();
        H::on_message(connection, frame)
    }
    fn on_close(connection: Connection, info: CloseInfo) {
        prepare();
        H::on_close(connection, info)
    }
}

/// Sets up what an event needs before the handler runs: nothing on
/// `wasm32-wasip2`, the panic report on a build without WASI.
#[inline(always)]
fn prepare() {
    #[cfg(all(target_family = "wasm", target_os = "unknown"))]
    lean::prepare();
}

/// Export a [`Handler`] implementation as the component's `comet:edge/handler`,
/// every event included. Prefer the [`handler`] attribute on the impl, which
/// exports it too and lets the host skip the events left to their defaults.
///
/// ```ignore
/// struct App;
/// impl comet_sdk::Handler for App {}
/// comet_sdk::export_handler!(App);
/// ```
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        type __CometExportedHandler = $crate::Export<$handler>;
        $crate::bindings::export_raw!(__CometExportedHandler with_types_in $crate::bindings);
    };
}
