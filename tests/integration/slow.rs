use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use comet_testkit::{Comet, guests, publish, status, wait_connections};

use crate::COMET;

const TOKEN: &str = "test-token";

/// Seconds a blocked write may last in these tests.
const WRITE_TIMEOUT_S: &str = "3";

fn start() -> anyhow::Result<Comet> {
    start_with_queue("16")
}

/// comet with queues of `len` messages.
fn start_with_queue(len: &str) -> anyhow::Result<Comet> {
    Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--publish-token",
            TOKEN,
            "--queue-len",
            len,
            "--write-timeout-s",
            WRITE_TIMEOUT_S,
        ],
    )
}

fn slow_consumers(comet: &Comet) -> u64 {
    status(comet)
        .ok()
        .and_then(|s| s["delivery"]["slow_consumers"].as_u64())
        .unwrap_or(0)
}

/// Publish 60 KiB messages to `channel` until the server has dropped
/// `n` slow consumers in all.
fn overflow(comet: &Comet, channel: &str, n: u64) -> anyhow::Result<()> {
    let big = "x".repeat(60 << 10);
    for i in 0..2000 {
        let r = publish(comet, TOKEN, channel, &big)?;
        anyhow::ensure!(r.status == 200, "{}", r.body);
        if i % 8 == 7 && slow_consumers(comet) >= n {
            return Ok(());
        }
    }
    anyhow::bail!("no slow consumer after 2000 messages")
}

/// Open a raw HTTP/1.1 connection and send `requests` (whole heads).
fn raw(comet: &Comet, requests: &str) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(comet.addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.write_all(requests.as_bytes())?;
    Ok(tcp)
}

/// Read one HTTP/1.1 response with a chunked body to its final chunk: the
/// head, and the body de-chunked.
fn read_chunked(tcp: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<(String, Vec<u8>)> {
    let mut fill = |buffer: &mut Vec<u8>| -> anyhow::Result<()> {
        let mut chunk = [0u8; 64 << 10];
        let n = tcp.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "the connection closed before the final chunk");
        buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at + 4;
        }
        fill(buffer)?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end);
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = find(buffer, b"\r\n") {
                break at;
            }
            fill(buffer)?;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buffer[..line_end])?.trim(), 16)?;
        while buffer.len() < line_end + 2 + size + 2 {
            fill(buffer)?;
        }
        body.extend_from_slice(&buffer[line_end + 2..line_end + 2 + size]);
        buffer.drain(..line_end + 2 + size + 2);
        if size == 0 {
            return Ok((head, body));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The events of an SSE body: each must be whole (`data:` holding a whole
/// JSON object); the last one is returned.
fn last_sse_event(body: &[u8]) -> anyhow::Result<(String, serde_json::Value)> {
    let text = std::str::from_utf8(body)?;
    anyhow::ensure!(text.ends_with("\n\n"), "the stream ends mid-event");
    let mut last = None;
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut event = "message".to_string();
        let mut data = None;
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_string();
            }
            if let Some(d) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<serde_json::Value>(d)?);
            }
        }
        if let Some(data) = data {
            last = Some((event, data));
        }
    }
    last.ok_or_else(|| anyhow::anyhow!("no event"))
}

/// SSE served straight on the socket (the first request of a connection):
/// a client that stops reading is dropped, and when it reads again it
/// finds whole events, then the `slow-consumer` event and the final chunk.
#[test]
fn a_slow_direct_sse_client_gets_its_event_at_an_event_boundary() -> anyhow::Result<()> {
    let comet = start()?;
    let mut tcp = raw(
        &comet,
        "GET /comet/sse?channel=s1 HTTP/1.1\r\nHost: t\r\n\r\n",
    )?;
    wait_connections(&comet, "sse", 1)?;
    overflow(&comet, "s1", 1)?;
    let (head, body) = read_chunked(&mut tcp, &mut Vec::new())?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (event, data) = last_sse_event(&body)?;
    assert_eq!(
        (event.as_str(), data["error"].as_str()),
        ("error", Some("slow-consumer"))
    );
    Ok(())
}

/// Streams served through hyper (NDJSON; SSE as the second request of a
/// kept-alive connection) are dropped the same way: their last words are
/// the error, then the final chunk.
#[test]
fn slow_streams_through_hyper_get_their_event() -> anyhow::Result<()> {
    let comet = start()?;
    let mut ndjson = raw(
        &comet,
        "GET /comet/stream?channel=s2 HTTP/1.1\r\nHost: t\r\n\r\n",
    )?;
    let mut sse = raw(
        &comet,
        "GET /comet/nothing HTTP/1.1\r\nHost: t\r\n\r\nGET /comet/sse?channel=s2 HTTP/1.1\r\nHost: t\r\n\r\n",
    )?;
    wait_connections(&comet, "stream", 1)?;
    wait_connections(&comet, "sse", 1)?;
    overflow(&comet, "s2", 2)?;

    let (head, body) = read_chunked(&mut ndjson, &mut Vec::new())?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = std::str::from_utf8(&body)?;
    let last = text.lines().last().unwrap_or_default();
    let last: serde_json::Value = serde_json::from_str(last)?;
    assert_eq!(last["error"], "slow-consumer", "{last}");

    // The first answer (a 404 with a body) comes before the stream.
    let mut buffer = Vec::new();
    let mut first = [0u8; 4096];
    let n = sse.read(&mut first)?;
    buffer.extend_from_slice(&first[..n]);
    let head_end = find(&buffer, b"\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse())
        .transpose()?
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = sse.read(&mut first)?;
        anyhow::ensure!(n > 0, "closed");
        buffer.extend_from_slice(&first[..n]);
    }
    buffer.drain(..head_end + length);
    let (head, body) = read_chunked(&mut sse, &mut buffer)?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (event, data) = last_sse_event(&body)?;
    assert_eq!(
        (event.as_str(), data["error"].as_str()),
        ("error", Some("slow-consumer"))
    );
    Ok(())
}

/// Clients that never read (an HTTP/1.1 stream behind a kept-alive request,
/// an HTTP/2 stream) are closed within the write timeout of being dropped.
#[test]
fn clients_that_never_read_are_closed() -> anyhow::Result<()> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let comet = start()?;
    let _h1 = raw(
        &comet,
        "GET /comet/nothing HTTP/1.1\r\nHost: t\r\n\r\nGET /comet/stream?channel=s3 HTTP/1.1\r\nHost: t\r\n\r\n",
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let addr = comet.addr;
    let _h2 = runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://{addr}/comet/sse?channel=s3"))
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        anyhow::ensure!(response.status() == 200, "{}", response.status());
        // Held, never read.
        anyhow::Ok((sender, response))
    })?;
    wait_connections(&comet, "stream", 1)?;
    wait_connections(&comet, "sse", 1)?;
    overflow(&comet, "s3", 2)?;
    let bound = Duration::from_secs(WRITE_TIMEOUT_S.parse::<u64>()? + 10);
    comet.wait_for("both streams to be closed", bound, || {
        let s = status(&comet).ok()?;
        let by = &s["connections"]["by_transport"];
        (by["sse"] == 0 && by["stream"] == 0).then_some(())
    })?;
    Ok(())
}

/// A WebSocket client that stops reading is closed once bytes have waited
/// on its socket for the write timeout, though its queue never fills: the
/// hub writes to the socket of a session that waits, and the session
/// watches what is left waiting. What reached the client is in order.
#[test]
fn a_websocket_that_stops_reading_is_closed_after_the_write_timeout() -> anyhow::Result<()> {
    use comet_testkit::{ws_connect, ws_json};
    let comet = start_with_queue("4096")?;
    let mut ws = ws_connect(&format!("ws://{}/comet/ws?channel=stuck", comet.addr))?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    wait_connections(&comet, "websocket", 1)?;
    // About 18 MiB: more than loopback's socket buffers hold, far less than
    // the queue or the socket's own bound.
    let big = "x".repeat(60 << 10);
    for i in 0..300 {
        let r = publish(&comet, TOKEN, "stuck", &format!("{i}:{big}"))?;
        anyhow::ensure!(r.status == 200, "{}", r.body);
    }
    let timeout = WRITE_TIMEOUT_S.parse::<u64>()?;
    comet.wait_for(
        "the client that stopped reading to be closed",
        Duration::from_secs(2 * timeout + 10),
        || {
            let s = status(&comet).ok()?;
            (s["connections"]["by_transport"]["websocket"] == 0).then_some(())
        },
    )?;
    assert_eq!(
        slow_consumers(&comet),
        0,
        "closed by its timeout, not a full queue"
    );
    // What the kernel held for it arrives, in order, then the socket ends.
    let mut next = 0;
    while let Ok(v) = ws_json(&mut ws) {
        let data = v["data"].as_str().unwrap_or_default();
        assert_eq!(data.split(':').next(), Some(next.to_string().as_str()));
        next += 1;
    }
    assert!(next > 0 && next < 300, "{next} messages before the end");
    Ok(())
}
