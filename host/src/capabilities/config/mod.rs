//! The `config` capability: read-only values from the module's manifest
//! entry or the command line (`--var KEY=VALUE`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Capability, EventInfo, Grant};

/// The `config` capability (every module has it).
#[derive(Debug, Default)]
pub struct ConfigCapability;

/// One module's values.
#[derive(Debug)]
pub struct ModuleConfig {
    values: BTreeMap<String, String>,
}

/// What one event's `config.get` reads.
#[derive(Debug)]
pub struct EventConfig {
    module: Arc<ModuleConfig>,
}

impl Capability for ConfigCapability {
    type Module = ModuleConfig;
    type Event = EventConfig;

    fn configure(&self, grant: &Grant<'_>) -> ModuleConfig {
        ModuleConfig {
            values: grant.spec.config.clone(),
        }
    }

    fn prepare(module: &Arc<ModuleConfig>, _: &EventInfo) -> EventConfig {
        EventConfig {
            module: module.clone(),
        }
    }
}

impl EventConfig {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<String> {
        self.module.values.get(key).cloned()
    }
}
