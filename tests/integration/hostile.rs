use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comet_testkit::{Comet, admin, get, guests, ws_connect, ws_send};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::COMET;

fn start(extra: &[&str]) -> anyhow::Result<Comet> {
    let mut args = vec![guests::CHANNELS_APP];
    args.extend_from_slice(extra);
    Comet::start(COMET, &args)
}

/// Read until the server closes the connection (or `limit` passes); how
/// long that took.
fn closed_within(tcp: &mut TcpStream, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    tcp.set_read_timeout(Some(limit))?;
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(start.elapsed()),
            Err(e) => anyhow::bail!("still open after {:?}: {e}", start.elapsed()),
        }
    }
}

/// Sockets that send nothing, half a request head, or sit idle between
/// requests are closed after the header timeout.
#[test]
fn silent_partial_and_idle_connections_are_closed() -> anyhow::Result<()> {
    let comet = start(&["--header-timeout-s", "1"])?;
    let mut silent = TcpStream::connect(comet.addr)?;
    let mut partial = TcpStream::connect(comet.addr)?;
    partial.write_all(b"GET /comet/sse?channel=a HTTP/1.1\r\nHost: x\r\n")?;
    let mut idle = TcpStream::connect(comet.addr)?;
    idle.write_all(b"GET /comet/nothing HTTP/1.1\r\nHost: x\r\n\r\n")?;
    for (what, tcp) in [
        ("silent", &mut silent),
        ("partial", &mut partial),
        ("idle", &mut idle),
    ] {
        let took = closed_within(tcp, Duration::from_secs(20))?;
        assert!(took < Duration::from_secs(10), "{what}: {took:?}");
    }
    // A normal request is unaffected.
    assert_eq!(
        get(&comet.url("/comet/poll?channel=a&timeout=0"))?.status,
        200
    );
    Ok(())
}

/// One client address holds at most its bound of connections (a WebSocket
/// keeps its slot after the upgrade); the next one is answered 503 and
/// closed, and a slot comes back when one closes.
#[test]
fn connections_per_address_are_bounded() -> anyhow::Result<()> {
    let comet = start(&["--max-connections-per-ip", "3"])?;
    let _ws = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(comet.addr))
        .collect::<Result<_, _>>()?;
    let mut extra = TcpStream::connect(comet.addr)?;
    extra.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut answer = String::new();
    extra.read_to_string(&mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too-many-connections"), "{answer}");
    drop(held);
    comet.wait_for("a slot to come back", Duration::from_secs(10), || {
        get(&comet.url("/comet/poll?channel=a&timeout=0"))
            .ok()
            .filter(|r| r.status == 200)
    })?;
    Ok(())
}

/// comet raises its soft limit of open files to the hard one.
#[test]
fn the_open_file_limit_is_raised() -> anyhow::Result<()> {
    let comet = Comet::start_after("ulimit -Sn 256", COMET, &[guests::CHANNELS_APP])?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", comet.pid()))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(numbers[0], numbers[1], "soft and hard differ: {line}");
    Ok(())
}

/// What a raw HTTP/1.x request to `/comet/ws` is answered with: the status
/// line and the headers. As a connection's first request it is served
/// straight on the socket; as the `second` (after a `404` on the same
/// connection), by hyper.
fn handshake(comet: &Comet, request: &str, second: bool) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(comet.addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    if second {
        tcp.write_all(b"GET /comet/nothing HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let (head, mut body) = read_head(&mut tcp)?;
        anyhow::ensure!(head.starts_with("http/1.1 404"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .context("content-length")?
            .trim()
            .parse()?;
        while body.len() < length {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf)?;
            anyhow::ensure!(n > 0, "closed in the body");
            body.extend_from_slice(&buf[..n]);
        }
    }
    tcp.write_all(request.as_bytes())?;
    Ok(read_head(&mut tcp)?.0)
}

/// A response head (lower-cased) and the bytes read after it.
fn read_head(tcp: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = answer.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&answer).to_lowercase(), rest));
        }
        let n = tcp.read(&mut buf)?;
        anyhow::ensure!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
}

/// The WebSocket handshake follows RFC 6455: a wrong version gets 426 and
/// the version to use; a bad key, another method, no `Connection: Upgrade`
/// or HTTP/1.0 get 400. The same on both paths: a connection's first
/// request (served on the socket) and a later one (served by hyper).
#[test]
fn websocket_handshakes_are_checked() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let request = |method: &str, version: &str, key: &str, ws_version: &str, connection: bool| {
        format!(
            "{method} /comet/ws HTTP/{version}\r\nHost: x\r\nUpgrade: websocket\r\n{}\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {ws_version}\r\n\r\n",
            if connection {
                "Connection: keep-alive, Upgrade\r\n"
            } else {
                ""
            }
        )
    };
    let good_key = "dGhlIHNhbXBsZSBub25jZQ==";
    for second in [false, true] {
        let ok = handshake(&comet, &request("GET", "1.1", good_key, "13", true), second)?;
        assert!(ok.starts_with("http/1.1 101"), "{ok}");
        // RFC 6455's example key and its answer.
        assert!(
            ok.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{ok}"
        );
        let version = handshake(&comet, &request("GET", "1.1", good_key, "99", true), second)?;
        assert!(version.starts_with("http/1.1 426"), "{version}");
        assert!(version.contains("sec-websocket-version: 13"), "{version}");
    }
    for (what, r) in [
        ("1-byte key", request("GET", "1.1", "QQ==", "13", true)),
        ("POST", request("POST", "1.1", good_key, "13", true)),
        (
            "no Connection: Upgrade",
            request("GET", "1.1", good_key, "13", false),
        ),
        ("HTTP/1.0", request("GET", "1.0", good_key, "13", true)),
    ] {
        for second in [false, true] {
            let answer = handshake(&comet, &r, second)?;
            assert!(
                answer.starts_with("http/1.") && answer[9..].starts_with("400"),
                "{what} (second request: {second}): {answer}"
            );
        }
    }
    Ok(())
}

/// The close a client gets after `send`ing one raw frame.
fn close_after(comet: &Comet, frame: &[u8]) -> anyhow::Result<Option<u16>> {
    let mut ws = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    let tcp = match ws.get_mut() {
        tokio_tungstenite::tungstenite::stream::MaybeTlsStream::Plain(tcp) => tcp,
        _ => anyhow::bail!("not plain TCP"),
    };
    tcp.write_all(frame)?;
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return Ok(frame.map(|f| u16::from(f.code))),
            Ok(_) => continue,
            Err(e) => anyhow::bail!("no close frame: {e}"),
        }
    }
}

/// A client frame, masked as clients must (mask of zeros).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Invalid UTF-8 in a text frame closes with 1007; a close with a code a
/// peer may not send (999) is answered with a close (1002), not dropped;
/// so are broken headers (1002), oversized frames (1009) and a message in
/// more frames than allowed (1008).
#[test]
fn websocket_protocol_violations_get_their_close_codes() -> anyhow::Result<()> {
    let comet = start(&[])?;
    assert_eq!(
        close_after(&comet, &client_frame(0x1, &[0xff, 0xfe]))?,
        Some(1007)
    );
    assert_eq!(
        close_after(&comet, &client_frame(0x8, &999u16.to_be_bytes()))?,
        Some(1002)
    );
    // Violations in a frame's header: unmasked, reserved bits without an
    // extension, a length over the limit; and a message in too many frames.
    assert_eq!(close_after(&comet, &[0x81, 0x01, b'x'])?, Some(1002));
    let rsv1 = [0xc1, 0x81, 0, 0, 0, 0, b'x'];
    assert_eq!(close_after(&comet, &rsv1)?, Some(1002));
    let huge = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0x86, 0xa0, 0, 0, 0, 0];
    assert_eq!(close_after(&comet, &huge)?, Some(1009));
    let mut parts = vec![0x01, 0x80, 0, 0, 0, 0];
    for _ in 0..1100 {
        parts.extend_from_slice(&[0x00, 0x80, 0, 0, 0, 0]);
    }
    assert_eq!(close_after(&comet, &parts)?, Some(1008));
    Ok(())
}

/// A client flooding pings (and reading nothing) is closed with 1008.
#[test]
fn ping_floods_are_closed() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut ws = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    ws_send(&mut ws, &json!({"op": "subscribe", "channel": "p"}))?;
    for _ in 0..2000 {
        if ws.send(Message::Ping(vec![1u8; 8].into())).is_err() {
            break;
        }
    }
    let code = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => anyhow::bail!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1008));
    Ok(())
}

/// Under umask 000 the data directory and uploads are still private, and
/// a compile cache others can write is refused at start.
#[test]
fn the_data_directory_is_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let data_arg = data.to_str().unwrap_or_default();
    let comet = Comet::start_after("umask 000", COMET, &[guests::HELLO, "--data-dir", data_arg])?;
    let r = admin(
        &comet,
        "PUT",
        "/admin/modules/up",
        Some(&std::fs::read(guests::HELLO)?),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(&data)?, 0o700);
    assert_eq!(mode(&data.join("cache"))?, 0o700);
    assert_eq!(mode(&data.join("modules/up"))?, 0o700);
    let upload = std::fs::read_dir(data.join("modules/up"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no upload stored"))??;
    assert_eq!(mode(&upload.path())?, 0o600);
    drop(comet);
    std::fs::set_permissions(data.join("cache"), std::fs::Permissions::from_mode(0o777))?;
    let (status, _, stderr) = comet_testkit::run_to_exit(
        COMET,
        &[
            "run",
            guests::HELLO,
            "--data-dir",
            data_arg,
            "--no-admin",
            "--listen",
            "127.0.0.1:0",
        ],
    )?;
    assert!(!status.success());
    assert!(stderr.contains("writable by other users"), "{stderr}");
    Ok(())
}
