//! The cursor decoder: any string a client sends as `since` or
//! `Last-Event-ID`. It must not panic, must stay within its size bound, and
//! what it accepts must survive a round trip through the issued form.
#![no_main]

use comet_wire::cursor::{Cursor, MAX_CURSOR_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cursor) = Cursor::decode(text) else {
        return;
    };
    assert!(text.len() <= MAX_CURSOR_BYTES);
    // A position costs at least 17 bytes of binary form (or a line of text).
    assert!(cursor.len() <= text.len());
    let again = Cursor::decode(&cursor.encode()).expect("an issued cursor decodes");
    assert_eq!(again, cursor);
});
