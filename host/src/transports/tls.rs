//! A TLS connection (a rustls session over a TCP stream, its handshake
//! done) as the socket the edge and the transports use: a [`Wire`], so a
//! raw SSE stream and a WebSocket session write to it as to a plain
//! socket, and an async reader and writer, for hyper and for reading a
//! first request's head. One type from the handshake on: hyper serves it,
//! and a WebSocket takes it back from hyper after the upgrade.
//!
//! Strategy: a write encrypts into the session and sends the records at
//! once; records the kernel does not take stay in the session ("held"),
//! and the wire takes no more plaintext until they are out. rustls bounds
//! what it holds (its buffer limit, 64 KiB), so a client that stops reading
//! costs at most that on top of the buffers [`SharedSocket`] counts, and
//! the same write timeout drops it. A read decrypts what the kernel has;
//! plaintext read ahead to look at a first request's head
//! ([`TlsWire::read_head`]) is read again first.
//!
//! [`SharedSocket`]: super::socket::SharedSocket

use std::io::{self, IoSlice, Read as _, Write as _};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::socket::Wire;
use crate::channels::lock;

/// A TCP stream and the TLS session over it.
#[derive(Debug)]
pub struct TlsWire {
    tcp: TcpStream,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    session: ServerConnection,
    /// Plaintext read already, to be read again first.
    unread: Bytes,
}

impl TlsWire {
    /// The session `session`, its handshake done, over `tcp`.
    pub fn new(tcp: TcpStream, session: ServerConnection) -> TlsWire {
        TlsWire {
            tcp,
            state: Mutex::new(State {
                session,
                unread: Bytes::new(),
            }),
        }
    }

    /// The protocol ALPN chose (`h2`, `http/1.1`), if any.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        lock(&self.state)
            .session
            .alpn_protocol()
            .map(<[u8]>::to_vec)
    }

    /// Read what the client sent first, up to `max` bytes, as soon as some
    /// arrived (as a peek at a plain socket would see it), and keep it to
    /// be read again.
    pub async fn read_head(&self, max: usize) -> io::Result<Bytes> {
        let mut buf = vec![0u8; max];
        let n = std::future::poll_fn(|cx| {
            loop {
                ready!(self.poll_read_ready(cx))?;
                match self.try_read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return Poll::Ready(other),
                }
            }
        })
        .await?;
        let head = Bytes::copy_from_slice(&buf[..n]);
        lock(&self.state).unread = head.clone();
        Ok(head)
    }

    /// Send the records the session holds, as far as the kernel takes them:
    /// how many bytes went out; `WouldBlock` when none did and some wait.
    fn send_records(&self, session: &mut ServerConnection) -> io::Result<usize> {
        let mut sent = 0;
        while session.wants_write() {
            match session.write_tls(&mut Kernel(&self.tcp)) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && sent > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

/// The TCP stream as rustls reads and writes it: without waiting.
struct Kernel<'a>(&'a TcpStream);

impl io::Read for Kernel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for Kernel<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Wire::try_write(self.0, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for TlsWire {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    /// Plaintext is taken only when no records wait: what waits below the
    /// wire stays one write's worth (at most the session's buffer limit).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let session = &mut lock(&self.state).session;
        self.send_records(session)?;
        if session.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = session.writer().write_vectored(bufs)?;
        match self.send_records(session) {
            Ok(_) => {}
            // Held: sent when the socket is writable again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(taken)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    /// Ready at once when there is plaintext (or the client's goodbye) to
    /// give; else when the socket has bytes.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let state = &mut *lock(&self.state);
        let readable = !state.unread.is_empty()
            || match state.session.process_new_packets() {
                Ok(io) => io.plaintext_bytes_to_read() > 0 || io.peer_has_closed(),
                // `try_read` reports it.
                Err(_) => true,
            };
        if readable {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let state = &mut *lock(&self.state);
        if !state.unread.is_empty() {
            let n = state.unread.len().min(buf.len());
            buf[..n].copy_from_slice(&state.unread[..n]);
            state.unread.advance(n);
            if state.unread.is_empty() {
                state.unread = Bytes::new();
            }
            return Ok(n);
        }
        let session = &mut state.session;
        loop {
            match session.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without TLS's goodbye (browsers do):
                // the client is gone all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // `read_tls` reports the end of the socket as 0, which the
            // reader then reports as above.
            session.read_tls(&mut Kernel(&self.tcp))?;
            if let Err(e) = session.process_new_packets() {
                // The alert rustls queued for the client, if it goes.
                let _ = self.send_records(session);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    fn holds(&self) -> bool {
        lock(&self.state).session.wants_write()
    }

    fn send_held(&self) -> io::Result<usize> {
        self.send_records(&mut lock(&self.state).session)
    }
}

/// For hyper, and for the head a raw entry point reads.
impl AsyncRead for TlsWire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            match self.try_read(buf.initialize_unfilled()) {
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

impl AsyncWrite for TlsWire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Ready once the records the session holds are in the kernel.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.holds() {
            match self.send_held() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
                Ok(_) => {}
            }
        }
        Poll::Ready(Ok(()))
    }

    /// TLS's goodbye, then the socket's.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.state).session.send_close_notify();
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A handshaken pair: the server's wire, and a rustls client over
    /// loopback.
    async fn pair() -> (TlsWire, tokio_rustls::client::TlsStream<TcpStream>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            acceptor.accept(tcp).await.unwrap().into_inner()
        };
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let name = ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        };
        let ((tcp, session), client) = tokio::join!(accept, connect);
        (TlsWire::new(tcp, session), client)
    }

    /// Past what the kernel takes, records wait in the session and the wire
    /// takes no more plaintext (so what it holds stays bounded) until they
    /// are sent; everything arrives, in order.
    #[tokio::test]
    async fn records_the_kernel_refuses_are_held_then_sent() {
        let (wire, mut client) = pair().await;
        let chunk = vec![7u8; 16 << 10];
        let mut taken = 0usize;
        loop {
            match wire.try_write(&chunk) {
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(taken < 64 << 20, "the wire never refused");
        }
        assert!(wire.holds(), "refused with nothing held");
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; taken];
            client.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|b| *b == 7));
            client.write_all(b"thanks").await.unwrap();
            client
        });
        while wire.holds() {
            std::future::poll_fn(|cx| wire.poll_write_ready(cx))
                .await
                .unwrap();
            match wire.send_held() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let _client = reader.await.unwrap();
        // And the client's bytes are read through the session.
        let mut buf = [0u8; 16];
        let n = loop {
            std::future::poll_fn(|cx| wire.poll_read_ready(cx))
                .await
                .unwrap();
            match wire.try_read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..n], b"thanks");
    }
}
