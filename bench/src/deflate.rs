//! A WebSocket subscriber that offers permessage-deflate (`--ws-deflate`):
//! the handshake and frames by hand, since tungstenite refuses compressed
//! frames (RSV1). Compressed messages are inflated before the payload
//! scanner sees them, as a browser would.

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::payload::Scanner;
use crate::target::WsStart;
use crate::transport::{Sink, Subscriber};

impl Subscriber {
    /// Subscribe over WebSocket offering permessage-deflate, then feed
    /// every message, inflated, to the scanner. `ready` is told once
    /// subscribed; the report says how many frames came compressed.
    pub(crate) async fn ws_deflate(
        self,
        sink: Sink,
        ready: tokio::sync::oneshot::Sender<()>,
    ) -> anyhow::Result<()> {
        let stream = self
            .target
            .open(self.target.addr, self.source, false)
            .await?;
        let path = self
            .target
            .subscribe_path(crate::target::Transport::Ws, &self.channel)?;
        let mut io = BufReader::with_capacity(4 << 10, stream);
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
             sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
            self.target.addr
        );
        io.get_mut().write_all(request.as_bytes()).await?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if io.read_line(&mut line).await? == 0 {
                bail!("closed during the handshake: {head}");
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        if !head.starts_with("HTTP/1.1 101") {
            bail!("websocket handshake refused: {head}");
        }
        if !head.to_ascii_lowercase().contains("permessage-deflate") {
            bail!("the server did not agree to permessage-deflate: {head}");
        }
        match self.target.ws_start(&self.channel) {
            WsStart::Handshake => {}
            WsStart::FirstFrame => {
                read_frame(&mut io)
                    .await
                    .context("closed before subscribing")?;
            }
            WsStart::Send(frame) => {
                io.get_mut()
                    .write_all(&masked(0x1, frame.as_bytes()))
                    .await?;
                let (_, answer) = read_frame(&mut io).await?;
                if !String::from_utf8_lossy(&answer).contains("subscribed") {
                    bail!("unexpected answer to subscribe");
                }
            }
        }
        let _ = ready.send(());
        let mut scanner = Scanner::default();
        let mut found = Vec::new();
        loop {
            let (first, payload) = read_frame(&mut io).await?;
            match first & 0x0f {
                0x1 | 0x2 if first & 0x40 != 0 => {
                    let inflated = inflate(&payload)?;
                    sink.feed(&mut scanner, &mut found, &inflated);
                }
                0x1 | 0x2 => sink.feed(&mut scanner, &mut found, &payload),
                0x8 => return Ok(()),
                0x9 => io.get_mut().write_all(&masked(0xA, &payload)).await?,
                _ => {}
            }
        }
    }
}

/// One server frame (unmasked, unfragmented: what the servers under test
/// send): its first byte and its payload.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(io: &mut R) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut two = [0u8; 2];
    io.read_exact(&mut two).await?;
    let len = match two[1] & 0x7f {
        126 => usize::from(io.read_u16().await?),
        127 => usize::try_from(io.read_u64().await?)?,
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok((two[0], payload))
}

/// A client frame, masked (with a zero key: the bytes stay readable).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// A message compressed without context, inflated (to at most 1 MiB).
fn inflate(payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(comet_wire::frame::inflate(payload, 1 << 20)?)
}
