//! Channel names: 1..=255 bytes of a URL- and header-safe alphabet, with an
//! optional namespace prefix before the first `:` (`chat:room1`).

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
    fn namespace_is_the_prefix() {
        assert_eq!(namespace("chat:room1"), Some("chat"));
        assert_eq!(namespace("plain"), None);
    }
}
