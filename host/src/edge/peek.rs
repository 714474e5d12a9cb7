//! The first-request peek: a `GET /comet/sse` or `GET /comet/ws` whose
//! HTTP/1.1 head waits whole on a fresh connection is served straight on
//! the socket (`transports::serve_raw`); anything else (HTTP/2, a partial
//! head, another path) goes to hyper. The head is parsed by `comet_wire`
//! and nothing is consumed here: on a TLS connection, what is read to see
//! the head is read again by whoever serves it.

use tokio::net::TcpStream;

use crate::transports::{RawRequest, TlsWire};

/// Largest request head taken on the raw path; longer ones go to hyper.
const MAX_HEAD: usize = 4096;

/// The head of a request the raw path serves, if one waits whole on `tcp`.
pub(super) async fn peek(tcp: &TcpStream) -> Option<RawRequest> {
    let mut buf = vec![0u8; MAX_HEAD];
    let n = tcp.peek(&mut buf).await.ok()?;
    parse(&buf[..n])
}

/// The head of a request the raw path serves, if one came whole first on
/// the TLS connection `tls`.
pub(super) async fn peek_tls(tls: &TlsWire) -> Option<RawRequest> {
    parse(&tls.read_head(MAX_HEAD).await.ok()?)
}

fn parse(bytes: &[u8]) -> Option<RawRequest> {
    comet_wire::head::parse(bytes).map(|(endpoint, request, len)| RawRequest {
        endpoint,
        request,
        len,
    })
}
