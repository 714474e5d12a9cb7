//! A connection's first request served straight on the socket, without
//! hyper: a `GET /comet/sse` stream or a `GET /comet/ws` upgrade.
//!
//! hyper keeps an 8 KiB write buffer and a read buffer that grows to 16 KiB
//! for the life of every HTTP/1 connection; for an idle SSE stream that is
//! most of its memory (heaptrack: 27 KiB per stream through hyper). For a
//! WebSocket, hyper's upgrade (reading the request, answering it, handing
//! the socket over to a second task) was a fifth of the CPU of opening one.
//! A first request that arrives whole is therefore served here: the head
//! is parsed with httparse from a peek (`comet_wire::head`), the same
//! hooks and checks run as on hyper's path, and an SSE stream's frames are
//! written as chunks of one chunked response (the connection closing after
//! it), a WebSocket session gets a task of its own after the `101`. Anything
//! else (HTTP/2, a partial head, a second request on a kept-alive
//! connection, any other path) goes to hyper as before.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use comet_wire::head::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::socket::{Framing, Pump, PumpEnd, SharedSocket, chunk_header};
use super::{EndpointConfig, Format, Stream, request_stream, ws};
use crate::addresses::AddressTicket;
use crate::http::ApiError;
use crate::module::HandlerModule;

/// Largest request head taken on this path; longer ones go to hyper.
const MAX_HEAD: usize = 4096;

const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: text/event-stream\r\n\
cache-control: no-cache\r\n\
x-accel-buffering: no\r\n\
connection: close\r\n\
transfer-encoding: chunked\r\n\r\n";

/// A first request's head waiting on `tcp`, still unread.
pub(crate) struct Head {
    endpoint: Endpoint,
    request: http::Request<()>,
    /// The head's length in bytes.
    len: usize,
}

impl Head {
    /// The path under `/comet/` it asks for (`sse`, `ws`).
    pub(crate) fn endpoint(&self) -> &'static str {
        self.endpoint.name()
    }
}

/// The head of a request this path serves, if one waits whole on `tcp`.
/// Nothing is consumed.
pub(crate) async fn peek(tcp: &TcpStream) -> Option<Head> {
    let mut buf = vec![0u8; MAX_HEAD];
    let n = tcp.peek(&mut buf).await.ok()?;
    comet_wire::head::parse(&buf[..n]).map(|(endpoint, request, len)| Head {
        endpoint,
        request,
        len,
    })
}

/// Serve the request whose head is `head` with `module`'s hooks.
pub(crate) async fn serve(
    module: &Arc<HandlerModule>,
    config: &EndpointConfig,
    mut tcp: TcpStream,
    head: Head,
    remote: SocketAddr,
    ticket: Arc<AddressTicket>,
) {
    let mut bytes = vec![0u8; head.len];
    if tcp.read_exact(&mut bytes).await.is_err() {
        return;
    }
    drop(bytes);
    let write_timeout = config.write_timeout;
    match head.endpoint {
        Endpoint::Sse => {
            // Boxed: the hooks' futures are large and only live until the
            // stream opens; the task keeps only what streaming needs.
            let opened = request_stream(module, config, head.request, remote, Format::Sse);
            let opened = Box::pin(opened).await;
            match opened {
                Ok(stream) => run(tcp, stream, write_timeout).await,
                Err(refusal) => refuse(&mut tcp, &refusal, &[], write_timeout).await,
            }
        }
        // Boxed too: the handshake's state is large and short-lived.
        Endpoint::WebSocket => {
            Box::pin(ws::serve_direct(
                module,
                config,
                tcp,
                head.request,
                remote,
                ticket,
            ))
            .await
        }
    }
}

/// Answer with `error` as a whole HTTP/1.1 response (plus `headers`) within
/// `timeout`; the connection closes after it.
pub(super) async fn refuse(
    tcp: &mut TcpStream,
    error: &ApiError,
    headers: &[(&str, &str)],
    timeout: Duration,
) {
    let bytes = serialize(error, headers);
    let _ = tokio::time::timeout(timeout, tcp.write_all(&bytes)).await;
}

/// Write the stream until it ends, the client goes away, or bytes wait on
/// its socket for `write_timeout`. Once the response head is out, the hub's
/// drains write a stream of one channel's live messages themselves (see
/// `socket`). A client dropped as a slow consumer gets the `slow-consumer`
/// event and the final chunk after what it was being sent, if it reads
/// them within the timeout; else the connection is closed.
async fn run(tcp: TcpStream, mut stream: Stream, write_timeout: Duration) {
    let socket = Arc::new(SharedSocket::for_connection(
        tcp,
        Framing::SseChunk,
        stream.connection(),
    ));
    // The response head goes out with the backlog.
    let mut chunk = RESPONSE_HEAD.to_vec();
    let mut frames: Vec<Bytes> = Vec::new();
    while let Some(frame) = stream.ready_frame() {
        frames.push(frame);
    }
    append_chunk(&mut chunk, &frames);
    if !send(&socket, &chunk, write_timeout).await {
        stream.end("slow consumer");
        return;
    }
    stream.write_through(&socket);
    let mut pump = Pump::new(write_timeout);
    // Nothing is expected from the client; reading notices it leaving.
    let mut probe = [0u8; 32];
    loop {
        let frame = tokio::select! {
            frame = stream.next_frame() => frame,
            read = poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut probe);
                ready!(socket.poll_read(cx, &mut buf))?;
                Poll::Ready(Ok::<_, std::io::Error>(buf.filled().len()))
            }) => match read {
                Ok(n) if n > 0 => continue,
                // Closed or failed: the stream's drop reports it.
                _ => return,
            },
            end = poll_fn(|cx| pump.poll(&socket, cx)) => {
                if end == PumpEnd::Stalled {
                    stream.end("slow consumer");
                }
                return;
            }
        };
        let last = frame.is_none();
        frames.clear();
        frames.extend(frame);
        // Take whatever else is ready, so a burst is one write.
        while let Some(more) = stream.ready_frame() {
            frames.push(more);
        }
        chunk.clear();
        append_chunk(&mut chunk, &frames);
        if last {
            chunk.extend_from_slice(b"0\r\n\r\n");
        }
        if !send(&socket, &chunk, write_timeout).await {
            stream.end("slow consumer");
            return;
        }
        if last {
            // What waits goes out before the socket closes.
            let _ = tokio::time::timeout(write_timeout, socket.flushed()).await;
            return;
        }
    }
}

/// Write all of `bytes` (whole frames) to `socket`, once there is room,
/// within `timeout`. A write is never cut short by the slow-consumer
/// signal: it ends at an event boundary, and the stream's next frame says
/// why it ends.
async fn send(socket: &SharedSocket, bytes: &[u8], timeout: Duration) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let write = poll_fn(|cx| socket.poll_write_own(cx, bytes));
    matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(_)))
}

/// One chunk of the chunked body holding `frames`, appended to `out`.
fn append_chunk(out: &mut Vec<u8>, frames: &[Bytes]) {
    let len: usize = frames.iter().map(Bytes::len).sum();
    if len == 0 {
        return;
    }
    let (head, n) = chunk_header(len);
    out.extend_from_slice(&head[..n]);
    for f in frames {
        out.extend_from_slice(f);
    }
    out.extend_from_slice(b"\r\n");
}

/// A whole refusal as HTTP/1.1 bytes, with `headers` besides its own; the
/// connection closes after it.
fn serialize(error: &ApiError, headers: &[(&str, &str)]) -> Vec<u8> {
    let status = error.status;
    let retry_after = error.retry_after;
    let body = error.body().to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    if let Some(seconds) = retry_after {
        out.extend_from_slice(format!("retry-after: {seconds}\r\n").as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_frame_their_length_in_hex() {
        let mut out = Vec::new();
        append_chunk(
            &mut out,
            &[Bytes::from_static(b"id: 1\n"), Bytes::from(vec![b'x'; 20])],
        );
        assert!(out.starts_with(b"1a\r\nid: 1\n"));
        assert!(out.ends_with(b"\r\n"));
        let mut empty = Vec::new();
        append_chunk(&mut empty, &[]);
        assert!(empty.is_empty(), "an empty chunk would end the body");
    }
}
