//! permessage-deflate on WebSocket (RFC 7692): agreed with clients that
//! offer it, messages compressed once for all their subscribers (the
//! `comet_ws_compressions_total` counter equals the messages, not the
//! deliveries), clients' compressed frames inflated. Tested with Python's
//! `websockets` (thousands of clients, both directions), headless Chromium,
//! and raw bytes to see the compressed frames themselves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use comet_testkit::{Comet, publish};
use serde_json::Value;

use crate::COMET;
use crate::browser::{chromium_or_skip, eval, open_page, settled};
use crate::origins::metric;

const TOKEN: &str = "deflate-token";

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/integration/ws_deflate.py"
);

/// Whether Python's `websockets` is there (CI installs it).
fn websockets_or_skip() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs Python's websockets for this test (.ci/run)"
        );
        eprintln!("skipped: python3 -m pip install websockets");
    }
    found
}

/// `ws_deflate.py` against `comet`: its one line of JSON.
fn clients(
    comet: &Comet,
    subscribers: usize,
    messages: usize,
    size: usize,
) -> anyhow::Result<Value> {
    let url = comet.url("").replace("http://", "ws://");
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(url.trim_end_matches('/'))
        .args([subscribers, messages, size].map(|n| n.to_string()))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}\ncomet: {}",
        String::from_utf8_lossy(&out.stderr),
        comet.stderr()
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// 2,000 clients agree to compression; one publishes 20 messages of 1 KiB
/// in compressed frames; all receive all of them, and each message was
/// compressed once.
#[test]
fn thousands_of_compressed_subscribers_share_one_compression() -> anyhow::Result<()> {
    if !websockets_or_skip() {
        return Ok(());
    }
    let comet = Comet::start(COMET, &[comet_testkit::guests::HELLO, "--client-publish"])?;
    let (subscribers, messages) = (2_000, 20);
    let got = clients(&comet, subscribers, messages, 1024)?;
    assert_eq!(
        got["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "{got}"
    );
    assert_eq!(got["clients"], subscribers, "{got}");
    assert_eq!(got["all_received"], true, "{got}");
    let compressions = metric(&comet, "comet_ws_compressions_total")?;
    assert_eq!(compressions, messages as f64);
    let deliveries = metric(&comet, "comet_deliveries_total")?;
    assert!(
        deliveries >= (subscribers * messages) as f64,
        "{deliveries}"
    );
    Ok(())
}

/// With `--ws-compression off` nothing is agreed, and clients still
/// receive.
#[test]
fn compression_can_be_turned_off() -> anyhow::Result<()> {
    if !websockets_or_skip() {
        return Ok(());
    }
    let comet = Comet::start(
        COMET,
        &[
            comet_testkit::guests::HELLO,
            "--client-publish",
            "--ws-compression",
            "off",
        ],
    )?;
    let got = clients(&comet, 3, 3, 1024)?;
    assert_eq!(got["extensions"], Value::Null, "{got}");
    assert_eq!(got["all_received"], true, "{got}");
    assert_eq!(metric(&comet, "comet_ws_compressions_total")?, 0.0);
    Ok(())
}

/// On the wire: a large message comes in one frame with RSV1 set, smaller
/// than the message; a short one and the server's own frames come plain;
/// an offer the server cannot meet gets plain frames.
#[test]
fn compressed_frames_on_the_wire() -> anyhow::Result<()> {
    let comet = Comet::start(
        COMET,
        &[comet_testkit::guests::HELLO, "--publish-token", TOKEN],
    )?;
    let big = "comet ".repeat(200);
    let mut ws = raw_ws(&comet, "permessage-deflate; client_max_window_bits")?;
    assert!(ws.head.contains("permessage-deflate"), "{}", ws.head);
    let (first, subscribed) = ws.frame()?;
    assert_eq!(
        first & 0x40,
        0,
        "the server's own frames are not compressed"
    );
    assert!(String::from_utf8_lossy(&subscribed).contains("\"subscribed\""));
    publish(&comet, TOKEN, "news", &big)?;
    let (first, payload) = ws.frame()?;
    assert_eq!(first, 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
    assert!(payload.len() < big.len() / 4, "{} bytes", payload.len());
    publish(&comet, TOKEN, "news", "short")?;
    let (first, payload) = ws.frame()?;
    assert_eq!(first, 0x81, "a short message is sent plain");
    assert!(String::from_utf8_lossy(&payload).contains("\"short\""));

    // A window under 15 bits for the server cannot be met: declined.
    let mut plain = raw_ws(&comet, "permessage-deflate; server_max_window_bits=10")?;
    assert!(!plain.head.contains("permessage-deflate"), "{}", plain.head);
    plain.frame()?;
    publish(&comet, TOKEN, "news", &big)?;
    let (first, payload) = plain.frame()?;
    assert_eq!(first, 0x81);
    assert!(String::from_utf8_lossy(&payload).contains(&big));
    Ok(())
}

/// A WebSocket read byte by byte from a socket, after its handshake.
struct RawWs {
    tcp: TcpStream,
    head: String,
}

/// Open `/comet/ws?channel=news` offering `extensions`.
fn raw_ws(comet: &Comet, extensions: &str) -> anyhow::Result<RawWs> {
    let mut tcp = TcpStream::connect(comet.addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "GET /comet/ws?channel=news HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\n\
         connection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-version: 13\r\nsec-websocket-extensions: {extensions}\r\n\r\n",
        comet.addr
    )?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tcp.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    Ok(RawWs { tcp, head })
}

impl RawWs {
    /// The next frame: its first byte and its payload.
    fn frame(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        let mut two = [0u8; 2];
        self.tcp.read_exact(&mut two)?;
        let len = match two[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.tcp.read_exact(&mut n)?;
                usize::from(u16::from_be_bytes(n))
            }
            127 => {
                let mut n = [0u8; 8];
                self.tcp.read_exact(&mut n)?;
                usize::try_from(u64::from_be_bytes(n))?
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload)?;
        Ok((two[0], payload))
    }
}

/// Chromium offers permessage-deflate; with it agreed, a page's large
/// publish goes out compressed and its message comes back.
#[test]
fn chromium_agrees_and_both_directions_work() -> anyhow::Result<()> {
    let Some(binary) = chromium_or_skip() else {
        return Ok(());
    };
    let comet = Comet::start(COMET, &[comet_testkit::guests::HELLO, "--client-publish"])?;
    // A page of comet's own origin.
    let (_browser, mut devtools) = open_page(binary, &comet.url("/comet/client.js"))?;
    let mut id = 0;
    let ws_url = comet.url("/comet/ws").replace("http://", "ws://");
    eval(
        &mut devtools,
        &mut id,
        &format!(
            r#"
            window.big = "browser ".repeat(300);
            window.result = new Promise((resolve, reject) => {{
                const ws = new WebSocket({ws_url:?});
                ws.onopen = () => ws.send(JSON.stringify({{op: "subscribe", channel: "news", id: 1}}));
                ws.onmessage = e => {{
                    const frame = JSON.parse(e.data);
                    if (frame.type === "subscribed")
                        ws.send(JSON.stringify({{op: "publish", channel: "news", data: big, id: 2}}));
                    if (frame.type === "message")
                        resolve({{ extensions: ws.extensions, same: frame.data === big }});
                    if (frame.type === "error") reject(new Error(e.data));
                }};
                ws.onerror = () => reject(new Error("WebSocket failed"));
            }});
            "started"
            "#
        ),
    )?;
    let got = settled(&mut devtools, &mut id, "window.result")?;
    assert_eq!(
        got["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "{got}"
    );
    assert_eq!(got["same"], true, "{got}");
    assert_eq!(metric(&comet, "comet_ws_compressions_total")?, 1.0);
    Ok(())
}
