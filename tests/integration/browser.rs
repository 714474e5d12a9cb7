use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use comet_testkit::{Comet, WsClient, get, guests, publish, ws_connect, ws_json, ws_send};
use serde_json::{Value, json};

use crate::COMET;

const TOKEN: &str = "test-token";

/// Headless Chromium, killed on drop.
struct Browser {
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Open `url` in headless Chromium; returns the browser and the DevTools
/// WebSocket of its page.
fn open_page(binary: &str, url: &str) -> anyhow::Result<(Browser, WsClient)> {
    let profile = tempfile::tempdir()?;
    let child = Command::new(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let browser = Browser { child, profile };
    let port_file = browser.profile.path().join("DevToolsActivePort");
    let port = wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
    })
    .ok_or_else(|| anyhow::anyhow!("chromium did not start DevTools"))?;
    let page = wait_for(Duration::from_secs(30), || {
        let list = get(&format!("http://127.0.0.1:{port}/json/list")).ok()?;
        let pages: Value = serde_json::from_str(&list.body).ok()?;
        pages
            .as_array()?
            .iter()
            .find(|p| p["type"] == "page" && p["url"].as_str().is_some_and(|u| u.starts_with(url)))
            .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_string))
    })
    .ok_or_else(|| anyhow::anyhow!("no page for {url}"))?;
    Ok((browser, ws_connect(&page)?))
}

fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Evaluate `expression` in the page (DevTools `Runtime.evaluate`).
fn eval(devtools: &mut WsClient, id: &mut u64, expression: &str) -> anyhow::Result<Value> {
    *id += 1;
    ws_send(
        devtools,
        &json!({
            "id": *id,
            "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true },
        }),
    )?;
    loop {
        let reply = ws_json(devtools)?;
        if reply["id"] == *id {
            return Ok(reply["result"]["result"]["value"].clone());
        }
    }
}

fn wait_text(devtools: &mut WsClient, id: &mut u64, expression: &str, want: &str) -> String {
    let mut last = String::new();
    let found = wait_for(Duration::from_secs(30), || {
        last = eval(devtools, id, expression).ok()?.as_str()?.to_string();
        last.contains(want).then_some(())
    });
    assert!(
        found.is_some(),
        "{expression} never contained {want:?}; last: {last:?}"
    );
    last
}

/// The chat page in a real browser: it connects over WebSocket, shows a
/// message typed into its form (escaped by on-publish) and one published by
/// the server API, and its long-poll fallback sends and receives too.
#[test]
fn chat_page_in_headless_chromium() -> anyhow::Result<()> {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs chromium for this test (.ci/run)"
        );
        eprintln!("skipped: no chromium installed");
        return Ok(());
    };
    let comet = Comet::start(
        COMET,
        &[guests::CHAT, "--client-publish", "--publish-token", TOKEN],
    )?;
    let url = comet.url("/?room=lobby");
    let (_browser, mut devtools) = open_page(binary, &url)?;
    let mut id = 0;
    let status = "document.getElementById('status').textContent";
    let log = "document.getElementById('log').innerText";

    wait_text(&mut devtools, &mut id, status, "connected (WebSocket)");

    // Typed into the form: published over the page's WebSocket, escaped by
    // on-publish, delivered back.
    eval(
        &mut devtools,
        &mut id,
        "document.getElementById('text').value = 'hi <b>there</b>'; \
         document.getElementById('say').requestSubmit(); 'sent'",
    )?;
    wait_text(&mut devtools, &mut id, log, "hi <b>there</b>");
    let injected = eval(
        &mut devtools,
        &mut id,
        "document.querySelectorAll('#log b').length",
    )?;
    assert_eq!(injected, 0, "the markup was shown as text, not inserted");

    // From the server API: delivered live to the open page.
    let r = publish(
        &comet,
        TOKEN,
        "chat:lobby",
        r#"{"text":"from the server","nick":"ops"}"#,
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_text(&mut devtools, &mut id, log, "ops: from the server");

    // The long-poll fallback: POST /say and /comet/poll, in the same page.
    eval(
        &mut devtools,
        &mut id,
        "fallback(); send('by long-poll'); 'ok'",
    )?;
    wait_text(&mut devtools, &mut id, status, "long-poll");
    let text = wait_text(&mut devtools, &mut id, log, "by long-poll");
    assert!(
        text.contains("hi <b>there</b>"),
        "earlier messages stay: {text}"
    );
    Ok(())
}
