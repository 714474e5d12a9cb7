//! Channel names from clients, guests and the manifest: whatever is
//! accepted keeps the documented alphabet and length, and the namespace is
//! the part before the first `:`.
#![no_main]

use comet_wire::name::{ChannelName, MAX_CHANNEL_BYTES, namespace, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ChannelName::new(text) {
        Ok(name) => {
            assert!(validate(text).is_ok());
            assert!(!text.is_empty() && text.len() <= MAX_CHANNEL_BYTES);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:@/".contains(&b))
            );
            assert_eq!(name.as_str(), text);
            if let Some(ns) = namespace(text) {
                assert!(text.starts_with(ns) && text[ns.len()..].starts_with(':'));
                assert!(!ns.contains(':'));
            }
        }
        Err(e) => {
            assert!(validate(text).is_err());
            // The error is shown to the client: it must render.
            assert!(!e.to_string().is_empty());
        }
    }
});
