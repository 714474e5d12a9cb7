//! The wire contract of Comet, the parts read from untrusted bytes: channel
//! names, resume cursors, the operations of a WebSocket client, the head of
//! a connection's first `GET /comet/sse` or `GET /comet/ws` request,
//! origins (the `Origin` and `Host` headers, and the origins an operator
//! allows), and the client's address as proxies pass it on (`forwarded`:
//! `X-Forwarded-For` and `Forwarded`; `proxy`: the PROXY protocol), and a
//! WebSocket client's frames, compressed or not (`frame`). It has no
//! runtime in it (no tokio, no wasmtime), so the fuzz
//! targets in `fuzz/` build it in seconds and the host, the load generator
//! and the tests share one definition.

pub mod cursor;
pub mod forwarded;
pub mod frame;
pub mod head;
pub mod name;
pub mod ops;
pub mod origin;
pub mod proxy;

/// Path prefix of the built-in endpoints (`/comet/sse`, `/comet/ws`...),
/// reserved: no route may claim it.
pub const ENDPOINT_PREFIX: &str = "/comet/";
