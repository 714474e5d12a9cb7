//! A published message and its wire forms, encoded once when it is published
//! and shared (as `Bytes`) by every subscriber on every transport.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Serialize;

use super::cursor::{Cursor, Position};

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
#[derive(Debug)]
pub struct Message {
    /// The channel it was published to.
    pub channel: Arc<str>,
    /// Its position: resuming from here continues after it.
    pub position: Position,
    /// Its content.
    pub payload: Payload,
    /// When the host accepted it, in ms since the Unix epoch.
    pub published_at_ms: u64,
    /// `{"type":"message",...}` followed by `\n`.
    line: Bytes,
    /// `id: {own cursor}\nevent: message\ndata: {json}\n\n`.
    sse: Bytes,
    /// Where `event:` starts in `sse`.
    sse_event_at: usize,
}

#[derive(Serialize)]
struct Wire<'a> {
    r#type: &'static str,
    channel: &'a str,
    cursor: &'a str,
    time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
}

impl Message {
    /// Build a message and its encodings.
    pub fn new(
        channel: Arc<str>,
        position: Position,
        payload: Payload,
        published_at_ms: u64,
    ) -> Message {
        let cursor = Cursor::single(&channel, position).encode();
        let (data, data_b64) = match &payload {
            Payload::Text(t) => (Some(t.as_str()), None),
            Payload::Binary(b) => (None, Some(STANDARD.encode(b))),
        };
        let wire = Wire {
            r#type: "message",
            channel: &channel,
            cursor: &cursor,
            time: published_at_ms,
            data,
            data_b64,
        };
        // Serializing plain strings and numbers cannot fail.
        let mut line = serde_json::to_vec(&wire).unwrap_or_default();
        let mut sse = Vec::with_capacity(line.len() + cursor.len() + 32);
        sse.extend_from_slice(b"id: ");
        sse.extend_from_slice(cursor.as_bytes());
        sse.push(b'\n');
        let sse_event_at = sse.len();
        sse.extend_from_slice(b"event: message\ndata: ");
        sse.extend_from_slice(&line);
        sse.extend_from_slice(b"\n\n");
        line.push(b'\n');
        Message {
            channel,
            position,
            payload,
            published_at_ms,
            line: line.into(),
            sse: sse.into(),
            sse_event_at,
        }
    }

    /// The message as one JSON object (no trailing newline).
    pub fn json(&self) -> Bytes {
        self.line.slice(..self.line.len() - 1)
    }

    /// The JSON object and a newline: one NDJSON line.
    pub fn ndjson(&self) -> Bytes {
        self.line.clone()
    }

    /// The SSE event without its `id:` line.
    pub fn sse(&self) -> Bytes {
        self.sse.slice(self.sse_event_at..)
    }

    /// The SSE event with this message's own cursor as its `id:`: what a
    /// stream of one channel sends, shared, with no per-subscriber work.
    pub fn sse_with_id(&self) -> Bytes {
        self.sse.clone()
    }

    /// This message's own cursor (its channel only).
    pub fn cursor(&self) -> Cursor {
        Cursor::single(&self.channel, self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_share_one_json() {
        let m = Message::new(
            "a".into(),
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
        assert!(m.ndjson().ends_with(b"\n"));
        let sse = String::from_utf8(m.sse().to_vec()).unwrap();
        assert!(sse.starts_with("event: message\ndata: {"));
        assert!(sse.ends_with("}\n\n"));
        assert_eq!(sse.matches('\n').count(), 3, "data must be one line: {sse}");
        let with_id = String::from_utf8(m.sse_with_id().to_vec()).unwrap();
        assert_eq!(with_id, format!("id: {}\n{sse}", m.cursor().encode()));
    }

    #[test]
    fn binary_payloads_are_base64() {
        let m = Message::new(
            "a".into(),
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
    }
}
