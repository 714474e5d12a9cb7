//! Publish to channels and read their history and presence from a handler.
//!
//! ```no_run
//! let cursor = comet_sdk::channels::publish("news", "hello");
//! ```

use crate::bindings::comet::edge::channels as raw;
pub use crate::bindings::comet::edge::channels::{ChannelError, HistoryPage, PresenceInfo};
use crate::{Cursor, Payload};

/// Publish `payload` to `channel` (through on-publish); returns its cursor.
pub fn publish(channel: &str, payload: impl Into<Payload>) -> Result<Cursor, ChannelError> {
    raw::publish(channel, &payload.into())
}

/// Up to `limit` messages after `since` (`None`: from the oldest kept).
pub fn history(
    channel: &str,
    since: Option<&str>,
    limit: u32,
) -> Result<HistoryPage, ChannelError> {
    raw::history(channel, since, limit)
}

/// Up to `limit` of the newest messages of `channel`, newest first (for a
/// first page render); `next` is the cursor after the newest.
pub fn history_newest(channel: &str, limit: u32) -> Result<HistoryPage, ChannelError> {
    raw::history_newest(channel, limit)
}

/// Who is subscribed to `channel` on this host.
pub fn presence(channel: &str) -> Result<PresenceInfo, ChannelError> {
    raw::presence(channel)
}
