//! The guest's calls of the `comet:edge` imports, served by the event's
//! capabilities: each WIT function is one call of the capability in host
//! types, its arguments and errors converted here. Calls that may wait for
//! I/O go through the event's [`Turn`], so waiting is not counted as the
//! guest's compute.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{HasSelf, Linker};

use super::convert;
use super::generated::EdgeHandler;
use super::generated::comet::edge::channels::{ChannelError, HistoryPage, PresenceInfo};
use super::generated::comet::edge::kv::KvError;
use super::generated::comet::edge::{channels, config, kv, log, types};
use crate::capabilities::{EventCapabilities, Purpose};
use crate::runtime::event::StoreState;
use crate::runtime::scheduler::Turn;

/// Per-event host state: what the event's host calls reach, and its place
/// in the scheduler.
#[derive(Debug)]
pub(crate) struct HostState {
    /// The capabilities the module was granted, prepared for this event.
    pub(crate) caps: EventCapabilities,
    /// Host calls that wait for I/O tell it, so waiting does not count as
    /// compute.
    pub(crate) turn: Turn,
    /// Why the event runs.
    pub(crate) purpose: Purpose,
    /// The module's event slot this event holds (freed with the store).
    pub(crate) slot: Option<OwnedSemaphorePermit>,
}

/// Add WASI (clocks, random, stdio; no files or sockets are granted) and the
/// `comet:edge` imports to a linker: every capability, linked once.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState<HostState>>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    EdgeHandler::add_to_linker::<_, HasSelf<HostState>>(linker, |state| &mut state.host)
}

impl types::Host for HostState {}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        let get = self.caps.kv.get(&key);
        Ok(self
            .turn
            .waiting(get)
            .await
            .map_err(|e| convert::kv_error(&e)))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        let set = self
            .caps
            .kv
            .set(&key, value, ttl_ms.map(Duration::from_millis));
        Ok(self
            .turn
            .waiting(set)
            .await
            .map_err(|e| convert::kv_error(&e)))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        let delete = self.caps.kv.delete(&key);
        Ok(self
            .turn
            .waiting(delete)
            .await
            .map_err(|e| convert::kv_error(&e)))
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, KvError>> {
        let increment = self.caps.kv.increment(&key, delta, None);
        Ok(self
            .turn
            .waiting(increment)
            .await
            .map_err(|e| convert::kv_error(&e)))
    }

    async fn increment_with_ttl(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<i64, KvError>> {
        let ttl = Some(Duration::from_millis(ttl_ms));
        let increment = self.caps.kv.increment(&key, delta, ttl);
        Ok(self
            .turn
            .waiting(increment)
            .await
            .map_err(|e| convert::kv_error(&e)))
    }
}

impl channels::Host for HostState {
    async fn publish(
        &mut self,
        channel: String,
        payload: types::Payload,
    ) -> wasmtime::Result<Result<String, ChannelError>> {
        let publish = self
            .caps
            .channels
            .publish(&channel, convert::payload_from(payload));
        Ok(self
            .turn
            .waiting(publish)
            .await
            .map_err(convert::channel_error))
    }

    async fn history(
        &mut self,
        channel: String,
        since: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<HistoryPage, ChannelError>> {
        let read = self
            .caps
            .channels
            .history(&channel, since.as_deref(), limit);
        Ok(history_page(self.turn.waiting(read).await))
    }

    async fn history_newest(
        &mut self,
        channel: String,
        limit: u32,
    ) -> wasmtime::Result<Result<HistoryPage, ChannelError>> {
        let read = self.caps.channels.newest(&channel, limit);
        Ok(history_page(self.turn.waiting(read).await))
    }

    async fn presence(
        &mut self,
        channel: String,
    ) -> wasmtime::Result<Result<PresenceInfo, ChannelError>> {
        let read = self.caps.channels.presence(&channel);
        Ok(match self.turn.waiting(read).await {
            Ok(presence) => Ok(PresenceInfo {
                connections: u32::try_from(presence.connections).unwrap_or(u32::MAX),
                sessions: presence.members.into_iter().map(|m| m.session).collect(),
            }),
            Err(e) => Err(convert::channel_error(e)),
        })
    }
}

/// A page of history read by the channels capability, as its WIT record.
fn history_page(
    read: Result<
        crate::capabilities::channels::HistoryPage,
        crate::capabilities::channels::CallError,
    >,
) -> Result<HistoryPage, ChannelError> {
    match read {
        Ok(page) => Ok(HistoryPage {
            messages: page.messages.iter().map(|m| convert::message(m)).collect(),
            next: page.next,
            reset: page.reset,
        }),
        Err(e) => Err(convert::channel_error(e)),
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.caps.log.log(convert::level(level), &message, &fields);
        Ok(())
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.caps.config.get(&key))
    }
}
