//! The published payload (a sequence number and a send time, padded) and the
//! scanner that finds payloads in whatever framing a server wraps them in.
//!
//! A payload reads `~s<SEQ>t<NANOS>~` followed by `x` padding, where NANOS is
//! the send time in nanoseconds since the Unix epoch. Only characters that no
//! server escapes in JSON, SSE or WebSocket framing are used, so the scanner
//! can search the raw bytes of any transport.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch: the clock both ends share.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The payload for message `seq` sent at `nanos`, padded to `len` bytes.
pub fn make(seq: u64, nanos: u64, len: usize) -> String {
    let mut s = format!("~s{seq}t{nanos}~");
    while s.len() < len {
        s.push('x');
    }
    s
}

/// Words for [`make_words`]: common English ones, so the padding compresses
/// about as prose does.
const WORDS: [&str; 32] = [
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all",
];

/// [`make`], padded with words picked pseudo-randomly (differently for
/// each `seq`) instead of `x`.
pub fn make_words(seq: u64, nanos: u64, len: usize) -> String {
    let mut s = format!("~s{seq}t{nanos}~");
    let mut state = seq
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while s.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push(' ');
        s.push_str(WORDS[(state >> 59) as usize]);
    }
    s.truncate(len);
    s
}

/// Finds payload markers in a byte stream, keeping an incomplete marker at
/// the end of one chunk for the next.
#[derive(Debug, Default)]
pub struct Scanner {
    carry: Vec<u8>,
}

impl Scanner {
    /// Calls `found(seq, nanos)` for every complete marker in `chunk`.
    pub fn feed(&mut self, chunk: &[u8], mut found: impl FnMut(u64, u64)) {
        let joined;
        let data: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.carry);
            &joined
        };
        let mut i = 0;
        let mut keep_from = None;
        while let Some(pos) = memfind(&data[i..], b"~s") {
            let start = i + pos;
            match parse_marker(&data[start + 2..]) {
                Marker::Complete(seq, nanos, used) => {
                    found(seq, nanos);
                    i = start + 2 + used;
                }
                Marker::Incomplete => {
                    keep_from = Some(start);
                    break;
                }
                Marker::Invalid => i = start + 2,
            }
        }
        if keep_from.is_none() && data.last() == Some(&b'~') {
            keep_from = Some(data.len() - 1);
        }
        if let Some(k) = keep_from {
            self.carry = data[k..].to_vec();
        }
    }
}

enum Marker {
    Complete(u64, u64, usize),
    Incomplete,
    Invalid,
}

fn parse_marker(rest: &[u8]) -> Marker {
    let mut seq = 0u64;
    let mut i = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        seq = seq * 10 + u64::from(rest[i] - b'0');
        i += 1;
    }
    if i == rest.len() {
        return Marker::Incomplete;
    }
    if i == 0 || rest[i] != b't' {
        return Marker::Invalid;
    }
    i += 1;
    let digits = i;
    let mut nanos = 0u64;
    while i < rest.len() && rest[i].is_ascii_digit() {
        nanos = nanos * 10 + u64::from(rest[i] - b'0');
        i += 1;
    }
    if i == rest.len() {
        return Marker::Incomplete;
    }
    if i == digits || rest[i] != b'~' {
        return Marker::Invalid;
    }
    Marker::Complete(seq, nanos, i + 1)
}

fn memfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markers_across_chunks() {
        let a = make(7, 123, 40);
        let b = make(8, 456, 40);
        let stream = format!("data: {a}\n\ndata: {{\"data\":\"{b}\"}}\n\n");
        for cut in 0..stream.len() {
            let mut scanner = Scanner::default();
            let mut got = Vec::new();
            scanner.feed(&stream.as_bytes()[..cut], |s, n| got.push((s, n)));
            scanner.feed(&stream.as_bytes()[cut..], |s, n| got.push((s, n)));
            assert_eq!(got, vec![(7, 123), (8, 456)], "cut at {cut}");
        }
    }
}
