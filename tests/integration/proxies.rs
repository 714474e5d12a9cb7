//! comet behind a real nginx: with `--trusted-proxy`, each client's own
//! address (from `X-Forwarded-For`, or from a PROXY protocol header with
//! `--proxy-protocol`) is what on-request sees and what the per-address
//! bound counts, per request on nginx's kept-alive upstream connections.
//! SSE and WebSocket pass through nginx's defaults (comet asks it not to
//! buffer). Clients use their own loopback addresses (127.0.0.2 and up);
//! nginx reaches comet from 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use comet_testkit::{Comet, Log, guests, publish};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::COMET;
use crate::tls::runtime;

const TOKEN: &str = "proxy-token";

/// nginx in the foreground with a configuration of the test's, stopped on
/// drop.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_or_skip() -> bool {
    let found = Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "skipped: nginx is not installed (apt-get install nginx-light libnginx-mod-stream)"
        );
    }
    found
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Nginx {
    /// nginx with `body` (its `http` or `stream` blocks), listening on
    /// `port` once started.
    fn start(body: &str, port: u16) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        // At `notice` nginx logs its limits once its configuration is
        // loaded, which is after its listening sockets are bound.
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_rlimit_nofile 20000;\n\
             pid {dir}/nginx.pid;\nerror_log stderr notice;\n\
             load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
             events {{ worker_connections 16000; }}\n{body}\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Log::read(child.stderr.take().expect("stderr"));
        let nginx = Nginx { child, _dir: dir };
        let listening = log.wait_until(Duration::from_secs(30), |t| t.contains("getrlimit("));
        anyhow::ensure!(
            listening && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "nginx did not listen on {port}:\n{}",
            log.text()
        );
        Ok(nginx)
    }

    /// nginx proxying HTTP (and WebSocket upgrades) on `port` to comet at
    /// `upstream`, with kept-alive upstream connections, adding
    /// `X-Forwarded-For`; buffering left at nginx's default.
    fn http(port: u16, upstream: SocketAddr) -> anyhow::Result<Nginx> {
        let temp = tempfile::tempdir()?;
        let body = format!(
            "http {{
                access_log off;
                client_body_temp_path {t}/body; proxy_temp_path {t}/proxy;
                fastcgi_temp_path {t}/fastcgi; uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
                map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
                upstream comet {{ server {upstream}; keepalive 64; }}
                server {{
                    listen 127.0.0.1:{port};
                    location / {{
                        proxy_pass http://comet;
                        proxy_http_version 1.1;
                        proxy_set_header Host $host;
                        proxy_set_header Upgrade $http_upgrade;
                        proxy_set_header Connection $connection_upgrade;
                        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                        proxy_read_timeout 1h;
                    }}
                }}
            }}",
            t = temp.path().display()
        );
        let nginx = Nginx::start(&body, port)?;
        // The temporary paths live as long as nginx.
        std::mem::forget(temp);
        Ok(nginx)
    }
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// `GET path` from `from` through `to`, read whole (`Connection: close`).
async fn get_from(from: IpAddr, to: SocketAddr, path: &str, extra: &str) -> anyhow::Result<String> {
    let mut tcp = connect_from(from, to).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: comet\r\n{extra}connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// The remote address on-request saw for a `GET /whoami` from `from`
/// through `to`.
async fn whoami(from: IpAddr, to: SocketAddr, extra: &str) -> anyhow::Result<String> {
    let answer = get_from(from, to, "/whoami", extra).await?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no body: {answer}"))?;
    // A chunked body through nginx: the JSON is its one chunk.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("no JSON: {answer}"))?;
    let value: Value = serde_json::from_str(json)?;
    Ok(value["remote"].as_str().unwrap_or_default().to_string())
}

/// An SSE stream opened from `from` through `to`: the socket once its
/// `subscribed` event came, or the whole answer if it was refused.
async fn sse_from(from: IpAddr, to: SocketAddr) -> anyhow::Result<Result<TcpStream, String>> {
    let mut tcp = connect_from(from, to).await?;
    tcp.write_all(b"GET /comet/sse?channel=crowd HTTP/1.1\r\nhost: comet\r\n\r\n")
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(Err(String::from_utf8_lossy(&seen).into_owned()));
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if !text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n") && text.contains('}') {
            return Ok(Err(text.into_owned()));
        }
        if text.contains("event: subscribed") {
            return Ok(Ok(tcp));
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// Through nginx, on-request sees each client's own address (the
/// right-most one nginx did not get from the client); a client's forged
/// `X-Forwarded-For` names nobody, through nginx or straight to comet.
/// SSE and a WebSocket work through nginx's defaults.
#[test]
fn behind_nginx_each_client_is_itself() -> anyhow::Result<()> {
    if !nginx_or_skip() {
        return Ok(());
    }
    let comet = Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--publish-token",
            TOKEN,
            "--trusted-proxy",
            "127.0.0.1",
        ],
    )?;
    let port = free_port();
    let _nginx = Nginx::http(port, comet.addr)?;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(whoami(ip("127.0.0.3"), proxy, "").await?, "127.0.0.3");
        assert_eq!(whoami(ip("127.0.0.4"), proxy, "").await?, "127.0.0.4");
        let forged = "x-forwarded-for: 203.0.113.9\r\n";
        assert_eq!(whoami(ip("127.0.0.3"), proxy, forged).await?, "127.0.0.3");
        // nginx passes a client's own `Forwarded` on untouched: not read.
        let forged_rfc = "forwarded: for=198.51.100.7\r\n";
        assert_eq!(
            whoami(ip("127.0.0.4"), proxy, forged_rfc).await?,
            "127.0.0.4"
        );
        // Straight to comet from a peer it does not trust: ignored.
        let direct = whoami(ip("127.0.0.3"), comet.addr, forged).await?;
        assert!(direct.starts_with("127.0.0.3:"), "{direct}");
        anyhow::Ok(())
    })?;

    // SSE through nginx, which buffers by default: comet asks it not to.
    let mut sse = rt
        .block_on(sse_from(ip("127.0.0.5"), proxy))?
        .map_err(|refused| anyhow::anyhow!("refused: {refused}"))?;
    // A WebSocket through nginx.
    let mut ws = rt.block_on(async {
        let tcp = connect_from(ip("127.0.0.5"), proxy).await?;
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://{proxy}/comet/ws"), tcp).await?;
        let subscribe = r#"{"op":"subscribe","channel":"crowd","id":1}"#;
        ws.send(tokio_tungstenite::tungstenite::Message::text(subscribe))
            .await?;
        let answer = ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
        anyhow::ensure!(answer.to_string().contains("subscribed"), "{answer}");
        anyhow::Ok(ws)
    })?;
    let r = publish(&comet, TOKEN, "crowd", "through nginx")?;
    assert_eq!(r.status, 200, "{}", r.body);
    rt.block_on(async {
        let wait = Duration::from_secs(30);
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("through nginx") {
            let n = tokio::time::timeout(wait, sse.read(&mut buf)).await??;
            anyhow::ensure!(n > 0, "the stream ended");
            seen.extend_from_slice(&buf[..n]);
        }
        loop {
            let frame = tokio::time::timeout(wait, ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("closed"))??;
            if frame.to_string().contains("through nginx") {
                return Ok(());
            }
        }
    })?;
    Ok(())
}

/// 3,000 streams from three client addresses through one nginx are all
/// served under a per-address bound of 2,048 (nginx's own address is not
/// bounded; its clients are); 2,049 from one address: the last gets
/// `503 too-many-connections`.
#[test]
fn the_per_address_bound_counts_clients_behind_nginx() -> anyhow::Result<()> {
    if !nginx_or_skip() {
        return Ok(());
    }
    comet_host::app::raise_open_file_limit();
    let comet = Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--trusted-proxy",
            "127.0.0.1",
            "--max-connections-per-ip",
            "2048",
        ],
    )?;
    let port = free_port();
    let _nginx = Nginx::http(port, comet.addr)?;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let rt = runtime();
    let open = |from: &str, n: usize| {
        let from = ip(from);
        rt.block_on(async move {
            let mut opened = Vec::new();
            for batch in 0..n.div_ceil(200) {
                let count = 200.min(n - batch * 200);
                let streams =
                    futures_util::future::join_all((0..count).map(|_| sse_from(from, proxy))).await;
                for stream in streams {
                    opened.push(stream?);
                }
            }
            anyhow::Ok(opened)
        })
    };
    let mut held = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let streams = open(from, 1000)?;
        for stream in &streams {
            if let Err(refused) = stream {
                anyhow::bail!("a stream from {from} was refused: {refused}");
            }
        }
        held.extend(streams);
    }
    comet_testkit::wait_connections(&comet, "sse", 3000)?;
    let crowd = open("127.0.0.5", 2049)?;
    let refused: Vec<&String> = crowd.iter().filter_map(|s| s.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{} refused", refused.len());
    assert!(refused[0].contains(" 503 "), "{}", refused[0]);
    assert!(
        refused[0].contains("too-many-connections"),
        "{}",
        refused[0]
    );
    // Closing a stream gives its client's slot back.
    drop(crowd);
    comet_testkit::wait_connections(&comet, "sse", 3000)?;
    let again = open("127.0.0.5", 1)?;
    assert!(again[0].is_ok(), "{:?}", again[0].as_ref().err());
    drop(held);
    Ok(())
}

/// With `--proxy-protocol`, nginx's stream proxy names each client in a
/// PROXY header (version 1) and on-request sees it, port and all; a
/// trusted peer that sends no header is not served; other peers need none.
#[test]
fn a_proxy_protocol_header_names_the_client() -> anyhow::Result<()> {
    if !nginx_or_skip() {
        return Ok(());
    }
    let comet = Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--trusted-proxy",
            "127.0.0.1",
            "--proxy-protocol",
        ],
    )?;
    let port = free_port();
    let body = format!(
        "stream {{ server {{ listen 127.0.0.1:{port}; proxy_pass {}; proxy_protocol on; }} }}",
        comet.addr
    );
    let _nginx = Nginx::start(&body, port)?;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    runtime().block_on(async {
        let seen = whoami(ip("127.0.0.6"), proxy, "").await?;
        anyhow::ensure!(seen.starts_with("127.0.0.6:"), "{seen}");
        // Straight from an untrusted peer: no header expected.
        let direct = whoami(ip("127.0.0.7"), comet.addr, "").await?;
        anyhow::ensure!(direct.starts_with("127.0.0.7:"), "{direct}");
        // From the trusted address without a header: closed unserved.
        // (Closed with the request unread: a reset is as good as an end.)
        match get_from(ip("127.0.0.1"), comet.addr, "/whoami", "").await {
            Ok(answer) => {
                anyhow::ensure!(answer.is_empty(), "served without a PROXY header: {answer}")
            }
            Err(e) => anyhow::ensure!(
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "{e}"
            ),
        }
        Ok(())
    })?;
    // The log says why it was closed.
    assert!(
        comet.wait_log("no PROXY header", Duration::from_secs(10)),
        "{}",
        comet.stderr()
    );
    Ok(())
}
