//! The head of a `GET /comet/sse` request read straight from the socket (see
//! the host's `transports/direct.rs`): parsed with httparse, and anything
//! that is not a plain HTTP/1.1 stream request (a body, an upgrade, another
//! path, a partial head) is left to hyper.

/// Most headers taken on this path; more go to hyper.
pub const MAX_HEADERS: usize = 48;

/// The request in `bytes` and the length of its head, if `bytes` starts
/// with a whole `GET /comet/sse` head this path serves.
pub fn parse(bytes: &[u8]) -> Option<(http::Request<()>, usize)> {
    if !bytes.starts_with(b"GET /comet/sse") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(bytes).ok()? else {
        return None;
    };
    let path = head.path?;
    if head.version != Some(1) || !(path == "/comet/sse" || path.starts_with("/comet/sse?")) {
        return None;
    }
    let mut request = http::Request::get(path);
    for h in head.headers.iter() {
        // A body or a protocol switch is not a plain stream request.
        let body = h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0");
        if body || h.name.eq_ignore_ascii_case("upgrade") {
            return None;
        }
        request = request.header(h.name, h.value);
    }
    // Invalid header values and the like: hyper answers those.
    request.body(()).ok().map(|r| (r, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_plain_sse_heads_are_taken() {
        let ok = b"GET /comet/sse?channel=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: abc\r\n\r\n";
        let (request, len) = parse(ok).expect("taken");
        assert_eq!(len, ok.len());
        assert_eq!(request.uri().query(), Some("channel=a"));
        assert_eq!(request.headers()["last-event-id"], "abc");

        for other in [
            &b"GET /comet/sse?channel=a HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /comet/sse?channel=a HTTP/1.0\r\n\r\n",
            b"GET /comet/ssex HTTP/1.1\r\n\r\n",
            b"GET /comet/stream HTTP/1.1\r\n\r\n",
            b"POST /comet/sse HTTP/1.1\r\n\r\n",
            b"GET /comet/sse HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /comet/sse HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(
                parse(other).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
