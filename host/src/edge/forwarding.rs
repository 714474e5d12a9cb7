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
use comet_wire::forwarded::{self, ForwardedError};
use comet_wire::proxy::{self, MAX_V2_BYTES, Parsed};
use http::StatusCode;
use http::header::{FORWARDED, HeaderMap};
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
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// How long to wait for the rest of a PROXY header that came in parts
/// (a proxy writes it whole, before any byte of the client's).
const PROXY_HEADER_POLL: Duration = Duration::from_millis(5);

impl Forwarding {
    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&peer))
    }

    /// The client of a request from `peer`, a trusted proxy, by its
    /// `Forwarded` header, else its `X-Forwarded-For` (the proxy itself
    /// when it sends neither).
    pub(super) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, ApiError> {
        let values = |name| headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let hops = if headers.contains_key(FORWARDED) {
            forwarded::forwarded(values(FORWARDED.as_str()))
        } else {
            forwarded::x_forwarded_for(values(X_FORWARDED_FOR))
        };
        let hops = hops.map_err(|e: ForwardedError| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-forwarded-header",
                e.to_string(),
            )
        })?;
        Ok(forwarded::client(peer, &hops, |ip| self.trusts(ip)))
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
        let forwarding = Forwarding {
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            proxy_protocol: false,
        };
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, "6.6.6.6, 203.0.113.7".parse().unwrap());
        headers.append(X_FORWARDED_FOR, "10.1.1.1".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(forwarding.trusts(proxy));
        assert!(!forwarding.trusts("192.0.2.1".parse().unwrap()));
        assert_eq!(
            forwarding.client(proxy, &headers).unwrap(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // `Forwarded` wins over `X-Forwarded-For`.
        headers.insert(FORWARDED, "for=\"[2001:db8::7]:1\"".parse().unwrap());
        assert_eq!(
            forwarding.client(proxy, &headers).unwrap(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        headers.insert(FORWARDED, "for=\"1.2.3.4".parse().unwrap());
        assert_eq!(
            forwarding.client(proxy, &headers).unwrap_err().code,
            "bad-forwarded-header"
        );
        // No header: the proxy itself.
        assert_eq!(forwarding.client(proxy, &HeaderMap::new()).unwrap(), proxy);
    }
}
