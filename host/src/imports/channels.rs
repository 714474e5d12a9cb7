//! The `channels` import. Channel fan-out is not wired into the host yet, so
//! every call answers `unavailable` (an ordinary error the guest can handle).

use crate::bindings::channels::{ChannelError, HistoryPage, Host, PresenceInfo};
use crate::bindings::types::Payload;
use crate::imports::HostState;

const NOT_YET: &str = "channels are not available in this version of the host";

impl Host for HostState {
    async fn publish(
        &mut self,
        _channel: String,
        _payload: Payload,
    ) -> wasmtime::Result<Result<String, ChannelError>> {
        Ok(Err(ChannelError::Unavailable(NOT_YET.into())))
    }

    async fn history(
        &mut self,
        _channel: String,
        _since: Option<String>,
        _limit: u32,
    ) -> wasmtime::Result<Result<HistoryPage, ChannelError>> {
        Ok(Err(ChannelError::Unavailable(NOT_YET.into())))
    }

    async fn presence(
        &mut self,
        _channel: String,
    ) -> wasmtime::Result<Result<PresenceInfo, ChannelError>> {
        Ok(Err(ChannelError::Unavailable(NOT_YET.into())))
    }
}
