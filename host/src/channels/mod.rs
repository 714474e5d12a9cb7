//! Channels: names, cursors, messages and their wire forms, the [`Broker`]
//! boundary and the embedded [`MemoryBroker`], the local [`Hub`], and the
//! [`Node`] that ties them together for transports and guests.
//!
//! The path of a published message: `Node::publish` → `Broker::publish`
//! (position assigned, history stored) → the broker's delivery to every
//! subscribed node's [`Sink`] (the hub) → each subscriber's bounded queue
//! (its `inbox`) → [`Connection::next`], which checks the offset, and the
//! transport; or, for a transport whose task waits idle with an [`Outlet`],
//! a drain that checks the offset and writes to the outlet itself.

pub mod admission;
pub mod broker;
pub mod connection;
pub mod control;
mod directory;
mod error;
pub mod hub;
pub mod inbox;
pub mod memory;
pub mod message;
pub mod node;
pub mod rules;
pub mod signal;
pub mod testing;

// The wire forms live in comet-wire (parsed from untrusted bytes, fuzzed
// without the runtime); they are part of this module's API as before.
pub use comet_wire::{cursor, name};

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use admission::{Admission, TransportKind};
pub use broker::{
    Broker, BrokerError, BrokerStats, Gap, History, HistoryLimits, Member, NodeInfo, Presence,
    Published, Sink,
};
pub use connection::{Backlog, Connection, Event, Reset};
pub use control::{Action, Command, Disconnect, Target};
pub use cursor::{Cursor, CursorError, Position};
pub use directory::USER;
pub use error::ChannelError;
pub use hub::Hub;
pub use inbox::{Outlet, OutletFull, Session};
pub use memory::{MemoryBroker, MemoryBrokerConfig};
pub use message::{Message, Payload};
pub use name::{ChannelName, NameError};
pub use node::{Node, NodeConfig, NodeStats};
pub use rules::{ChannelRules, Namespaces};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lock a mutex, going on with the data if a panic poisoned it: every
/// critical section here leaves its data consistent between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
