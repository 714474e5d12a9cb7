//! Per-namespace channel rules: how much history a channel keeps, whether
//! clients may publish to it, and which module's hooks decide for it.

use std::collections::HashMap;
use std::sync::Arc;

use super::broker::HistoryLimits;
use super::name;

/// What applies to the channels of one namespace. The default keeps the
/// default history and lets no client publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRules {
    /// History kept per channel.
    pub history: HistoryLimits,
    /// Whether WebSocket clients may publish (the server API and guests
    /// always may). Off unless the namespace allows it: an anonymous
    /// client should not be able to create channels and fill history.
    pub client_publish: bool,
    /// The module whose on-subscribe and on-publish run for these channels;
    /// `None`: the module serving the connection or publishing.
    pub hooks: Option<Arc<str>>,
}

/// Rules by namespace (the part of a channel name before the first `:`),
/// with a default for channels outside any listed namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Rules of channels in no listed namespace.
    pub default: ChannelRules,
    /// Rules of listed namespaces.
    pub by_name: HashMap<String, ChannelRules>,
}

impl Namespaces {
    /// The rules that apply to `channel`.
    pub fn rules(&self, channel: &str) -> &ChannelRules {
        name::namespace(channel)
            .and_then(|ns| self.by_name.get(ns))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_channels_get_their_rules() {
        let mut ns = Namespaces::default();
        ns.by_name.insert(
            "rw".into(),
            ChannelRules {
                client_publish: true,
                ..ChannelRules::default()
            },
        );
        assert!(ns.rules("rw:news").client_publish);
        assert!(!ns.rules("ro:news").client_publish);
        assert!(!ns.rules("rw").client_publish, "no colon: no namespace");
    }
}
