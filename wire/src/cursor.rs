//! Cursors: where a client is in each channel. A position is an epoch (which
//! changes when a channel's history is lost) and an offset (which strictly
//! increases per channel). Clients see a set of positions as one opaque,
//! URL-safe string, so one SSE `id:` resumes every channel of a stream.
//!
//! The string is base64url of a version byte and, per channel, a 64-bit key
//! of its name (FNV-1a: stable across processes, nodes and releases), the
//! epoch and the offset (LEB128). A channel costs at most 26 bytes whatever
//! its name, so the cursor of a connection's 100 channels stays under
//! [`MAX_ISSUED_CURSOR_BYTES`], far below what the server accepts back
//! ([`MAX_CURSOR_BYTES`]). Two channels of one cursor sharing a key would
//! share a position; with 64-bit keys and at most a few hundred channels per
//! cursor that chance is below 10^-14.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::name;

/// Longest cursor string accepted, so a hostile cursor cannot cost much.
pub const MAX_CURSOR_BYTES: usize = 16 << 10;

/// Longest cursor the server issues: 100 channels (the most one connection
/// may subscribe to) of 26 bytes, plus the version byte, in base64.
pub const MAX_ISSUED_CURSOR_BYTES: usize = (1 + 100 * 26) * 4 / 3 + 4;

/// The version byte of the binary form.
const VERSION: u8 = 1;

/// A position in one channel: after the message with this offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Position {
    /// Identifies one lifetime of the channel's history.
    pub epoch: u64,
    /// Offset of the last message seen (0: none yet).
    pub offset: u64,
}

impl Position {
    /// The position just before `self` (the start of a read that should
    /// deliver the message at `self`).
    pub fn before(self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.offset.saturating_sub(1),
        }
    }
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Too long.
    #[error("cursor is over {MAX_CURSOR_BYTES} bytes")]
    TooLong,
    /// Not something this host issued.
    #[error("cursor is not one this server issued")]
    Malformed,
}

/// The key a channel has in a cursor: FNV-1a of its name.
pub fn channel_key(channel: &str) -> u64 {
    channel.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Positions in several channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: BTreeMap<u64, Position>,
}

impl Cursor {
    /// An empty cursor (no position in any channel).
    pub fn new() -> Cursor {
        Cursor::default()
    }

    /// A cursor for one channel.
    pub fn single(channel: &str, position: Position) -> Cursor {
        let mut c = Cursor::new();
        c.set(channel, position);
        c
    }

    /// The position in `channel`, if the cursor has one.
    pub fn get(&self, channel: &str) -> Option<Position> {
        self.positions.get(&channel_key(channel)).copied()
    }

    /// Record a position.
    pub fn set(&mut self, channel: &str, position: Position) {
        self.positions.insert(channel_key(channel), position);
    }

    /// How many channels it has a position in.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True when it has no position.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Add every position of `other` (other wins on conflicts).
    pub fn merge(&mut self, other: &Cursor) {
        self.positions.extend(&other.positions);
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + self.positions.len() * 20);
        bytes.push(VERSION);
        for (key, p) in &self.positions {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&p.epoch.to_le_bytes());
            put_varint(&mut bytes, p.offset);
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parse a cursor string issued by [`Cursor::encode`] (or by an earlier
    /// release, which wrote `channel epoch offset` lines).
    pub fn decode(s: &str) -> Result<Cursor, CursorError> {
        if s.len() > MAX_CURSOR_BYTES {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| CursorError::Malformed)?;
        match bytes.first() {
            None => Ok(Cursor::new()),
            Some(&VERSION) => decode_binary(&bytes[1..]),
            Some(_) => decode_lines(&bytes),
        }
    }
}

fn decode_binary(mut rest: &[u8]) -> Result<Cursor, CursorError> {
    let mut cursor = Cursor::new();
    while !rest.is_empty() {
        let (key, after) = take_u64(rest)?;
        let (epoch, after) = take_u64(after)?;
        let (offset, after) = take_varint(after)?;
        cursor.positions.insert(key, Position { epoch, offset });
        rest = after;
    }
    Ok(cursor)
}

/// The text form of releases before the binary one.
fn decode_lines(bytes: &[u8]) -> Result<Cursor, CursorError> {
    let text = std::str::from_utf8(bytes).map_err(|_| CursorError::Malformed)?;
    let mut cursor = Cursor::new();
    for line in text.split('\n') {
        let mut parts = line.split(' ');
        let (Some(channel), Some(epoch), Some(offset), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CursorError::Malformed);
        };
        name::validate(channel).map_err(|_| CursorError::Malformed)?;
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| CursorError::Malformed)?;
        let offset = offset.parse().map_err(|_| CursorError::Malformed)?;
        cursor.set(channel, Position { epoch, offset });
    }
    Ok(cursor)
}

fn take_u64(bytes: &[u8]) -> Result<(u64, &[u8]), CursorError> {
    let (head, rest) = bytes.split_at_checked(8).ok_or(CursorError::Malformed)?;
    let head: [u8; 8] = head.try_into().map_err(|_| CursorError::Malformed)?;
    Ok((u64::from_le_bytes(head), rest))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), CursorError> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return Err(CursorError::Malformed);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(CursorError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(epoch: u64, offset: u64) -> Position {
        Position { epoch, offset }
    }

    #[test]
    fn cursors_round_trip() {
        let mut c = Cursor::new();
        c.set("b", p(0xabc, 7));
        c.set("chat:a", p(1, 0));
        c.set("big", p(u64::MAX, u64::MAX));
        let s = c.encode();
        assert!(
            s.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        );
        assert_eq!(Cursor::decode(&s), Ok(c.clone()));
        assert_eq!(
            Cursor::decode(&s).unwrap().get("big"),
            Some(p(u64::MAX, u64::MAX))
        );
        assert_eq!(Cursor::decode(""), Ok(Cursor::new()));
        assert_eq!(Cursor::decode(&Cursor::new().encode()), Ok(Cursor::new()));
    }

    #[test]
    fn the_largest_issued_cursor_is_small() {
        let mut c = Cursor::new();
        for i in 0..100 {
            let name = format!("{i:03}{}", "x".repeat(252));
            c.set(&name, p(u64::MAX, u64::MAX));
        }
        let s = c.encode();
        assert!(s.len() <= MAX_ISSUED_CURSOR_BYTES, "{}", s.len());
        const { assert!(MAX_ISSUED_CURSOR_BYTES < MAX_CURSOR_BYTES) };
        assert_eq!(Cursor::decode(&s), Ok(c));
    }

    #[test]
    fn cursors_of_the_text_form_still_decode() {
        let old = URL_SAFE_NO_PAD.encode("chat:a 1f 42\nb 0 0");
        let c = Cursor::decode(&old).unwrap();
        assert_eq!(c.get("chat:a"), Some(p(0x1f, 42)));
        assert_eq!(c.get("b"), Some(p(0, 0)));
    }

    #[test]
    fn foreign_cursors_are_refused() {
        let mut truncated = URL_SAFE_NO_PAD
            .decode(Cursor::single("a", p(1, 300)).encode())
            .unwrap();
        truncated.pop();
        for bad in [
            "not base64!".to_string(),
            "aGVsbG8".into(),
            URL_SAFE_NO_PAD.encode("a zz 1"),
            URL_SAFE_NO_PAD.encode("a b 1 2"),
            URL_SAFE_NO_PAD.encode(truncated),
            URL_SAFE_NO_PAD.encode([1u8; 30]),
        ] {
            assert_eq!(Cursor::decode(&bad), Err(CursorError::Malformed), "{bad}");
        }
        assert_eq!(
            Cursor::decode(&"a".repeat(MAX_CURSOR_BYTES + 1)),
            Err(CursorError::TooLong)
        );
    }
}
