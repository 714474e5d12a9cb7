//! Pages on other origins, in headless Chromium: the page is served from
//! another loopback address than comet, so it is another origin (and
//! another site). Allowed, it reads SSE, long-polls and a WebSocket and
//! imports the browser client; not allowed, its WebSocket gets no `101`
//! and its stream cannot be read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use comet_testkit::{Comet, admin, publish, send};
use serde_json::Value;

use crate::COMET;
use crate::browser::{chromium_or_skip, eval, open_page, open_page_with, settled};
use crate::tls;

/// One page, served at every path of a loopback address of its own until
/// dropped.
struct Page {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Page {
    fn serve(ip: &str, html: &str) -> anyhow::Result<Page> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let body = html.to_string();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        });
        Ok(Page {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The page's origin, as its browser sends it.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const PAGE: &str = "<!doctype html><title>elsewhere</title><p>a page on another origin</p>";

/// The sum of a metric's series, from `/metrics`.
pub(crate) fn metric(comet: &Comet, series: &str) -> anyhow::Result<f64> {
    let text = admin(comet, "GET", "/metrics", None)?.body;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// An allowed origin's page receives over EventSource, long-poll and
/// WebSocket, and through the browser client imported from comet itself;
/// the preflight of a request with a custom header is answered.
#[test]
fn a_page_on_an_allowed_origin_receives_on_every_transport() -> anyhow::Result<()> {
    let Some(binary) = chromium_or_skip() else {
        return Ok(());
    };
    let page = Page::serve("127.0.0.2", PAGE)?;
    let comet = Comet::start(
        COMET,
        &[
            comet_testkit::guests::HELLO,
            "--publish-token",
            "t",
            "--allowed-origin",
            &page.origin(),
        ],
    )?;
    let (_browser, mut devtools) = open_page(binary, &page.url())?;
    receive_on_every_transport(&mut devtools, &comet, 1, || {
        let r = publish(&comet, "t", "news", WANT)?;
        anyhow::ensure!(r.status == 200, "{}", r.body);
        Ok(())
    })?;
    // A request a browser preflights (a custom header) gets its answer.
    let preflight = send(
        "OPTIONS",
        &comet.url("/comet/poll?channel=news"),
        &[
            ("origin", &page.origin()),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-app"),
        ],
        None,
    )?;
    assert_eq!(preflight.status, 204, "{}", preflight.body);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(page.origin().as_str())
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("x-app")
    );
    Ok(())
}

/// Over comet's own TLS the same page receives on every transport, and its
/// requests to comet share one HTTP/2 connection: ten EventSources all
/// receive (over HTTP/1.1 a browser opens six connections to a host).
#[test]
fn a_page_receives_over_tls_with_ten_event_sources() -> anyhow::Result<()> {
    let Some(binary) = chromium_or_skip() else {
        return Ok(());
    };
    let page = Page::serve("127.0.0.2", PAGE)?;
    let dir = tempfile::tempdir()?;
    let certificate = tls::Certificate::new();
    certificate.write(dir.path());
    let comet = tls::start(dir.path(), &["--allowed-origin", &page.origin()])?;
    // The test's certificate is its own: Chromium is told not to check it.
    let (_browser, mut devtools) =
        open_page_with(binary, &page.url(), &["--ignore-certificate-errors"])?;
    // Eleven streams (ten EventSources and the client's) and a long-poll
    // at once: past the six connections HTTP/1.1 would give the page.
    receive_on_every_transport(&mut devtools, &comet, 10, || {
        tls::publish_blocking(comet.addr, &certificate, "news", WANT)
    })?;
    Ok(())
}

/// What the pages publish and wait for.
const WANT: &str = "across origins";

/// In the page open in `devtools`, subscribe to `news` with `sources`
/// EventSources, a WebSocket and the browser client (imported from
/// comet), then `publish` and long-poll from the stream's cursor: each
/// must receive.
fn receive_on_every_transport(
    devtools: &mut comet_testkit::WsClient,
    comet: &Comet,
    sources: usize,
    publish: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut id = 0;
    let base = comet.url("");
    let base = base.trim_end_matches('/');
    // Each transport subscribes; `ready` settles once all have.
    eval(
        devtools,
        &mut id,
        &format!(
            r#"
            window.base = {base:?};
            window.got = {{ sse: [] }};
            const subscribed = [];
            for (let i = 0; i < {sources}; i++) subscribed.push(new Promise((resolve, reject) => {{
                const es = new EventSource(base + "/comet/sse?channel=news");
                es.addEventListener("subscribed", e => {{
                    window.cursor = JSON.parse(e.data).cursor;
                    resolve();
                }});
                es.onmessage = e => {{ window.got.sse[i] = JSON.parse(e.data).data; }};
                es.onerror = () => reject(new Error("EventSource " + i + " failed"));
            }}));
            subscribed.push(new Promise((resolve, reject) => {{
                const ws = new WebSocket(base.replace("http", "ws") + "/comet/ws");
                ws.onopen = () => ws.send(JSON.stringify({{op: "subscribe", channel: "news", id: 1}}));
                ws.onmessage = e => {{
                    const frame = JSON.parse(e.data);
                    if (frame.type === "subscribed") resolve();
                    if (frame.type === "message") window.got.ws = frame.data;
                }};
                ws.onerror = () => reject(new Error("WebSocket failed"));
            }}));
            subscribed.push(import(base + "/comet/client.js").then(({{ Comet }}) => {{
                const comet = new Comet(base, {{ transports: ["sse"] }});
                const news = comet.subscribe("news");
                news.on("message", m => {{ window.got.client = m.data; }});
                return news.ready;
            }}));
            window.ready = Promise.all(subscribed);
            "started"
            "#
        ),
    )?;
    settled(devtools, &mut id, "window.ready.then(() => 'ready')")?;
    // The long-poll from a stream's cursor: it answers with what follows,
    // even if the publish below comes first.
    eval(
        devtools,
        &mut id,
        "window.polled = fetch(base + '/comet/poll?channel=news&timeout=20000&since=' \
         + encodeURIComponent(window.cursor)).then(r => r.json()); 'polling'",
    )?;
    publish()?;
    let got = settled(
        devtools,
        &mut id,
        &format!(
            "window.polled.then(async poll => {{
                const all = () => got.sse.filter(d => d).length === {sources} && got.ws && got.client;
                while (!all()) await new Promise(r => setTimeout(r, 20));
                return {{ poll: poll.messages.map(m => m.data), ...got }};
            }})"
        ),
    )?;
    anyhow::ensure!(got["poll"] == Value::from(vec![WANT]), "{got}");
    anyhow::ensure!(got["sse"] == Value::from(vec![WANT; sources]), "{got}");
    for transport in ["ws", "client"] {
        anyhow::ensure!(got[transport] == WANT, "{transport}: {got}");
    }
    Ok(())
}

/// By default only the server's own origin may open a WebSocket: a page
/// elsewhere gets no `101` (so no connection is ever opened for it) and
/// cannot read a stream; the same page's request from the server's own
/// origin works.
#[test]
fn a_page_on_another_origin_is_refused_by_default() -> anyhow::Result<()> {
    let Some(binary) = chromium_or_skip() else {
        return Ok(());
    };
    let page = Page::serve("127.0.0.2", PAGE)?;
    let comet = Comet::start(COMET, &[comet_testkit::guests::HELLO])?;
    let (_browser, mut devtools) = open_page(binary, &page.url())?;
    let mut id = 0;
    let base = comet.url("");
    let base = base.trim_end_matches('/');
    let outcome = settled(
        &mut devtools,
        &mut id,
        &format!(
            r#"(async () => {{
                const ws = await new Promise(resolve => {{
                    const socket = new WebSocket({base:?}.replace("http", "ws") + "/comet/ws");
                    socket.onopen = () => resolve("opened");
                    socket.onerror = () => resolve("refused");
                }});
                const sse = await new Promise(resolve => {{
                    const es = new EventSource({base:?} + "/comet/sse?channel=news");
                    es.addEventListener("subscribed", () => {{ es.close(); resolve("read"); }});
                    es.onerror = () => {{ es.close(); resolve("not read"); }};
                }});
                const poll = await fetch({base:?} + "/comet/poll?channel=news&timeout=0")
                    .then(() => "read", () => "not read");
                return {{ ws, sse, poll }};
            }})()"#
        ),
    )?;
    assert_eq!(outcome["ws"], "refused", "{outcome}");
    assert_eq!(outcome["sse"], "not read", "{outcome}");
    assert_eq!(outcome["poll"], "not read", "{outcome}");
    assert_eq!(
        metric(
            &comet,
            "comet_connections_opened_total{transport=\"websocket\"}"
        )?,
        0.0,
        "a WebSocket was admitted for a page not allowed"
    );
    // The refusal names its reason.
    let mut tcp = TcpStream::connect(comet.addr)?;
    write!(
        tcp,
        "GET /comet/ws HTTP/1.1\r\nhost: {}\r\norigin: {}\r\nconnection: Upgrade\r\n\
         upgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        comet.addr,
        page.origin()
    )?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("origin-not-allowed"), "{answer}");
    Ok(())
}
