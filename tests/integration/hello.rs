use comet_testkit::{Comet, get, guests, post};

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

/// The kv counter survives across events (each in a fresh instance), and the
/// guest's log line reaches the host's log.
#[test]
fn hello_counter_and_log() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO])?;
    for expected in 1..=5 {
        let r = get(&comet.url("/counter"))?;
        let v: serde_json::Value = serde_json::from_str(&r.body)?;
        assert_eq!(v["visits"], expected);
    }
    let log = comet.stderr();
    assert!(
        log.contains("request") && log.contains("path=\\\"/counter\\\""),
        "guest log line missing from:\n{log}"
    );
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
