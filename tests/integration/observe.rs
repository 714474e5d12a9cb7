//! Operators' view: Prometheus metrics (checked with `promtool`) and the
//! live status page in headless Chromium.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use comet_testkit::{ADMIN_TOKEN, Comet, Lines, get, get_with, guests, publish};

use crate::COMET;
use crate::browser::{chromium_or_skip, eval, open_page, screenshot, wait_text};

const TOKEN: &str = "test-token";

/// The value of the sample `name{labels}` (labels as written, in order).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics`, where Debian's `prometheus` package installed
/// it (CI does); `None` elsewhere.
fn promtool(metrics: &str) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(metrics.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

/// A free port on loopback (bound and released: the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET /metrics` counts events, publishes and connections, needs the
/// admin token on the admin listener, is open on `--metrics-listen`, and
/// passes `promtool check metrics`.
#[test]
fn metrics_count_what_happened_and_pass_promtool() -> anyhow::Result<()> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let comet = Comet::start(
        COMET,
        &[
            guests::HELLO,
            "--publish-token",
            TOKEN,
            "--metrics-listen",
            &listen,
        ],
    )?;
    assert_eq!(get(&comet.url("/hello?name=m"))?.status, 200);
    assert_eq!(publish(&comet, TOKEN, "news", "one")?.status, 200);
    let _sse = Lines::open(&comet.url("/comet/sse?channel=news"), &[])?;

    let admin = comet.admin_url("/metrics");
    assert_eq!(
        get(&admin)?.status,
        401,
        "the admin listener needs the token"
    );
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let scrape = || get_with(&admin, &[("authorization", &auth)]);
    let metrics = comet.wait_for(
        "an SSE connection in the metrics",
        Duration::from_secs(30),
        || {
            let body = scrape().ok()?.body;
            (sample(&body, "comet_connections{transport=\"sse\"}") == Some(1.0)).then_some(body)
        },
    )?;
    let events = r#"comet_events_total{module="hello",event="on-request",outcome="ok"}"#;
    assert!(sample(&metrics, events) >= Some(1.0), "{metrics}");
    let published = r#"comet_publishes_total{source="api",verdict="published"}"#;
    assert_eq!(sample(&metrics, published), Some(1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "comet_connections_opened_total{transport=\"sse\"}"
        ),
        Some(1.0)
    );
    assert!(
        metrics.contains("comet_event_duration_seconds_bucket{"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"comet_module_info{module="hello",version="1""#),
        "{metrics}"
    );

    // Without a token on the metrics listener, in both formats.
    let open = get(&format!("http://{listen}/metrics"))?;
    assert_eq!(open.status, 200);
    assert!(open.body.contains("comet_events_total"), "{}", open.body);
    let om = get_with(
        &format!("http://{listen}/metrics"),
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )?;
    assert!(
        om.header("content-type")
            .unwrap_or_default()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert_eq!(get(&format!("http://{listen}/admin/status"))?.status, 404);

    match promtool(&metrics) {
        Some((ok, report)) => assert!(ok, "promtool check metrics:\n{report}\n{metrics}"),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs promtool (the prometheus package, .ci/run)"
            );
            eprintln!("promtool not installed: format not checked");
        }
    }
    Ok(())
}

/// The status page, after the admin token: it shows the module with its
/// version, and a connection count that follows clients as they connect.
#[test]
fn status_page_in_headless_chromium() -> anyhow::Result<()> {
    let Some(binary) = chromium_or_skip() else {
        return Ok(());
    };
    let comet = Comet::start(COMET, &[guests::HELLO, "--publish-token", TOKEN])?;
    let (_browser, mut devtools) = open_page(binary, &comet.admin_url("/admin/"))?;
    let mut id = 0;
    wait_text(
        &mut devtools,
        &mut id,
        "document.getElementById('status').textContent",
        "token",
    );
    eval(
        &mut devtools,
        &mut id,
        &format!(
            "document.getElementById('token').value = '{ADMIN_TOKEN}'; \
             document.getElementById('login').requestSubmit(); 0"
        ),
    )?;
    let modules = "document.getElementById('modules').innerText";
    let total = "document.getElementById('connections-total').textContent";
    wait_text(&mut devtools, &mut id, modules, "hello");
    wait_text(&mut devtools, &mut id, modules, "v1");
    wait_text(&mut devtools, &mut id, total, "0");

    let _a = Lines::open(&comet.url("/comet/sse?channel=busy"), &[])?;
    let _b = Lines::open(&comet.url("/comet/sse?channel=busy"), &[])?;
    wait_text(&mut devtools, &mut id, total, "2");
    wait_text(
        &mut devtools,
        &mut id,
        "document.getElementById('channels').innerText",
        "busy",
    );

    let png = screenshot(&mut devtools, &mut id)?;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&path, &png)?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}
