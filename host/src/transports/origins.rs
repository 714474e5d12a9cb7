//! Which pages may use the endpoints. A WebSocket handshake from a page
//! whose origin is neither the server's own nor allowed is refused before
//! the upgrade (`403 origin-not-allowed`): a hostile page would otherwise
//! open a socket with its visitor's cookies (cross-site WebSocket
//! hijacking). What a page reads (SSE, NDJSON streams, long-polls,
//! `/comet/client.js`, a handler's holds) carries CORS headers for allowed
//! origins, and their preflights are answered. A request without an
//! `Origin` header (not a browser) is not affected.
//!
//! The origins come from `comet-wire` (`origin`), where they are parsed:
//! a default port is the same origin as none, and `null` is allowed only
//! when listed.

use comet_wire::origin::{Allowed, OriginValue};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, HOST,
    ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::http::{ApiError, Body, full};

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: u32 = 600;

/// The origins an operator allows, besides the server's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// Allowed origins (empty: only the server's own may open a WebSocket,
    /// and no other may read).
    pub allowed: Vec<Allowed>,
    /// Whether allowed pages may send cookies (CORS with credentials).
    pub credentials: bool,
}

/// The CORS headers of an answer to an allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origin: HeaderValue,
    credentials: bool,
}

/// The `Origin` a request carries, if any, and what it is (`Err`: not an
/// origin at all).
fn origin_of(headers: &HeaderMap) -> Option<Result<OriginValue, String>> {
    let value = headers.get(ORIGIN)?;
    let text = value
        .to_str()
        .map_err(|_| "an origin that is not text".to_string());
    Some(text.and_then(|t| OriginValue::parse(t).map_err(|e| e.to_string())))
}

impl Origins {
    fn allows(&self, origin: &OriginValue) -> bool {
        self.allowed.iter().any(|rule| rule.allows(origin))
    }

    /// Whether a WebSocket handshake with `headers`, for `authority` (its
    /// `:authority`, else its `Host`), may be upgraded: no `Origin` (not a
    /// browser), the server's own origin, or an allowed one.
    pub fn check_websocket<B>(&self, request: &http::Request<B>) -> Result<(), ApiError> {
        let Some(origin) = origin_of(request.headers()) else {
            return Ok(());
        };
        let refuse = |shown: &str| {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin-not-allowed",
                format!(
                    "pages of {shown} may not open a WebSocket here; the server allows its own \
                     origin and those given with --allowed-origin"
                ),
            ))
        };
        let origin = match origin {
            Ok(origin) => origin,
            Err(why) => return refuse(&why),
        };
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok()));
        let same = match (&origin, authority) {
            (OriginValue::Tuple(origin), Some(authority)) => origin.is_same_host(authority),
            _ => false,
        };
        if same || self.allows(&origin) {
            return Ok(());
        }
        refuse(&origin.to_string())
    }

    /// The CORS headers for a request with `headers`: `Some` when it comes
    /// from an allowed origin.
    pub fn cors(&self, headers: &HeaderMap) -> Option<Cors> {
        let origin = origin_of(headers)?.ok()?;
        if !self.allows(&origin) {
            return None;
        }
        Some(Cors {
            origin: HeaderValue::from_str(&origin.to_string()).ok()?,
            credentials: self.credentials,
        })
    }

    /// The answer to a preflight (`OPTIONS` with `Origin`) for a `GET`
    /// endpoint: its CORS headers, or 403 for an origin not allowed.
    pub fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let Some(cors) = self.cors(headers) else {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin-not-allowed",
                "this origin may not read from this server; allow it with --allowed-origin",
            )
            .into_response();
        };
        let mut response = Response::new(full(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        cors.apply(out);
        out.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        if let Some(asked) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(PREFLIGHT_MAX_AGE));
        response
    }
}

impl Cors {
    /// Add the headers to `headers`, unless they name an
    /// `Access-Control-*` header already (a handler's own, which wins).
    pub fn apply(&self, headers: &mut HeaderMap) {
        if headers
            .keys()
            .any(|name| name.as_str().starts_with("access-control-"))
        {
            return;
        }
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.origin.clone());
        headers.append(VARY, HeaderValue::from_static("origin"));
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The headers as `name: value` lines, for a response written by hand.
    pub fn lines(&self) -> String {
        let mut lines = format!(
            "access-control-allow-origin: {}\r\nvary: origin\r\n",
            self.origin.to_str().unwrap_or_default()
        );
        if self.credentials {
            lines.push_str("access-control-allow-credentials: true\r\n");
        }
        lines
    }

    /// The headers as pairs, for a refusal written by hand.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (
                "access-control-allow-origin",
                self.origin.to_str().unwrap_or_default().to_string(),
            ),
            ("vary", "origin".to_string()),
        ];
        if self.credentials {
            pairs.push(("access-control-allow-credentials", "true".to_string()));
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>, host: &str) -> http::Request<()> {
        let mut request = http::Request::get("/comet/ws").header(HOST, host);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.body(()).unwrap()
    }

    fn origins(rules: &[&str]) -> Origins {
        Origins {
            allowed: rules.iter().map(|r| Allowed::parse(r).unwrap()).collect(),
            credentials: false,
        }
    }

    #[test]
    fn a_websocket_is_same_origin_unless_allowed() {
        let none = origins(&[]);
        let code = |o: &Origins, origin, host| {
            o.check_websocket(&request(origin, host))
                .err()
                .map(|e| e.code)
        };
        assert_eq!(code(&none, None, "rt.example"), None, "not a browser");
        assert_eq!(code(&none, Some("https://rt.example"), "rt.example"), None);
        assert_eq!(
            code(&none, Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            None
        );
        assert_eq!(
            code(&none, Some("https://evil.example"), "rt.example"),
            Some("origin-not-allowed")
        );
        assert_eq!(
            code(&none, Some("null"), "rt.example"),
            Some("origin-not-allowed")
        );
        assert_eq!(
            code(&none, Some("not an origin"), "rt.example"),
            Some("origin-not-allowed")
        );
        let app = origins(&["https://app.example"]);
        assert_eq!(
            code(&app, Some("https://app.example:443"), "rt.example"),
            None
        );
        assert_eq!(
            code(&app, Some("http://app.example"), "rt.example"),
            Some("origin-not-allowed")
        );
        assert_eq!(code(&origins(&["null"]), Some("null"), "rt.example"), None);
        assert_eq!(
            code(&origins(&["*"]), Some("https://any.example"), "rt.example"),
            None
        );
    }

    #[test]
    fn cors_names_the_allowed_origin_and_a_handlers_own_headers_win() {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_static("https://app.example:443"));
        assert_eq!(origins(&[]).cors(&headers), None);
        let mut allowed = origins(&["https://app.example"]);
        allowed.credentials = true;
        let cors = allowed.cors(&headers).unwrap();
        let mut out = HeaderMap::new();
        cors.apply(&mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(out[VARY], "origin");
        let mut own = HeaderMap::new();
        own.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        cors.apply(&mut own);
        assert_eq!(own[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(own.get(VARY).is_none());
        assert_eq!(
            cors.lines(),
            "access-control-allow-origin: https://app.example\r\nvary: origin\r\n\
             access-control-allow-credentials: true\r\n"
        );
    }

    #[test]
    fn preflights_are_answered_for_allowed_origins_only() {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_static("https://app.example"));
        headers.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("last-event-id"),
        );
        let ok = origins(&["https://app.example"]).preflight(&headers);
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_HEADERS], "last-event-id");
        assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_METHODS], "GET");
        let refused = origins(&[]).preflight(&headers);
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
}
