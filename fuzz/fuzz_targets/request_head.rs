//! The first request's head read straight off the socket: taken only when
//! whole and a plain `GET /comet/sse` or a `GET /comet/ws`, its length
//! within the bytes read, and nothing panics.
#![no_main]

use comet_wire::head::{self, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((endpoint, request, len)) = head::parse(data) {
        assert!(len <= data.len());
        assert_eq!(request.method(), "GET");
        let path = request.uri().path();
        assert_eq!(path, format!("/comet/{}", endpoint.name()));
        assert!(!request.headers().contains_key("transfer-encoding"));
        if endpoint == Endpoint::Sse {
            assert!(!request.headers().contains_key("upgrade"));
        }
    }
});
