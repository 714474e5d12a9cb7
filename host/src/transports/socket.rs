//! A streaming connection's socket, shared by its task and the hub's
//! drains: the task reads the client and writes its own frames (a
//! WebSocket session through tungstenite, over [`SocketIo`]; a raw SSE
//! stream its events); a drain writes channel messages (the [`Outlet`])
//! while the task waits. Each frame goes out whole, in the order its writer
//! took the socket's lock, framed as the connection's [`Framing`] says.
//!
//! Strategy: a write goes to the kernel at once when nothing is waiting: a
//! small frame copied into one buffer and sent with one `send(2)`, which
//! skips the VFS layer and the iovec copy of a vectored write (the largest
//! costs of comet's own in a profile of fan-out), a large one vectored.
//! What the kernel does not take waits in a bounded list of buffers, and
//! the session's task sends it once the socket is writable
//! ([`SharedSocket::poll_pump`]). A message's frame header is made on the
//! stack for each write and its payload is the message's own shared JSON,
//! so a message to many subscribers is encoded once and copied by no one.
//!
//! The socket is a [`Wire`]: a plain TCP stream, or a TLS session over
//! one (`tls`), whose records not yet sent count as waiting bytes (they
//! keep the pump busy and the write timeout running).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use comet_wire::frame::{BINARY, TEXT, header};
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::channels::inbox::{Outlet, OutletFull};
use crate::channels::{Message, Position, lock};
use crate::http::raw::chunk_header;

/// A connection's byte stream as [`SharedSocket`] drives it: writes and
/// reads that never wait, and readiness to wait on. Implemented by
/// `TcpStream`, and by `TlsWire` over its session.
pub trait Wire: Send + Sync + std::fmt::Debug + 'static {
    /// Write `buf` without waiting; `WouldBlock` when the socket is full.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Write `bufs` in order without waiting.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Ready once the socket may take bytes again.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Ready once the socket may have bytes to read.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Read without waiting; `WouldBlock` when nothing is there.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Whether bytes the wire took wait below it, not yet in the kernel
    /// (TLS records); they count as waiting.
    fn holds(&self) -> bool {
        false
    }
    /// Send what [`holds`](Wire::holds) says waits, as far as the socket
    /// takes it: how many bytes went; `WouldBlock` when none could.
    fn send_held(&self) -> io::Result<usize> {
        Ok(0)
    }
}

impl Wire for TcpStream {
    /// One `send(2)` (through tokio, so that it learns when the socket is
    /// full), without the VFS layer of `write(2)`.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.as_raw_fd();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        self.try_io(Interest::WRITABLE, || {
            nix::sys::socket::send(fd, buf, flags).map_err(io::Error::from)
        })
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }
}

/// A connection's socket as the raw entry points take it: a [`Wire`] that
/// is also an async reader and writer (for the request head read and the
/// answer written before the socket is shared). A TCP stream is one.
pub trait Socket: Wire + AsyncRead + AsyncWrite + Unpin {}

impl<S: Wire + AsyncRead + AsyncWrite + Unpin> Socket for S {}

/// What a stream whose live messages the drains write asks of its socket.
pub(super) trait Through: Send + Sync + std::fmt::Debug {
    /// The position of the last message an outlet write took since the
    /// last call, if any.
    fn take_written(&self) -> Option<Position>;
    /// Write no more messages (the stream is ending: its end is the last
    /// thing on the socket).
    fn close_messages(&self);
}

/// Most buffers one vectored write takes.
const MAX_SLICES: usize = 16;

/// Frames up to this size are copied into one buffer to be sent; larger
/// ones go out vectored, uncopied.
const COPY_UP_TO: usize = 8 << 10;

thread_local! {
    /// Where a small frame is put together to be sent.
    static FRAME: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How a message is framed on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// WebSocket frames: the message's JSON as a text frame (a binary
    /// payload: the text frame announcing it, then a binary frame),
    /// compressed when `deflate` (permessage-deflate agreed) and it shrinks.
    WebSocket { deflate: bool },
    /// One chunk of a chunked SSE response: the event with the message's
    /// own cursor as its `id:` (a stream of one channel).
    SseChunk,
}

/// A connection's socket (see the module docs).
#[derive(Debug)]
pub(super) struct SharedSocket<W: Wire = TcpStream> {
    wire: W,
    framing: Framing,
    out: Mutex<Out>,
    /// Most buffers waiting before a drain's write counts the client as a
    /// slow consumer; the task's own writes wait for room at half of it.
    limit: usize,
}

#[derive(Debug, Default)]
struct Out {
    waiting: VecDeque<Bytes>,
    /// Bytes of the first waiting buffer already sent.
    sent: usize,
    /// When the waiting bytes last moved (or began to wait).
    moved: Option<Instant>,
    /// The session's task, told when bytes begin to wait.
    waker: Option<Waker>,
    /// No more messages: the session is closing.
    closed: bool,
    /// A write failed: the client is gone.
    broken: bool,
    /// The position of the last message an outlet write took.
    written: Option<Position>,
}

impl Out {
    /// Keep `parts`, less the first `sent` bytes of them, for later.
    fn keep(&mut self, parts: impl IntoIterator<Item = Bytes>, mut sent: usize) {
        for mut part in parts {
            if sent >= part.len() {
                sent -= part.len();
                continue;
            }
            part.advance(sent);
            sent = 0;
            self.waiting.push_back(part);
        }
        if self.moved.is_none() {
            self.moved = Some(Instant::now());
        }
    }

    /// A write failed: the client is gone. Its task learns it from
    /// [`SharedSocket::poll_pump`] (or from reading).
    fn break_off(&mut self) -> Option<Waker> {
        self.broken = true;
        self.waiting.clear();
        self.waker.take()
    }
}

impl<W: Wire> SharedSocket<W> {
    /// Share `wire`, framing messages as `framing`; `limit` buffers may wait
    /// (a message takes up to four).
    fn new(wire: W, framing: Framing, limit: usize) -> SharedSocket<W> {
        SharedSocket {
            wire,
            framing,
            out: Mutex::default(),
            limit: limit.max(8),
        }
    }

    /// Share `connection`'s socket: as many messages may wait on it as in
    /// its queue, each in up to four buffers (two WebSocket frames, each a
    /// header and a payload).
    pub(super) fn for_connection(
        wire: W,
        framing: Framing,
        connection: &crate::channels::Connection,
    ) -> SharedSocket<W> {
        let limit = connection.node().queue_len().saturating_mul(4);
        SharedSocket::new(wire, framing, limit)
    }

    /// Write `parts` (at most four) now if nothing waits, and keep what the
    /// kernel does not take (`owned` makes the shared buffers to keep).
    fn send(&self, out: &mut Out, parts: &[&[u8]], owned: impl FnOnce() -> Vec<Bytes>) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut sent = 0;
        if out.waiting.is_empty() {
            match self.write_now(parts, total) {
                Ok(n) => sent = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    if let Some(waker) = out.break_off() {
                        waker.wake();
                    }
                    return;
                }
            }
        }
        if sent == total {
            // All taken, but a TLS wire may hold some of it back.
            if out.moved.is_none() && self.wire.holds() {
                out.moved = Some(Instant::now());
                if let Some(waker) = out.waker.take() {
                    waker.wake();
                }
            }
            return;
        }
        let began = out.waiting.is_empty();
        out.keep(owned(), sent);
        if began && let Some(waker) = out.waker.take() {
            waker.wake();
        }
    }

    /// Write `parts` (`total` bytes, at most four parts) without waiting;
    /// how many bytes the kernel took.
    fn write_now(&self, parts: &[&[u8]], total: usize) -> io::Result<usize> {
        if total > COPY_UP_TO {
            let mut slices = [IoSlice::new(&[]); 4];
            for (slice, part) in slices.iter_mut().zip(parts) {
                *slice = IoSlice::new(part);
            }
            return self.wire.try_write_vectored(&slices[..parts.len().min(4)]);
        }
        FRAME.with_borrow_mut(|frame| {
            frame.clear();
            for part in parts {
                frame.extend_from_slice(part);
            }
            self.wire.try_write(frame)
        })
    }

    /// Send what waits, as far as the kernel takes it. True if bytes moved.
    fn send_waiting(&self, out: &mut Out) -> io::Result<bool> {
        // What the wire holds goes first: it was written before.
        if self.wire.holds() {
            let sent = match self.wire.send_held() {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if sent > 0 {
                out.moved = Some(Instant::now());
            }
            if self.wire.holds() {
                return Ok(sent > 0);
            }
            if out.waiting.is_empty() {
                out.moved = None;
                return Ok(true);
            }
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut n = 0;
        for (i, part) in out.waiting.iter().take(MAX_SLICES).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &part[out.sent..] } else { part });
            n += 1;
        }
        let mut written = match self.wire.try_write_vectored(&slices[..n]) {
            Ok(written) => written,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        out.moved = Some(Instant::now());
        while let Some(first) = out.waiting.front() {
            let left = first.len() - out.sent;
            if written < left {
                out.sent += written;
                break;
            }
            written -= left;
            out.sent = 0;
            out.waiting.pop_front();
        }
        if out.waiting.is_empty() && !self.wire.holds() {
            out.moved = None;
            if out.waiting.capacity() > 64 {
                out.waiting = VecDeque::new();
            }
        }
        Ok(true)
    }

    /// Ready once no more than `room` buffers wait (sending them as the
    /// socket takes them); with `park`, a wait that finds nothing waiting
    /// stays pending and is woken when something begins to wait.
    fn poll_waiting(&self, cx: &mut Context<'_>, room: usize, park: bool) -> Poll<io::Result<()>> {
        loop {
            let mut out = lock(&self.out);
            if out.broken {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            // Bytes the wire holds count when nothing else waits.
            let held = || out.waiting.is_empty() && self.wire.holds();
            if out.waiting.len() <= room && (room > 0 || !held()) {
                if !park || !out.waiting.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match &mut out.waker {
                    Some(waker) => waker.clone_from(cx.waker()),
                    waker @ None => *waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            match self.send_waiting(&mut out) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    out.break_off();
                    return Poll::Ready(Err(e));
                }
            }
            drop(out);
            ready!(self.wire.poll_write_ready(cx))?;
        }
    }

    /// The session's standing task: send what waits whenever the socket
    /// takes it. Ready only when the socket failed.
    pub(super) fn poll_pump(&self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.poll_waiting(cx, 0, true) {
            Poll::Ready(Err(e)) => Poll::Ready(e),
            // Parked: `Ready(Ok)` does not happen with `park`.
            _ => Poll::Pending,
        }
    }

    /// An error once a write failed.
    fn status(&self) -> io::Result<()> {
        if lock(&self.out).broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        Ok(())
    }

    /// Since when bytes have waited without moving, if any wait.
    pub(super) fn stalled_since(&self) -> Option<Instant> {
        lock(&self.out).moved
    }

    /// Ready once there is room for the task's own writes.
    pub(super) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_waiting(cx, self.limit / 2, false)
    }

    /// Ready once nothing waits.
    pub(super) fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_waiting(cx, 0, false)
    }

    /// Done once nothing waits (what must be out before the socket closes).
    pub(super) async fn flushed(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flushed(cx)).await
    }

    /// Read what the client sent.
    pub(super) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.wire.poll_read_ready(cx))?;
            match self.wire.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Write the task's own bytes (whole frames), waiting for room first.
    pub(super) fn poll_write_own(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut out = lock(&self.out);
        if out.broken {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send(&mut out, &[buf], || vec![Bytes::copy_from_slice(buf)]);
        Poll::Ready(Ok(buf.len()))
    }
}

impl<W: Wire> Outlet for SharedSocket<W> {
    fn write(&self, message: &Message) -> Result<(), OutletFull> {
        match self.framing {
            Framing::WebSocket { deflate } => self.write_frames(message, deflate),
            Framing::SseChunk => self.write_chunk(message),
        }
    }
}

impl<W: Wire> Through for SharedSocket<W> {
    fn take_written(&self) -> Option<Position> {
        lock(&self.out).written.take()
    }

    /// Also for a WebSocket session closing: its close frame is the last
    /// thing it sends.
    fn close_messages(&self) {
        lock(&self.out).closed = true;
    }
}

impl<W: Wire> SharedSocket<W> {
    /// `message` as WebSocket frames.
    fn write_frames(&self, message: &Message, deflate: bool) -> Result<(), OutletFull> {
        let ((text, text_packed), binary) = message.ws_payloads_for(deflate);
        let (text_head, text_n) = header(TEXT, text_packed, text.len());
        let binary_head = binary.map(|(b, packed)| header(BINARY, packed, b.len()));
        let binary = binary.map(|(b, _)| b);
        let mut out = lock(&self.out);
        if out.closed || out.broken {
            return Ok(());
        }
        let parts = if binary.is_some() { 4 } else { 2 };
        if out.waiting.len() + parts > self.limit {
            return Err(OutletFull);
        }
        out.written = Some(message.position);
        let owned = || {
            let (text, binary) = message.ws_payload_bytes_for(deflate);
            let mut parts = vec![Bytes::copy_from_slice(&text_head[..text_n]), text];
            if let (Some((head, n)), Some(binary)) = (binary_head, binary) {
                parts.push(Bytes::copy_from_slice(&head[..n]));
                parts.push(binary);
            }
            parts
        };
        match (binary_head.as_ref(), binary) {
            (Some((head, n)), Some(binary)) => self.send(
                &mut out,
                &[&text_head[..text_n], text, &head[..*n], binary],
                owned,
            ),
            _ => self.send(&mut out, &[&text_head[..text_n], text], owned),
        }
        Ok(())
    }

    /// `message` as one chunk of an SSE response: its event with its own
    /// cursor as the `id:`.
    fn write_chunk(&self, message: &Message) -> Result<(), OutletFull> {
        let event = message.sse_with_id_ref();
        let (head, n) = chunk_header(event.len());
        let mut out = lock(&self.out);
        if out.closed || out.broken {
            return Ok(());
        }
        if out.waiting.len() + 3 > self.limit {
            return Err(OutletFull);
        }
        out.written = Some(message.position);
        let owned = || {
            vec![
                Bytes::copy_from_slice(&head[..n]),
                message.sse_with_id(),
                Bytes::from_static(b"\r\n"),
            ]
        };
        self.send(&mut out, &[&head[..n], event, b"\r\n"], owned);
        Ok(())
    }
}

/// What ends a connection's [`Pump`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PumpEnd {
    /// A write failed: the client is gone.
    Broken,
    /// Bytes waited without moving for the write timeout: the client
    /// stopped reading.
    Stalled,
}

/// A connection task's standing duty: send what waits on its socket
/// whenever the socket takes it, and notice a client that stopped reading.
#[derive(Debug)]
pub(super) struct Pump {
    timeout: std::time::Duration,
    /// Fires when bytes have waited for the timeout (made the first time
    /// any wait, dropped when none do: an idle connection keeps no timer).
    stall: Option<Pin<Box<Sleep>>>,
}

impl Pump {
    pub(super) fn new(timeout: std::time::Duration) -> Pump {
        Pump {
            timeout,
            stall: None,
        }
    }

    /// Pending while the connection is well; why it ends otherwise.
    pub(super) fn poll<W: Wire>(
        &mut self,
        socket: &SharedSocket<W>,
        cx: &mut Context<'_>,
    ) -> Poll<PumpEnd> {
        use std::future::Future as _;
        if socket.poll_pump(cx).is_ready() {
            return Poll::Ready(PumpEnd::Broken);
        }
        let Some(since) = socket.stalled_since() else {
            self.stall = None;
            return Poll::Pending;
        };
        let deadline = since + self.timeout;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(PumpEnd::Stalled),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The socket as tungstenite reads and writes it: reads come from the
/// socket (after `prefix`, bytes read past the upgrade request), writes go
/// through [`SharedSocket`].
#[derive(Debug)]
pub(super) struct SocketIo<W: Wire = TcpStream> {
    pub(super) socket: std::sync::Arc<SharedSocket<W>>,
    pub(super) prefix: Bytes,
}

impl<W: Wire> AsyncRead for SocketIo<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // A slice of hyper's read buffer keeps all of it alive.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        self.socket.poll_read(cx, buf)
    }
}

impl<W: Wire> AsyncWrite for SocketIo<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_write_own(cx, buf)
    }

    /// Ready once tungstenite's bytes are taken: the socket sends them (with
    /// whatever the drains add meanwhile) as the client reads, and the
    /// session's pump notices one that stops. A flush that waited for all of
    /// that would time out on a client that reads steadily behind a full
    /// socket. Whoever must see everything out (before closing) waits for
    /// [`SharedSocket::poll_flushed`].
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.status())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.status())
    }
}
