//! Cursors: where a client is in each channel. A position is an epoch (which
//! changes when a channel's history is lost) and an offset (which strictly
//! increases per channel). Clients see a set of positions as one opaque,
//! URL-safe string, so one SSE `id:` resumes every channel of a stream.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::name;

/// Longest cursor string accepted, so a hostile cursor cannot cost much.
pub const MAX_CURSOR_BYTES: usize = 16 << 10;

/// A position in one channel: after the message with this offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Position {
    /// Identifies one lifetime of the channel's history.
    pub epoch: u64,
    /// Offset of the last message seen (0: none yet).
    pub offset: u64,
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

/// Positions in several channels, ordered by channel name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: BTreeMap<String, Position>,
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
        self.positions.get(channel).copied()
    }

    /// Record a position.
    pub fn set(&mut self, channel: &str, position: Position) {
        match self.positions.get_mut(channel) {
            Some(p) => *p = position,
            None => {
                self.positions.insert(channel.to_string(), position);
            }
        }
    }

    /// Forget a channel.
    pub fn remove(&mut self, channel: &str) {
        self.positions.remove(channel);
    }

    /// Add every position of `other` (other wins on conflicts).
    pub fn merge(&mut self, other: &Cursor) {
        for (channel, position) in &other.positions {
            self.set(channel, *position);
        }
    }

    /// The opaque string form: base64url of `channel epoch offset` lines.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        for (channel, p) in &self.positions {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!("{channel} {:x} {}", p.epoch, p.offset));
        }
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Parse a cursor string issued by [`Cursor::encode`].
    pub fn decode(s: &str) -> Result<Cursor, CursorError> {
        if s.len() > MAX_CURSOR_BYTES {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| CursorError::Malformed)?;
        let text = String::from_utf8(bytes).map_err(|_| CursorError::Malformed)?;
        let mut cursor = Cursor::new();
        if text.is_empty() {
            return Ok(cursor);
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let mut c = Cursor::new();
        c.set(
            "b",
            Position {
                epoch: 0xabc,
                offset: 7,
            },
        );
        c.set(
            "chat:a",
            Position {
                epoch: 1,
                offset: 0,
            },
        );
        let s = c.encode();
        assert!(
            s.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        );
        assert_eq!(Cursor::decode(&s), Ok(c));
        assert_eq!(Cursor::decode(""), Ok(Cursor::new()));
    }

    #[test]
    fn foreign_cursors_are_refused() {
        for bad in [
            "not base64!",
            "aGVsbG8",
            &URL_SAFE_NO_PAD.encode("a zz 1"),
            &URL_SAFE_NO_PAD.encode("a b 1 2"),
        ] {
            assert_eq!(Cursor::decode(bad), Err(CursorError::Malformed), "{bad}");
        }
        assert_eq!(
            Cursor::decode(&"a".repeat(MAX_CURSOR_BYTES + 1)),
            Err(CursorError::TooLong)
        );
    }
}
