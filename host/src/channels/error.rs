//! [`ChannelError`]: every way a channel operation can fail (the status and
//! code clients see are decided at the edge, `edge::errors`).

use super::broker::BrokerError;
use super::cursor::CursorError;
use super::name::NameError;

/// Why a channel operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Bad channel name.
    #[error(transparent)]
    InvalidChannel(#[from] NameError),
    /// A cursor the server did not issue.
    #[error(transparent)]
    InvalidCursor(#[from] CursorError),
    /// The payload is over the limit.
    #[error("payload of {size} bytes is over the {max} byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A connection (or one request, or one hold) names too many channels.
    #[error("a connection may subscribe to at most {0} channels")]
    TooManyChannels(usize),
    /// The host holds as many connections as it may.
    #[error("the server holds its maximum of {0} connections")]
    ConnectionLimit(usize),
    /// The broker holds as many channels as it may.
    #[error("the server holds its maximum of {0} channels")]
    ChannelLimit(usize),
    /// The broker failed.
    #[error("{0}")]
    Unavailable(String),
    /// The server is shutting down.
    #[error("the server is shutting down; reconnect shortly")]
    Closing,
}

impl From<BrokerError> for ChannelError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::ChannelLimit(max) => ChannelError::ChannelLimit(max),
            e @ BrokerError::Unavailable(_) => ChannelError::Unavailable(e.to_string()),
        }
    }
}
