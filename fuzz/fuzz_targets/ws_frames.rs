//! A WebSocket client's bytes, compressed frames allowed: no panic; every
//! message within the limit (inflated ones too); the same bytes split at
//! any point read the same.
#![no_main]

use bytes::BytesMut;
use comet_wire::frame::{Frame, Reader};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fn read(chunks: &[&[u8]], deflate: bool) -> (Vec<Frame>, Option<u16>) {
    let mut reader = Reader::new(MAX, deflate);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match reader.next(&mut buf) {
                Ok(Some(frame)) => {
                    let len = match &frame {
                        Frame::Text(t) => t.len(),
                        Frame::Binary(b) | Frame::Ping(b) => b.len(),
                        Frame::Pong | Frame::Close(_) => 0,
                    };
                    assert!(len <= MAX);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(violation) => return (frames, Some(violation.code)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let deflate = split & 1 == 1;
    let whole = read(&[data], deflate);
    let at = usize::from(split).min(data.len());
    let (a, b) = data.split_at(at);
    assert_eq!(read(&[a, b], deflate), whole);
});
