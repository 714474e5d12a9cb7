//! Memory per idle client connection, from the server's RSS.
//!
//! Opens N SSE or WebSocket connections to a running `comet` (each subscribed
//! to one channel), waits for the server to settle, and reports the growth of
//! the server's resident memory per connection. Start the server fresh for
//! each run: a warm server reuses freed memory.
//!
//! Usage: `idle PID ADDR sse|ws N` (for example `idle 1234 127.0.0.1:8080 ws 10000`).

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened at once, so the accept queue never overflows.
const CONNECT_BATCH: usize = 200;

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn open_sse(addr: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /comet/sse?channel=idle HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    let mut buf = vec![0u8; 1024];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(": connected") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(stream)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open_ws(addr: &str) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(addr).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/comet/ws"), stream).await?;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"op":"subscribe","channel":"idle"}"#.into(),
    ))
    .await?;
    match ws.next().await {
        Some(Ok(_)) => Ok(ws),
        other => bail!("no answer to subscribe: {other:?}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pid, addr, transport, n] = args.as_slice() else {
        bail!("usage: idle PID ADDR sse|ws N");
    };
    let pid: u32 = pid.parse()?;
    let n: usize = n.parse()?;
    let before = rss_kib(pid)?;
    let mut sse = Vec::new();
    let mut ws = Vec::new();
    while sse.len() + ws.len() < n {
        let batch = CONNECT_BATCH.min(n - sse.len() - ws.len());
        match transport.as_str() {
            "sse" => {
                let opened =
                    futures_util::future::join_all((0..batch).map(|_| open_sse(addr))).await;
                for c in opened {
                    sse.push(c?);
                }
            }
            "ws" => {
                let opened =
                    futures_util::future::join_all((0..batch).map(|_| open_ws(addr))).await;
                for c in opened {
                    ws.push(c?);
                }
            }
            other => bail!("unknown transport {other}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid)?;
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{{\"transport\":\"{transport}\",\"connections\":{n},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_connection\":{per:.2}}}"
    );
    drop((sse, ws));
    Ok(())
}
