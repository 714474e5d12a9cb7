//! A wasi:http/proxy hello-world, served by `wasmtime serve` next to comet's
//! hello example and bare hyper in the HTTP throughput scenario.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut out) = body.write() {
            let _ = out.write_all(b"hello, world!\n");
            let _ = out.flush();
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
