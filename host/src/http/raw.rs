//! HTTP/1.1 written by hand, for what is served straight on a socket
//! without hyper (a connection's first SSE or WebSocket request, a refused
//! connection): an error as a whole response, and chunked framing.

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::ApiError;

/// `error` as a whole HTTP/1.1 response, with `headers` besides its own;
/// the connection closes after it.
pub fn error_response(error: &ApiError, headers: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write as _;
    let status = error.status;
    let body = error.body().to_string();
    let mut out = Vec::with_capacity(160 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(seconds) = error.retry_after {
        let _ = write!(out, "retry-after: {seconds}\r\n");
    }
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// Answer with `error` (plus `headers`) within `timeout`; the caller closes
/// the connection after it.
pub async fn refuse<W: AsyncWrite + Unpin>(
    io: &mut W,
    error: &ApiError,
    headers: &[(&str, &str)],
    timeout: Duration,
) {
    let bytes = error_response(error, headers);
    let _ = tokio::time::timeout(timeout, io.write_all(&bytes)).await;
}

/// A chunk's header: its length in hex and CRLF.
pub fn chunk_header(len: usize) -> ([u8; 18], usize) {
    use std::io::Write as _;
    let mut head = [0u8; 18];
    let mut rest = &mut head[..];
    write!(rest, "{len:x}\r\n").expect("18 bytes hold a usize in hex and CRLF");
    let n = 18 - rest.len();
    (head, n)
}

/// One chunk holding `frames`, appended to `out` (nothing for no bytes: an
/// empty chunk would end the body).
pub fn append_chunk(out: &mut Vec<u8>, frames: &[bytes::Bytes]) {
    let len: usize = frames.iter().map(bytes::Bytes::len).sum();
    if len == 0 {
        return;
    }
    let (head, n) = chunk_header(len);
    out.extend_from_slice(&head[..n]);
    for f in frames {
        out.extend_from_slice(f);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    #[test]
    fn chunk_headers_are_hex_lengths() {
        for (len, text) in [(0, "0\r\n"), (10, "a\r\n"), (0x1f4, "1f4\r\n")] {
            let (h, n) = chunk_header(len);
            assert_eq!(&h[..n], text.as_bytes());
        }
        let (h, n) = chunk_header(usize::MAX);
        assert_eq!(n, 18);
        assert_eq!(&h[..16], b"ffffffffffffffff");
    }

    #[test]
    fn chunks_frame_their_length_in_hex() {
        let mut out = Vec::new();
        append_chunk(
            &mut out,
            &[Bytes::from_static(b"id: 1\n"), Bytes::from(vec![b'x'; 20])],
        );
        assert!(out.starts_with(b"1a\r\nid: 1\n"));
        assert!(out.ends_with(b"\r\n"));
        let mut empty = Vec::new();
        append_chunk(&mut empty, &[]);
        assert!(empty.is_empty(), "an empty chunk would end the body");
    }

    #[test]
    fn an_error_is_a_whole_response() {
        let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "later").retry_after(5);
        let text = String::from_utf8(error_response(&e, &[("x-a", "b")])).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 5\r\nx-a: b\r\ncontent-length: 34\r\nconnection: close\r\n\r\n\
             {\"error\":\"busy\",\"message\":\"later\"}"
        );
    }
}
