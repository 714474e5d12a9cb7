//! The configuration model of a Comet app: what a user writes in the
//! manifest (`comet.toml`) or on the command line, read into checked values.
//! It has no runtime in it (no tokio, no wasmtime): the host builds its
//! server from these values, and the `manifest` fuzz target in `fuzz/`
//! builds this crate alone in seconds.

pub mod broker;
pub mod limits;
pub mod manifest;
pub mod spec;
