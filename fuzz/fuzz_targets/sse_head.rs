//! The SSE request head read straight off the socket: taken only when whole
//! and plain, its length within the bytes read, and nothing panics.
#![no_main]

use comet_wire::sse_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((request, len)) = sse_head::parse(data) {
        assert!(len <= data.len());
        assert_eq!(request.method(), "GET");
        let path = request.uri().path();
        assert_eq!(path, "/comet/sse");
        assert!(!request.headers().contains_key("upgrade"));
        assert!(!request.headers().contains_key("transfer-encoding"));
    }
});
