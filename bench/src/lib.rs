//! The load generator of the peer comparison, as a small library: server
//! descriptions, subscriber clients, the publisher, statistics, `/proc`
//! sampling and the JSON report. The `loadgen` binary drives it.

mod deflate;
pub mod net;
pub mod payload;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod stats;
pub mod target;
pub mod tls;
pub mod transport;
