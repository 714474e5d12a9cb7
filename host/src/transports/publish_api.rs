//! `POST /comet/publish/CHANNEL`: the server-side publish API, behind a
//! bearer token, through the module's on-publish.

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{EndpointConfig, error, hub_error};
use crate::auth::check_bearer;
use crate::bindings::PublishSource;
use crate::channels::Payload;
use crate::channels::hub::DEFAULT_MAX_PAYLOAD;
use crate::dispatch::{Body, full, next_request_id};
use crate::module::HandlerModule;
use crate::publish::{self, PublishError};

pub(super) async fn serve(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    request: hyper::Request<Incoming>,
) -> Response<Body> {
    if request.method() != http::Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "publish with POST",
        );
    }
    if let Err(response) = check_bearer(request.headers(), &config.publish_token, "publish token") {
        return response;
    }
    let channel = request
        .uri()
        .path()
        .strip_prefix("/comet/publish/")
        .unwrap_or_default();
    let channel = match percent_decode(channel) {
        Some(c) => c,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid-channel",
                "channel is not valid UTF-8",
            );
        }
    };
    let is_text = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| {
            ct.starts_with("text/")
                || ct.starts_with("application/json")
                || ct.starts_with("application/x-www-form-urlencoded")
        });
    let body = match Limited::new(request.into_body(), DEFAULT_MAX_PAYLOAD)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("payload is over the {DEFAULT_MAX_PAYLOAD} byte limit"),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad-body", e),
    };
    let payload = if is_text {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Payload::Text(text),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid-text",
                    "body is not UTF-8; send binary payloads as application/octet-stream",
                );
            }
        }
    } else {
        Payload::Binary(body)
    };
    match publish::publish(
        module,
        next_request_id(),
        &channel,
        payload,
        PublishSource::Api,
    )
    .await
    {
        Ok(message) => {
            let body = serde_json::json!({
                "channel": &*message.channel,
                "cursor": message.cursor().encode(),
                "time": message.published_at_ms,
            });
            let mut response = Response::new(full(body.to_string()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(PublishError::Hub(e)) => hub_error(&e),
        Err(PublishError::Rejected(reason)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "rejected", reason)
        }
        Err(e @ PublishError::Hook(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "hook-failed", e)
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let decoded: Vec<u8> = form_urlencoded::parse(format!("c={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(decoded).ok()
}
