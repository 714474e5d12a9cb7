//! Channels: names, cursors, messages and their wire forms, the broker that
//! keeps history, and the hub that fans messages out to connections.

pub mod broker;
pub mod cursor;
pub mod hub;
pub mod message;
pub mod name;
pub mod rules;

pub use broker::{Broker, Gap, History, HistoryLimits, MemoryBroker};
pub use cursor::{Cursor, CursorError, Position};
pub use hub::{Connection, Event, Hub, HubConfig, HubError, TransportKind};
pub use message::{Message, Payload};
pub use rules::{ChannelRules, Namespaces};
