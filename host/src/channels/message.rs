//! A published message and its wire forms, encoded once when it is made and
//! shared (as `Bytes`) by every subscriber on every transport.
//!
//! A message is stored once: one buffer holds its SSE event,
//! `id: CURSOR\nevent: message\ndata: JSON\n\n`, and the JSON object, the
//! NDJSON line and the SSE event without its id are slices of it. A text
//! payload lives only inside that JSON; a binary payload keeps its raw bytes
//! too (WebSocket sends them as a binary frame), and its JSON carries them in
//! base64. For WebSocket subscribers that agreed to permessage-deflate the
//! frames are compressed once too, when the first of them needs it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::cursor::{Cursor, Position};
use super::name::ChannelName;

/// The content of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// UTF-8 text (`data` on the wire).
    Text(String),
    /// Bytes (`data_b64` in JSON; a binary frame on WebSocket).
    Binary(Bytes),
}

impl Payload {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(t) => t.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message as stored in history and fanned out.
pub struct Message {
    /// The channel it was published to.
    pub channel: ChannelName,
    /// Its position: resuming from here continues after it.
    pub position: Position,
    /// When the host accepted it, in ms since the Unix epoch.
    pub published_at_ms: u64,
    /// The SSE event with the message's own cursor as its id.
    encoded: Bytes,
    /// Where `event:` starts in `encoded`.
    event_at: usize,
    /// Where the JSON object starts in `encoded`; it ends 2 bytes before the
    /// end (the blank line that ends the event).
    json_at: usize,
    /// A binary payload's bytes and the WebSocket text frame announcing them.
    binary: Option<Box<Binary>>,
    /// The WebSocket frames compressed (permessage-deflate): made by the
    /// first subscriber that agreed to compression, shared by all others.
    deflated: OnceLock<Deflated>,
}

/// A message's WebSocket frame payloads compressed; `None` for one sent as
/// it is (too short to gain, see `comet_wire::frame::MIN_DEFLATE`).
#[derive(Debug, Default)]
struct Deflated {
    text: Option<Bytes>,
    binary: Option<Bytes>,
}

/// Messages compressed for WebSocket subscribers (each once, however many
/// receive it): `comet_ws_compressions_total`.
static COMPRESSIONS: AtomicU64 = AtomicU64::new(0);

/// How many messages were compressed for WebSocket subscribers.
pub fn compressions() -> u64 {
    COMPRESSIONS.load(Ordering::Relaxed)
}

/// One WebSocket frame's payload, and whether it is compressed.
pub type WsPayload<'a> = (&'a [u8], bool);

struct Binary {
    bytes: Bytes,
    ws_header: Bytes,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("position", &self.position)
            .field("bytes", &self.size())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    r#type: &'a str,
    channel: &'a str,
    cursor: &'a str,
    time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary: Option<bool>,
}

impl Message {
    /// Build a message and its encodings.
    pub fn new(
        channel: ChannelName,
        position: Position,
        payload: Payload,
        published_at_ms: u64,
    ) -> Message {
        let cursor = Cursor::single(&channel, position).encode();
        let (text, bytes) = match payload {
            Payload::Text(t) => (Some(t), None),
            Payload::Binary(b) => (None, Some(b)),
        };
        let mut wire = Wire {
            r#type: "message",
            channel: &channel,
            cursor: &cursor,
            time: published_at_ms,
            data: text.as_deref(),
            data_b64: bytes.as_ref().map(|b| STANDARD.encode(b)),
            binary: None,
        };
        let size =
            text.as_ref().map_or(0, String::len) + wire.data_b64.as_ref().map_or(0, String::len);
        let mut encoded = Vec::with_capacity(size + cursor.len() + 128);
        encoded.extend_from_slice(b"id: ");
        encoded.extend_from_slice(cursor.as_bytes());
        encoded.push(b'\n');
        let event_at = encoded.len();
        encoded.extend_from_slice(b"event: message\ndata: ");
        let json_at = encoded.len();
        // Serializing plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut encoded, &wire);
        encoded.extend_from_slice(b"\n\n");
        let binary = bytes.map(|bytes| {
            wire.data_b64 = None;
            wire.binary = Some(true);
            let ws_header = serde_json::to_vec(&wire).unwrap_or_default().into();
            Box::new(Binary { bytes, ws_header })
        });
        Message {
            channel,
            position,
            published_at_ms,
            encoded: encoded.into(),
            event_at,
            json_at,
            binary,
            deflated: OnceLock::new(),
        }
    }

    /// The message as one JSON object (no trailing newline).
    pub fn json(&self) -> Bytes {
        self.encoded.slice_ref(self.json_slice())
    }

    /// The JSON object and a newline: one NDJSON line.
    pub fn ndjson(&self) -> Bytes {
        self.encoded
            .slice(self.json_at..self.encoded.len().saturating_sub(1))
    }

    /// The SSE event without its `id:` line.
    pub fn sse(&self) -> Bytes {
        self.encoded.slice(self.event_at..)
    }

    /// The SSE event with this message's own cursor as its `id:`: what a
    /// stream of one channel sends, shared, with no per-subscriber work.
    pub fn sse_with_id(&self) -> Bytes {
        self.encoded.clone()
    }

    /// [`Message::sse_with_id`], borrowed.
    pub fn sse_with_id_ref(&self) -> &[u8] {
        &self.encoded
    }

    /// This message's own cursor (its channel only).
    pub fn cursor(&self) -> Cursor {
        Cursor::single(&self.channel, self.position)
    }

    /// For a binary payload: the WebSocket text frame that announces it
    /// (the message JSON with `"binary": true` and no data) and its bytes.
    pub fn binary(&self) -> Option<(Bytes, Bytes)> {
        self.binary
            .as_ref()
            .map(|b| (b.ws_header.clone(), b.bytes.clone()))
    }

    /// The payloads of the WebSocket frames that carry this message,
    /// borrowed: the JSON as a text frame or, for a binary payload, the
    /// text frame announcing it and the binary frame.
    fn ws_payloads(&self) -> (&[u8], Option<&[u8]>) {
        match &self.binary {
            None => (self.json_slice(), None),
            Some(b) => (&b.ws_header, Some(&b.bytes)),
        }
    }

    /// [`Message::ws_payloads`] as shared buffers (to keep past the write).
    fn ws_payload_bytes(&self) -> (Bytes, Option<Bytes>) {
        match &self.binary {
            None => (self.json(), None),
            Some(b) => (b.ws_header.clone(), Some(b.bytes.clone())),
        }
    }

    /// [`Message::ws_payloads`] for a subscriber that agreed to
    /// permessage-deflate when `deflate`: each frame compressed if that
    /// shrinks it (compressed once per message, on first use).
    pub fn ws_payloads_for(&self, deflate: bool) -> (WsPayload<'_>, Option<WsPayload<'_>>) {
        let (text, binary) = self.ws_payloads();
        if !deflate {
            return ((text, false), binary.map(|b| (b, false)));
        }
        let deflated = self.deflated();
        fn pick<'a>(plain: &'a [u8], packed: &'a Option<Bytes>) -> WsPayload<'a> {
            match packed {
                Some(packed) => (packed, true),
                None => (plain, false),
            }
        }
        (
            pick(text, &deflated.text),
            binary.map(|b| pick(b, &deflated.binary)),
        )
    }

    /// [`Message::ws_payloads_for`] as shared buffers (to keep past the
    /// write).
    pub fn ws_payload_bytes_for(&self, deflate: bool) -> (Bytes, Option<Bytes>) {
        let (text, binary) = self.ws_payload_bytes();
        if !deflate {
            return (text, binary);
        }
        let deflated = self.deflated();
        (
            deflated.text.clone().unwrap_or(text),
            binary.map(|b| deflated.binary.clone().unwrap_or(b)),
        )
    }

    fn deflated(&self) -> &Deflated {
        self.deflated.get_or_init(|| {
            let (text, binary) = self.ws_payloads();
            let deflated = Deflated {
                text: comet_wire::frame::deflate(text).map(Bytes::from),
                binary: binary.and_then(comet_wire::frame::deflate).map(Bytes::from),
            };
            if deflated.text.is_some() || deflated.binary.is_some() {
                COMPRESSIONS.fetch_add(1, Ordering::Relaxed);
            }
            deflated
        })
    }

    fn json_slice(&self) -> &[u8] {
        &self.encoded[self.json_at..self.encoded.len().saturating_sub(2)]
    }

    /// The payload (for guests reading history; transports use the
    /// encodings).
    pub fn payload(&self) -> Payload {
        if let Some(b) = &self.binary {
            return Payload::Binary(b.bytes.clone());
        }
        #[derive(Deserialize)]
        struct Data {
            data: String,
        }
        let text = serde_json::from_slice::<Data>(&self.json())
            .map(|d| d.data)
            .unwrap_or_default();
        Payload::Text(text)
    }

    /// Bytes of memory this message holds (for history budgets).
    pub fn size(&self) -> usize {
        let binary = self
            .binary
            .as_ref()
            .map_or(0, |b| b.bytes.len() + b.ws_header.len() + 64);
        std::mem::size_of::<Message>() + self.encoded.len() + binary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    #[test]
    fn encodings_share_one_json() {
        let m = Message::new(
            name("a"),
            Position {
                epoch: 1,
                offset: 2,
            },
            Payload::Text("hi\n\"x\"".into()),
            5,
        );
        let v: serde_json::Value = serde_json::from_slice(&m.json()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["channel"], "a");
        assert_eq!(v["data"], "hi\n\"x\"");
        assert_eq!(v["time"], 5);
        assert_eq!(
            Cursor::decode(v["cursor"].as_str().unwrap()).unwrap(),
            m.cursor()
        );
        assert_eq!(&m.ndjson()[..], [&m.json()[..], b"\n"].concat());
        let sse = String::from_utf8(m.sse().to_vec()).unwrap();
        assert!(sse.starts_with("event: message\ndata: {"));
        assert!(sse.ends_with("}\n\n"));
        assert_eq!(sse.matches('\n').count(), 3, "data must be one line: {sse}");
        let with_id = String::from_utf8(m.sse_with_id().to_vec()).unwrap();
        assert_eq!(with_id, format!("id: {}\n{sse}", m.cursor().encode()));
        assert_eq!(m.payload(), Payload::Text("hi\n\"x\"".into()));
        assert!(m.binary().is_none());
    }

    #[test]
    fn binary_payloads_are_base64_and_kept_raw() {
        let m = Message::new(
            name("a"),
            Position {
                epoch: 1,
                offset: 1,
            },
            Payload::Binary(Bytes::from_static(&[0, 255])),
            0,
        );
        let v: serde_json::Value = serde_json::from_slice(&m.json()).unwrap();
        assert_eq!(v["data_b64"], "AP8=");
        assert!(v.get("data").is_none());
        let (header, bytes) = m.binary().unwrap();
        let h: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(h["binary"], true);
        assert!(h.get("data_b64").is_none());
        assert_eq!(&bytes[..], [0, 255]);
        assert_eq!(m.payload(), Payload::Binary(Bytes::from_static(&[0, 255])));
    }
}
