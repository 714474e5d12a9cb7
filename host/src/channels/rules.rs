//! Per-namespace channel rules: how much history a channel keeps, whether
//! clients may publish to it, and which module's hooks decide for it.

use std::collections::HashMap;
use std::sync::Arc;

use comet_config::manifest::Manifest;

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
    /// The channel rules a manifest sets; namespaces without hooks of their
    /// own use the channel module's.
    pub fn from_manifest(manifest: &Manifest) -> Namespaces {
        let hooks = manifest.channel_module.as_deref().map(Arc::<str>::from);
        Namespaces {
            default: ChannelRules {
                history: manifest.default_history.unwrap_or_default(),
                client_publish: manifest.client_publish,
                hooks: hooks.clone(),
            },
            by_name: manifest
                .namespaces
                .iter()
                .map(|(name, ns)| {
                    let rules = ChannelRules {
                        history: ns.history,
                        client_publish: ns.client_publish,
                        hooks: ns.hooks.as_deref().map(Arc::from).or_else(|| hooks.clone()),
                    };
                    (name.clone(), rules)
                })
                .collect(),
        }
    }

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
