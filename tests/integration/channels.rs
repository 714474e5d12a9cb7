use std::time::Duration;

use base64::Engine as _;
use comet_testkit::{
    Comet, Lines, get, guests, publish, wait_connections, ws_connect, ws_frame, ws_json, ws_send,
};
use serde_json::{Value, json};

use crate::COMET;

const TOKEN: &str = "test-token";

fn start(extra: &[&str]) -> anyhow::Result<Comet> {
    let mut args = vec![
        guests::CHANNELS_APP,
        "--publish-token",
        TOKEN,
        "--client-publish",
    ];
    args.extend_from_slice(extra);
    Comet::start(COMET, &args)
}

fn ws_url(comet: &Comet, path: &str) -> String {
    format!("ws://{}{}", comet.addr, path)
}

fn published(comet: &Comet, channel: &str, body: &str) -> anyhow::Result<Value> {
    let r = publish(comet, TOKEN, channel, body)?;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(serde_json::from_str(&r.body)?)
}

/// SSE: two channels on one stream, every message in order, each event's id
/// a cursor for the whole stream.
#[test]
fn sse_delivers_two_channels_in_order() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut sse = Lines::open(&comet.url("/comet/sse?channel=a&channel=b"), &[])?;
    assert_eq!(sse.status, 200);
    for i in 0..5 {
        published(&comet, "a", &format!("a{i}"))?;
        published(&comet, "b", &format!("b{i}"))?;
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        let event = sse.event()?;
        assert_eq!(event.event, "message");
        assert!(event.id.is_some());
        got.push(
            event.json()["data"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    assert_eq!(got, expected);
    Ok(())
}

/// NDJSON streaming delivers the same JSON objects, one per line.
#[test]
fn ndjson_stream_delivers_in_order() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut stream = Lines::open(&comet.url("/comet/stream?channel=a&channel=b"), &[])?;
    assert_eq!(stream.status, 200);
    published(&comet, "a", "one")?;
    published(&comet, "b", "two")?;
    published(&comet, "a", "three")?;
    let texts: Vec<Value> = (0..3)
        .map(|_| stream.json().map(|v| v["data"].clone()))
        .collect::<Result<_, _>>()?;
    assert_eq!(texts, [json!("one"), json!("two"), json!("three")]);
    Ok(())
}

/// Long-poll answers at once when behind, holds otherwise, and its cursor
/// resumes both channels.
#[test]
fn long_poll_returns_messages_and_a_cursor() -> anyhow::Result<()> {
    let comet = start(&[])?;
    // First poll: nothing yet; it times out with a cursor at the heads.
    let r = get(&comet.url("/comet/poll?channel=a&channel=b&timeout=200"))?;
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["messages"], json!([]));
    let cursor = v["cursor"].as_str().unwrap_or_default().to_string();
    published(&comet, "a", "1")?;
    published(&comet, "b", "2")?;
    let r = get(&comet.url(&format!("/comet/poll?channel=a&channel=b&since={cursor}")))?;
    let v: Value = serde_json::from_str(&r.body)?;
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["data"].as_str())
        .collect();
    assert_eq!(texts, ["1", "2"]);
    // A poll that is up to date holds until the next message.
    let cursor = v["cursor"].as_str().unwrap_or_default().to_string();
    let url = comet.url(&format!("/comet/poll?channel=a&channel=b&since={cursor}"));
    let waiter = std::thread::spawn(move || get(&url));
    wait_connections(&comet, "poll", 1)?;
    published(&comet, "b", "3")?;
    let v: Value = serde_json::from_str(&waiter.join().expect("poll thread")?.body)?;
    assert_eq!(v["messages"][0]["data"], "3");
    Ok(())
}

/// WebSocket: subscribe to two channels, publish with acknowledgements,
/// receive everything in order; binary payloads ride binary frames.
#[test]
fn websocket_subscribe_publish_receive() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut ws = ws_connect(&ws_url(&comet, "/comet/ws"))?;
    for (id, channel) in [(1, "a"), (2, "b")] {
        ws_send(
            &mut ws,
            &json!({"op": "subscribe", "channel": channel, "id": id}),
        )?;
        let v = ws_json(&mut ws)?;
        assert_eq!(v["type"], "subscribed", "{v}");
        assert_eq!(v["id"], id);
    }
    ws_send(
        &mut ws,
        &json!({"op": "publish", "channel": "a", "data": "hi", "id": 3}),
    )?;
    let mut acks = 0;
    let mut texts = Vec::new();
    while acks == 0 || texts.is_empty() {
        let v = ws_json(&mut ws)?;
        match v["type"].as_str() {
            Some("ack") => {
                assert_eq!(v["id"], 3);
                assert!(v["cursor"].is_string());
                acks += 1;
            }
            Some("message") => texts.push(v["data"].clone()),
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    published(&comet, "b", "from api")?;
    let v = ws_json(&mut ws)?;
    assert_eq!(
        (v["channel"].as_str(), v["data"].as_str()),
        (Some("b"), Some("from api"))
    );
    // Binary: a header frame, then the bytes.
    let b64 = base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 255]);
    ws_send(
        &mut ws,
        &json!({"op": "publish", "channel": "b", "data_b64": b64}),
    )?;
    let mut saw_binary = false;
    for _ in 0..3 {
        match ws_frame(&mut ws)? {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text)?;
                if v["type"] == "message" {
                    assert_eq!(v["binary"], true);
                }
            }
            Err(bytes) => {
                assert_eq!(bytes, [0u8, 1, 2, 255]);
                saw_binary = true;
                break;
            }
        }
    }
    assert!(saw_binary);
    Ok(())
}

/// The query string subscribes a WebSocket as it opens, as on the SSE
/// endpoint: on-subscribe is asked, the backlog after `since` comes first,
/// and a refused subscription refuses the upgrade with the SSE status.
#[test]
fn websocket_subscribes_from_its_query_string() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let first = published(&comet, "q", "0")?;
    for i in 1..3 {
        published(&comet, "q", &i.to_string())?;
    }
    let since = first["cursor"].as_str().unwrap_or_default();
    let url = ws_url(
        &comet,
        &format!("/comet/ws?channel=q&channel=r&since={since}"),
    );
    let mut ws = ws_connect(&url)?;
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(ws_json(&mut ws)?);
    }
    let seen: Vec<(&str, &str)> = frames
        .iter()
        .map(|v| {
            let kind = v["type"].as_str().unwrap_or_default();
            let what = v["data"].as_str().or(v["channel"].as_str());
            (kind, what.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("subscribed", "q"),
            ("message", "1"),
            ("message", "2"),
            ("subscribed", "r"),
        ],
        "{frames:?}"
    );
    assert!(frames[0]["id"].is_null() && frames[0]["cursor"].is_string());
    // Live messages follow, on both channels.
    published(&comet, "r", "live")?;
    let v = ws_json(&mut ws)?;
    assert_eq!(
        (v["channel"].as_str(), v["data"].as_str()),
        (Some("r"), Some("live"))
    );

    // Refusals come before the upgrade, as HTTP answers.
    let refused = |path: &str| match ws_connect(&ws_url(&comet, path)) {
        Ok(_) => panic!("{path} was upgraded"),
        Err(e) => format!("{e:#}"),
    };
    let denied = refused("/comet/ws?channel=private:x");
    assert!(denied.contains("403"), "{denied}");
    let bad_cursor = refused("/comet/ws?channel=q&since=not-a-cursor");
    assert!(bad_cursor.contains("400"), "{bad_cursor}");
    // With the token, on-subscribe allows it.
    let mut ws = ws_connect(&ws_url(&comet, "/comet/ws?channel=private:x&token=secret"))?;
    let v = ws_json(&mut ws)?;
    assert_eq!(
        (v["type"].as_str(), v["channel"].as_str()),
        (Some("subscribed"), Some("private:x"))
    );
    Ok(())
}

/// Resume: 1,000 messages published while clients of each transport keep
/// dropping and reconnecting with their cursor; each ends with all of them,
/// none twice, in order.
#[test]
fn resume_by_cursor_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let comet = start(&["--history-len", "2000"])?;
    let base = comet.url("");
    // Every client starts from the cursor of a message published before the
    // run ("everything since X"), so none depends on when it connected.
    let start_cursor = published(&comet, "r", "start")?["cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let publisher = {
        let comet_url = base.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let agent_url = format!("{comet_url}/comet/publish/r");
            for i in 0..1000 {
                let r = ureq::post(&agent_url)
                    .header("authorization", &format!("Bearer {TOKEN}"))
                    .header("content-type", "text/plain")
                    .send(i.to_string().as_bytes())?;
                assert_eq!(r.status(), 200);
            }
            Ok(())
        })
    };
    // Long-poll client: a fresh request each time, cursor carried over.
    let poll = {
        let base = base.clone();
        let mut cursor = start_cursor.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
            let mut got = Vec::new();
            while got.len() < 1000 {
                let r = get(&format!(
                    "{base}/comet/poll?channel=r&timeout=2000&since={cursor}"
                ))?;
                let v: Value = serde_json::from_str(&r.body)?;
                assert_eq!(v["resets"], json!([]), "unexpected reset");
                for m in v["messages"].as_array().into_iter().flatten() {
                    got.push(m["data"].as_str().unwrap_or_default().parse()?);
                }
                cursor = v["cursor"].as_str().unwrap_or_default().to_string();
            }
            Ok(got)
        })
    };
    // SSE client: reconnects every 150 events with Last-Event-ID.
    let sse = {
        let base = base.clone();
        let mut last_id = Some(start_cursor.clone());
        std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
            let mut got = Vec::new();
            while got.len() < 1000 {
                let headers: Vec<(&str, &str)> = last_id
                    .iter()
                    .map(|id| ("last-event-id", id.as_str()))
                    .collect();
                let mut stream = Lines::open(&format!("{base}/comet/sse?channel=r"), &headers)?;
                for _ in 0..150 {
                    if got.len() == 1000 {
                        break;
                    }
                    let event = stream.event()?;
                    assert_eq!(event.event, "message", "{event:?}");
                    got.push(event.json()["data"].as_str().unwrap_or_default().parse()?);
                    last_id = event.id;
                }
            }
            Ok(got)
        })
    };
    // WebSocket client: reconnects every 200 messages, subscribing with the
    // cursor of the last message it saw.
    let ws = {
        let ws_base = base.replace("http://", "ws://");
        let mut since = Some(start_cursor);
        std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
            let mut got = Vec::new();
            while got.len() < 1000 {
                let mut ws = ws_connect(&format!("{ws_base}/comet/ws"))?;
                ws_send(
                    &mut ws,
                    &json!({"op": "subscribe", "channel": "r", "since": since}),
                )?;
                let mut n = 0;
                while n < 200 && got.len() < 1000 {
                    let v = ws_json(&mut ws)?;
                    if v["type"] == "message" {
                        got.push(v["data"].as_str().unwrap_or_default().parse()?);
                        since = v["cursor"].as_str().map(str::to_string);
                        n += 1;
                    } else {
                        assert_eq!(v["type"], "subscribed", "{v}");
                    }
                }
            }
            Ok(got)
        })
    };
    publisher.join().expect("publisher")?;
    let expected: Vec<u64> = (0..1000).collect();
    for (name, client) in [("poll", poll), ("sse", sse), ("ws", ws)] {
        let got = client.join().expect("client thread")?;
        assert_eq!(got, expected, "{name} client");
    }
    Ok(())
}

/// A cursor older than the history, or from another epoch, gets an explicit
/// reset before the messages that are still there.
#[test]
fn stale_cursors_get_a_reset() -> anyhow::Result<()> {
    let comet = start(&["--history-len", "5"])?;
    let first = published(&comet, "h", "0")?;
    for i in 1..20 {
        published(&comet, "h", &i.to_string())?;
    }
    let old = first["cursor"].as_str().unwrap_or_default();
    let mut sse = Lines::open(
        &comet.url("/comet/sse?channel=h"),
        &[("last-event-id", old)],
    )?;
    let reset = sse.event()?;
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert_eq!(reset.json()["channel"], "h");
    let first_kept = sse.event()?;
    assert_eq!(first_kept.json()["data"], "15");

    // A well-formed cursor from another epoch (another server's history).
    let foreign = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("h 1234 3");
    let r = get(&comet.url(&format!("/comet/poll?channel=h&since={foreign}")))?;
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["resets"][0]["channel"], "h", "{v}");
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(5));
    Ok(())
}

/// on-connect rejects, on-subscribe denies without the token, and the
/// session set on connect comes back in on-message.
#[test]
fn hooks_decide_connect_subscribe_and_session() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let r = get(&comet.url("/comet/poll?channel=a&reject=1"))?;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("go away"), "{}", r.body);

    let r = get(&comet.url("/comet/poll?channel=private:x&timeout=10"))?;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("wrong token"), "{}", r.body);
    let r = get(&comet.url("/comet/poll?channel=private:x&timeout=10&token=secret"))?;
    assert_eq!(r.status, 200);

    let mut ws = ws_connect(&ws_url(&comet, "/comet/ws?user=ada"))?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "private:y", "id": 7}),
    )?;
    let v = ws_json(&mut ws)?;
    assert_eq!(
        (v["type"].as_str(), v["error"].as_str(), v["id"].as_i64()),
        (Some("error"), Some("denied"), Some(7))
    );
    ws_send(&mut ws, &json!({"op": "message", "data": "whoami"}))?;
    assert_eq!(ws_frame(&mut ws)?, Ok("ada".to_string()));
    ws_send(&mut ws, &json!({"op": "message", "data": "rename bob"}))?;
    assert_eq!(ws_frame(&mut ws)?, Ok("renamed".to_string()));
    ws_send(&mut ws, &json!({"op": "message", "data": "whoami"}))?;
    assert_eq!(ws_frame(&mut ws)?, Ok("bob".to_string()));
    Ok(())
}

/// on-publish runs once per publish and can replace or reject, on every path.
#[test]
fn on_publish_replaces_and_rejects() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut stream = Lines::open(&comet.url("/comet/stream?channel=p"), &[])?;
    let r = publish(&comet, TOKEN, "p", "forbidden")?;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("not allowed"), "{}", r.body);
    let r = publish(&comet, TOKEN, "p", "")?;
    assert_eq!(r.status, 422);
    published(&comet, "p", "shout:hello")?;
    assert_eq!(stream.json()?["data"], "HELLO");
    // From a guest, through channels.publish.
    let r = get(&comet.url("/publish-from-guest?channel=p&text=shout:guest"))?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stream.json()?["data"], "GUEST");
    let r = get(&comet.url("/publish-from-guest?channel=p&text=forbidden"))?;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not allowed"), "{}", r.body);
    // From a WebSocket client.
    let mut ws = ws_connect(&ws_url(&comet, "/comet/ws"))?;
    ws_send(
        &mut ws,
        &json!({"op": "publish", "channel": "p", "data": "forbidden", "id": 1}),
    )?;
    let v = ws_json(&mut ws)?;
    assert_eq!(
        (v["error"].as_str(), v["id"].as_i64()),
        (Some("rejected"), Some(1))
    );
    // History through the guest import sees exactly what was published.
    let v: Value = serde_json::from_str(&get(&comet.url("/history?channel=p"))?.body)?;
    assert_eq!(v["messages"], json!(["HELLO", "GUEST"]));
    Ok(())
}

/// on-message actions: send, publish, subscribe, close; on-close runs.
#[test]
fn on_message_actions_run_in_order() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut ws = ws_connect(&ws_url(&comet, "/comet/ws"))?;
    ws_send(
        &mut ws,
        &json!({"op": "message", "data": "echo hello there"}),
    )?;
    assert_eq!(ws_frame(&mut ws)?, Ok("hello there".to_string()));
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1u8, 2, 3].into(),
    ))?;
    assert_eq!(ws_frame(&mut ws)?, Err(vec![3u8, 2, 1]));
    ws_send(&mut ws, &json!({"op": "message", "data": "sub room"}))?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    ws_send(
        &mut ws,
        &json!({"op": "message", "data": "pub room hi all"}),
    )?;
    // The action's publish is acknowledged as it runs; the message comes
    // through the connection's queue after it.
    let ack = ws_json(&mut ws)?;
    assert_eq!(ack["type"], "ack", "{ack}");
    let message = ws_json(&mut ws)?;
    assert_eq!(
        (message["type"].as_str(), message["data"].as_str()),
        (Some("message"), Some("hi all")),
        "{message}"
    );
    ws_send(&mut ws, &json!({"op": "message", "data": "bye"}))?;
    let err = ws_frame(&mut ws).expect_err("closed");
    assert!(err.to_string().contains("4001"), "{err}");
    // on-close ran (asynchronously) and counted the connection.
    let closed = comet.wait_for("on-close", Duration::from_secs(10), || {
        let body = get(&comet.url("/closed")).ok()?.body;
        (body != "0").then_some(body)
    })?;
    assert_eq!(closed, "1");
    Ok(())
}

/// Guest-driven holds: the application's own URLs serve SSE, long-poll and
/// WebSocket backed by channels.
#[test]
fn guest_holds_serve_channels() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut sse = Lines::open(&comet.url("/rooms/42/events"), &[])?;
    assert_eq!(sse.status, 200);
    assert!(sse.headers.iter().any(|(n, v)| n == "x-room" && v == "42"));
    let mut ws = ws_connect(&ws_url(&comet, "/rooms/42/ws?user=cy"))?;
    // The accept subscribes it in the connection's task: wait for both
    // subscribers of the room.
    comet.wait_for(
        "two subscribers of room:42",
        Duration::from_secs(10),
        || {
            let v: Value =
                serde_json::from_str(&get(&comet.url("/presence?channel=room:42")).ok()?.body)
                    .ok()?;
            (v["connections"] == 2).then_some(())
        },
    )?;
    published(&comet, "room:42", "welcome")?;
    assert_eq!(sse.event()?.json()["data"], "welcome");
    let v = ws_json(&mut ws)?;
    let v = if v["type"] == "subscribed" {
        ws_json(&mut ws)?
    } else {
        v
    };
    assert_eq!(v["data"], "welcome");
    ws_send(&mut ws, &json!({"op": "message", "data": "whoami"}))?;
    assert_eq!(ws_frame(&mut ws)?, Ok("cy".to_string()));
    let r = get(&comet.url("/rooms/42/poll?since="))?;
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["messages"], json!([]), "timed out with nothing new");
    Ok(())
}

/// A WebSocket client that stops reading is disconnected as a slow consumer
/// while a fast one keeps receiving.
#[test]
fn slow_websocket_reader_is_disconnected() -> anyhow::Result<()> {
    let comet = start(&["--queue-len", "16"])?;
    let mut slow = ws_connect(&ws_url(&comet, "/comet/ws"))?;
    let mut fast = ws_connect(&ws_url(&comet, "/comet/ws"))?;
    for ws in [&mut slow, &mut fast] {
        ws_send(ws, &json!({"op": "subscribe", "channel": "firehose"}))?;
        assert_eq!(ws_json(ws)?["type"], "subscribed");
    }
    let big = "x".repeat(60_000);
    let mut received = 0;
    for _ in 0..400 {
        published(&comet, "firehose", &big)?;
        // The fast reader keeps up.
        let v = ws_json(&mut fast)?;
        assert_eq!(v["type"], "message");
        received += 1;
    }
    assert_eq!(received, 400);
    // The slow one, reading now, finds what was buffered and then the close.
    let mut closed_with = None;
    for _ in 0..500 {
        match slow.read() {
            Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                closed_with = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("slow client failed instead of being closed: {e}"),
        }
    }
    let (code, reason) = closed_with.expect("slow consumer was closed");
    assert_eq!(code, 4008);
    assert!(reason.contains("slow consumer"), "{reason}");
    // The fast one is still subscribed and receiving.
    published(&comet, "firehose", "still there?")?;
    assert_eq!(ws_json(&mut fast)?["data"], "still there?");
    Ok(())
}

/// Bad input gets a clear error and the connection carries on.
#[test]
fn malformed_input_gets_clear_errors() -> anyhow::Result<()> {
    let comet = start(&[])?;
    let mut ws = ws_connect(&ws_url(&comet, "/comet/ws"))?;
    let cases = [
        (Value::String("not json".into()), "malformed-frame"),
        (json!({"op": "bogus"}), "bad-operation"),
        (json!({"op": "subscribe"}), "bad-operation"),
        (
            json!({"op": "subscribe", "channel": "bad name!"}),
            "invalid-channel",
        ),
        (
            json!({"op": "subscribe", "channel": "ok", "since": "%%%"}),
            "invalid-cursor",
        ),
        (json!({"op": "publish", "channel": "ok"}), "bad-operation"),
    ];
    for (frame, code) in cases {
        let text = match &frame {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        ws.send(tokio_tungstenite::tungstenite::Message::Text(text.into()))?;
        let v = ws_json(&mut ws)?;
        assert_eq!(
            (v["type"].as_str(), v["error"].as_str()),
            (Some("error"), Some(code)),
            "{frame}: {v}"
        );
    }
    // Still usable.
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "ok", "id": 1}),
    )?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");

    let r = get(&comet.url("/comet/sse?channel=bad%20name"))?;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid-channel"), "{}", r.body);
    let r = get(&comet.url("/comet/poll?channel=a&since=garbage!"))?;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid-cursor"), "{}", r.body);
    let r = get(&comet.url("/comet/poll"))?;
    assert_eq!(r.status, 400);
    let r = publish(&comet, "wrong", "a", "x")?;
    assert_eq!(r.status, 403);
    let r = get(&comet.url("/comet/nothing"))?;
    assert_eq!(r.status, 404);
    Ok(())
}

/// Past the connection limit new clients get 503, and a finished long-poll
/// gives its slot back.
#[test]
fn the_connection_limit_answers_503() -> anyhow::Result<()> {
    let comet = start(&["--max-connections", "1"])?;
    let r = get(&comet.url("/comet/poll?channel=a&timeout=10"))?;
    assert_eq!(r.status, 200, "the slot is free again after each poll");
    let r = get(&comet.url("/comet/poll?channel=a&timeout=10"))?;
    assert_eq!(r.status, 200);
    let sse = Lines::open(&comet.url("/comet/sse?channel=a"), &[])?;
    assert_eq!(sse.status, 200);
    let r = get(&comet.url("/comet/poll?channel=a&timeout=10"))?;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("too-many-connections"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    Ok(())
}

/// An SSE stream opened as the second request of a kept-alive connection is
/// served by hyper (the first request of a connection takes the direct
/// path); both deliver the same events.
#[test]
fn sse_after_another_request_on_the_same_connection() -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let comet = start(&[])?;
    let mut tcp = std::net::TcpStream::connect(comet.addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    // A first request, answered whole (404 from the app is fine).
    tcp.write_all(b"GET /nothing-here HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut reader = BufReader::new(tcp.try_clone()?);
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    // Then a stream on the same connection.
    tcp.write_all(b"GET /comet/sse?channel=ka HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut seen = String::new();
    while !seen.contains(": connected") {
        let mut line = String::new();
        anyhow::ensure!(reader.read_line(&mut line)? > 0, "closed: {seen}");
        seen.push_str(&line);
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    published(&comet, "ka", "kept-alive")?;
    let mut rest = String::new();
    while !rest.contains("kept-alive") {
        let mut line = String::new();
        anyhow::ensure!(reader.read_line(&mut line)? > 0, "closed: {rest}");
        rest.push_str(&line);
    }
    Ok(())
}

/// The direct SSE path answers refusals as whole HTTP responses, then
/// closes.
#[test]
fn sse_refusals_are_whole_responses() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let comet = start(&[])?;
    let mut tcp = std::net::TcpStream::connect(comet.addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.write_all(b"GET /comet/sse?channel=a&since=not-a-cursor HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut reply = String::new();
    tcp.read_to_string(&mut reply)?;
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let json: Value = serde_json::from_str(body)?;
    assert_eq!(json["error"], "invalid-cursor");
    Ok(())
}

/// A stream of one channel gets its live messages written by the hub
/// (not its own task); the event that ends it still carries the cursor of
/// the last message written, so a reconnect with it repeats nothing. The
/// same on WebSocket: the close comes after every message.
#[test]
fn the_end_of_a_stream_comes_after_and_resumes_from_its_last_message() -> anyhow::Result<()> {
    let mut comet = start(&[])?;
    let mut sse = Lines::open(&comet.url("/comet/sse?channel=last"), &[])?;
    assert_eq!(sse.raw_event()?.event, "subscribed");
    let mut ws = ws_connect(&ws_url(&comet, "/comet/ws?channel=last"))?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        published(&comet, "last", text)?;
        let event = sse.event()?;
        assert_eq!(event.json()["data"], text);
        ids.push(event.id.expect("an id"));
        assert_eq!(ws_json(&mut ws)?["data"], text);
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &comet.pid().to_string()])
        .status()?;
    assert!(killed.success());
    let end = sse.event()?;
    assert_eq!(end.event, "error", "{end:?}");
    assert_eq!(end.json()["error"], "server-restart");
    assert_eq!(end.id.as_deref(), ids.last().map(String::as_str));
    use tokio_tungstenite::tungstenite::Message;
    // Nothing after the last message but the close.
    match ws.read() {
        Ok(Message::Close(frame)) => {
            assert_eq!(frame.map(|f| u16::from(f.code)), Some(1012));
        }
        other => panic!("expected the close, got {other:?}"),
    }
    comet.wait_exit(Duration::from_secs(15)).expect("exited");
    Ok(())
}
