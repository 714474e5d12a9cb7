//! `GET /comet/client.js`: the browser client (`clients/js/comet.js`),
//! embedded in the binary so a page can `import { Comet } from
//! "/comet/client.js"`.

use http::Response;

use crate::http::{Body, full};

/// The browser client's source.
const CLIENT_JS: &str = include_str!("../../../clients/js/comet.js");

/// The browser client, cacheable for five minutes.
pub(super) fn response() -> Response<Body> {
    let mut response = Response::new(full(CLIENT_JS));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}
