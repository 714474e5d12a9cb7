//! Channel names: 1..=255 bytes of a URL- and header-safe alphabet, with an
//! optional namespace prefix before the first `:` (`chat:room1`). A
//! [`ChannelName`] is checked once, where it enters the host; everything
//! after that takes the type and checks nothing again.

use std::borrow::Borrow;
use std::sync::Arc;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 255;

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("channel name is empty")]
    Empty,
    /// Over [`MAX_CHANNEL_BYTES`].
    #[error("channel name is {0} bytes, over the {MAX_CHANNEL_BYTES} byte limit")]
    TooLong(usize),
    /// A character outside the alphabet.
    #[error("channel name {name:?} has {found:?}; allowed are A-Z a-z 0-9 and _ - . : @ /")]
    BadCharacter {
        /// The name as given (cut to 64 chars).
        name: String,
        /// The first character refused.
        found: char,
    },
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '/')
}

/// Check a channel name against the rules.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_CHANNEL_BYTES {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(found) = name.chars().find(|c| !allowed(*c)) {
        return Err(NameError::BadCharacter {
            name: name.chars().take(64).collect(),
            found,
        });
    }
    Ok(())
}

/// A channel name that follows the rules. Cheap to clone (shared), and
/// hashes and compares like the `str` it holds, so maps keyed by it can be
/// looked up with a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Check `name` and make it a channel name.
    pub fn new(name: &str) -> Result<ChannelName, NameError> {
        validate(name)?;
        Ok(ChannelName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, if any.
    pub fn namespace(&self) -> Option<&str> {
        namespace(&self.0)
    }
}

impl std::ops::Deref for ChannelName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<&str> for ChannelName {
    type Error = NameError;
    fn try_from(name: &str) -> Result<Self, NameError> {
        ChannelName::new(name)
    }
}

/// The namespace of a channel: the part before the first `:`, if any.
pub fn namespace(name: &str) -> Option<&str> {
    name.split_once(':').map(|(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_alphabet() {
        assert!(validate("chat:room-1/a_b.c@d").is_ok());
        assert_eq!(validate(""), Err(NameError::Empty));
        assert!(matches!(
            validate(&"a".repeat(256)),
            Err(NameError::TooLong(256))
        ));
        assert!(validate(&"a".repeat(255)).is_ok());
        assert!(matches!(
            validate("a b"),
            Err(NameError::BadCharacter { found: ' ', .. })
        ));
        assert!(matches!(validate("é"), Err(NameError::BadCharacter { .. })));
    }

    #[test]
    fn names_are_checked_once_and_look_up_as_str() {
        let name = ChannelName::new("chat:a").unwrap();
        assert_eq!(name.namespace(), Some("chat"));
        let mut map = std::collections::HashMap::new();
        map.insert(name, 1);
        assert_eq!(map.get("chat:a"), Some(&1));
        assert!(ChannelName::new("no spaces").is_err());
    }

    #[test]
    fn namespace_is_the_prefix() {
        assert_eq!(namespace("chat:room1"), Some("chat"));
        assert_eq!(namespace("plain"), None);
    }
}
