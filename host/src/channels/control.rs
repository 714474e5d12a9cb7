//! Commands that act on client connections wherever they are: a backend
//! asks one node, which sends the command through the broker to every node
//! (itself included); each node applies it to its own connections (see
//! [`Directory`](super::directory::Directory)). JSON on the wire, so nodes
//! of different versions can read each other's.

use serde::{Deserialize, Serialize};

use super::cursor::Position;
use super::name::ChannelName;

/// Close codes a server-side disconnect may use (WebSocket close codes of
/// the private range): below [`NO_RECONNECT_CODES`] the client may
/// reconnect, from it on it must not.
pub const DISCONNECT_CODES: std::ops::RangeInclusive<u16> = 4000..=4999;

/// A code of [`DISCONNECT_CODES`] the server API may not use: the
/// WebSocket endpoint closes slow consumers with it.
pub const SLOW_CONSUMER_CODE: u16 = 4008;

/// The first close code that tells the client not to reconnect.
pub const NO_RECONNECT_CODES: u16 = 4500;

/// Longest disconnect reason, in bytes (a WebSocket close frame holds 123).
pub const MAX_REASON_BYTES: usize = 120;

/// Which connections a command is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every connection of a user (the session attribute `user`), on
    /// every node.
    User(String),
    /// One connection, by its id.
    Connection(String),
}

/// A server-side disconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// The close code, in [`DISCONNECT_CODES`].
    pub code: u16,
    /// Why, for the client.
    pub reason: String,
}

impl Disconnect {
    /// Whether the client may reconnect.
    pub fn reconnect(&self) -> bool {
        self.code < NO_RECONNECT_CODES
    }

    /// What a stream's last event and a held poll's answer say:
    /// `{"error": "disconnected", "message", "code", "reconnect"}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": "disconnected", "message": self.reason, "code": self.code,
            "reconnect": self.reconnect(),
        })
    }
}

/// What to do to the target's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    /// Close them.
    Disconnect(Disconnect),
    /// Subscribe them to a channel (for the life of each connection), from
    /// a position (`None`: from now on).
    Subscribe {
        /// The channel (checked by the sender; checked again on arrival).
        channel: String,
        /// Where to start: epoch and offset.
        since: Option<(u64, u64)>,
    },
    /// Unsubscribe them from a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
}

/// One command for the connections of [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Whose connections.
    pub target: Target,
    /// What to do.
    pub action: Action,
}

impl Action {
    /// Subscribe to `channel` from `since`.
    pub fn subscribe(channel: &ChannelName, since: Option<Position>) -> Action {
        Action::Subscribe {
            channel: channel.to_string(),
            since: since.map(|p| (p.epoch, p.offset)),
        }
    }
}

impl Command {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Read a command another node sent; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Command> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_travel_as_json() {
        let command = Command {
            target: Target::User("ann".into()),
            action: Action::subscribe(
                &ChannelName::new("news").unwrap(),
                Some(Position {
                    epoch: 7,
                    offset: 3,
                }),
            ),
        };
        assert_eq!(Command::decode(&command.encode()), Some(command));
        assert_eq!(Command::decode(br#"{"nonsense":1}"#), None);
        let close = Disconnect {
            code: 4500,
            reason: "banned".into(),
        };
        assert!(!close.reconnect());
    }
}
