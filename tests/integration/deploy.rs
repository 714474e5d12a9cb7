use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use comet_testkit::{
    ADMIN_TOKEN, Comet, Lines, WsClient, admin, get, guests, publish, run_to_exit, send,
    ws_connect, ws_json, ws_send,
};
use serde_json::{Value, json};

use crate::COMET;

const TOKEN: &str = "test-token";

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The hello component with a custom section appended: the same behaviour,
/// a different hash, so it is a real new version.
fn hello_variant(n: u8) -> Vec<u8> {
    let mut bytes = std::fs::read(guests::HELLO).expect("hello built");
    let name = b"comet-test-variant";
    let payload = [n];
    let size = 1 + name.len() + payload.len();
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(size).expect("small"));
    bytes.push(u8::try_from(name.len()).expect("small"));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&payload);
    bytes
}

fn serves_hello(comet: &Comet) -> bool {
    get(&comet.url("/"))
        .map(|r| r.status == 200 && r.body.contains("comet hello example"))
        .unwrap_or(false)
}

fn serves_chat(comet: &Comet) -> bool {
    get(&comet.url("/"))
        .map(|r| r.status == 200 && r.body.contains("<html"))
        .unwrap_or(false)
}

/// 401 without a token, 403 with a wrong one; then upload, list, get,
/// roll back, and refuse to remove a routed module.
#[test]
fn admin_api_lifecycle() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO])?;
    let url = comet.admin_url("/admin/modules");

    let r = send("GET", &url, &[], None)?;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = send("GET", &url, &[("authorization", "Bearer nope")], None)?;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = send("PUT", &format!("{url}/hello"), &[], Some(b"x"))?;
    assert_eq!(r.status, 401, "uploads need the token too");

    let r = admin(&comet, "GET", "/admin/modules", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = json_of(&r.body);
    assert_eq!(list[0]["name"], "hello");
    assert_eq!(list[0]["current"]["version"], 1);
    let first_hash = list[0]["current"]["hash"].as_str().unwrap().to_string();
    assert_eq!(first_hash.len(), 64);
    assert!(serves_hello(&comet));

    // Version 2: the chat example, served at once.
    let chat = std::fs::read(guests::CHAT)?;
    let r = admin(&comet, "PUT", "/admin/modules/hello", Some(&chat))?;
    assert_eq!(r.status, 201, "{}", r.body);
    let body = json_of(&r.body);
    assert_eq!(body["current"]["version"], 2);
    assert_eq!(body["current"]["origin"], "upload");
    assert!(serves_chat(&comet));

    let r = admin(&comet, "GET", "/admin/modules/hello", None)?;
    let one = json_of(&r.body);
    assert_eq!(one["current"]["version"], 2);
    assert_eq!(one["previous"][0]["version"], 1);
    assert_eq!(one["previous"][0]["hash"], first_hash.as_str());

    // Roll back to 1, then there is nothing older.
    let r = admin(&comet, "POST", "/admin/modules/hello/rollback", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r.body)["current"]["version"], 1);
    assert!(serves_hello(&comet));
    let r = admin(&comet, "POST", "/admin/modules/hello/rollback", None)?;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(json_of(&r.body)["error"], "no-previous-version");

    // The routed module cannot be removed; an extra one can.
    let r = admin(&comet, "DELETE", "/admin/modules/hello", None)?;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("route /"), "{}", r.body);
    assert!(serves_hello(&comet));
    let r = admin(&comet, "PUT", "/admin/modules/spare", Some(&chat))?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(json_of(&r.body)["warning"].is_string(), "{}", r.body);
    let r = admin(&comet, "DELETE", "/admin/modules/spare", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin(&comet, "GET", "/admin/modules/spare", None)?;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = admin(&comet, "PUT", "/admin/modules/Bad..Name", Some(&chat))?;
    assert_eq!(r.status, 400, "{}", r.body);

    // Status: connections by transport, modules, uptime.
    let _sse = Lines::open(&comet.url("/comet/sse?channel=s"), &[])?;
    let r = admin(&comet, "GET", "/admin/status", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    let status = json_of(&r.body);
    assert_eq!(status["connections"]["by_transport"]["sse"], 1, "{status}");
    assert_eq!(status["channels"], 1, "{status}");
    assert_eq!(status["modules"][0]["name"], "hello");
    assert!(status["uptime_s"].is_u64());
    Ok(())
}

/// Each refused upload says what is wrong, and the old version keeps serving.
#[test]
fn refused_uploads_leave_the_old_version_serving() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO, "--max-module-mib", "1"])?;
    let core = wat::parse_str("(module)")?;
    let other_world = std::fs::read(guests::CLI_APP)?;
    let cases: [(&str, &[u8], &str, &str); 3] = [
        (
            "not wasm",
            b"hello, world",
            "not-wasm",
            "not a WebAssembly file",
        ),
        ("core module", &core, "core-module", "not a component"),
        (
            "other world",
            &other_world,
            "wrong-world",
            "not a Comet handler",
        ),
    ];
    for (what, bytes, code, message) in cases {
        let r = admin(&comet, "PUT", "/admin/modules/hello", Some(bytes))?;
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        let body = json_of(&r.body);
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{what}: {body}"
        );
        assert!(serves_hello(&comet), "{what}: the old version serves");
    }

    // Over the size limit: refused from the Content-Length, before the body.
    let mut stream = TcpStream::connect(comet.admin_addr.unwrap())?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "PUT /admin/modules/hello HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        2 << 20
    )?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("over the 1048576 byte limit"), "{reply}");

    // `comet deploy` asks for the limit first and says so.
    let big = tempfile::Builder::new().suffix(".wasm").tempfile()?;
    std::fs::write(big.path(), vec![0u8; 2 << 20])?;
    let server = comet.admin_url("");
    let (status, _, err) = run_to_exit(
        COMET,
        &[
            "deploy",
            "--server",
            &server,
            "--token",
            ADMIN_TOKEN,
            "hello",
            big.path().to_str().unwrap(),
        ],
    )?;
    assert!(!status.success());
    assert!(
        err.contains("over the server's limit of 1048576 bytes"),
        "{err}"
    );

    let r = admin(&comet, "GET", "/admin/modules/hello", None)?;
    assert_eq!(json_of(&r.body)["current"]["version"], 1, "{}", r.body);
    assert!(serves_hello(&comet));
    Ok(())
}

fn read_sse_messages(sse: &mut Lines, n: usize) -> anyhow::Result<Vec<String>> {
    let mut got = Vec::new();
    while got.len() < n {
        let event = sse.event()?;
        anyhow::ensure!(event.event == "message", "unexpected event {event:?}");
        got.push(
            event.json()["data"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    Ok(got)
}

fn read_ws_messages(ws: &mut WsClient, n: usize) -> anyhow::Result<Vec<String>> {
    let mut got = Vec::new();
    while got.len() < n {
        let v = ws_json(ws)?;
        anyhow::ensure!(v["type"] == "message", "unexpected frame {v}");
        got.push(v["data"].as_str().unwrap_or_default().to_string());
    }
    Ok(got)
}

/// 500 open SSE and WebSocket connections and a loop of HTTP requests while
/// five uploads happen: no failed request, no dropped connection, every
/// message delivered in order.
#[test]
fn swaps_under_load_drop_nothing() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO, "--publish-token", TOKEN])?;
    let mut sse = Vec::new();
    let mut ws = Vec::new();
    for _ in 0..250 {
        sse.push(Lines::open(&comet.url("/comet/sse?channel=swap"), &[])?);
        let mut client = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
        ws_send(
            &mut client,
            &json!({ "op": "subscribe", "channel": "swap" }),
        )?;
        assert_eq!(ws_json(&mut client)?["type"], "subscribed");
        ws.push(client);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let loader = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = comet.url("/hello?name=load");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get(&url) {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let mut sent = Vec::new();
    for round in 0..5u8 {
        for i in 0..4 {
            let text = format!("m{round}-{i}");
            let r = publish(&comet, TOKEN, "swap", &text)?;
            assert_eq!(r.status, 200, "{}", r.body);
            sent.push(text);
        }
        let r = admin(
            &comet,
            "PUT",
            "/admin/modules/hello",
            Some(&hello_variant(round)),
        )?;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(json_of(&r.body)["current"]["version"], u64::from(round) + 2);
        // The clients read only at the end; a ping keeps each from being
        // closed as idle (45 s of silence) when a loaded machine makes the
        // rounds slow.
        for client in &mut ws {
            client.send(tokio_tungstenite::tungstenite::Message::Ping(
                Vec::new().into(),
            ))?;
        }
    }
    for i in 0..4 {
        let text = format!("after-{i}");
        publish(&comet, TOKEN, "swap", &text)?;
        sent.push(text);
    }
    stop.store(true, Ordering::Relaxed);
    loader.join().expect("loader");

    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed HTTP requests");
    assert!(ok.load(Ordering::Relaxed) > 0);
    for (i, s) in sse.iter_mut().enumerate() {
        assert_eq!(read_sse_messages(s, sent.len())?, sent, "sse client {i}");
    }
    for (i, w) in ws.iter_mut().enumerate() {
        assert_eq!(read_ws_messages(w, sent.len())?, sent, "ws client {i}");
    }
    let r = admin(&comet, "GET", "/admin/status", None)?;
    let status = json_of(&r.body);
    assert_eq!(status["connections"]["total"], 500, "{status}");
    Ok(())
}

/// Uploads are kept in the data directory and served again after a restart;
/// the second start reads the compile cache instead of compiling.
#[test]
fn uploads_and_compiled_code_survive_a_restart() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dir = data.path().to_str().unwrap();
    {
        let comet = Comet::start(COMET, &[guests::HELLO, "--data-dir", dir])?;
        assert!(
            comet.wait_log("cached=false", Duration::from_secs(10)),
            "{}",
            comet.stderr()
        );
        let chat = std::fs::read(guests::CHAT)?;
        let r = admin(&comet, "PUT", "/admin/modules/hello", Some(&chat))?;
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(serves_chat(&comet));
    }
    let comet = Comet::start(COMET, &[guests::HELLO, "--data-dir", dir])?;
    assert!(serves_chat(&comet), "the upload is served after a restart");
    assert!(
        comet.wait_log("serving uploaded version 2", Duration::from_secs(10)),
        "{}",
        comet.stderr()
    );
    assert!(
        comet.wait_log("cached=true", Duration::from_secs(10)),
        "compile cache used: {}",
        comet.stderr()
    );
    let r = admin(&comet, "GET", "/admin/modules/hello", None)?;
    let info = json_of(&r.body);
    assert_eq!(info["current"]["version"], 2, "{info}");
    assert_eq!(info["current"]["cached"], true, "{info}");
    // The version it replaced is gone with the restart's in-memory state,
    // but rollback still has the stored uploads: none older here.
    let r = admin(&comet, "POST", "/admin/modules/hello/rollback", None)?;
    assert_eq!(r.status, 409, "{}", r.body);
    Ok(())
}

/// `comet deploy` and `comet modules` against a running server.
#[test]
fn deploy_and_modules_commands() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO])?;
    let server = comet.admin_url("");
    let common = ["--server", server.as_str(), "--token", ADMIN_TOKEN];
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&common);
        run_to_exit(COMET, &all)
    };

    let (status, out, err) = cli(&["deploy", "hello", guests::CHAT])?;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("deployed hello version 2"), "{out}");
    assert!(err.contains("uploading"), "{err}");
    assert!(serves_chat(&comet));

    let (status, out, err) = cli(&["modules", "ls"])?;
    assert!(status.success(), "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("hello") && l.contains(" 2 ")),
        "{out}"
    );

    let (status, out, err) = cli(&["modules", "rollback", "hello"])?;
    assert!(status.success(), "{err}");
    assert!(out.contains("now serves version 1"), "{out}");
    assert!(serves_hello(&comet));

    // Errors carry the server's message and fail the command.
    let (status, _, err) = cli(&["deploy", "hello", guests::CLI_APP])?;
    assert!(!status.success());
    assert!(
        err.contains("wrong-world") && err.contains("not a Comet handler"),
        "{err}"
    );
    let (status, _, err) = cli(&["modules", "rm", "hello"])?;
    assert!(!status.success());
    assert!(err.contains("in use"), "{err}");
    let (status, _, err) = run_to_exit(
        COMET,
        &[
            "modules",
            "ls",
            "--server",
            server.as_str(),
            "--token",
            "wrong",
        ],
    )?;
    assert!(!status.success());
    assert!(err.contains("403"), "{err}");
    Ok(())
}

/// SIGTERM: streams are told to reconnect (SSE retry and an error event,
/// WebSocket close 1012), and the process exits well within the drain bound.
#[test]
fn sigterm_tells_clients_to_reconnect_and_exits() -> anyhow::Result<()> {
    let mut comet = Comet::start(COMET, &[guests::HELLO])?;
    let mut sse = Lines::open(&comet.url("/comet/sse?channel=t"), &[])?;
    let mut ws = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    ws_send(&mut ws, &json!({ "op": "subscribe", "channel": "t" }))?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &comet.pid().to_string()])
        .status()?;
    assert!(killed.success());

    let mut saw_retry = false;
    let mut saw_restart = false;
    while let Ok(line) = sse.line() {
        saw_retry |= line.starts_with("retry: ");
        saw_restart |= line.contains("server-restart");
    }
    assert!(saw_retry && saw_restart, "SSE told to reconnect");
    use tokio_tungstenite::tungstenite::Message;
    let close = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1012));

    let status = comet.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(
        comet.wait_log("stopped", Duration::from_secs(5)),
        "{}",
        comet.stderr()
    );
    Ok(())
}

/// A manifest: two modules on their routes, namespace rules, and an unknown
/// key refused with file, line and reason.
#[test]
fn manifest_routes_and_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("app.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[channels]
hooks = "hello"
client_publish = true

[namespaces.news]
client_publish = false

[modules.hello]
path = "{hello}"
kv = false

[modules.chat]
path = "{chat}"

[[routes]]
prefix = "/"
module = "chat"

[[routes]]
prefix = "/hello"
module = "hello"
"#,
            hello = guests::HELLO,
            chat = guests::CHAT
        ),
    )?;
    let comet = Comet::start(COMET, &["--config", manifest.to_str().unwrap()])?;
    assert!(serves_chat(&comet));
    let r = get(&comet.url("/hello?name=route"))?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("route"), "{}", r.body);
    // Clients may not publish to news:*, but may elsewhere.
    let mut ws = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    ws_send(
        &mut ws,
        &json!({ "op": "publish", "id": 1, "channel": "news:x", "data": "hi" }),
    )?;
    let reply = ws_json(&mut ws)?;
    assert_eq!(reply["error"], "forbidden", "{reply}");
    ws_send(
        &mut ws,
        &json!({ "op": "publish", "id": 2, "channel": "open", "data": "hi" }),
    )?;
    assert_eq!(ws_json(&mut ws)?["type"], "ack");

    // kv = false: hello's counter is refused the store.
    let only_hello = dir.path().join("hello.toml");
    std::fs::write(
        &only_hello,
        format!(
            "[modules.hello]\npath = \"{}\"\nkv = false\n",
            guests::HELLO
        ),
    )?;
    let denied = Comet::start(COMET, &["--config", only_hello.to_str().unwrap()])?;
    let r = get(&denied.url("/counter"))?;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("not granted"), "{}", r.body);

    std::fs::write(&manifest, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n")?;
    let (status, _, err) = run_to_exit(COMET, &["run", "--config", manifest.to_str().unwrap()])?;
    assert!(!status.success());
    let at = format!("{}:3:1:", manifest.display());
    assert!(
        err.contains(&at) && err.contains("unknown field `lisen`"),
        "{err}"
    );
    Ok(())
}
