//! A first Comet handler: routes, query parameters, JSON in and out, a log
//! line and a kv counter.

use comet_sdk::json::{Value, json};
use comet_sdk::{Handler, Reply, Request, Response, config, kv, log};

struct Hello;

// Nothing here outlives an event (the counter lives in kv), so the host may
// run many events in one instance: cheaper, and safe for this code. Drop
// `(reuse_instances)` to get a fresh instance per event.
#[comet_sdk::handler(reuse_instances)]
impl Handler for Hello {
    fn on_request(request: Request) -> Reply {
        log::info(
            "request",
            &[("method", &request.method), ("path", &request.path)],
        );
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/") => Response::text(
                "comet hello example\n\
                 GET  /hello?name=you   a greeting\n\
                 POST /echo             JSON in, JSON out\n\
                 GET  /counter          a kv counter\n",
            ),
            ("GET", "/hello") => greet(&request),
            ("POST", "/echo") => echo(&request),
            ("GET", "/counter") => counter(),
            (_, "/" | "/hello" | "/echo" | "/counter") => {
                Response::text("method not allowed\n").with_status(405)
            }
            _ => Response::not_found(),
        }
        .into()
    }
}

fn greet(request: &Request) -> Response {
    let name = request
        .query_param("name")
        .unwrap_or_else(|| "world".into());
    let greeting = config::get("greeting").unwrap_or_else(|| "hello".into());
    Response::text(format!("{greeting}, {name}!\n"))
}

fn echo(request: &Request) -> Response {
    match request.json::<Value>() {
        Ok(value) => Response::json(&json!({
            "you_sent": value,
            "bytes": request.body.len(),
            "request_id": request.id,
        })),
        Err(e) => Response::json(&json!({ "error": e.to_string() })).with_status(400),
    }
}

fn counter() -> Response {
    match kv::increment("visits", 1) {
        Ok(visits) => Response::json(&json!({ "visits": visits })),
        Err(e) => Response::json(&json!({ "error": e.to_string() })).with_status(503),
    }
}
