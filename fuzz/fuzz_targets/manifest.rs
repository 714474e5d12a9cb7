//! The app manifest (`comet.toml`): any text is a manifest or an error with
//! a line and column inside the text; nothing panics.
#![no_main]

use std::path::Path;

use comet_config::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Manifest::parse(text, Path::new("/fuzz/comet.toml")) {
        assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1);
        assert!(e.column >= 1);
        assert!(!e.message.is_empty());
    }
});
