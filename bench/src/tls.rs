//! TLS for the load generator's clients (comet's own TLS, `--tls-ca`): a
//! stream that is plain TCP or rustls over it, the connector that trusts
//! one certificate (the server's, self-signed), with or without session
//! resumption, and the HTTP/2 connections SSE subscribers share when asked.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The name the server's certificate is checked against.
pub const SERVER_NAME: &str = "localhost";

/// A client connection: plain, or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How clients speak TLS to the server.
#[derive(Clone)]
pub struct Tls {
    /// For HTTP/1.1 connections (SSE, long-poll, WebSocket, publish).
    pub http1: TlsConnector,
    /// For HTTP/2 connections.
    pub h2: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Trust the certificate in the PEM file `ca`; resume sessions unless
    /// `no_resume` (then every connection makes a full handshake).
    pub fn new(ca: &Path, no_resume: bool) -> anyhow::Result<Tls> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = |alpn: &[u8]| -> anyhow::Result<TlsConnector> {
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            if no_resume {
                config.resumption = rustls::client::Resumption::disabled();
            } else {
                // Room for every client's ticket (one per connection).
                config.resumption = rustls::client::Resumption::in_memory_sessions(32_768);
            }
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(Tls {
            http1: config(b"http/1.1")?,
            h2: config(b"h2")?,
        })
    }
}

/// Over `tcp`, TLS by `connector` if given.
pub async fn wrap(tcp: TcpStream, connector: Option<&TlsConnector>) -> anyhow::Result<Stream> {
    Ok(match connector {
        None => Stream::Plain(tcp),
        Some(connector) => {
            let name = ServerName::try_from(SERVER_NAME)?;
            Stream::Tls(Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake")?,
            ))
        }
    })
}

/// HTTP/2 connections that SSE subscribers share, `per` streams each.
#[derive(Debug)]
pub struct SharedH2 {
    per: usize,
    current: tokio::sync::Mutex<Option<(http2::SendRequest<Empty<Bytes>>, usize)>>,
}

impl SharedH2 {
    /// Connections of `per` streams each.
    pub fn new(per: usize) -> SharedH2 {
        SharedH2 {
            per: per.max(1),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// A sender on a connection with room for one more stream; `open`
    /// makes a new connection when the current one is full.
    pub async fn sender<F>(&self, open: F) -> anyhow::Result<http2::SendRequest<Empty<Bytes>>>
    where
        F: std::future::Future<Output = anyhow::Result<Stream>>,
    {
        let mut current = self.current.lock().await;
        if let Some((sender, used)) = current.as_mut()
            && *used < self.per
            && !sender.is_closed()
        {
            *used += 1;
            return Ok(sender.clone());
        }
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(open.await?)).await?;
        tokio::spawn(connection);
        *current = Some((sender.clone(), 1));
        Ok(sender)
    }
}
