use comet_testkit::{Comet, get_with, guests, post_form, ws_connect_with, ws_json, ws_send};
use serde_json::{Value, json};

use crate::COMET;

fn message_data(v: &Value) -> Value {
    serde_json::from_str(v["data"].as_str().unwrap_or_default()).unwrap_or_default()
}

/// The chat page, and a message's path: the nickname from the cookie via the
/// session, HTML escaped by on-publish, delivered over WebSocket.
#[test]
fn chat_escapes_html_and_stamps_the_nickname() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::CHAT, "--client-publish"])?;
    let page = get_with(&comet.url("/?room=lobby"), &[("cookie", "nick=ann")])?;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<b id=\"me\">ann</b>"), "{}", page.body);
    assert!(
        page.body.contains("/comet/client.js"),
        "the page uses the embedded client"
    );

    let ws_url = format!("ws://{}/comet/ws", comet.addr);
    let mut ws = ws_connect_with(&ws_url, &[("cookie", "nick=ann")])?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "chat:lobby"}),
    )?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    let evil = json!({"text": "<script>alert(1)</script>", "nick": "mallory"}).to_string();
    ws_send(
        &mut ws,
        &json!({"op": "publish", "channel": "chat:lobby", "data": evil, "id": 1}),
    )?;
    let mut message = Value::Null;
    for _ in 0..2 {
        let v = ws_json(&mut ws)?;
        if v["type"] == "message" {
            message = v;
        }
    }
    let data = message_data(&message);
    assert_eq!(
        data["nick"], "ann",
        "the session's nickname, not the one sent"
    );
    assert_eq!(data["text"], "&lt;script&gt;alert(1)&lt;/script&gt;");

    // Empty and oversized messages are rejected.
    for text in ["   ", &"x".repeat(501)] {
        let data = json!({"text": text}).to_string();
        ws_send(
            &mut ws,
            &json!({"op": "publish", "channel": "chat:lobby", "data": data, "id": 2}),
        )?;
        let v = ws_json(&mut ws)?;
        assert_eq!(
            (v["type"].as_str(), v["error"].as_str()),
            (Some("error"), Some("rejected")),
            "{v}"
        );
    }

    // The long-poll fallback's POST /say publishes with the cookie's nickname.
    let r = post_form(
        &comet.url("/say"),
        "room=lobby&text=hi+there",
        &[("cookie", "nick=bob")],
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = message_data(&ws_json(&mut ws)?);
    assert_eq!(
        (data["nick"].as_str(), data["text"].as_str()),
        (Some("bob"), Some("hi there"))
    );
    Ok(())
}

/// Private rooms need the token (on-subscribe, Hookbox style).
#[test]
fn chat_private_rooms_need_the_token() -> anyhow::Result<()> {
    let comet = Comet::start(
        COMET,
        &[
            guests::CHAT,
            "--client-publish",
            "--var",
            "room_token=sesame",
        ],
    )?;
    let ws_url = format!("ws://{}/comet/ws", comet.addr);
    let mut ws = ws_connect_with(&ws_url, &[])?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "chat:private-x", "token": "nope"}),
    )?;
    let v = ws_json(&mut ws)?;
    assert_eq!(v["error"], "denied", "{v}");
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "chat:private-x", "token": "sesame"}),
    )?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    let r = get_with(
        &comet.url("/comet/poll?channel=chat:private-x&timeout=10"),
        &[],
    )?;
    assert_eq!(r.status, 403);
    Ok(())
}
