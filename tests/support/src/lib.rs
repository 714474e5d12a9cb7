//! Test support: the paths of the guests built by `build.rs`, a handle on a
//! real `comet` process listening on a free port, a real `redis-server`, and
//! small HTTP and WebSocket clients.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod redis;

/// Paths of the guest components, built once per change by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// How long a server may take to print its address (a debug build compiling a
/// component on a busy machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `comet run` process; killed when dropped.
#[derive(Debug)]
pub struct Comet {
    child: Child,
    /// The address it serves HTTP on.
    pub addr: SocketAddr,
    /// `https` when it serves TLS, else `http`.
    pub scheme: &'static str,
    /// The address of its admin API (token [`ADMIN_TOKEN`]), if it serves one.
    pub admin_addr: Option<SocketAddr>,
    stderr: Arc<Log>,
    /// Its data directory, unless the test chose one.
    _data_dir: Option<tempfile::TempDir>,
}

/// A process's output (its log) as it is read on its own thread, and a
/// signal for each piece of it and for its end: what tests wait on. A
/// process tells its log about each change a test may wait for (comet at
/// debug level: connections admitted and released, subscriptions, sweeps,
/// presence rounds), so a wait wakes when something happened, not on a timer.
#[derive(Debug, Default)]
pub struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct LogState {
    text: String,
    ended: bool,
}

impl Log {
    /// Read `pipe` into a new log until it ends.
    pub fn read(mut pipe: impl Read + Send + 'static) -> Arc<Log> {
        let log = Arc::new(Log::default());
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.update(|state| state.text.push_str(&String::from_utf8_lossy(&buf[..n])));
            }
            sink.update(|state| state.ended = true);
        });
        log
    }

    fn update(&self, change: impl FnOnce(&mut LogState)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.lock().text.clone()
    }

    /// Whether `done(log)` holds within `timeout`, checked after each write.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> bool {
        let state = self.lock();
        self.changed
            .wait_timeout_while(state, timeout, |s| !done(&s.text) && !s.ended)
            .is_ok_and(|(s, _)| done(&s.text))
    }

    /// Whether the output ends (the process closed it, by exiting) within
    /// `timeout`.
    pub fn wait_end(&self, timeout: Duration) -> bool {
        let state = self.lock();
        self.changed
            .wait_timeout_while(state, timeout, |s| !s.ended)
            .is_ok_and(|(s, _)| s.ended)
    }

    /// Wait up to `timeout` for `probe` to give a value, probing again after
    /// each write to this log; an error naming `what` if it does not come
    /// (or the output ends first).
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read before probing: a write during the probe wakes the wait.
            let (seen, ended) = {
                let state = self.lock();
                (state.text.len(), state.ended)
            };
            if let Some(value) = probe() {
                return Ok(value);
            }
            if ended {
                bail!("the process ended before {what}:\n{}", self.text());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let timed_out = self
                .changed
                .wait_timeout_while(self.lock(), left, |s| s.text.len() == seen && !s.ended)
                .map_or(true, |(_state, wait)| wait.timed_out());
            if timed_out {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
        }
    }
}

/// The admin token test servers are started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

impl Comet {
    /// Start `comet run <args> --listen 127.0.0.1:0` and wait until it serves.
    /// Unless `args` say otherwise, the admin API listens on a free port with
    /// [`ADMIN_TOKEN`] and the data directory is a fresh temporary one.
    pub fn start(bin: &str, args: &[&str]) -> anyhow::Result<Comet> {
        Self::start_with_env(bin, args, &[])
    }

    /// [`Comet::start`] with extra environment variables (which win over
    /// the defaults: `RUST_LOG=info`, `NO_COLOR=1`, the admin token).
    pub fn start_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Comet> {
        Self::start_under(&[], bin, args, env)
    }

    /// `comet run CRATE` for the guest crate at `crate_dir` (relative to the
    /// repository's root), built in the target directory the test guests
    /// were built in, with the same flags: a quick no-op build rather than a
    /// second full one.
    pub fn start_crate(bin: &str, crate_dir: &str) -> anyhow::Result<Comet> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        Self::start_with_env(
            bin,
            &[&format!("{root}/{crate_dir}")],
            &[("CARGO_TARGET_DIR", &format!("{root}/target/guests"))],
        )
    }

    /// [`Comet::start_with_env`] through a shell that first runs `setup`
    /// (`ulimit -Sn 256`, `umask 000`...).
    pub fn start_after(setup: &str, bin: &str, args: &[&str]) -> anyhow::Result<Comet> {
        let script = format!("{setup} && exec \"$0\" \"$@\"");
        Self::start_under(&["sh", "-c", &script], bin, args, &[])
    }

    fn start_under(
        prefix: &[&str],
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Comet> {
        let has = |flag: &str| args.contains(&flag);
        let data_dir = if has("--data-dir") {
            None
        } else {
            Some(tempfile::tempdir().context("temporary data dir")?)
        };
        let mut extra: Vec<String> = Vec::new();
        if let Some(dir) = &data_dir {
            extra.push("--data-dir".into());
            extra.push(dir.path().display().to_string());
        }
        if !has("--admin-listen") && !has("--no-admin") {
            extra.extend(["--admin-listen".into(), "127.0.0.1:0".into()]);
        }
        if !has("--listen") {
            extra.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .env("COMET_ADMIN_TOKEN", ADMIN_TOKEN)
            .arg("run")
            .args(args)
            .args(&extra)
            // Debug for comet's own modules: the lines tests wait on.
            .env("RUST_LOG", "info,comet_host=debug")
            .env("NO_COLOR", "1")
            // Last, so a test may override the defaults above.
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {bin}"))?;
        let stderr = Log::read(child.stderr.take().context("stderr")?);
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (tls, addr) = match line.split_once(" on https://") {
                    Some((_, addr)) => (true, addr),
                    None => match line.split_once(" on http://") {
                        Some((_, addr)) => (false, addr),
                        None => continue,
                    },
                };
                let admin = line.contains("admin API");
                if !admin && !line.contains("serving") {
                    continue;
                }
                if tx.send((admin, tls, addr.trim().to_string())).is_err() {
                    break;
                }
            }
        });
        let mut comet = Comet {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            scheme: "http",
            admin_addr: None,
            stderr,
            _data_dir: data_dir,
        };
        // The admin line, if any, comes before the serving line.
        loop {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok((true, _, addr)) => {
                    comet.admin_addr = Some(addr.parse().context("parse the admin address")?);
                }
                Ok((false, tls, addr)) => {
                    comet.addr = addr.parse().context("parse the printed address")?;
                    comet.scheme = if tls { "https" } else { "http" };
                    return Ok(comet);
                }
                Err(_) => bail!("comet did not start; its stderr:\n{}", comet.stderr()),
            }
        }
    }

    /// `http://ADDR` + `path` (`https://` when it serves TLS).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// `http://ADMIN_ADDR` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        let addr = self.admin_addr.expect("this server has no admin API");
        format!("http://{addr}{path}")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill it with SIGKILL (as a crash would) and wait for it to go.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait up to `timeout` for the process to exit by itself (its log
    /// ends as it exits).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if !self.stderr.wait_end(timeout) {
            return None;
        }
        self.child.wait().ok()
    }

    /// Wait up to `timeout` for `probe` (of this server's state: its status,
    /// its metrics, an answer) to give a value, probing again after each line
    /// it logs; an error naming `what` if it does not come.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        probe: impl FnMut() -> Option<T>,
    ) -> anyhow::Result<T> {
        self.stderr.wait_for(what, timeout, probe)
    }

    /// Wait up to `timeout` for `needle` to appear in the log (stderr is
    /// read on its own thread, so a line may trail what stdout said). Woken
    /// by each write to the log, not by a timer.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.stderr.wait_until(timeout, |log| log.contains(needle))
    }

    /// Wait up to `timeout` for `done(log)` to hold, checked after each
    /// write to the log (like [`Comet::wait_log`]); an error naming `what`
    /// if it does not.
    pub fn wait_log_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        if self.stderr.wait_until(timeout, done) {
            Ok(())
        } else {
            bail!("timed out after {timeout:?} waiting for {what}")
        }
    }

    /// Everything the process wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }
}

impl Drop for Comet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `comet <args>` to completion (for commands expected to fail fast).
pub fn run_to_exit(bin: &str, args: &[&str]) -> anyhow::Result<(ExitStatus, String, String)> {
    let out = Command::new(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {bin}"))?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Headers as (lower-case name, value) pairs.
fn header_pairs(headers: &ureq::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Reply> {
    let status = response.status().as_u16();
    let headers = header_pairs(response.headers());
    let body = response.body_mut().read_to_string()?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET `url`.
pub fn get(url: &str) -> anyhow::Result<Reply> {
    get_with(url, &[])
}

/// GET `url` with extra request headers.
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.call().with_context(|| format!("GET {url}"))?)
}

/// POST a form with extra request headers.
pub fn post_form(url: &str, form: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    let mut request = agent()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(
        request
            .send(form.as_bytes())
            .with_context(|| format!("POST {url}"))?,
    )
}

/// Any request: `method` to `url` with headers and an optional body.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Reply> {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.unwrap_or_default().to_vec())?;
    read(
        agent()
            .run(request)
            .with_context(|| format!("{method} {url}"))?,
    )
}

/// A request to the admin API of `comet` with the test token.
pub fn admin(
    comet: &Comet,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<Reply> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    send(
        method,
        &comet.admin_url(path),
        &[("authorization", &auth)],
        body,
    )
}

/// POST `body` to `url` with a content type.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> anyhow::Result<Reply> {
    read(
        agent()
            .post(url)
            .header("content-type", content_type)
            .send(body)
            .with_context(|| format!("POST {url}"))?,
    )
}

/// A streaming response (SSE or NDJSON) read line by line.
pub struct Lines {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    reader: BufReader<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` field.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_default()
    }
}

impl Lines {
    /// Open `url` with extra request headers and read its body as a stream.
    pub fn open(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Lines> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Streams stay open across a whole test (500 of them in the
            // deploy test, on a busy machine): bound the connect and the
            // headers, and give the body the test's own time.
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        let mut request = agent.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.call().with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let headers = header_pairs(response.headers());
        let reader: Box<dyn Read + Send> = Box::new(response.into_body().into_reader());
        Ok(Lines {
            status,
            headers,
            reader: BufReader::new(reader),
        })
    }

    /// The next line, without its newline.
    pub fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("stream ended");
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }

    /// The next NDJSON object that is not a heartbeat.
    pub fn json(&mut self) -> anyhow::Result<serde_json::Value> {
        loop {
            let v: serde_json::Value = serde_json::from_str(&self.line()?)?;
            if v["type"] != "heartbeat" {
                return Ok(v);
            }
        }
    }

    /// The next server-sent event (comments, `retry:` and the `subscribed`
    /// event that opens a stream skipped; [`Lines::raw_event`] keeps it).
    pub fn event(&mut self) -> anyhow::Result<SseEvent> {
        loop {
            let event = self.raw_event()?;
            if event.event != "subscribed" {
                return Ok(event);
            }
        }
    }

    /// The next server-sent event (comments and `retry:` skipped).
    pub fn raw_event(&mut self) -> anyhow::Result<SseEvent> {
        let mut event = SseEvent::default();
        let mut seen = false;
        loop {
            let line = self.line()?;
            if line.is_empty() {
                if seen {
                    if event.event.is_empty() {
                        event.event = "message".into();
                    }
                    return Ok(event);
                }
                continue;
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((&line, ""));
            seen = true;
            match field {
                "id" => event.id = Some(value.to_string()),
                "event" => event.event = value.to_string(),
                "data" => event.data.push_str(value),
                _ => {}
            }
        }
    }
}

/// A blocking WebSocket client.
pub type WsClient = tokio_tungstenite::tungstenite::WebSocket<
    tokio_tungstenite::tungstenite::stream::MaybeTlsStream<std::net::TcpStream>,
>;

/// Connect to `url` (`ws://...`); reads time out after 10 s.
pub fn ws_connect(url: &str) -> anyhow::Result<WsClient> {
    ws_connect_with(url, &[])
}

/// [`ws_connect`] with extra request headers (a cookie, say).
pub fn ws_connect_with(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<WsClient> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?,
            value.parse()?,
        );
    }
    let (ws, _) = tokio_tungstenite::tungstenite::connect(request)
        .with_context(|| format!("connect {url}"))?;
    if let tokio_tungstenite::tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
    }
    Ok(ws)
}

/// Send a JSON text frame.
pub fn ws_send(ws: &mut WsClient, value: &serde_json::Value) -> anyhow::Result<()> {
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        value.to_string().into(),
    ))?;
    Ok(())
}

/// The next data frame: text as `Ok(Ok(text))`, binary as `Ok(Err(bytes))`.
pub fn ws_frame(ws: &mut WsClient) -> anyhow::Result<Result<String, Vec<u8>>> {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.read()? {
            Message::Text(t) => return Ok(Ok(t.to_string())),
            Message::Binary(b) => return Ok(Err(b.to_vec())),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The next text frame parsed as JSON.
pub fn ws_json(ws: &mut WsClient) -> anyhow::Result<serde_json::Value> {
    match ws_frame(ws)? {
        Ok(text) => Ok(serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?),
        Err(bytes) => bail!("expected text, got {} binary bytes", bytes.len()),
    }
}

/// POST to the publish API with a bearer token.
pub fn publish(comet: &Comet, token: &str, channel: &str, body: &str) -> anyhow::Result<Reply> {
    read(
        agent()
            .post(&comet.url(&format!("/comet/publish/{channel}")))
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "text/plain")
            .send(body.as_bytes())
            .context("publish")?,
    )
}

/// The admin API's `GET /admin/status` of `comet`.
pub fn status(comet: &Comet) -> anyhow::Result<serde_json::Value> {
    let r = admin(comet, "GET", "/admin/status", None)?;
    anyhow::ensure!(r.status == 200, "status: {} {}", r.status, r.body);
    Ok(serde_json::from_str(&r.body)?)
}

/// Wait until `comet` holds `n` client connections of `transport` (`sse`,
/// `stream`, `poll`, `websocket`).
pub fn wait_connections(comet: &Comet, transport: &str, n: u64) -> anyhow::Result<()> {
    comet.wait_for(
        &format!("{n} {transport} connection(s)"),
        Duration::from_secs(30),
        || {
            let status = status(comet).ok()?;
            (status["connections"]["by_transport"][transport].as_u64() == Some(n)).then_some(())
        },
    )
}
