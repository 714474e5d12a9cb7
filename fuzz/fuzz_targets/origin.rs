//! `Origin` and `Host` headers from browsers and clients, and the origins an
//! operator allows: no panic; what parses serializes in the browser's form
//! (no default port) and parses back to itself; a tuple origin is the same
//! host as its own serialized authority.
#![no_main]

use comet_wire::origin::{Allowed, MAX_ORIGIN_BYTES, OriginValue, split_authority};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(origin) = OriginValue::parse(text) {
        assert!(text.len() <= MAX_ORIGIN_BYTES);
        let shown = origin.to_string();
        assert_eq!(OriginValue::parse(&shown).as_ref(), Ok(&origin), "{shown}");
        if let OriginValue::Tuple(tuple) = &origin {
            let authority = format!("{}:{}", tuple.host(), tuple.port());
            assert!(tuple.is_same_host(&authority), "{authority}");
        }
    }
    if let Ok(rule) = Allowed::parse(text) {
        let shown = rule.to_string();
        assert_eq!(Allowed::parse(&shown).as_ref(), Ok(&rule), "{shown}");
    }
    if let Some((host, _)) = split_authority(text) {
        assert!(!host.is_empty() && text.starts_with(host));
    }
});
