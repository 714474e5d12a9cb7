use std::time::Duration;

use anyhow::Context as _;
use comet_testkit::{
    Comet, Lines, get, get_with, guests, publish, status, ws_connect, ws_json, ws_send,
};
use serde_json::{Value, json};

use crate::COMET;

const TOKEN: &str = "test-token";

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or_default().parse()?)
}

/// Anonymous WebSocket clients allowed to publish flood distinct
/// channels with 60 KiB messages (90 MiB in all): history stays within its
/// 16 MiB budget, the oldest going first, and once the messages expire the
/// sweep gives the budget back.
#[test]
fn a_publish_flood_stays_within_the_history_budget() -> anyhow::Result<()> {
    let comet = Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--client-publish",
            "--history-mib",
            "16",
            // Long enough that the budget, not the age, bounds the flood.
            "--history-age-s",
            "20",
        ],
    )?;
    let payload = "x".repeat(60 << 10);
    let url = format!("ws://{}/comet/ws", comet.addr);
    let mut ws = ws_connect(&url)?;
    let mut flood = |range: std::ops::Range<usize>| -> anyhow::Result<()> {
        for i in range {
            // A new socket within each one's burst of frames (200): a fast
            // machine would otherwise meet the frame rate limit.
            if i % 150 == 0 {
                ws = ws_connect(&url)?;
            }
            ws_send(
                &mut ws,
                &json!({"op": "publish", "channel": format!("flood:{i}"), "data": payload, "id": i}),
            )?;
            let ack = ws_json(&mut ws).with_context(|| format!("the ack of publish {i}"))?;
            anyhow::ensure!(ack["type"] == "ack", "publish {i}: {ack}");
        }
        Ok(())
    };
    flood(0..50)?;
    let before = rss_kib(comet.pid())?;
    flood(50..1550)?;
    let after = rss_kib(comet.pid())?;
    let broker = status(&comet)?["broker"].clone();
    eprintln!("rss before {before} KiB, after {after} KiB; broker {broker}");
    assert!(
        broker["history_bytes"].as_u64().unwrap_or(u64::MAX) <= 16 << 20,
        "{broker}"
    );
    assert!(broker["evicted"].as_u64().unwrap_or(0) > 1000, "{broker}");
    assert!(
        after.saturating_sub(before) < 40 << 10,
        "RSS grew by {} KiB for a 16 MiB budget",
        after - before
    );
    // Expired, then swept.
    comet.wait_for("history to expire", Duration::from_secs(90), || {
        (status(&comet).ok()?["broker"]["history_bytes"] == 0).then_some(())
    })?;
    eprintln!("rss after the sweep {} KiB", rss_kib(comet.pid())?);
    Ok(())
}

/// A channel named 5,000 times in one request, or 10,000 times in a
/// guest's hold, is one subscription: on-subscribe runs once and each
/// message arrives once.
#[test]
fn repeated_channel_names_cost_one_subscription() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::CHANNELS_APP, "--publish-token", TOKEN])?;
    let query = "channel=rep&".repeat(5000);
    let mut stream = Lines::open(&comet.url(&format!("/comet/stream?{query}")), &[])?;
    assert_eq!(stream.status, 200);
    assert_eq!(get(&comet.url("/kv?key=subscribed:rep"))?.body, "1");
    let mut hold = Lines::open(&comet.url("/hold-many?n=10000"), &[])?;
    assert_eq!(hold.status, 200);
    for channel in ["rep", "many"] {
        let r = publish(&comet, TOKEN, channel, "once")?;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    publish(&comet, TOKEN, "rep", "twice")?;
    publish(&comet, TOKEN, "many", "twice")?;
    assert_eq!(stream.json()?["data"], "once");
    assert_eq!(stream.json()?["data"], "twice");
    assert_eq!(hold.json()?["data"], "once");
    assert_eq!(hold.json()?["data"], "twice");
    // More than 100 distinct names is refused.
    let names: String = (0..101).map(|i| format!("channel=c{i}&")).collect();
    let r = get(&comet.url(&format!("/comet/poll?{names}timeout=0")))?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("too-many-channels"), "{}", r.body);
    Ok(())
}

/// The largest cursor the server issues (100 channels with 255-byte names)
/// is accepted back as `since` and as `Last-Event-ID`.
#[test]
fn the_largest_cursor_the_server_issues_is_accepted() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::CHANNELS_APP, "--publish-token", TOKEN])?;
    let names: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "n".repeat(252)))
        .collect();
    let query: String = names.iter().map(|n| format!("channel={n}&")).collect();
    let r = get(&comet.url(&format!("/comet/poll?{query}timeout=0")))?;
    assert_eq!(r.status, 200, "{}", r.body);
    let cursor = serde_json::from_str::<Value>(&r.body)?["cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cursor.len() < 4096, "{} bytes", cursor.len());
    publish(&comet, TOKEN, &names[99], "after")?;
    let r = get(&comet.url(&format!("/comet/poll?{query}since={cursor}&timeout=0")))?;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["resets"], json!([]), "{v}");
    assert_eq!(v["messages"][0]["data"], "after", "{v}");
    let r = get_with(
        &comet.url(&format!("/comet/poll?{query}timeout=0")),
        &[("last-event-id", &cursor)],
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut sse = Lines::open(
        &comet.url(&format!("/comet/sse?{query}")),
        &[("last-event-id", &cursor)],
    )?;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.event()?.json()["data"], "after");
    Ok(())
}
