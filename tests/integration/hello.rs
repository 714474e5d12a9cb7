use std::time::Duration;

use comet_testkit::{Comet, admin, get, guests, post, publish, ws_connect, ws_json, ws_send};
use serde_json::json;

use crate::COMET;

/// Routes, percent-decoded query parameters, the request id header and 404s.
#[test]
fn hello_routes_and_query() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO])?;

    let r = get(&comet.url("/hello?name=J%C3%BCrgen+K"))?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello, Jürgen K!\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()));

    let r = get(&comet.url("/hello"))?;
    assert_eq!(r.body, "hello, world!\n");

    let r = get(&comet.url("/nowhere"))?;
    assert_eq!(r.status, 404);

    let r = post(&comet.url("/hello"), "text/plain", b"")?;
    assert_eq!(r.status, 405);
    Ok(())
}

/// JSON in, JSON out, with the request id the guest saw matching the header.
#[test]
fn hello_echoes_json() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO])?;
    let r = post(
        &comet.url("/echo"),
        "application/json",
        br#"{"msg":"hi","n":[1,2]}"#,
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["you_sent"]["msg"], "hi");
    assert_eq!(v["you_sent"]["n"][1], 2);
    assert_eq!(v["bytes"], 22);
    assert_eq!(v["request_id"].as_str(), r.header("x-request-id"));

    let r = post(&comet.url("/echo"), "application/json", b"{not json")?;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid JSON"), "{}", r.body);
    Ok(())
}

/// The kv counter survives across events (which may share an instance: the
/// example opts in to reuse, and keeps its count in kv, not in a static), and the
/// guest's log line reaches the host's log.
#[test]
fn hello_counter_and_log() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO])?;
    for expected in 1..=5 {
        let r = get(&comet.url("/counter"))?;
        let v: serde_json::Value = serde_json::from_str(&r.body)?;
        assert_eq!(v["visits"], expected);
    }
    // Log lines are written by a thread of their own: one may trail the
    // response it belongs to.
    comet.wait_log_until("the guest's log line", Duration::from_secs(10), |log| {
        log.lines()
            .any(|l| l.contains("request") && l.contains("path=\\\"/counter\\\""))
    })?;
    Ok(())
}

/// A log that goes to a file or a pipe is plain text, with no colour codes,
/// even when `NO_COLOR` is not set.
#[test]
fn a_log_that_is_not_a_terminal_has_no_colour_codes() -> anyhow::Result<()> {
    let comet = Comet::start_with_env(COMET, &[guests::HELLO], &[("NO_COLOR", "")])?;
    assert_eq!(get(&comet.url("/hello?name=log"))?.status, 200);
    assert!(
        comet.wait_log("path=\\\"/hello\\\"", Duration::from_secs(10)),
        "no plain guest log line in:\n{}",
        comet.stderr()
    );
    let log = comet.stderr();
    assert!(!log.contains('\x1b'), "escape codes in the log:\n{log:?}");
    Ok(())
}

/// `--var` values reach the guest through the config import.
#[test]
fn hello_reads_config() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO, "--var", "greeting=bonjour"])?;
    let r = get(&comet.url("/hello?name=Ada"))?;
    assert_eq!(r.body, "bonjour, Ada!\n");
    Ok(())
}

/// The hello example defines on-request only (`#[comet_sdk::handler]`): a
/// WebSocket client still connects, subscribes and receives a publish, every
/// other event answered with the SDK's default without an instance, so the
/// metrics count on-request events and nothing else, and the admin API says
/// which events the guest runs. (The client closes too, but on-close runs in
/// the background with nothing to wait on: the metrics would show it only if
/// it had already finished; on-connect and on-subscribe are the sure check.)
#[test]
fn events_left_to_defaults_start_no_instance() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO, "--publish-token", "t"])?;
    assert_eq!(get(&comet.url("/hello"))?.status, 200);

    let mut ws = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "news", "id": 1}),
    )?;
    let ack = ws_json(&mut ws)?;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    let r = publish(&comet, "t", "news", "hi")?;
    assert_eq!(r.status, 200, "{}", r.body);
    let message = ws_json(&mut ws)?;
    assert_eq!(message["data"], "hi", "{message}");
    ws.close(None)?;

    let metrics = admin(&comet, "GET", "/metrics", None)?.body;
    let events: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("comet_events_total{"))
        .collect();
    assert!(
        events.iter().any(|l| l.contains(r#"event="on-request""#)),
        "{metrics}"
    );
    assert!(
        events.iter().all(|l| l.contains(r#"event="on-request""#)),
        "events other than on-request ran in the guest: {events:?}"
    );
    let modules: serde_json::Value =
        serde_json::from_str(&admin(&comet, "GET", "/admin/modules", None)?.body)?;
    assert_eq!(modules[0]["current"]["guest_events"], json!(["on-request"]));
    assert_eq!(modules[0]["current"]["reuses_instances"], json!(true));
    Ok(())
}
