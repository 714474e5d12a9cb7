//! The operations a WebSocket client sends: one JSON object per text frame,
//! tagged by `op` (see PROTOCOL.md). Parsing tells a frame that is not a
//! JSON object (`malformed-frame`) from an object that is not a known
//! operation (`bad-operation`), and keeps the client's `id` for the answer.

use serde::Deserialize;
use serde_json::Value;

/// A client operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    /// Join a channel, from `since` when given.
    Subscribe {
        /// The channel's name (checked later, by the channel layer).
        channel: String,
        /// A cursor to resume from.
        since: Option<String>,
        /// A token for on-subscribe.
        token: Option<String>,
        /// Echoed in the answer.
        #[serde(default)]
        id: Value,
    },
    /// Leave a channel.
    Unsubscribe {
        /// The channel's name.
        channel: String,
        /// Echoed in the answer.
        #[serde(default)]
        id: Value,
    },
    /// Publish to a channel (when the server allows clients to).
    Publish {
        /// The channel's name.
        channel: String,
        /// A text payload.
        data: Option<String>,
        /// A binary payload, base64.
        data_b64: Option<String>,
        /// Echoed in the answer.
        #[serde(default)]
        id: Value,
    },
    /// A message for the handler's on-message hook.
    Message {
        /// The message.
        data: String,
        /// Accepted for symmetry with the other operations; on-message
        /// answers with its own frames.
        #[serde(default)]
        id: Value,
    },
}

/// Why a text frame is not an operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    /// Not a JSON object.
    #[error("a text frame must be a JSON object with an \"op\" field")]
    Malformed,
    /// A JSON object, but not a known operation.
    #[error("{message}")]
    Bad {
        /// The frame's `id`, for the answer.
        id: Value,
        /// What is wrong, from serde.
        message: String,
    },
}

impl OpError {
    /// The error code sent to the client.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Malformed => "malformed-frame",
            OpError::Bad { .. } => "bad-operation",
        }
    }

    /// The `id` of the frame, `null` when it had none or was not an object.
    pub fn id(&self) -> Value {
        match self {
            OpError::Malformed => Value::Null,
            OpError::Bad { id, .. } => id.clone(),
        }
    }
}

/// Parse one text frame.
pub fn parse(text: &str) -> Result<Op, OpError> {
    let value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(OpError::Malformed),
    };
    let id = value.get("id").cloned().unwrap_or_default();
    serde_json::from_value(value).map_err(|e| OpError::Bad {
        id,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_parse() {
        let op = parse(r#"{"op":"subscribe","channel":"a","since":"x","id":7}"#).unwrap();
        assert_eq!(
            op,
            Op::Subscribe {
                channel: "a".into(),
                since: Some("x".into()),
                token: None,
                id: Value::from(7),
            }
        );
        assert!(matches!(
            parse(r#"{"op":"message","data":"hi"}"#),
            Ok(Op::Message { .. })
        ));
    }

    #[test]
    fn errors_keep_the_id() {
        assert_eq!(parse("[1]").unwrap_err(), OpError::Malformed);
        assert_eq!(parse("{not json").unwrap_err().code(), "malformed-frame");
        let e = parse(r#"{"op":"dance","id":"x"}"#).unwrap_err();
        assert_eq!(e.code(), "bad-operation");
        assert_eq!(e.id(), Value::from("x"));
        let e = parse(r#"{"op":"subscribe","channel":"a","extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }
}
