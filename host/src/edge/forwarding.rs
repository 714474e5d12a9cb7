//! Behind a proxy: the client's address from a trusted proxy's word. For a
//! connection from a trusted proxy (`--trusted-proxy`), the client is named
//! by a PROXY protocol header (`--proxy-protocol`, read before anything
//! else, once per connection) or by each request's `Forwarded` or
//! `X-Forwarded-For` header (the right-most address that is not a trusted
//! proxy, parsed by `comet_wire::forwarded`). That address is what the
//! per-address bound, the logs and on-connect's remote address use. A
//! proxy's kept-alive upstream connection carries many clients' requests,
//! so with headers the bound is taken per request (and held by a stream or
//! a WebSocket for its life), not per accept. Headers from any other peer
//! are not read.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use comet_wire::forwarded::{self, ForwardedError, Header};
use comet_wire::proxy::{self, MAX_V2_BYTES, Parsed};
use http::StatusCode;
use http::header::HeaderMap;
use http_body_util::BodyExt;
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::http::{ApiError, Body};

/// Which peers may name the client, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// Trusted proxies (none: every peer is the client).
    pub trusted: Vec<IpNet>,
    /// Trusted proxies send a PROXY protocol header (v1 or v2) first;
    /// forwarding headers are then not read.
    pub proxy_protocol: bool,
    /// The one header a trusted proxy names the client in.
    pub header: Header,
}

/// How long to wait for the rest of a PROXY header that came in parts
/// (a proxy writes it whole, before any byte of the client's).
const PROXY_HEADER_POLL: Duration = Duration::from_millis(5);

impl Forwarding {
    /// Whether `peer` is a trusted proxy.
    /// (An IPv4-mapped IPv6 peer, as a dual-stack listener sees IPv4
    /// ones, is its IPv4 address.)
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }

    /// The client of a request from `peer`, a trusted proxy, by the
    /// configured header (the proxy itself when it sends none).
    pub(super) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, ApiError> {
        let values: Result<Vec<&str>, ForwardedError> = headers
            .get_all(self.header.name())
            .iter()
            .map(|v| v.to_str().map_err(|_| ForwardedError::NotAscii))
            .collect();
        let hops = values.and_then(|values| self.header.hops(values));
        let hops = hops.map_err(|e: ForwardedError| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-forwarded-header",
                e.to_string(),
            )
        })?;
        Ok(forwarded::client(peer.to_canonical(), &hops, |ip| {
            self.trusts(ip)
        }))
    }
}

/// Why a PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProxyHeaderError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a header.
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
}

/// Read (and consume) the PROXY header that starts `tcp`: the client it
/// names, if any (a proxy's health check names none).
pub(super) async fn read_proxy_header(
    tcp: &mut TcpStream,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; MAX_V2_BYTES];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        match proxy::parse(&buf[..n])? {
            Parsed::Header { client, len } => {
                tcp.read_exact(&mut buf[..len]).await?;
                return Ok(client);
            }
            // A peek returns at once while bytes wait: poll for the rest.
            Parsed::Partial => tokio::time::sleep(PROXY_HEADER_POLL).await,
        }
    }
}

/// What holds a client's address slot (its `AddressTicket`, shared).
pub(super) type Slot = Arc<dyn std::any::Any + Send + Sync>;

/// A response body that holds its client's address slot until it ends
/// (a stream behind a proxy holds its client's slot, not the proxy's).
struct Holding {
    body: Body,
    _slot: Slot,
}

impl hyper::body::Body for Holding {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// `response`, its body holding `slot` for as long as it is sent.
pub(super) fn holding(response: http::Response<Body>, slot: Slot) -> http::Response<Body> {
    response.map(|body| Holding { body, _slot: slot }.boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let mut forwarding = Forwarding {
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            proxy_protocol: false,
            header: Header::XForwardedFor,
        };
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        headers.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        // A client's own `Forwarded`, passed on by a proxy that adds to
        // `X-Forwarded-For`: not read.
        headers.insert("forwarded", "for=198.51.100.7".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(forwarding.trusts(proxy));
        assert!(forwarding.trusts("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!forwarding.trusts("192.0.2.1".parse().unwrap()));
        assert_eq!(
            forwarding.client(proxy, &headers).unwrap(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // Bytes that are not ASCII: refused, not skipped.
        let mut odd = headers.clone();
        odd.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(
            forwarding.client(proxy, &odd).unwrap_err().code,
            "bad-forwarded-header"
        );
        // Configured for `Forwarded`: only it.
        forwarding.header = Header::Forwarded;
        headers.insert("forwarded", "for=\"[2001:db8::7]:1\"".parse().unwrap());
        assert_eq!(
            forwarding.client(proxy, &headers).unwrap(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        headers.insert("forwarded", "for=\"1.2.3.4".parse().unwrap());
        assert_eq!(
            forwarding.client(proxy, &headers).unwrap_err().code,
            "bad-forwarded-header"
        );
        // No header: the proxy itself.
        assert_eq!(forwarding.client(proxy, &HeaderMap::new()).unwrap(), proxy);
    }
}
