//! `POST /comet/publish/CHANNEL`: the server-side publish API, behind a
//! bearer token, through the channel's on-publish.

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};

use super::Endpoints;
use crate::channels::node::DEFAULT_MAX_PAYLOAD;
use crate::channels::{ChannelError, ChannelName, Payload};
use crate::hooks::{Hooks, PublishSource};
use crate::http::auth::check_bearer;
use crate::http::{ApiError, Body, declared_length, full, next_request_id, read_bounded};

/// `POST /comet/publish/CHANNEL`: the body, published through on-publish.
pub(super) async fn serve<B>(
    hooks: &Arc<dyn Hooks>,
    endpoints: &Endpoints,
    request: http::Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = &endpoints.config;
    if request.method() != http::Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "publish with POST",
        ));
    }
    check_bearer(request.headers(), &config.publish_token, "publish token")?;
    let name = request
        .uri()
        .path()
        .strip_prefix("/comet/publish/")
        .unwrap_or_default();
    let name = percent_decode(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-channel",
            "channel is not valid UTF-8",
        )
    })?;
    let channel = ChannelName::new(&name).map_err(ChannelError::from)?;
    let is_text = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| {
            ct.starts_with("text/")
                || ct.starts_with("application/json")
                || ct.starts_with("application/x-www-form-urlencoded")
        });
    let too_large = |size| {
        ApiError::from(ChannelError::TooLarge {
            size,
            max: DEFAULT_MAX_PAYLOAD,
        })
    };
    let declared = declared_length(request.headers());
    let body = read_bounded(
        declared,
        request.into_body(),
        DEFAULT_MAX_PAYLOAD,
        too_large,
    )
    .await?;
    let payload = if is_text {
        let text = String::from_utf8(body.to_vec()).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid-text",
                "body is not UTF-8; send binary payloads as application/octet-stream",
            )
        })?;
        Payload::Text(text)
    } else {
        Payload::Binary(body)
    };
    let published = endpoints
        .publisher
        .publish(
            &**hooks,
            next_request_id(),
            &channel,
            payload,
            PublishSource::Api,
        )
        .await?;
    let body = serde_json::json!({
        "channel": published.channel.as_str(),
        "cursor": published.cursor().encode(),
        "time": published.time_ms,
    });
    let mut response = Response::new(full(body.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn percent_decode(s: &str) -> Option<String> {
    let decoded: Vec<u8> = form_urlencoded::parse(format!("c={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(decoded).ok()
}
