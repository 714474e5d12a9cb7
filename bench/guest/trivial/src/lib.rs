//! The trivial handler of the peer comparison: every hook the benchmark
//! exercises is implemented (and so runs in a fresh sandbox per event), but
//! does as little as possible, so what is measured is the cost of the sandbox.

use comet_sdk::{
    Connection, Handler, PublishVerdict, Publication, Reply, Request, Response, SubscribeOutcome,
    SubscribeRequest,
};

struct Trivial;

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

comet_sdk::export_handler!(Trivial);
