//! Where channels live: the `[broker]` section and `--broker`.

/// The Redis key prefix by default.
pub const DEFAULT_PREFIX: &str = "comet";

/// The `[broker]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BrokerSpec {
    /// In this process (the default).
    #[default]
    Memory,
    /// Redis, shared by every node.
    Redis {
        /// `redis://` or `rediss://` URL.
        url: String,
        /// Key prefix.
        prefix: String,
    },
}

impl BrokerSpec {
    /// Parse `--broker`: `memory`, or a `redis://` / `rediss://` URL.
    pub fn from_flag(value: &str) -> Result<BrokerSpec, String> {
        if value == "memory" {
            return Ok(BrokerSpec::Memory);
        }
        check_redis_url(value)?;
        Ok(BrokerSpec::Redis {
            url: value.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
        })
    }
}

/// Refuse anything but a `redis://` or `rediss://` URL, with the form to use.
pub(crate) fn check_redis_url(url: &str) -> Result<(), String> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a Redis URL: use redis://[user[:password]@]host[:port][/db], or rediss:// for TLS",
            redacted(url)
        ))
    }
}

/// A Redis URL without its password, for logs and errors.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() + 3 => {
            let userinfo = &rest[..at - scheme.len() - 3];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://app:s3cret@db:6379/2"),
            "redis://app:***@db:6379/2"
        );
        assert_eq!(redacted("rediss://:pw@db"), "rediss://:***@db");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn the_broker_flag() {
        assert_eq!(BrokerSpec::from_flag("memory"), Ok(BrokerSpec::Memory));
        assert!(
            BrokerSpec::from_flag("http://x")
                .unwrap_err()
                .contains("not a Redis URL")
        );
    }
}
