//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a trusted
//! load balancer sends before the connection's own bytes: the client's
//! address. Version 1 is a line of text (`PROXY TCP4 src dst sport
//! dport\r\n`, at most 107 bytes); version 2 a binary header (a 12-byte
//! signature, the command, the family, a length, then the addresses and
//! TLVs, which are skipped).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest version 1 header, its `\r\n` included.
pub const MAX_V1_BYTES: usize = 107;

/// Longest version 2 header taken (the fixed 16 bytes and what follows);
/// the protocol allows 64 KiB of TLVs, which no load balancer sends.
pub const MAX_V2_BYTES: usize = 4096;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the start of a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole header yet: read more (at most this many bytes in all
    /// can still be a header).
    Partial,
    /// A header of `len` bytes; `client` is the source address it names
    /// (`None`: a health check of the proxy itself, `LOCAL` or `UNKNOWN`,
    /// or a family other than TCP over IPv4 or IPv6).
    Header {
        /// The client's address.
        client: Option<SocketAddr>,
        /// The header's length, to skip.
        len: usize,
    },
}

/// Why the start of a connection is not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PROXY protocol header: {0}")]
pub struct ProxyError(pub &'static str);

/// Read the PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let common = buf.len().min(V2_SIGNATURE.len());
    if buf[..common] == V2_SIGNATURE[..common] {
        if buf.len() < 16 {
            return Ok(Parsed::Partial);
        }
        return v2(buf);
    }
    let common = buf.len().min(6);
    if buf[..common] == b"PROXY "[..common] {
        return v1(buf);
    }
    Err(ProxyError("neither version's signature"))
}

fn v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(MAX_V1_BYTES)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1_BYTES {
            return Err(ProxyError("a version 1 line over 107 bytes"));
        }
        return Ok(Parsed::Partial);
    };
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError("a line that is not text"))?;
    let mut fields = line.split(' ');
    let _proxy = fields.next();
    let len = end + 2;
    let family = fields.next().ok_or(ProxyError("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(Parsed::Header { client: None, len });
    }
    let (src, _dst, sport, _dport) = match (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) {
        (Some(src), Some(dst), Some(sport), Some(dport), None) => (src, dst, sport, dport),
        _ => return Err(ProxyError("not four addresses and ports")),
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(src.parse().map_err(|_| ProxyError("a bad IPv4 source"))?),
        "TCP6" => IpAddr::V6(src.parse().map_err(|_| ProxyError("a bad IPv6 source"))?),
        _ => return Err(ProxyError("a protocol other than TCP4, TCP6, UNKNOWN")),
    };
    // Ports are decimal without a sign or leading zeros beyond one digit.
    if sport.is_empty() || !sport.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError("a bad source port"));
    }
    let port: u16 = sport.parse().map_err(|_| ProxyError("a bad source port"))?;
    Ok(Parsed::Header {
        client: Some(SocketAddr::new(ip, port)),
        len,
    })
}

fn v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError("a version 2 signature with another version"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError("a command other than LOCAL or PROXY")),
    };
    let family = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_V2_BYTES {
        return Err(ProxyError("a version 2 header over 4096 bytes"));
    }
    if buf.len() < len {
        return Ok(Parsed::Partial);
    }
    let addresses = &buf[16..len];
    if local {
        return Ok(Parsed::Header { client: None, len });
    }
    let client = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = addresses
                .get(..12)
                .ok_or(ProxyError("IPv4 addresses cut short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        // TCP over IPv6.
        0x21 => {
            let a = addresses
                .get(..36)
                .ok_or(ProxyError("IPv6 addresses cut short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC, UDP, unix sockets: no client address to use.
        _ => None,
    };
    Ok(Parsed::Header { client, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_lines() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Ok(Parsed::Header {
                client: Some("203.0.113.7:56324".parse().unwrap()),
                len: 43,
            })
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\n";
        assert!(
            matches!(parse(line), Ok(Parsed::Header { client: Some(a), .. }) if a.port() == 4000)
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                client: None,
                len: 15
            })
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parsed::Partial));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Partial));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n").is_err());
        assert!(parse(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n").is_err());
        assert!(parse(&[b'P'; 200]).is_err());
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend_from_slice(&[b'1'; 120]);
        assert!(parse(&long).is_err());
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
    }

    fn v2_header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn version_2_headers() {
        let mut v4 = vec![203, 0, 113, 7, 10, 0, 0, 1];
        v4.extend_from_slice(&56324u16.to_be_bytes());
        v4.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses is skipped.
        v4.extend_from_slice(&[0x04, 0, 1, 0]);
        let header = v2_header(1, 0x11, &v4);
        assert_eq!(
            parse(&header),
            Ok(Parsed::Header {
                client: Some("203.0.113.7:56324".parse().unwrap()),
                len: header.len(),
            })
        );
        assert_eq!(parse(&header[..20]), Ok(Parsed::Partial));
        assert_eq!(parse(&header[..5]), Ok(Parsed::Partial));
        let mut v6 = vec![0u8; 36];
        v6[15] = 1;
        v6[32..34].copy_from_slice(&9u16.to_be_bytes());
        let header = v2_header(1, 0x21, &v6);
        assert_eq!(
            parse(&header),
            Ok(Parsed::Header {
                client: Some("[::1]:9".parse().unwrap()),
                len: header.len(),
            })
        );
        let local = v2_header(0, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Header {
                client: None,
                len: 16
            })
        );
        assert!(parse(&v2_header(1, 0x11, &[1, 2, 3])).is_err());
        assert!(parse(&v2_header(7, 0x11, &v4)).is_err());
        let mut too_long = v2_header(1, 0x11, &[]);
        too_long[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert!(parse(&too_long).is_err());
    }
}
