//! The `config` import: read-only values from the manifest or command line.

use crate::bindings::config::Host;
use crate::imports::HostState;

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.services.config.get(&key).cloned())
    }
}
