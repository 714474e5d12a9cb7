//! comet's own TLS: `--tls-cert` and `--tls-key`, with certificates each
//! test makes. Every transport over it (HTTP/2 chosen by ALPN: a
//! handler's answer, an SSE stream, a long-poll and a publish on one
//! connection; a WebSocket on its own); the certificate re-read on a file
//! change and on SIGHUP while open connections go on; bad files refused at
//! start with their name and kept out at reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use comet_testkit::{Comet, run_to_exit, wait_connections};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::COMET;

/// The publish token of the servers these tests start.
pub(crate) const TOKEN: &str = "tls-token";

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
pub(crate) struct Certificate {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    der: CertificateDer<'static>,
}

impl Certificate {
    pub(crate) fn new() -> Certificate {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
        Certificate {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }

    /// Write it to `cert.pem` and `key.pem` in `dir`.
    pub(crate) fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&key, &self.key_pem).expect("write the key");
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        (cert, key)
    }
}

/// A TLS connection to `addr` that trusts only `trusted`, offering `alpn`.
async fn connect(
    addr: SocketAddr,
    trusted: &Certificate,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der.clone()).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
}

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection to `addr` over TLS (ALPN must choose `h2`).
async fn h2(addr: SocketAddr, trusted: &Certificate) -> anyhow::Result<H2> {
    let tls = connect(addr, trusted, &[b"h2", b"http/1.1"]).await?;
    anyhow::ensure!(
        tls.get_ref().1.alpn_protocol() == Some(&b"h2"[..]),
        "ALPN chose {:?}, not h2",
        tls.get_ref().1.alpn_protocol()
    );
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn request(method: &str, path: &str, body: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request")
}

/// The whole body of `response`, as text.
async fn text(response: hyper::Response<Incoming>) -> anyhow::Result<String> {
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Publish `data` to `channel` over `sender`.
async fn publish(sender: &mut H2, channel: &str, data: &str) -> anyhow::Result<()> {
    let response = sender
        .send_request(request("POST", &format!("/comet/publish/{channel}"), data))
        .await?;
    let status = response.status();
    let body = text(response).await?;
    anyhow::ensure!(status == 200, "publish: {status} {body}");
    Ok(())
}

/// Read `body` until it holds `needle`; what it read.
async fn read_until(body: &mut Incoming, seen: &mut String, needle: &str) -> anyhow::Result<()> {
    let wait = async {
        while !seen.contains(needle) {
            let frame = body
                .frame()
                .await
                .ok_or_else(|| anyhow::anyhow!("the stream ended: {seen}"))??;
            if let Some(data) = frame.data_ref() {
                seen.push_str(&String::from_utf8_lossy(data));
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| anyhow::anyhow!("no {needle:?} in 30 s: {seen}"))?
}

type Wss = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// A WebSocket over TLS, subscribed to `channel`.
async fn websocket(addr: SocketAddr, trusted: &Certificate, channel: &str) -> anyhow::Result<Wss> {
    let tls = connect(addr, trusted, &[b"http/1.1"]).await?;
    let (mut ws, response) =
        tokio_tungstenite::client_async("wss://localhost/comet/ws", tls).await?;
    anyhow::ensure!(response.status() == 101, "{response:?}");
    let subscribe = json!({"op": "subscribe", "channel": channel, "id": 1});
    ws.send(Frame::text(subscribe.to_string())).await?;
    anyhow::ensure!(next_json(&mut ws).await?["type"] == "subscribed");
    Ok(ws)
}

/// The next JSON frame of `ws` (heartbeats skipped).
async fn next_json(ws: &mut Wss) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no frame in 30 s"))?
            .ok_or_else(|| anyhow::anyhow!("the socket closed"))??;
        if let Frame::Text(text) = frame {
            let value: Value = serde_json::from_str(&text)?;
            if value["type"] != "heartbeat" {
                return Ok(value);
            }
        }
    }
}

/// Publish `data` to `channel` of the comet at `addr` that serves
/// `trusted`, over HTTP/2 (for tests without a runtime).
pub(crate) fn publish_blocking(
    addr: SocketAddr,
    trusted: &Certificate,
    channel: &str,
    data: &str,
) -> anyhow::Result<()> {
    runtime().block_on(async { publish(&mut h2(addr, trusted).await?, channel, data).await })
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// comet with `--tls-cert` and `--tls-key` from `dir`.
pub(crate) fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Comet> {
    start_guest(comet_testkit::guests::HELLO, dir, extra)
}

/// [`start`] with the guest `guest`.
fn start_guest(guest: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<Comet> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut args = vec![
        guest,
        "--publish-token",
        TOKEN,
        "--tls-cert",
        cert.to_str().unwrap_or_default(),
        "--tls-key",
        key.to_str().unwrap_or_default(),
    ];
    args.extend_from_slice(extra);
    let comet = Comet::start(COMET, &args)?;
    anyhow::ensure!(comet.scheme == "https", "comet did not say it serves https");
    Ok(comet)
}

/// Over TLS, ALPN picks HTTP/2 for a client that offers it: a handler's
/// answer, an SSE stream, a long-poll and a publish share one connection,
/// and the SSE stream and the long-poll receive; a WebSocket (HTTP/1.1)
/// receives the same message; HTTP/1.1 works for a client offering only it;
/// plain HTTP to the port gets no answer in plain text.
#[test]
fn every_transport_works_over_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certificate = Certificate::new();
    certificate.write(dir.path());
    let comet = start(dir.path(), &[])?;
    let addr = comet.addr;
    runtime().block_on(async {
        let mut h2 = h2(addr, &certificate).await?;
        let hello = h2.send_request(request("GET", "/", "")).await?;
        anyhow::ensure!(hello.status() == 200, "GET /: {}", hello.status());

        let sse = h2
            .send_request(request("GET", "/comet/sse?channel=news", ""))
            .await?;
        anyhow::ensure!(sse.status() == 200, "sse: {}", sse.status());
        let mut sse = sse.into_body();
        let mut seen = String::new();
        read_until(&mut sse, &mut seen, "event: subscribed").await?;
        let subscribed = seen
            .lines()
            .skip_while(|l| *l != "event: subscribed")
            .find_map(|l| l.strip_prefix("data: "))
            .ok_or_else(|| anyhow::anyhow!("no data in {seen}"))?;
        let cursor: Value = serde_json::from_str(subscribed)?;
        let cursor = cursor["cursor"].as_str().unwrap_or_default().to_string();
        let since: String = form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
        let poll = h2.send_request(request(
            "GET",
            &format!("/comet/poll?channel=news&timeout=20000&since={since}"),
            "",
        ));
        let mut ws = websocket(addr, &certificate, "news").await?;

        publish(&mut h2, "news", "over tls").await?;
        read_until(&mut sse, &mut seen, "over tls").await?;
        let polled: Value = serde_json::from_str(&text(poll.await?).await?)?;
        anyhow::ensure!(polled["messages"][0]["data"] == "over tls", "{polled}");
        let message = next_json(&mut ws).await?;
        anyhow::ensure!(message["data"] == "over tls", "{message}");

        // A client that offers only HTTP/1.1 gets it.
        let tls = connect(addr, &certificate, &[b"http/1.1"]).await?;
        anyhow::ensure!(tls.get_ref().1.alpn_protocol() == Some(&b"http/1.1"[..]));
        let (mut h1, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let hello = h1.send_request(request("GET", "/", "")).await?;
        anyhow::ensure!(
            hello.status() == 200,
            "GET / over HTTP/1.1: {}",
            hello.status()
        );
        Ok(())
    })?;
    // Plain HTTP to a TLS port: no plain-text answer.
    let plain = comet_testkit::get(&format!("http://{addr}/"));
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    Ok(())
}

/// A WebSocket a handler accepts (an upgrade through hyper, not the raw
/// path of `/comet/ws`) works over TLS: the session takes the TLS stream
/// back from hyper and receives.
#[test]
fn a_websocket_a_handler_accepts_works_over_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certificate = Certificate::new();
    certificate.write(dir.path());
    let comet = start_guest(comet_testkit::guests::CHANNELS_APP, dir.path(), &[])?;
    runtime().block_on(async {
        let tls = connect(comet.addr, &certificate, &[b"http/1.1"]).await?;
        let (mut ws, response) =
            tokio_tungstenite::client_async("wss://localhost/rooms/42/ws?user=cy", tls).await?;
        anyhow::ensure!(response.status() == 101, "{response:?}");
        let first = next_json(&mut ws).await?;
        anyhow::ensure!(first["type"] == "subscribed", "{first}");
        let mut h2 = h2(comet.addr, &certificate).await?;
        publish(&mut h2, "room:42", "accepted over tls").await?;
        let message = next_json(&mut ws).await?;
        anyhow::ensure!(message["data"] == "accepted over tls", "{message}");
        Ok(())
    })
}

/// The certificate is re-read when its files change and on SIGHUP: new
/// connections get the new one, a connection already open keeps receiving;
/// a key that is not the certificate's is refused and the one in use stays.
#[test]
fn the_certificate_reloads_and_open_connections_stay() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let first = Certificate::new();
    first.write(dir.path());
    let comet = start(dir.path(), &[])?;
    let addr = comet.addr;
    // Waits for one more `needle` in the log than before `act`.
    let after = |needle: &'static str, act: &dyn Fn() -> anyhow::Result<()>| {
        let before = comet.stderr().matches(needle).count();
        act()?;
        comet.wait_log_until(needle, Duration::from_secs(30), move |log| {
            log.matches(needle).count() > before
        })
    };
    let rt = runtime();
    let mut open = rt.block_on(websocket(addr, &first, "news"))?;
    wait_connections(&comet, "websocket", 1)?;

    let second = Certificate::new();
    after("certificate reloaded after a file change", &|| {
        second.write(dir.path());
        Ok(())
    })?;
    rt.block_on(async {
        anyhow::ensure!(
            connect(addr, &first, &[]).await.is_err(),
            "a new connection still got the first certificate"
        );
        let mut h2 = h2(addr, &second).await?;
        publish(&mut h2, "news", "after the reload").await?;
        let message = next_json(&mut open).await?;
        anyhow::ensure!(message["data"] == "after the reload", "{message}");
        Ok(())
    })?;

    // A certificate with the second one's key: refused, the second stays.
    let third = Certificate::new();
    let kept = "certificate not reloaded after a file change, keeping the one in use";
    after(kept, &|| {
        Ok(std::fs::write(
            dir.path().join("cert.pem"),
            &third.cert_pem,
        )?)
    })?;
    // (A reload may first have caught the file half written.)
    let mismatch = "does not go with the certificate";
    comet.wait_log_until(mismatch, Duration::from_secs(30), |log| {
        log.contains(mismatch)
    })?;
    rt.block_on(connect(addr, &second, &[]))?;
    // SIGHUP re-reads (and refuses) too.
    after("certificate not reloaded on SIGHUP", &|| {
        let kill = std::process::Command::new("kill")
            .args(["-HUP", &comet.pid().to_string()])
            .status()?;
        anyhow::ensure!(kill.success(), "kill -HUP: {kill}");
        Ok(())
    })?;
    // Its own key: taken.
    after("certificate reloaded after a file change", &|| {
        Ok(std::fs::write(dir.path().join("key.pem"), &third.key_pem)?)
    })?;
    rt.block_on(connect(addr, &third, &[]))?;
    Ok(())
}

/// A WebSocket over TLS that stops reading is closed once bytes have
/// waited for the write timeout, as on plain TCP: the records rustls holds
/// for it count as waiting. What reached it is in order.
#[test]
fn a_websocket_over_tls_that_stops_reading_is_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certificate = Certificate::new();
    certificate.write(dir.path());
    let timeout = 3;
    let comet = start(
        dir.path(),
        &[
            "--queue-len",
            "4096",
            "--write-timeout-s",
            &timeout.to_string(),
        ],
    )?;
    let addr = comet.addr;
    let rt = runtime();
    let mut stuck = rt.block_on(websocket(addr, &certificate, "stuck"))?;
    wait_connections(&comet, "websocket", 1)?;
    // About 18 MiB: more than loopback's socket buffers and rustls's hold.
    let big = "x".repeat(60 << 10);
    rt.block_on(async {
        let mut h2 = h2(addr, &certificate).await?;
        for i in 0..300 {
            publish(&mut h2, "stuck", &format!("{i}:{big}")).await?;
        }
        anyhow::Ok(())
    })?;
    comet.wait_for(
        "the client that stopped reading to be closed",
        Duration::from_secs(2 * timeout + 10),
        || {
            let s = comet_testkit::status(&comet).ok()?;
            (s["connections"]["by_transport"]["websocket"] == 0).then_some(())
        },
    )?;
    let received = rt.block_on(async {
        let mut next = 0;
        while let Ok(v) = next_json(&mut stuck).await {
            let data = v["data"].as_str().unwrap_or_default();
            anyhow::ensure!(data.split(':').next() == Some(next.to_string().as_str()));
            next += 1;
        }
        anyhow::Ok(next)
    })?;
    assert!(
        received > 0 && received < 300,
        "{received} messages before the end"
    );
    Ok(())
}

/// A certificate or key that cannot be used stops comet at start, naming
/// the file.
#[test]
fn bad_files_at_start_are_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certificate = Certificate::new();
    let (cert, key) = certificate.write(dir.path());
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate")?;
    let other = Certificate::new();
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, &other.key_pem)?;
    for (cert, key, says) in [
        (&missing, &key, format!("cannot read {}", missing.display())),
        (
            &garbage,
            &key,
            format!("{} holds no certificate", garbage.display()),
        ),
        (
            &cert,
            &garbage,
            format!("{} holds no private key", garbage.display()),
        ),
        (
            &cert,
            &other_key,
            format!("the key in {}", other_key.display()),
        ),
    ] {
        let (status, _, stderr) = run_to_exit(
            COMET,
            &[
                "run",
                comet_testkit::guests::HELLO,
                "--no-admin",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap_or_default(),
                "--tls-key",
                key.to_str().unwrap_or_default(),
            ],
        )?;
        assert!(!status.success(), "started with {cert:?} and {key:?}");
        assert!(stderr.contains(&says), "expected {says:?} in:\n{stderr}");
    }
    // Both or neither.
    let (status, _, stderr) = run_to_exit(
        COMET,
        &["run", comet_testkit::guests::HELLO, "--tls-cert", "x.pem"],
    )?;
    assert!(!status.success());
    assert!(stderr.contains("--tls-key"), "{stderr}");
    Ok(())
}

/// With `--admin-tls-cert` and `--admin-tls-key` the admin API speaks TLS
/// (its token still needed), while the public listener stays plain; plain
/// HTTP to the admin port gets no answer.
#[test]
fn the_admin_listener_has_its_own_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certificate = Certificate::new();
    let (cert, key) = certificate.write(dir.path());
    let comet = Comet::start(
        COMET,
        &[
            comet_testkit::guests::HELLO,
            "--admin-tls-cert",
            cert.to_str().unwrap_or_default(),
            "--admin-tls-key",
            key.to_str().unwrap_or_default(),
        ],
    )?;
    assert_eq!(comet.scheme, "http", "the public listener stays plain");
    let admin = comet.admin_addr.expect("an admin listener");
    let certificate = &certificate;
    let status = |token: &'static str| async move {
        let tls = connect(admin, certificate, &[b"http/1.1"]).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/admin/status")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        Ok::<_, anyhow::Error>((response.status(), text(response).await?))
    };
    runtime().block_on(async {
        let (code, body) = status(comet_testkit::ADMIN_TOKEN).await?;
        anyhow::ensure!(code == 200, "{code}: {body}");
        anyhow::ensure!(body.contains("\"modules\""), "{body}");
        let (code, _) = status("wrong").await?;
        anyhow::ensure!(code == 403, "a wrong token: {code}");
        Ok(())
    })?;
    // Plain HTTP to the admin port: no HTTP answer comes back.
    let plain = comet_testkit::admin(&comet, "GET", "/admin/status", None);
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "{:?}",
        plain.map(|r| r.body)
    );
    Ok(())
}
