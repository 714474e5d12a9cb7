//! Helpers for the real-time events: payloads, connection sessions, and the
//! actions and verdicts a handler returns.

use crate::{Action, CloseFrame, ConnectOutcome, Connection, Outgoing, Payload, Rejection};

impl Payload {
    /// The payload as text, if it is a text payload.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Payload::Text(t) => Some(t),
            Payload::Binary(_) => None,
        }
    }

    /// The payload's bytes, whichever kind it is.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Text(t) => t.as_bytes(),
            Payload::Binary(b) => b,
        }
    }

    /// A text payload holding `value` serialized as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Payload::Text)
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Payload::Text(text.to_string())
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Payload::Text(text)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Binary(bytes)
    }
}

impl Connection {
    /// A session attribute set when the connection was accepted.
    pub fn session(&self, key: &str) -> Option<&str> {
        self.session
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl ConnectOutcome {
    /// Accept, storing these session attributes with the connection.
    pub fn accept<K: Into<String>, V: Into<String>>(
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        ConnectOutcome::Accept(
            attributes
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Refuse with an HTTP status and a reason.
    pub fn reject(status: u16, reason: impl Into<String>) -> Self {
        ConnectOutcome::Reject(Rejection {
            status,
            reason: reason.into(),
        })
    }
}

impl Action {
    /// Send a payload back to the client.
    pub fn send(payload: impl Into<Payload>) -> Self {
        Action::Send(payload.into())
    }

    /// Publish to a channel (on-publish still applies).
    pub fn publish(channel: impl Into<String>, payload: impl Into<Payload>) -> Self {
        Action::Publish(Outgoing {
            channel: channel.into(),
            payload: payload.into(),
        })
    }

    /// Close the connection.
    pub fn close(code: u16, reason: impl Into<String>) -> Self {
        Action::Close(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}
