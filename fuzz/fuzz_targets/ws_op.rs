//! WebSocket text frames: every frame is either an operation or an error
//! with a code the client can act on; nothing panics.
#![no_main]

use comet_wire::ops::{self, OpError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ops::parse(text) {
        Ok(_) => {}
        Err(e @ OpError::Malformed) => assert_eq!(e.code(), "malformed-frame"),
        Err(e @ OpError::Bad { .. }) => {
            assert_eq!(e.code(), "bad-operation");
            let _ = e.id();
        }
    }
});
