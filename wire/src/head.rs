//! The head of a connection's first request, read straight from the socket
//! (see the host's `transports/direct.rs`): a `GET /comet/sse` or a
//! `GET /comet/ws` upgrade, parsed with httparse. Anything else (a body,
//! another path, a partial head, HTTP/1.0 or HTTP/2) is left to hyper.

/// Most headers taken on this path; more go to hyper.
pub const MAX_HEADERS: usize = 48;

/// The endpoint a head taken on this path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /comet/sse`, a plain request (no `Upgrade`).
    Sse,
    /// `GET /comet/ws`, the opening handshake (checked by the host).
    WebSocket,
}

impl Endpoint {
    /// The path under `/comet/`: `sse` or `ws`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Sse => "sse",
            Endpoint::WebSocket => "ws",
        }
    }
}

/// The endpoint, the request in `bytes` and the length of its head, if
/// `bytes` starts with a whole head this path serves.
pub fn parse(bytes: &[u8]) -> Option<(Endpoint, http::Request<()>, usize)> {
    let endpoint = if bytes.starts_with(b"GET /comet/sse") {
        Endpoint::Sse
    } else if bytes.starts_with(b"GET /comet/ws") {
        Endpoint::WebSocket
    } else {
        return None;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(bytes).ok()? else {
        return None;
    };
    let path = head.path?;
    let exact = format!("/comet/{}", endpoint.name());
    let ours = path == exact || path.strip_prefix(exact.as_str())?.starts_with('?');
    if head.version != Some(1) || !ours {
        return None;
    }
    let mut request = http::Request::get(path);
    for h in head.headers.iter() {
        // A body is not a request of these endpoints; a protocol switch is
        // one only on the WebSocket endpoint.
        let body = h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0");
        let upgrade = h.name.eq_ignore_ascii_case("upgrade");
        if body || (upgrade && endpoint == Endpoint::Sse) {
            return None;
        }
        request = request.header(h.name, h.value);
    }
    // Invalid header values and the like: hyper answers those.
    request.body(()).ok().map(|r| (endpoint, r, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_plain_heads_of_the_two_endpoints_are_taken() {
        let sse = b"GET /comet/sse?channel=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: abc\r\n\r\n";
        let (endpoint, request, len) = parse(sse).expect("taken");
        assert_eq!((endpoint, len), (Endpoint::Sse, sse.len()));
        assert_eq!(request.uri().query(), Some("channel=a"));
        assert_eq!(request.headers()["last-event-id"], "abc");

        let ws = b"GET /comet/ws?channel=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\n\r\n";
        let (endpoint, request, len) = parse(ws).expect("taken");
        assert_eq!((endpoint, len), (Endpoint::WebSocket, ws.len()));
        assert_eq!(request.uri().query(), Some("channel=a"));
        assert_eq!(request.headers()["upgrade"], "websocket");
        assert_eq!(
            parse(b"GET /comet/ws HTTP/1.1\r\n\r\n").unwrap().0,
            Endpoint::WebSocket
        );

        for other in [
            &b"GET /comet/sse?channel=a HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /comet/sse?channel=a HTTP/1.0\r\n\r\n",
            b"GET /comet/ssex HTTP/1.1\r\n\r\n",
            b"GET /comet/wsx HTTP/1.1\r\n\r\n",
            b"GET /comet/ws/x HTTP/1.1\r\n\r\n",
            b"GET /comet/stream HTTP/1.1\r\n\r\n",
            b"POST /comet/sse HTTP/1.1\r\n\r\n",
            b"GET /comet/sse HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /comet/sse HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /comet/ws HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /comet/ws HTTP/1.0\r\nUpgrade: websocket\r\n\r\n",
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
