use std::sync::Arc;

use comet_host::channels::MemoryBroker;
use comet_host::channels::testing::LossyBroker;
use comet_testkit::{Comet, Lines, get, guests, publish, ws_connect, ws_json, ws_send};
use serde_json::{Value, json};

use crate::COMET;
use crate::inproc::InProcess;

const TOKEN: &str = "test-token";

fn start() -> anyhow::Result<Comet> {
    Comet::start(COMET, &[guests::CHANNELS_APP, "--publish-token", TOKEN])
}

fn poll(url: &str) -> anyhow::Result<Value> {
    let r = get(url)?;
    anyhow::ensure!(r.status == 200, "{} {}", r.status, r.body);
    Ok(serde_json::from_str(&r.body)?)
}

/// A cursor for a channel that had no message yet, kept across a restart
/// (the memory broker's history is gone), gets an explicit reset on every
/// transport before anything else; then the new lifetime's messages come
/// once each.
#[test]
fn a_restart_resets_cursors_of_empty_channels_on_every_transport() -> anyhow::Result<()> {
    let a = start()?;
    let cursor = poll(&a.url("/comet/poll?channel=newch&timeout=0"))?["cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    drop(a);

    let b = start()?;
    let v = poll(&b.url(&format!(
        "/comet/poll?channel=newch&since={cursor}&timeout=0"
    )))?;
    assert_eq!(v["resets"][0]["channel"], "newch", "{v}");
    assert!(
        v["resets"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("new epoch")),
        "{v}"
    );
    let after_reset = v["cursor"].as_str().unwrap_or_default().to_string();

    let mut sse = Lines::open(
        &b.url("/comet/sse?channel=newch"),
        &[("last-event-id", &cursor)],
    )?;
    let reset = sse.event()?;
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert_eq!(reset.json()["channel"], "newch");

    let mut ndjson = Lines::open(
        &b.url(&format!("/comet/stream?channel=newch&since={cursor}")),
        &[],
    )?;
    assert_eq!(ndjson.json()?["type"], "reset");

    let mut ws = ws_connect(&format!("ws://{}/comet/ws", b.addr))?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "newch", "since": cursor}),
    )?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    let v = ws_json(&mut ws)?;
    assert_eq!(
        (v["type"].as_str(), v["channel"].as_str()),
        (Some("reset"), Some("newch"))
    );

    let r = publish(&b, TOKEN, "newch", "first on B")?;
    assert_eq!(r.status, 200, "{}", r.body);
    let message = sse.event()?;
    assert_eq!(message.event, "message", "{message:?}");
    assert_eq!(message.json()["data"], "first on B");
    assert_eq!(ndjson.json()?["data"], "first on B");
    assert_eq!(ws_json(&mut ws)?["data"], "first on B");
    let v = poll(&b.url(&format!(
        "/comet/poll?channel=newch&since={after_reset}&timeout=0"
    )))?;
    assert_eq!(v["resets"], json!([]), "{v}");
    assert_eq!(v["messages"][0]["data"], "first on B", "{v}");
    Ok(())
}

/// A broker that loses messages on their way to the node (every third,
/// the last one too): every client still gets every message once, in order,
/// read back from history (the last one by the node's position check).
#[test]
fn messages_lost_between_broker_and_node_are_read_back() -> anyhow::Result<()> {
    let broker = Arc::new(LossyBroker::new(Arc::new(MemoryBroker::default()), |m| {
        m.position.offset % 3 == 0
    }));
    let host = InProcess::start(Some(broker.clone()))?;
    let mut sse = Lines::open(&host.url("/comet/sse?channel=lossy"), &[])?;
    let mut ndjson = Lines::open(&host.url("/comet/stream?channel=lossy"), &[])?;
    let ws_url = host.url("/comet/ws").replace("http://", "ws://");
    let mut ws = ws_connect(&ws_url)?;
    ws_send(&mut ws, &json!({"op": "subscribe", "channel": "lossy"}))?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    for i in 1..=30 {
        host.publish("lossy", &i.to_string())?;
    }
    let expected: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let mut from_sse = Vec::new();
    let mut from_ndjson = Vec::new();
    let mut from_ws = Vec::new();
    for _ in 0..30 {
        let event = sse.event()?;
        assert_eq!(event.event, "message", "{event:?}");
        from_sse.push(
            event.json()["data"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        from_ndjson.push(
            ndjson.json()?["data"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        from_ws.push(
            ws_json(&mut ws)?["data"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(from_sse, expected);
    assert_eq!(from_ndjson, expected);
    assert_eq!(from_ws, expected);
    assert_eq!(broker.lost(), 10);
    Ok(())
}
