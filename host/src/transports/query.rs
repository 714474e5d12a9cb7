//! What a client asks for in the query string of a subscribing endpoint
//! (and the `Last-Event-ID` header): channels, cursors, a token, a timeout.

use std::collections::HashSet;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::channels::{ChannelError, ChannelName, Cursor};
use crate::http::ApiError;

/// A subscribing request, checked.
#[derive(Debug, Default)]
pub(crate) struct Ask {
    /// Channels to subscribe to, each once, in the order first named.
    pub(crate) channels: Vec<ChannelName>,
    /// Where to resume (every `since` and `Last-Event-ID`, merged).
    pub(crate) since: Cursor,
    /// Credential for on-subscribe.
    pub(crate) token: Option<String>,
    /// Long-poll hold time.
    pub(crate) timeout: Option<Duration>,
}

/// Channel names checked, repeats removed (so a name given 5,000 times
/// costs one subscription), at most `max` distinct ones.
pub(crate) fn channel_list<'a>(
    names: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Result<Vec<ChannelName>, ChannelError> {
    let mut seen = HashSet::new();
    let mut channels = Vec::new();
    for name in names {
        if seen.contains(name) {
            continue;
        }
        let channel = ChannelName::new(name)?;
        if channels.len() == max {
            return Err(ChannelError::TooManyChannels(max));
        }
        seen.insert(channel.clone());
        channels.push(channel);
    }
    Ok(channels)
}

/// Parse `channel=` (repeatable, at least one), `since=` (repeatable;
/// merged), `token=`, `timeout=` (ms) and the `Last-Event-ID` header.
/// `max_channels` bounds the distinct channels.
pub(crate) fn parse(
    query: Option<&str>,
    headers: &HeaderMap,
    max_channels: usize,
) -> Result<Ask, ApiError> {
    let ask = parse_any(query, headers, max_channels)?;
    if ask.channels.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no-channel",
            "give at least one channel=NAME",
        ));
    }
    Ok(ask)
}

/// [`parse`], where no channel at all is fine (a WebSocket may subscribe
/// later, with operations).
pub(crate) fn parse_any(
    query: Option<&str>,
    headers: &HeaderMap,
    max_channels: usize,
) -> Result<Ask, ApiError> {
    let mut ask = Ask::default();
    let mut names = Vec::new();
    let merge = |s: &str, ask: &mut Ask| -> Result<(), ApiError> {
        let cursor = Cursor::decode(s).map_err(ChannelError::from)?;
        ask.since.merge(&cursor);
        Ok(())
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "channel" => names.push(v.into_owned()),
            "since" if !v.is_empty() => merge(&v, &mut ask)?,
            "token" => ask.token = Some(v.into_owned()),
            "timeout" => {
                let ms: u64 = v.parse().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid-timeout",
                        "timeout must be milliseconds",
                    )
                })?;
                ask.timeout = Some(Duration::from_millis(ms));
            }
            _ => {}
        }
    }
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok())
        && !id.is_empty()
    {
        merge(id, &mut ask)?;
    }
    ask.channels = channel_list(names.iter().map(String::as_str), max_channels)?;
    Ok(ask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_channels_count_once() {
        let query = format!("{}channel=b", "channel=a&".repeat(5000));
        let ask = parse(Some(&query), &HeaderMap::new(), 2).unwrap();
        let names: Vec<&str> = ask.channels.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let e = parse(Some("channel=a&channel=b&channel=c"), &HeaderMap::new(), 2).unwrap_err();
        assert_eq!(e.code, "too-many-channels");
    }

    #[test]
    fn bad_input_has_its_code() {
        let code = |q: &str| parse(Some(q), &HeaderMap::new(), 100).unwrap_err().code;
        assert_eq!(code(""), "no-channel");
        assert_eq!(code("channel=a%20b"), "invalid-channel");
        assert_eq!(code("channel=a&since=!!"), "invalid-cursor");
        assert_eq!(code("channel=a&timeout=soon"), "invalid-timeout");
        // A WebSocket may open without a channel, not with a bad one.
        let none = parse_any(None, &HeaderMap::new(), 100).unwrap();
        assert!(none.channels.is_empty());
        let bad = parse_any(Some("since=!!"), &HeaderMap::new(), 100).unwrap_err();
        assert_eq!(bad.code, "invalid-cursor");
    }
}
