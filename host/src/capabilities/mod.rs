//! What a handler may reach from inside its sandbox: one folder per host
//! import (`kv`, `channels`, `log`, `config`), each with its host side in
//! host types, its budgets and its metrics. `runtime::wit` turns the
//! guest's WIT calls into calls of these, and links them into the engine
//! once (the generated bindings are private there).
//!
//! Each is a [`Capability`], in the shape of Spin's factors: configured once
//! per module name (what the module was granted, shared by its versions, so
//! kv data and budgets carry over a deploy), and prepared for each event
//! (what that event's calls reach). [`Capabilities`] is the set a host has;
//! [`Granted`] what one module got; [`EventCapabilities`] one event's.
//!
//! Grants today: every module has `channels`, `log` and `config`; `kv`
//! unless its manifest entry says `kv = false` (then each call is refused).

pub mod channels;
pub mod config;
pub mod kv;
pub mod log;

use std::sync::{Arc, Weak};

use comet_config::spec::ModuleSpec;

use crate::channels::Node;
use crate::metrics::Metrics;

/// One host import a module can be granted.
pub trait Capability: Send + Sync + std::fmt::Debug + 'static {
    /// What one module was granted: made once per module name.
    type Module: Send + Sync + std::fmt::Debug + 'static;
    /// What one event's calls reach.
    type Event: Send + 'static;

    /// Configure for the module `grant` describes.
    fn configure(&self, grant: &Grant<'_>) -> Self::Module;

    /// Prepare for one event of a module configured so.
    fn prepare(module: &Arc<Self::Module>, event: &EventInfo) -> Self::Event;
}

/// A module, as the capabilities see it when they configure.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// Its name: tags its log lines, namespaces its kv keys.
    pub name: &'a Arc<str>,
    /// Its manifest entry (grants and config values).
    pub spec: &'a ModuleSpec,
}

/// Why an event runs: what its guest may do differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An ordinary event.
    Event,
    /// on-publish: publishing is refused, so a hook cannot recurse.
    PublishHook,
    /// The deploy-time start check: publishing is refused, kv is scratch.
    StartCheck,
}

/// One event, as the capabilities see it when they prepare.
#[derive(Debug, Clone)]
pub struct EventInfo {
    /// The request or connection id of the event (its log lines carry it).
    pub id: Arc<str>,
    /// Why it runs.
    pub purpose: Purpose,
}

/// Every capability of a host.
#[derive(Debug)]
pub struct Capabilities {
    kv: kv::KvCapability,
    channels: channels::ChannelsCapability,
    log: log::LogCapability,
    config: config::ConfigCapability,
}

impl Capabilities {
    /// kv in `store`, channels on `node` published to through `publisher`
    /// (see [`channels::ChannelsCapability`] for why weakly), kv counted in
    /// `metrics`.
    pub fn new(
        store: Arc<dyn kv::KvStore>,
        node: Arc<Node>,
        publisher: Weak<dyn channels::GuestPublisher>,
        metrics: Arc<Metrics>,
    ) -> Capabilities {
        Capabilities {
            kv: kv::KvCapability::new(store, metrics),
            channels: channels::ChannelsCapability::new(node, publisher),
            log: log::LogCapability,
            config: config::ConfigCapability,
        }
    }

    /// The capabilities of a module loaded on its own (benchmarks, tests):
    /// channels on `node`, kv in memory, and nothing to publish through.
    pub fn alone(node: Arc<Node>, metrics: Arc<Metrics>) -> Capabilities {
        Capabilities::new(
            Arc::new(kv::MemoryKv::default()),
            node,
            channels::no_publisher(),
            metrics,
        )
    }

    /// Configure every capability for module `name`.
    pub fn configure(&self, name: Arc<str>, spec: &ModuleSpec) -> Granted {
        let grant = Grant { name: &name, spec };
        Granted {
            kv: Arc::new(self.kv.configure(&grant)),
            channels: Arc::new(self.channels.configure(&grant)),
            log: Arc::new(self.log.configure(&grant)),
            config: Arc::new(self.config.configure(&grant)),
            name,
        }
    }
}

/// What one module was granted.
#[derive(Debug)]
pub struct Granted {
    name: Arc<str>,
    kv: Arc<kv::ModuleKv>,
    channels: Arc<channels::ModuleChannels>,
    log: Arc<log::ModuleLog>,
    config: Arc<config::ModuleConfig>,
}

impl Granted {
    /// The module's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// What one event of the module reaches.
    pub fn prepare(&self, event: &EventInfo) -> EventCapabilities {
        EventCapabilities {
            kv: kv::KvCapability::prepare(&self.kv, event),
            channels: channels::ChannelsCapability::prepare(&self.channels, event),
            log: log::LogCapability::prepare(&self.log, event),
            config: config::ConfigCapability::prepare(&self.config, event),
        }
    }
}

/// What one event's host calls reach.
#[derive(Debug)]
pub struct EventCapabilities {
    /// `kv`.
    pub kv: kv::EventKv,
    /// `channels`.
    pub channels: channels::EventChannels,
    /// `log`.
    pub log: log::EventLog,
    /// `config`.
    pub config: config::EventConfig,
}
