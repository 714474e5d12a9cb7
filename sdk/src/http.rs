//! HTTP helpers: reading a [`Request`], building a [`Response`], and turning
//! either into a [`Reply`] (respond now, hold on channels, or upgrade).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Header, Hold, Reply, Request, Response, StreamFormat, WebsocketAccept};

/// The request body was not the JSON the handler expected.
#[derive(Debug)]
pub struct JsonError(serde_json::Error);

impl core::fmt::Display for JsonError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "invalid JSON body: {}", self.0)
    }
}

impl std::error::Error for JsonError {}

impl Request {
    /// The first value of a header, by case-insensitive name, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| core::str::from_utf8(&h.value).ok())
    }

    /// All query parameters, percent-decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The value of a cookie sent with the request.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.header("cookie").and_then(|c| cookie(c, name))
    }

    /// The body as UTF-8 text (invalid sequences replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, JsonError> {
        serde_json::from_slice(&self.body).map_err(JsonError)
    }

    /// The body parsed as an `application/x-www-form-urlencoded` form.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// Find one cookie in a `Cookie:` header value.
pub fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"').to_string())
    })
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `200 OK` with a plain-text body.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with an HTML body.
    pub fn html(body: impl Into<String>) -> Self {
        Self::new(200)
            .with_header("content-type", "text/html; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with `value` serialized as JSON (or a 500 if it cannot be).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => Self::text(format!("cannot serialize response: {e}")).with_status(500),
        }
    }

    /// `404 Not Found`.
    pub fn not_found() -> Self {
        Self::text("not found\n").with_status(404)
    }

    /// `400 Bad Request` with a reason.
    pub fn bad_request(reason: impl core::fmt::Display) -> Self {
        Self::text(format!("{reason}\n")).with_status(400)
    }

    /// A redirect (`303 See Other`) to `location`.
    pub fn redirect(location: &str) -> Self {
        Self::new(303).with_header("location", location)
    }

    /// Change the status code.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Add a header.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.as_ref().to_vec(),
        });
        self
    }

    /// Replace the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply::Respond(response)
    }
}

impl Hold {
    /// Hold the request on `channels`, streaming in `format`, from now on.
    pub fn new<S: Into<String>>(
        channels: impl IntoIterator<Item = S>,
        format: StreamFormat,
    ) -> Self {
        Hold {
            channels: channels.into_iter().map(Into::into).collect(),
            format,
            since: None,
            timeout_ms: None,
            headers: Vec::new(),
        }
    }

    /// Resume after this cursor instead of starting with new messages.
    pub fn since(mut self, cursor: impl Into<String>) -> Self {
        self.since = Some(cursor.into());
        self
    }

    /// Hold for at most this many milliseconds.
    pub fn timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Add a header to the streaming response.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(Header {
            name: name.to_ascii_lowercase(),
            value: value.as_ref().to_vec(),
        });
        self
    }
}

impl From<Hold> for Reply {
    fn from(hold: Hold) -> Self {
        Reply::Hold(hold)
    }
}

impl From<WebsocketAccept> for Reply {
    fn from(accept: WebsocketAccept) -> Self {
        Reply::Upgrade(accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            id: "r1".into(),
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
            body: Vec::new(),
            remote_addr: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let r = request("name=J%C3%BCrgen+K&x=1&x=2", &[]);
        assert_eq!(r.query_param("name").as_deref(), Some("Jürgen K"));
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(r.query_pairs().len(), 3);
    }

    #[test]
    fn headers_and_cookies_are_found_case_insensitively() {
        let r = request("", &[("cookie", "a=1; nick=\"ann\""), ("x-thing", "v")]);
        assert_eq!(r.header("X-Thing"), Some("v"));
        assert_eq!(r.cookie("nick").as_deref(), Some("ann"));
        assert_eq!(r.cookie("zzz"), None);
    }

    #[test]
    fn json_response_sets_content_type() {
        let resp = Response::json(&serde_json::json!({"n": 1}));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers[0].name, "content-type");
        assert_eq!(resp.body, br#"{"n":1}"#);
    }
}
