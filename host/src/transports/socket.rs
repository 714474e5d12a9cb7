//! A WebSocket session's TCP socket, shared by the session's task and the
//! hub's drains: the task reads the client's frames and writes its own
//! (through tungstenite, over [`SocketIo`]); a drain writes channel messages
//! (the [`Outlet`]) while the task waits. Each frame goes out whole, in the
//! order its writer took the socket's lock.
//!
//! Strategy: a write goes to the kernel at once when nothing is waiting: a
//! small frame copied into one buffer and sent with one `send(2)`, which
//! skips the VFS layer and the iovec copy of a vectored write (the largest
//! costs of comet's own in a profile of fan-out), a large one vectored. What the kernel does not take waits in a bounded list of
//! buffers, and the session's task sends it once the socket is writable
//! ([`SharedSocket::poll_pump`]). A message's frame header is made on the
//! stack for each write and its payload is the message's own shared JSON,
//! so a message to many subscribers is encoded once and copied by no one.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::channels::inbox::{Outlet, OutletFull};
use crate::channels::{Message, lock};

/// Opcodes of the frames the server sends (RFC 6455, section 5.2).
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;

/// Most buffers one vectored write takes.
const MAX_SLICES: usize = 16;

/// Frames up to this size are copied into one buffer to be sent; larger
/// ones go out vectored, uncopied.
const COPY_UP_TO: usize = 8 << 10;

thread_local! {
    /// Where a small frame is put together to be sent.
    static FRAME: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A session's socket (see the module docs).
#[derive(Debug)]
pub(super) struct SharedSocket {
    tcp: TcpStream,
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

/// An unmasked frame's header: FIN, `opcode`, the payload length.
fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode;
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, n)
}

impl SharedSocket {
    /// Share `tcp`; `limit` buffers may wait (a message takes up to four).
    pub(super) fn new(tcp: TcpStream, limit: usize) -> SharedSocket {
        SharedSocket {
            tcp,
            out: Mutex::default(),
            limit: limit.max(8),
        }
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
            return self.tcp.try_write_vectored(&slices[..parts.len().min(4)]);
        }
        FRAME.with_borrow_mut(|frame| {
            frame.clear();
            for part in parts {
                frame.extend_from_slice(part);
            }
            let fd = self.tcp.as_raw_fd();
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            // Through tokio, so that it learns when the socket is full.
            self.tcp.try_io(Interest::WRITABLE, || {
                nix::sys::socket::send(fd, frame, flags).map_err(io::Error::from)
            })
        })
    }

    /// Send what waits, as far as the kernel takes it. True if bytes moved.
    fn send_waiting(&self, out: &mut Out) -> io::Result<bool> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut n = 0;
        for (i, part) in out.waiting.iter().take(MAX_SLICES).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &part[out.sent..] } else { part });
            n += 1;
        }
        let mut written = match self.tcp.try_write_vectored(&slices[..n]) {
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
        if out.waiting.is_empty() {
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
            if out.waiting.len() <= room {
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
            ready!(self.tcp.poll_write_ready(cx))?;
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

    /// Write no more messages (the session is closing: its close frame is
    /// the last thing it sends).
    pub(super) fn close_messages(&self) {
        lock(&self.out).closed = true;
    }

    /// Write the session's own bytes (whole frames, from tungstenite),
    /// waiting for room first.
    fn poll_write_own(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut out = lock(&self.out);
        if out.broken {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send(&mut out, &[buf], || vec![Bytes::copy_from_slice(buf)]);
        Poll::Ready(Ok(buf.len()))
    }
}

impl Outlet for SharedSocket {
    fn write(&self, message: &Message) -> Result<(), OutletFull> {
        let (text, binary) = message.ws_payloads();
        let (text_head, text_n) = header(TEXT, text.len());
        let binary_head = binary.map(|b| header(BINARY, b.len()));
        let mut out = lock(&self.out);
        if out.closed || out.broken {
            return Ok(());
        }
        let parts = if binary.is_some() { 4 } else { 2 };
        if out.waiting.len() + parts > self.limit {
            return Err(OutletFull);
        }
        let owned = || {
            let (text, binary) = message.ws_payload_bytes();
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
}

/// The socket as tungstenite reads and writes it: reads come from the
/// socket (after `prefix`, bytes read past the upgrade request), writes go
/// through [`SharedSocket`].
#[derive(Debug)]
pub(super) struct SocketIo {
    pub(super) socket: std::sync::Arc<SharedSocket>,
    pub(super) prefix: Bytes,
}

impl AsyncRead for SocketIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.socket.tcp.poll_read_ready(cx))?;
            match self.socket.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_write_own(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_flushed(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_flushed(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_take_the_shortest_length_form() {
        let (h, n) = header(TEXT, 5);
        assert_eq!(&h[..n], [0x81, 5]);
        let (h, n) = header(BINARY, 300);
        assert_eq!(&h[..n], [0x82, 126, 1, 44]);
        let (h, n) = header(TEXT, 70_000);
        assert_eq!(&h[..n], [0x81, 127, 0, 0, 0, 0, 0, 1, 17, 112]);
    }
}
