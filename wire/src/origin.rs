//! Origins (RFC 6454): the `Origin` header a browser sends, the `Host` (or
//! `:authority`) a request names, and the origins an operator allows. The
//! host decides with them whether a page may open a WebSocket and which
//! pages may read its streams (CORS).
//!
//! An origin is a scheme, a host and a port; a missing port is the
//! scheme's default, so `https://a` and `https://a:443` are the same
//! origin. Hosts compare case-insensitively. `null` (a sandboxed frame, a
//! `data:` page, a file) is an origin of its own, allowed only when listed.

use std::fmt;

/// Longest `Origin` value taken (a serialized origin is a scheme, a host of
/// at most 253 bytes and a port).
pub const MAX_ORIGIN_BYTES: usize = 300;

/// Why a value is not an origin (or not an allowed-origin rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Over [`MAX_ORIGIN_BYTES`].
    #[error("an origin is at most {MAX_ORIGIN_BYTES} bytes")]
    TooLong,
    /// Not `scheme://host[:port]`.
    #[error("{0:?} is not an origin: expected scheme://host[:port], or null")]
    Malformed(String),
    /// A scheme with no default port, and no port given.
    #[error("{0:?} names no port, and its scheme has no default one")]
    NoPort(String),
}

/// A tuple origin: scheme, host (lower case), port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// What an `Origin` header says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OriginValue {
    /// `null`: an opaque origin.
    Null,
    /// A tuple origin.
    Tuple(Origin),
}

/// The default port of `scheme`, if it has one.
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

fn scheme_ok(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn host_ok(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'));
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Split `host[:port]` (an IPv6 host in brackets); the port, if given, must
/// be a number.
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if !host_ok(host) {
        return None;
    }
    let port = match port {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(port.parse().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

impl Origin {
    /// Parse `scheme://host[:port]` (no path, no user, no query).
    pub fn parse(value: &str) -> Result<Origin, OriginError> {
        if value.len() > MAX_ORIGIN_BYTES {
            return Err(OriginError::TooLong);
        }
        let malformed = || OriginError::Malformed(value.chars().take(64).collect());
        let (scheme, authority) = value.split_once("://").ok_or_else(malformed)?;
        let scheme = scheme.to_ascii_lowercase();
        if !scheme_ok(&scheme) {
            return Err(malformed());
        }
        let (host, port) = split_authority(authority).ok_or_else(malformed)?;
        let port = match port.or_else(|| default_port(&scheme)) {
            Some(port) => port,
            None => return Err(OriginError::NoPort(value.chars().take(64).collect())),
        };
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The scheme, lower case.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, lower case (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default when none was given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether a request for `authority` (its `Host` or `:authority`:
    /// `host[:port]`) comes from this origin's own site: the same host, and
    /// the same port, a missing one taken as this origin's (a proxy that
    /// ends TLS passes `Host: a` for `https://a`).
    pub fn is_same_host(&self, authority: &str) -> bool {
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        host.eq_ignore_ascii_case(&self.host) && port.unwrap_or(self.port) == self.port
    }
}

/// The origin as a browser serializes it: the default port left out.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if default_port(&self.scheme) != Some(self.port) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl OriginValue {
    /// Parse an `Origin` header's value.
    pub fn parse(value: &str) -> Result<OriginValue, OriginError> {
        if value == "null" {
            return Ok(OriginValue::Null);
        }
        Origin::parse(value).map(OriginValue::Tuple)
    }
}

impl fmt::Display for OriginValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginValue::Null => f.write_str("null"),
            OriginValue::Tuple(origin) => origin.fmt(f),
        }
    }
}

/// One rule of the origins an operator allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// `*`: every origin (and `null`).
    Any,
    /// `null`: opaque origins.
    Null,
    /// One origin.
    Exact(Origin),
    /// `scheme://*.domain[:port]`: every subdomain of `domain` (not the
    /// domain itself), with that scheme and port.
    Subdomains {
        /// The scheme.
        scheme: String,
        /// The domain, lower case, with its leading dot (`.example.com`).
        suffix: String,
        /// The port.
        port: u16,
    },
}

impl Allowed {
    /// Parse one rule: `*`, `null`, `scheme://host[:port]` or
    /// `scheme://*.domain[:port]`.
    pub fn parse(rule: &str) -> Result<Allowed, OriginError> {
        match rule {
            "*" => return Ok(Allowed::Any),
            "null" => return Ok(Allowed::Null),
            _ => {}
        }
        if let Some((scheme, rest)) = rule.split_once("://")
            && let Some(domain) = rest.strip_prefix("*.")
        {
            let origin = Origin::parse(&format!("{scheme}://{domain}"))?;
            return Ok(Allowed::Subdomains {
                suffix: format!(".{}", origin.host),
                scheme: origin.scheme,
                port: origin.port,
            });
        }
        Origin::parse(rule).map(Allowed::Exact)
    }

    /// Whether this rule allows `origin`.
    pub fn allows(&self, origin: &OriginValue) -> bool {
        match (self, origin) {
            (Allowed::Any, _) => true,
            (Allowed::Null, OriginValue::Null) => true,
            (Allowed::Exact(allowed), OriginValue::Tuple(origin)) => allowed == origin,
            (
                Allowed::Subdomains {
                    scheme,
                    suffix,
                    port,
                },
                OriginValue::Tuple(origin),
            ) => {
                origin.scheme == *scheme
                    && origin.port == *port
                    && origin.host.len() > suffix.len()
                    && origin.host.ends_with(suffix.as_str())
            }
            _ => false,
        }
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Any => f.write_str("*"),
            Allowed::Null => f.write_str("null"),
            Allowed::Exact(origin) => origin.fmt(f),
            Allowed::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                write!(f, "{scheme}://*{suffix}")?;
                if default_port(scheme) != Some(*port) {
                    write!(f, ":{port}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> OriginValue {
        OriginValue::parse(s).unwrap()
    }

    #[test]
    fn default_ports_are_the_same_origin() {
        assert_eq!(origin("https://a.example"), origin("https://a.example:443"));
        assert_eq!(origin("HTTP://A.Example"), origin("http://a.example:80"));
        assert_ne!(origin("http://a.example"), origin("https://a.example"));
        assert_ne!(origin("http://a.example"), origin("http://a.example:8080"));
        assert_eq!(
            origin("https://a.example:443").to_string(),
            "https://a.example"
        );
        assert_eq!(origin("http://[::1]:8080").to_string(), "http://[::1]:8080");
        assert_eq!(origin("null"), OriginValue::Null);
    }

    #[test]
    fn what_is_not_an_origin() {
        for bad in [
            "",
            "a.example",
            "https://",
            "https://a.example/path",
            "https://user@a.example",
            "https://a.example:port",
            "https://a.example:99999",
            "https://a b",
            "1http://a",
            "https://[::1",
        ] {
            assert!(OriginValue::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Origin::parse("chrome-extension://abc"),
            Err(OriginError::NoPort(_))
        ));
        assert!(Origin::parse("chrome-extension://abc:1").is_ok());
        assert_eq!(
            OriginValue::parse(&"x".repeat(400)),
            Err(OriginError::TooLong)
        );
    }

    #[test]
    fn same_host_takes_a_missing_port_as_the_origins() {
        let Ok(OriginValue::Tuple(o)) = OriginValue::parse("https://rt.example") else {
            panic!()
        };
        assert!(o.is_same_host("rt.example"));
        assert!(o.is_same_host("RT.example:443"));
        assert!(!o.is_same_host("rt.example:8443"));
        assert!(!o.is_same_host("app.example"));
        assert!(!o.is_same_host("rt.example:x"));
        let Ok(OriginValue::Tuple(local)) = OriginValue::parse("http://127.0.0.1:8080") else {
            panic!()
        };
        assert!(local.is_same_host("127.0.0.1:8080"));
        assert!(!local.is_same_host("127.0.0.1:8081"));
    }

    #[test]
    fn rules_allow_what_they_name() {
        let rule = |s: &str| Allowed::parse(s).unwrap();
        assert!(rule("*").allows(&origin("https://anyone.example")));
        assert!(rule("*").allows(&origin("null")));
        assert!(rule("null").allows(&origin("null")));
        assert!(!rule("https://app.example").allows(&origin("null")));
        assert!(rule("https://app.example").allows(&origin("https://app.example:443")));
        assert!(!rule("https://app.example").allows(&origin("http://app.example")));
        let subdomains = rule("https://*.example.com");
        assert!(subdomains.allows(&origin("https://a.example.com")));
        assert!(subdomains.allows(&origin("https://a.b.example.com")));
        assert!(!subdomains.allows(&origin("https://example.com")));
        assert!(!subdomains.allows(&origin("https://badexample.com")));
        assert!(!subdomains.allows(&origin("https://a.example.com:8443")));
        assert_eq!(subdomains.to_string(), "https://*.example.com");
        assert!(Allowed::parse("https://*.").is_err());
        assert!(Allowed::parse("app.example").is_err());
    }
}
