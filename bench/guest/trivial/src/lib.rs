//! The trivial handler of the peer comparison: on-request, on-subscribe and
//! on-publish are implemented (and so run in a sandbox) but do as little as
//! possible, so what is measured is the cost of the sandbox. It keeps
//! nothing between events and opts in to instance reuse; the benchmarks run
//! it both ways (`--events-per-instance 1`: a fresh instance per event).
//! on-connect and on-close are left to the SDK's defaults, which the host
//! answers without a sandbox, as it does for any handler exported with
//! `#[comet_sdk::handler(reuse_instances)]`.

use comet_sdk::{
    Connection, Handler, Publication, PublishVerdict, Reply, Request, Response, SubscribeOutcome,
    SubscribeRequest,
};

struct Trivial;

#[comet_sdk::handler(reuse_instances)]
impl Handler for Trivial {
    fn on_request(request: Request) -> Reply {
        match request.path.as_str() {
            "/hello" => Response::text("hello, world!\n").into(),
            _ => Response::not_found().into(),
        }
    }

    fn on_subscribe(connection: Connection, request: SubscribeRequest) -> SubscribeOutcome {
        let _ = (connection, request);
        SubscribeOutcome::Allow
    }

    fn on_publish(publication: Publication) -> PublishVerdict {
        let _ = publication;
        PublishVerdict::Accept
    }
}
