//! [`ApiError`], the one error shape clients see, and [`ClientError`], the
//! trait by which an error type says how a client should see it.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use super::{Body, full};

/// An error as a client sees it: an HTTP status, a machine-readable code
/// (the table in PROTOCOL.md), a message for people, and when to retry.
///
/// Errors stay typed values until the edge; there they become this, and this
/// becomes the one JSON shape `{"error": CODE, "message": TEXT}` (plus
/// `request_id` when the request has one), or a WebSocket error frame with
/// the same code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code, for example `invalid-cursor`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Seconds after which retrying makes sense (`Retry-After`).
    pub retry_after: Option<u32>,
    /// The request's id, when it has one (handler requests do).
    pub request_id: Option<Arc<str>>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> Self {
        ApiError {
            status,
            code,
            message: message.to_string(),
            retry_after: None,
            request_id: None,
        }
    }

    /// Ask the client to retry after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Name the request this error answers.
    pub fn with_request_id(mut self, id: Arc<str>) -> Self {
        self.request_id = Some(id);
        self
    }

    /// The JSON body: `{"error": code, "message": text, "request_id"?: id}`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        if let Some(id) = &self.request_id {
            body["request_id"] = serde_json::Value::from(&**id);
        }
        body
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(full(self.body().to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Every 401 here is for a missing bearer token (RFC 6750).
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// An error type that knows how a client should see it. Implement it once
/// per error type; `?` then turns the error into an [`ApiError`].
pub trait ClientError: std::fmt::Display {
    /// The HTTP status.
    fn status(&self) -> StatusCode;
    /// The machine-readable code.
    fn code(&self) -> &'static str;
    /// Seconds after which a retry makes sense, if any.
    fn retry_after(&self) -> Option<u32> {
        None
    }
    /// The id of the event that failed, if one did (it is in the log too).
    fn request_id(&self) -> Option<Arc<str>> {
        None
    }
}

impl<E: ClientError> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
            retry_after: e.retry_after(),
            request_id: e.request_id(),
        }
    }
}

/// An error enum whose every variant wraps one error type that is a
/// [`ClientError`] already (axum's `composite_rejection!`): the enum, a
/// `From` impl per variant (so `?` builds it), `Display` and `source` as
/// the variant's own, and a `ClientError` impl that asks the variant. A
/// composite decides no status of its own.
macro_rules! composite_error {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident($inner:ty)
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant($inner),
            )+
        }

        $(
            impl From<$inner> for $name {
                fn from(e: $inner) -> Self {
                    $name::$variant(e)
                }
            }
        )+

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($name::$variant(e) => std::fmt::Display::fmt(e, f),)+
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $($name::$variant(e) => std::error::Error::source(e),)+
                }
            }
        }

        impl $crate::http::ClientError for $name {
            fn status(&self) -> ::http::StatusCode {
                match self {
                    $($name::$variant(e) => $crate::http::ClientError::status(e),)+
                }
            }

            fn code(&self) -> &'static str {
                match self {
                    $($name::$variant(e) => $crate::http::ClientError::code(e),)+
                }
            }

            fn retry_after(&self) -> Option<u32> {
                match self {
                    $($name::$variant(e) => $crate::http::ClientError::retry_after(e),)+
                }
            }

            fn request_id(&self) -> Option<std::sync::Arc<str>> {
                match self {
                    $($name::$variant(e) => $crate::http::ClientError::request_id(e),)+
                }
            }
        }
    };
}

pub(crate) use composite_error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_one_json_shape() {
        let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid-cursor", "not a cursor")
            .with_request_id("r-1".into())
            .retry_after(5);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": "invalid-cursor", "message": "not a cursor", "request_id": "r-1"})
        );
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
    }
}
