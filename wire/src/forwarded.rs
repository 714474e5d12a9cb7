//! The client's address as proxies pass it on: `X-Forwarded-For` (a list
//! of addresses, the client first, each proxy appending the address it
//! got the request from) and `Forwarded` (RFC 7239: `for=` in each
//! element). Only headers from a trusted proxy are read, and of the list
//! only the right-most address that is not itself a trusted proxy is taken:
//! whatever is left of it the client wrote, and may have made up.

use std::net::IpAddr;

/// Longest forwarding header read; longer ones are refused.
pub const MAX_FORWARDED_BYTES: usize = 4096;

/// One hop of a forwarding header: an address, or something else (a
/// hidden or `unknown` node, or a value that is not an address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// A node's address (a port, if given, is dropped).
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier (`_hidden`), or not an address.
    Opaque,
}

/// The header a trusted proxy names the client in. Exactly one is read:
/// a proxy adds to the one it is configured for and passes the other on as
/// the client sent it, so falling back from one to the other would take a
/// client's word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Header {
    /// `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`, HAProxy's
    /// `option forwardfor`, cloud load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

impl Header {
    /// The header's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            Header::XForwardedFor => "x-forwarded-for",
            Header::Forwarded => "forwarded",
        }
    }

    /// The hops of the header's values.
    pub fn hops<'a>(
        self,
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Hop>, ForwardedError> {
        match self {
            Header::XForwardedFor => x_forwarded_for(values),
            Header::Forwarded => forwarded(values),
        }
    }
}

impl std::str::FromStr for Header {
    type Err = String;

    fn from_str(text: &str) -> Result<Header, String> {
        match text.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Header::XForwardedFor),
            "forwarded" => Ok(Header::Forwarded),
            _ => Err(format!("{text:?}: expected x-forwarded-for or forwarded")),
        }
    }
}

/// Why a header was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedError {
    /// Over [`MAX_FORWARDED_BYTES`].
    #[error("a forwarding header over {MAX_FORWARDED_BYTES} bytes")]
    TooLong,
    /// Not the header's syntax.
    #[error("a forwarding header that does not parse: {0}")]
    Syntax(&'static str),
    /// Bytes that are not visible ASCII.
    #[error("a forwarding header that is not ASCII")]
    NotAscii,
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[::1]`, `[::1]:5678`, with a port or an obfuscated one (`:_abc`, RFC
/// 7239 section 6.3); an IPv4-mapped IPv6 address as the IPv4 one.
fn addr(text: &str) -> Hop {
    let text = text.trim();
    let host = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, tail)) if tail.is_empty() || tail.starts_with(':') => inside,
            _ => return Hop::Opaque,
        }
    } else if text.matches(':').count() == 1 {
        // IPv4 and a port (a bare IPv6 address has several colons).
        text.split_once(':').map_or(text, |(host, _)| host)
    } else {
        text
    };
    host.parse::<IpAddr>()
        .map_or(Hop::Opaque, |ip| Hop::Addr(ip.to_canonical()))
}

/// The hops of `X-Forwarded-For` values (several header lines in order),
/// the client first.
pub fn x_forwarded_for<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Hop>, ForwardedError> {
    let mut hops = Vec::new();
    for value in bounded(values)? {
        hops.extend(value.split(',').map(addr));
    }
    Ok(hops)
}

/// A header's values, if together within [`MAX_FORWARDED_BYTES`].
fn bounded<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<&'a str>, ForwardedError> {
    let values: Vec<&str> = values.into_iter().collect();
    if values.iter().map(|v| v.len()).sum::<usize>() > MAX_FORWARDED_BYTES {
        return Err(ForwardedError::TooLong);
    }
    Ok(values)
}

/// The `for=` hops of `Forwarded` values (RFC 7239, several header lines
/// in order), the client first. An element without `for=` is an opaque
/// hop.
pub fn forwarded<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Hop>, ForwardedError> {
    let mut hops = Vec::new();
    for value in bounded(values)? {
        for element in split_outside_quotes(value, ',')? {
            let mut hop = Hop::Opaque;
            for pair in split_outside_quotes(element, ';')? {
                let pair = pair.trim();
                if pair.is_empty() {
                    continue;
                }
                let (name, value) = pair
                    .split_once('=')
                    .ok_or(ForwardedError::Syntax("a pair without '='"))?;
                if !name.trim().eq_ignore_ascii_case("for") {
                    continue;
                }
                let value = value.trim();
                let value = match value.strip_prefix('"') {
                    Some(quoted) => quoted
                        .strip_suffix('"')
                        .ok_or(ForwardedError::Syntax("an unclosed quote"))?,
                    None => value,
                };
                hop = addr(value);
            }
            hops.push(hop);
        }
    }
    Ok(hops)
}

/// `text` split at `at` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, at: char) -> Result<Vec<&str>, ForwardedError> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == at && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return Err(ForwardedError::Syntax("an unclosed quote"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// The client of a request that came from `peer`, a trusted proxy, with
/// the forwarding `hops` (the client first): the right-most hop that is
/// not a trusted proxy. An opaque hop met first ends the walk: nothing to
/// its left can be checked, so the last trusted address is the client. No
/// hops at all: the peer.
pub fn client(peer: IpAddr, hops: &[Hop], trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match hop {
            Hop::Addr(ip) if trusted(*ip) => nearest = *ip,
            Hop::Addr(ip) => return *ip,
            Hop::Opaque => return nearest,
        }
    }
    nearest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn x_forwarded_for_reads_every_form_of_address() {
        let hops =
            x_forwarded_for(["203.0.113.7, 10.0.0.2:443", "[2001:db8::1]:80,::1, nope"]).unwrap();
        assert_eq!(
            hops,
            [
                Hop::Addr(ip("203.0.113.7")),
                Hop::Addr(ip("10.0.0.2")),
                Hop::Addr(ip("2001:db8::1")),
                Hop::Addr(ip("::1")),
                Hop::Opaque,
            ]
        );
        assert_eq!(
            x_forwarded_for(["1.2.3.4,,5.6.7.8"]).unwrap()[1],
            Hop::Opaque
        );
        assert_eq!(
            x_forwarded_for([&*"1.1.1.1,".repeat(1000)]),
            Err(ForwardedError::TooLong)
        );
    }

    #[test]
    fn forwarded_reads_for_in_each_element() {
        let hops = forwarded([
            r#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#,
            "for=unknown, for=_hidden;host=\"a,b\", proto=https",
        ])
        .unwrap();
        assert_eq!(
            hops,
            [
                Hop::Addr(ip("192.0.2.60")),
                Hop::Addr(ip("2001:db8:cafe::17")),
                Hop::Opaque,
                Hop::Opaque,
                Hop::Opaque,
            ]
        );
        // Obfuscated ports (RFC 7239 section 6.3), IPv4-mapped addresses.
        let hops = forwarded([
            r#"for="192.0.2.43:_abc", for="[2001:db8::1]:_x", for="[::ffff:10.1.2.3]""#,
        ])
        .unwrap();
        assert_eq!(
            hops,
            [
                Hop::Addr(ip("192.0.2.43")),
                Hop::Addr(ip("2001:db8::1")),
                Hop::Addr(ip("10.1.2.3")),
            ]
        );
        assert_eq!(forwarded([r#"for="[::1]x""#]).unwrap(), [Hop::Opaque]);
        assert!(forwarded([r#"for="1.2.3.4"#]).is_err());
        assert!(forwarded(["for"]).is_err());
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let trusted = |a: IpAddr| a.to_string().starts_with("10.");
        let peer = ip("10.0.0.1");
        // The client wrote the first hop; the proxies appended the rest.
        let hops = x_forwarded_for(["6.6.6.6, 203.0.113.7, 10.0.0.9"]).unwrap();
        assert_eq!(client(peer, &hops, trusted), ip("203.0.113.7"));
        // Only proxies: the furthest one.
        let hops = x_forwarded_for(["10.0.0.7, 10.0.0.9"]).unwrap();
        assert_eq!(client(peer, &hops, trusted), ip("10.0.0.7"));
        // An opaque hop: the last trusted address.
        let hops = x_forwarded_for(["203.0.113.7, unknown, 10.0.0.9"]).unwrap();
        assert_eq!(client(peer, &hops, trusted), ip("10.0.0.9"));
        assert_eq!(client(peer, &[], trusted), peer);
    }
}
