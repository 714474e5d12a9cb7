//! The first bytes of a connection from a trusted proxy: no panic; a
//! header's length is within the bytes given and the bounds; every prefix
//! of a whole header is `Partial` or the same error-free reading stops
//! short, never a different header.
#![no_main]

use comet_wire::proxy::{MAX_V1_BYTES, MAX_V2_BYTES, Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Header { client, len }) = parse(data) else {
        return;
    };
    assert!(len <= data.len() && len <= MAX_V1_BYTES.max(MAX_V2_BYTES));
    // The header alone reads the same.
    assert_eq!(parse(&data[..len]), Ok(Parsed::Header { client, len }));
    // Any shorter prefix is not yet a header.
    for cut in [0, 1, len / 2, len - 1] {
        if cut < len && cut > 0 {
            assert_eq!(parse(&data[..cut]), Ok(Parsed::Partial), "cut at {cut}");
        }
    }
});
