//! WebSocket frames a client sends (RFC 6455, section 5), compressed ones
//! (RFC 7692, permessage-deflate) included: a [`Reader`] takes bytes off a
//! buffer and hands out whole messages and control frames, unmasked,
//! reassembled, inflated and checked. Every limit is the caller's
//! `max_message`: a frame, a reassembled message and an inflated one alike
//! (a decompression bomb stops there, `1009`).
//!
//! The server's side is [`deflate`] (one message, no context kept) and the
//! frame [`header`]; [`negotiate`] reads a client's
//! `Sec-WebSocket-Extensions` offer.

use std::cell::RefCell;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text message (UTF-8 checked).
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping: answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The client closes, with a code (and its reason) or none.
    Close(Option<(u16, String)>),
}

/// Why the connection must close: the close code to send, and a reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (close {code})")]
pub struct Violation {
    /// 1002 (protocol error), 1007 (not UTF-8), 1008 (a message in too
    /// many frames) or 1009 (too large).
    pub code: u16,
    /// What the client did, in a few words.
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> Violation {
    Violation { code: 1002, reason }
}

const TOO_LARGE: Violation = Violation {
    code: 1009,
    reason: "message too large",
};

const NOT_UTF8: Violation = Violation {
    code: 1007,
    reason: "text is not UTF-8",
};

/// Opcodes (RFC 6455, section 5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The RSV1 bit: this message is compressed (RFC 7692, section 6).
const RSV1: u8 = 0x40;

/// The tail a sender strips from each compressed message (section 7.2.1).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Most frames one message may come in: more is closed with 1008 (each
/// costs a read and a header, however small; the caller's frame rate limit
/// counts them too, see [`Reader::take_frames`]).
pub const MAX_PARTS: u32 = 1024;

/// A message being reassembled from its frames.
#[derive(Debug)]
struct Partial {
    opcode: u8,
    compressed: bool,
    bytes: Vec<u8>,
    parts: u32,
}

/// Reads a client's frames (see the module docs).
#[derive(Debug)]
pub struct Reader {
    max_message: usize,
    /// permessage-deflate was agreed: RSV1 marks a compressed message.
    deflate: bool,
    partial: Option<Partial>,
    /// Frames read since [`Reader::take_frames`] (parts of a message and
    /// control frames each count).
    frames: u32,
}

impl Reader {
    /// A reader of messages of at most `max_message` bytes (inflated);
    /// `deflate` when permessage-deflate was agreed.
    pub fn new(max_message: usize, deflate: bool) -> Reader {
        Reader {
            max_message,
            deflate,
            partial: None,
            frames: 0,
        }
    }

    /// How many frames were read since the last call: what a rate limit
    /// counts (a message in a thousand parts is a thousand frames).
    pub fn take_frames(&mut self) -> u32 {
        std::mem::take(&mut self.frames)
    }

    /// The next whole message or control frame at the front of `buf`,
    /// consumed from it; `None` until more bytes come. After an error the
    /// connection is done: close it with the violation's code.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Violation> {
        loop {
            let Some(head) = parse_head(buf, self.max_message)? else {
                return Ok(None);
            };
            if buf.len() < head.len + head.payload {
                // Room for the rest of the frame, so one read can take it.
                buf.reserve(head.len + head.payload - buf.len());
                return Ok(None);
            }
            buf.advance(head.len);
            self.frames = self.frames.saturating_add(1);
            let mut payload = buf.split_to(head.payload);
            unmask(&mut payload, head.mask);
            if let Some(frame) = self.take(head, payload)? {
                return Ok(Some(frame));
            }
        }
    }

    /// One frame: a control frame or a whole message, or `None` while a
    /// message is in parts.
    fn take(&mut self, head: Head, payload: BytesMut) -> Result<Option<Frame>, Violation> {
        if head.rsv1 && !self.deflate {
            return Err(protocol("reserved bits set"));
        }
        match head.opcode {
            CLOSE | PING | PONG => {
                if !head.fin || head.payload > 125 {
                    return Err(protocol("control frame fragmented or over 125 bytes"));
                }
                if head.rsv1 {
                    return Err(protocol("compressed control frame"));
                }
                control(head.opcode, payload.freeze()).map(Some)
            }
            TEXT | BINARY => {
                if self.partial.is_some() {
                    return Err(protocol("a new message before the last one ended"));
                }
                if head.fin {
                    return self
                        .message(head.opcode, head.rsv1, payload.freeze())
                        .map(Some);
                }
                self.partial = Some(Partial {
                    opcode: head.opcode,
                    compressed: head.rsv1,
                    bytes: payload.to_vec(),
                    parts: 1,
                });
                Ok(None)
            }
            CONTINUATION => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(protocol("continuation without a message"));
                };
                if head.rsv1 {
                    return Err(protocol("RSV1 on a continuation frame"));
                }
                if partial.bytes.len() + payload.len() > self.max_message {
                    return Err(TOO_LARGE);
                }
                partial.parts += 1;
                if partial.parts > MAX_PARTS {
                    return Err(Violation {
                        code: 1008,
                        reason: "message in too many frames",
                    });
                }
                partial.bytes.extend_from_slice(&payload);
                if !head.fin {
                    return Ok(None);
                }
                let Partial {
                    opcode,
                    compressed,
                    bytes,
                    ..
                } = self.partial.take().expect("checked above");
                self.message(opcode, compressed, bytes.into()).map(Some)
            }
            _ => Err(protocol("unknown opcode")),
        }
    }

    /// A whole data message, inflated and checked.
    fn message(&self, opcode: u8, compressed: bool, bytes: Bytes) -> Result<Frame, Violation> {
        let bytes = if compressed {
            inflate(&bytes, self.max_message)?.into()
        } else {
            bytes
        };
        if opcode == BINARY {
            return Ok(Frame::Binary(bytes));
        }
        String::from_utf8(bytes.into())
            .map(Frame::Text)
            .map_err(|_| NOT_UTF8)
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Bytes of the header.
    len: usize,
    /// Bytes of the payload.
    payload: usize,
}

/// The header at the front of `buf`, if it is all there.
fn parse_head(buf: &[u8], max_payload: usize) -> Result<Option<Head>, Violation> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x30 != 0 {
        return Err(protocol("reserved bits set"));
    }
    if second & 0x80 == 0 {
        return Err(protocol("client frame not masked"));
    }
    let (payload, at) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if payload > max_payload as u64 {
        return Err(TOO_LARGE);
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin: first & 0x80 != 0,
        rsv1: first & RSV1 != 0,
        opcode: first & 0x0f,
        mask: mask.try_into().expect("4 bytes"),
        len: at + 4,
        payload: payload as usize,
    }))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A control frame, checked.
fn control(opcode: u8, payload: Bytes) -> Result<Frame, Violation> {
    Ok(match opcode {
        PING => Frame::Ping(payload),
        PONG => Frame::Pong,
        _ => match *payload {
            [] => Frame::Close(None),
            [_] => return Err(protocol("close frame of one byte")),
            [high, low, ref reason @ ..] => {
                let code = u16::from_be_bytes([high, low]);
                if !close_code_sendable(code) {
                    return Err(protocol("close code a peer may not send"));
                }
                let reason = std::str::from_utf8(reason).map_err(|_| NOT_UTF8)?;
                Frame::Close(Some((code, reason.to_owned())))
            }
        },
    })
}

/// Whether an endpoint may send close `code` (RFC 6455, section 7.4, and
/// IANA's 1012 to 1014); 1004 to 1006 and 1015 are reserved.
pub fn close_code_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Inflate one message compressed without context (the client was told
/// `client_no_context_takeover`), to at most `max` bytes (else 1009).
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, Violation> {
    INFLATER.with_borrow_mut(|inflater| {
        // No context: each message is inflated as if it were the first.
        inflater.reset(false);
        inflate_with(inflater, compressed, max)
    })
}

fn inflate_with(
    inflater: &mut Decompress,
    compressed: &[u8],
    max: usize,
) -> Result<Vec<u8>, Violation> {
    let limit = max.saturating_add(1);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).clamp(1, limit));
    // The message, then the tail its sender stripped.
    let mut input = compressed;
    let mut tail = Some(&DEFLATE_TAIL[..]);
    loop {
        if out.len() == out.capacity() {
            // Room up to one byte past `max`: enough to know it is over.
            out.reserve_exact(out.len().max(64).min(limit - out.len()));
        }
        let (before_in, before_out) = (inflater.total_in(), out.len());
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|_| protocol("compressed data is not DEFLATE"))?;
        if out.len() > max {
            return Err(TOO_LARGE);
        }
        let read = (inflater.total_in() - before_in) as usize;
        input = &input[read..];
        let room_left = out.len() < out.capacity();
        if status == Status::StreamEnd {
            break;
        }
        if input.is_empty() {
            match tail.take() {
                Some(rest) => input = rest,
                // All of it in, and room left over: all of it out.
                None if room_left => break,
                None => {}
            }
        } else if read == 0 && out.len() == before_out && room_left {
            return Err(protocol("compressed data is not DEFLATE"));
        }
    }
    Ok(out)
}

/// The server's response to a permessage-deflate offer it meets: each
/// message compressed on its own (no context kept on either side, so a
/// connection holds no compressor or inflater state), the full window.
pub const DEFLATE_RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// [`DEFLATE_RESPONSE`] to an offer that named `server_max_window_bits`
/// (15, the only one met): a response must then name it too (RFC 7692,
/// section 7.1.2.1).
pub const DEFLATE_RESPONSE_WINDOW: &str = "permessage-deflate; server_no_context_takeover; \
     client_no_context_takeover; server_max_window_bits=15";

/// The response to the client's `Sec-WebSocket-Extensions` values, if they
/// offer permessage-deflate in a form this server meets: any offer but one
/// that limits the server's window below 15 bits (every message is
/// compressed once, for all subscribers, with one setting) or that does not
/// parse. The first such offer is answered.
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(deflate_offer_met)
}

/// The response to one extension offer: `permessage-deflate` with
/// parameters this server can meet (RFC 7692, section 7.1).
fn deflate_offer_met(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
    {
        return None;
    }
    let mut seen = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let bits = |v: Option<&str>| {
            v.and_then(|v| v.parse::<u8>().ok())
                .filter(|b| (8..=15).contains(b))
        };
        let met = match name.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            // Without a value: the client may be told a limit; any is fine.
            "client_max_window_bits" => value.is_none() || bits(value).is_some(),
            "server_max_window_bits" => bits(value) == Some(15),
            _ => false,
        };
        if !met {
            return None;
        }
        seen.push(name);
    }
    Some(if seen.iter().any(|n| n == "server_max_window_bits") {
        DEFLATE_RESPONSE_WINDOW
    } else {
        DEFLATE_RESPONSE
    })
}

/// Messages shorter than this are sent as they are: a channel message's
/// JSON of 136 bytes shrinks by a quarter, so below this the bytes saved do
/// not pay for the client's inflating (BENCHMARKS.md, "Compression").
pub const MIN_DEFLATE: usize = 256;

thread_local! {
    /// One compressor and one inflater per thread, reset for each message
    /// (their state is tens of KiB: made once, not per message).
    static COMPRESSOR: RefCell<Compress> =
        RefCell::new(Compress::new(Compression::default(), false));
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// `payload` compressed as one permessage-deflate message with no context
/// kept (the tail stripped), or `None` when it is under [`MIN_DEFLATE`]
/// bytes or would not shrink.
pub fn deflate(payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < MIN_DEFLATE {
        return None;
    }
    COMPRESSOR.with_borrow_mut(|compress| {
        // No context: each message is compressed as if it were the first.
        compress.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = compress.total_in();
            compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            input = &input[(compress.total_in() - before) as usize..];
            // All of it in, and room left over: the flush is out.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if out.len() >= payload.len() + 64 {
                return None;
            }
            out.reserve(out.capacity().max(64));
        }
        if !out.ends_with(&DEFLATE_TAIL) {
            return None;
        }
        out.truncate(out.len() - DEFLATE_TAIL.len());
        (out.len() < payload.len()).then_some(out)
    })
}

/// A server frame's header: FIN, RSV1 when `compressed`, `opcode`, the
/// payload length (unmasked), and how many of its bytes are used.
pub fn header(opcode: u8, compressed: bool, len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode | if compressed { RSV1 } else { 0 };
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, n)
}

/// A whole server frame: header and payload.
pub fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let (head, n) = header(opcode, false, payload.len());
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&head[..n]);
    frame.extend_from_slice(payload);
    frame
}

/// A close frame's payload: the code, then the reason cut to fit the 125
/// bytes of a control frame (at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let (head, n) = header(first & 0x0f, first & RSV1 != 0, payload.len());
        let mut frame = head[..n].to_vec();
        frame[0] = first;
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn read_all(reader: &mut Reader, bytes: &[u8]) -> Result<Vec<Frame>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = reader.next(&mut buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn reads_masked_fragmented_and_interleaved_frames() {
        let mut bytes = client_frame(0x80 | TEXT, b"hello", [1, 2, 3, 4]);
        bytes.extend(client_frame(BINARY, b"ab", [9, 9, 9, 9]));
        bytes.extend(client_frame(0x80 | PING, b"p", [7, 0, 0, 0]));
        bytes.extend(client_frame(0x80 | CONTINUATION, b"cd", [5, 6, 7, 8]));
        bytes.extend(client_frame(
            0x80 | CLOSE,
            &close_payload(1000, "bye"),
            [1, 1, 1, 1],
        ));
        let frames = read_all(&mut Reader::new(100, false), &bytes).unwrap();
        assert_eq!(
            frames,
            [
                Frame::Text("hello".into()),
                Frame::Ping(Bytes::from_static(b"p")),
                Frame::Binary(Bytes::from_static(b"abcd")),
                Frame::Close(Some((1000, "bye".into()))),
            ]
        );
        // Byte by byte, the same.
        let mut reader = Reader::new(100, false);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(frame) = reader.next(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 4);
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let code = |bytes: Vec<u8>| {
            read_all(&mut Reader::new(100, false), &bytes)
                .unwrap_err()
                .code
        };
        let mut unmasked = client_frame(0x80 | TEXT, b"x", [0; 4]);
        unmasked[1] &= 0x7f;
        assert_eq!(code(unmasked), 1002);
        assert_eq!(code(client_frame(0x80 | RSV1 | TEXT, b"x", [0; 4])), 1002);
        assert_eq!(code(client_frame(0x80 | 0x3, b"x", [0; 4])), 1002);
        assert_eq!(code(client_frame(PING, b"x", [0; 4])), 1002);
        assert_eq!(code(client_frame(0x80 | CONTINUATION, b"x", [0; 4])), 1002);
        assert_eq!(code(client_frame(0x80 | TEXT, &[0xff, 0xfe], [0; 4])), 1007);
        assert_eq!(code(client_frame(0x80 | BINARY, &[0; 101], [0; 4])), 1009);
        assert_eq!(
            code(client_frame(0x80 | CLOSE, &[0x03, 0xed], [0; 4])),
            1002
        );
        let mut many = client_frame(TEXT, b"", [0; 4]);
        for _ in 0..MAX_PARTS {
            many.extend(client_frame(CONTINUATION, b"", [0; 4]));
        }
        assert_eq!(code(many), 1008);
        let mut two = client_frame(BINARY, &[0; 60], [0; 4]);
        two.extend(client_frame(0x80 | CONTINUATION, &[0; 60], [0; 4]));
        assert_eq!(code(two), 1009);
    }

    #[test]
    fn compressed_messages_round_trip_and_bombs_stop_at_the_limit() {
        let text = "{\"type\":\"message\",\"data\":\"".to_string() + &"hello ".repeat(100) + "\"}";
        let deflated = deflate(text.as_bytes()).expect("shrinks");
        assert!(deflated.len() < text.len() / 4, "{}", deflated.len());
        // As a browser sends it: compressed, in two frames.
        let (a, b) = deflated.split_at(deflated.len() / 2);
        let mut bytes = client_frame(RSV1 | TEXT, a, [3, 1, 4, 1]);
        bytes.extend(client_frame(0x80 | CONTINUATION, b, [5, 9, 2, 6]));
        let frames = read_all(&mut Reader::new(1000, true), &bytes).unwrap();
        assert_eq!(frames, [Frame::Text(text)]);
        // Inflating past the limit: 1009, however small the frame.
        let bomb = deflate(&vec![b'a'; 1 << 20]).unwrap();
        assert!(bomb.len() < 2000);
        let bytes = client_frame(0x80 | RSV1 | BINARY, &bomb, [0; 4]);
        let e = read_all(&mut Reader::new(64 << 10, true), &bytes).unwrap_err();
        assert_eq!(e.code, 1009);
        // Exactly at the limit is fine; a byte over is not.
        for (len, ok) in [(1000, true), (1001, false)] {
            let packed = deflate(&vec![b'a'; len]).unwrap();
            let bytes = client_frame(0x80 | RSV1 | BINARY, &packed, [0; 4]);
            let read = read_all(&mut Reader::new(1000, true), &bytes);
            assert_eq!(read.is_ok(), ok, "{len}: {read:?}");
        }
        // Short messages are not compressed.
        assert_eq!(deflate(b"{\"type\":\"ack\"}"), None);
    }

    #[test]
    fn headers_take_the_shortest_length_form() {
        let (h, n) = header(TEXT, false, 5);
        assert_eq!(&h[..n], [0x81, 5]);
        let (h, n) = header(BINARY, true, 300);
        assert_eq!(&h[..n], [0xc2, 126, 1, 44]);
        let (h, n) = header(TEXT, false, 70_000);
        assert_eq!(&h[..n], [0x81, 127, 0, 0, 0, 0, 0, 1, 17, 112]);
    }

    #[test]
    fn offers_met_and_declined() {
        let met = |offers: &[&str]| negotiate(offers.iter().copied());
        let plain = Some(DEFLATE_RESPONSE);
        assert_eq!(met(&["permessage-deflate; client_max_window_bits"]), plain);
        assert_eq!(met(&["permessage-deflate"]), plain);
        assert_eq!(
            met(&["permessage-deflate; server_max_window_bits=10, permessage-deflate"]),
            plain
        );
        assert_eq!(
            met(&[
                "x-webkit-deflate-frame",
                "permessage-deflate; server_no_context_takeover"
            ]),
            plain
        );
        // Named, the window is named back.
        assert_eq!(
            met(&["permessage-deflate; server_max_window_bits=15"]),
            Some(DEFLATE_RESPONSE_WINDOW)
        );
        for declined in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "deflate-frame",
        ] {
            assert_eq!(met(&[declined]), None, "{declined}");
        }
        assert_eq!(met(&[]), None);
    }
}
