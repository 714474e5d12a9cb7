//! The server API (`POST /comet/api/COMMAND`), as a backend uses it: every
//! command sent to node A of two nodes on one redis-server acts on the
//! clients of node B; a killed node leaves the registry; the command set on
//! one node with the memory broker; bad input gets a clear error.

use std::time::Duration;

use comet_testkit::redis::RedisServer;
use comet_testkit::{
    Comet, Lines, WsClient, get, guests, send, wait_connections, ws_connect, ws_json, ws_send,
};
use serde_json::{Value, json};

use crate::COMET;

const KEY: &str = "test-api-key";

/// `POST /comet/api/METHOD` with `params`: the status and the JSON answer.
fn call(comet: &Comet, method: &str, params: &Value) -> anyhow::Result<(u16, Value)> {
    let auth = format!("Bearer {KEY}");
    let r = send(
        "POST",
        &comet.url(&format!("/comet/api/{method}")),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(params.to_string().as_bytes()),
    )?;
    let body = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
    Ok((r.status, body))
}

/// A command that must succeed: its `result`.
fn api(comet: &Comet, method: &str, params: &Value) -> anyhow::Result<Value> {
    let (status, body) = call(comet, method, params)?;
    anyhow::ensure!(status == 200, "{method} {params}: {status} {body}");
    Ok(body["result"].clone())
}

/// Wait until `method` answers something `done` accepts (figures shared
/// between nodes are as fresh as their last heartbeat).
fn api_until(
    comet: &Comet,
    method: &str,
    params: &Value,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    comet.wait_for(
        &format!("{method} {params} to settle"),
        Duration::from_secs(40),
        || {
            let result = api(comet, method, params).ok()?;
            done(&result).then_some(result)
        },
    )
}

fn redis() -> anyhow::Result<Option<RedisServer>> {
    if !RedisServer::available() {
        eprintln!("skipped: redis-server is not installed");
        return Ok(None);
    }
    Ok(Some(RedisServer::start(false)?))
}

/// A node of the channels test guest (its on-connect takes the user from
/// `?user=`), with the test key, on `broker` (or the memory broker).
fn node(redis: Option<&RedisServer>) -> anyhow::Result<Comet> {
    let mut args = vec![guests::CHANNELS_APP, "--api-key", KEY];
    let url = redis.map(RedisServer::url);
    if let Some(url) = &url {
        args.extend(["--broker", url]);
    }
    let comet = Comet::start(COMET, &args)?;
    // Commands arrive over the broker's first pub/sub connection.
    comet.wait_for(
        "the broker's subscriptions",
        Duration::from_secs(30),
        || {
            let status = comet_testkit::status(&comet).ok()?;
            (status["broker"]["subscribed"] == true).then_some(())
        },
    )?;
    Ok(comet)
}

/// A WebSocket of `user` on `comet`, subscribed to `channel`.
fn ws_of(comet: &Comet, user: &str, channel: &str) -> anyhow::Result<WsClient> {
    let mut ws = ws_connect(&format!("ws://{}/comet/ws?user={user}", comet.addr))?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": channel, "id": 1}),
    )?;
    let v = ws_json(&mut ws)?;
    anyhow::ensure!(v["type"] == "subscribed", "{v}");
    Ok(ws)
}

/// Frames until one of `type_`, skipping others (heartbeats, messages).
fn ws_until(ws: &mut WsClient, type_: &str) -> anyhow::Result<Value> {
    for _ in 0..100 {
        let v = ws_json(ws)?;
        if v["type"] == type_ {
            return Ok(v);
        }
    }
    anyhow::bail!("no {type_} frame in 100")
}

/// SSE events until one named `name`: its data.
fn sse_until(sse: &mut Lines, name: &str) -> anyhow::Result<Value> {
    for _ in 0..100 {
        let event = sse.raw_event()?;
        if event.event == name {
            return Ok(event.json());
        }
    }
    anyhow::bail!("no {name} event in 100")
}

/// The next message's text.
fn ws_text(ws: &mut WsClient) -> anyhow::Result<String> {
    let v = ws_until(ws, "message")?;
    Ok(v["data"].as_str().unwrap_or_default().to_string())
}

/// Read until the server's close frame: its code and reason.
fn ws_close(ws: &mut WsClient) -> anyhow::Result<(u16, String)> {
    use tokio_tungstenite::tungstenite::Message;
    for _ in 0..100 {
        if let Message::Close(frame) = ws.read()? {
            let frame = frame.ok_or_else(|| anyhow::anyhow!("a close frame without a code"))?;
            return Ok((u16::from(frame.code), frame.reason.to_string()));
        }
    }
    anyhow::bail!("no close frame")
}

fn texts(history: &Value) -> Vec<String> {
    history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["data"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A backend talks to node A; the clients are on node B.
#[test]
fn every_command_sent_to_one_node_acts_on_the_other() -> anyhow::Result<()> {
    let Some(redis) = redis()? else {
        return Ok(());
    };
    let a = node(Some(&redis))?;
    let b = node(Some(&redis))?;

    // ann has a WebSocket, an SSE stream and a held long-poll on B; bob a
    // WebSocket.
    let mut ann_ws = ws_of(&b, "ann", "room")?;
    let mut ann_sse = Lines::open(&b.url("/comet/sse?channel=room&user=ann"), &[])?;
    let mut bob_ws = ws_of(&b, "bob", "room")?;
    let stats = api_until(&a, "presence_stats", &json!({"channel": "room"}), |r| {
        r["connections"] == 3
    })?;
    assert_eq!(stats["users"], 2, "{stats}");

    // presence lists connections with ids of node B and their users.
    let presence = api(&a, "presence", &json!({"channel": "room"}))?;
    assert_eq!(presence["users"], json!(["ann", "bob"]), "{presence}");
    let info = api_until(&a, "info", &json!({}), |r| {
        r["nodes"].as_array().map(Vec::len) == Some(2)
    })?;
    let b_id = info["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .find(|id| *id != info["node"])
        .unwrap_or_default();
    let clients = presence["clients"].as_array().cloned().unwrap_or_default();
    assert_eq!(clients.len(), 3, "{presence}");
    for client in &clients {
        let id = client["connection"].as_str().unwrap_or_default();
        assert!(
            id.starts_with(&format!("{b_id}-")),
            "{id} is not of node {b_id}"
        );
    }
    let bob_connection = clients
        .iter()
        .find(|c| c["user"] == "bob")
        .and_then(|c| c["connection"].as_str())
        .unwrap_or_default()
        .to_string();

    // publish and broadcast reach B's clients.
    let sent = api(&a, "publish", &json!({"channel": "room", "data": "hello"}))?;
    assert!(sent["cursor"].is_string(), "{sent}");
    assert_eq!(ws_text(&mut ann_ws)?, "hello");
    assert_eq!(ann_sse.event()?.json()["data"], "hello");
    let broadcast = api(
        &a,
        "broadcast",
        &json!({"channels": ["room", "elsewhere"], "data": "to all"}),
    )?;
    assert_eq!(broadcast["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(ws_text(&mut bob_ws)?, "hello");
    assert_eq!(ws_text(&mut bob_ws)?, "to all");

    // A server-side subscription: bob's WebSocket on B is told, then
    // receives the channel.
    api(&a, "subscribe", &json!({"user": "bob", "channel": "news"}))?;
    let subscribed = ws_until(&mut bob_ws, "subscribed")?;
    assert_eq!(subscribed["channel"], "news");
    assert_eq!(subscribed["server"], true);
    api(&a, "publish", &json!({"channel": "news", "data": "extra"}))?;
    assert_eq!(ws_text(&mut bob_ws)?, "extra");
    api(
        &a,
        "unsubscribe",
        &json!({"user": "bob", "channel": "news"}),
    )?;
    let unsubscribed = ws_until(&mut bob_ws, "unsubscribed")?;
    assert_eq!(unsubscribed["channel"], "news");
    // ann's SSE stream gets a server-side subscription as an event.
    api(
        &a,
        "subscribe",
        &json!({"user": "ann", "channel": "alerts"}),
    )?;
    let event = sse_until(&mut ann_sse, "subscribed")?;
    assert_eq!(event["channel"], "alerts");
    assert_eq!(event["server"], true);
    // (ann's WebSocket got one too.)
    assert_eq!(ws_until(&mut ann_ws, "subscribed")?["channel"], "alerts");

    // channels: what has subscribers on some node, by pattern.
    let channels = api_until(&a, "channels", &json!({"pattern": "ro*"}), |r| {
        r["channels"] == json!([{"channel": "room", "subscribers": 3}])
    })?;
    assert_eq!(channels["channels"][0]["channel"], "room");

    // history: the newest N first, after a cursor, and a removal that
    // gives the old cursor a reset.
    let first = api(&a, "publish", &json!({"channel": "log", "data": "1"}))?;
    for text in ["2", "3", "4"] {
        api(&a, "publish", &json!({"channel": "log", "data": text}))?;
    }
    let newest = api(
        &b,
        "history",
        &json!({"channel": "log", "limit": 2, "reverse": true}),
    )?;
    assert_eq!(texts(&newest), ["4", "3"]);
    let after = api(
        &b,
        "history",
        &json!({"channel": "log", "since": first["cursor"]}),
    )?;
    assert_eq!(texts(&after), ["2", "3", "4"]);
    assert!(after.get("reset").is_none(), "{after}");
    api(&a, "history_remove", &json!({"channel": "log"}))?;
    let gone = api(
        &b,
        "history",
        &json!({"channel": "log", "since": first["cursor"]}),
    )?;
    assert_eq!(texts(&gone), Vec::<String>::new());
    assert!(gone["reset"]["reason"].is_string(), "{gone}");

    // batch: in order, each with its own answer.
    let batch = api(
        &a,
        "batch",
        &json!({"commands": [
            {"method": "publish", "params": {"channel": "room", "data": "batched"}},
            {"method": "no-such-command"},
            {"method": "presence_stats", "params": {"channel": "room"}},
        ]}),
    )?;
    let replies = batch["replies"].as_array().cloned().unwrap_or_default();
    assert!(replies[0]["result"]["cursor"].is_string(), "{batch}");
    assert_eq!(replies[1]["error"], "unknown-command", "{batch}");
    assert_eq!(replies[2]["result"]["connections"], 3, "{batch}");
    assert_eq!(ws_text(&mut bob_ws)?, "batched");

    // Disconnect ann, who must not come back: her WebSocket closes with the
    // code and reason, her stream ends with an error that says so, her held
    // poll answers 403; bob stays.
    let poll_url = b.url("/comet/poll?channel=quiet&user=ann&timeout=25");
    let poll = std::thread::spawn(move || get(&poll_url));
    wait_connections(&b, "poll", 1)?;
    api(
        &a,
        "disconnect",
        &json!({"user": "ann", "reason": "banned"}),
    )?;
    assert_eq!(ws_close(&mut ann_ws)?, (4500, "banned".to_string()));
    let end = sse_until(&mut ann_sse, "error")?;
    assert_eq!(end["error"], "disconnected");
    assert_eq!(end["reconnect"], false);
    assert_eq!(end["code"], 4500);
    let poll = poll
        .join()
        .map_err(|_| anyhow::anyhow!("the poll panicked"))??;
    assert_eq!(poll.status, 403, "{}", poll.body);
    let poll: Value = serde_json::from_str(&poll.body)?;
    assert_eq!(poll["error"], "disconnected");
    assert_eq!(poll["reconnect"], false);
    api(
        &a,
        "publish",
        &json!({"channel": "room", "data": "still here"}),
    )?;
    assert_eq!(ws_text(&mut bob_ws)?, "still here");

    // One connection, by id, allowed to reconnect.
    api(
        &a,
        "disconnect",
        &json!({"connection": bob_connection, "code": 4001, "reason": "moving you"}),
    )?;
    assert_eq!(ws_close(&mut bob_ws)?, (4001, "moving you".to_string()));
    Ok(())
}

/// A killed node's connections leave presence and the node the registry.
#[test]
fn a_killed_node_leaves_the_registry_and_presence() -> anyhow::Result<()> {
    let Some(redis) = redis()? else {
        return Ok(());
    };
    let a = node(Some(&redis))?;
    let mut b = node(Some(&redis))?;
    let _carl = ws_of(&b, "carl", "room")?;
    api_until(&a, "info", &json!({}), |r| {
        r["nodes"].as_array().map(Vec::len) == Some(2)
    })?;
    api_until(&a, "presence_stats", &json!({"channel": "room"}), |r| {
        r["users"] == 1
    })?;
    b.kill();
    api_until(&a, "info", &json!({}), |r| {
        r["nodes"].as_array().map(Vec::len) == Some(1)
    })?;
    let stats = api_until(&a, "presence_stats", &json!({"channel": "room"}), |r| {
        r["connections"] == 0
    })?;
    assert_eq!(stats["users"], 0);
    Ok(())
}

/// One node with the memory broker serves the whole command set.
#[test]
fn the_command_set_on_one_node_with_the_memory_broker() -> anyhow::Result<()> {
    let comet = node(None)?;
    let mut ws = ws_of(&comet, "dora", "room")?;
    let stats = api(&comet, "presence_stats", &json!({"channel": "room"}))?;
    assert_eq!(
        stats,
        json!({"channel": "room", "connections": 1, "users": 1})
    );
    let info = api(&comet, "info", &json!({}))?;
    assert_eq!(info["nodes"][0]["id"], info["node"]);
    assert_eq!(info["nodes"][0]["connections"], 1);
    assert!(
        info["nodes"][0]["address"]
            .as_str()
            .is_some_and(|a| a.ends_with(&comet.addr.to_string())),
        "{info}"
    );
    api(
        &comet,
        "subscribe",
        &json!({"user": "dora", "channel": "news"}),
    )?;
    assert_eq!(ws_until(&mut ws, "subscribed")?["channel"], "news");
    api(&comet, "publish", &json!({"channel": "news", "data": "n1"}))?;
    assert_eq!(ws_text(&mut ws)?, "n1");
    api(&comet, "publish", &json!({"channel": "news", "data": "n2"}))?;
    assert_eq!(ws_text(&mut ws)?, "n2");
    let newest = api(
        &comet,
        "history",
        &json!({"channel": "news", "reverse": true, "limit": 1}),
    )?;
    assert_eq!(texts(&newest), ["n2"]);
    let all = api(&comet, "history", &json!({"channel": "news"}))?;
    assert_eq!(texts(&all), ["n1", "n2"]);
    // A guest reads the same newest-first (channels.history-newest, WIT
    // 0.1.1).
    let guest: Value =
        serde_json::from_str(&get(&comet.url("/history?channel=news&newest=5"))?.body)?;
    assert_eq!(guest["messages"], json!(["n2", "n1"]), "{guest}");
    // A removal starts a new epoch: the subscriber's next message comes
    // after a reset, never as a silent continuation.
    api(&comet, "history_remove", &json!({"channel": "news"}))?;
    api(&comet, "publish", &json!({"channel": "news", "data": "n3"}))?;
    let reset = ws_until(&mut ws, "reset")?;
    assert_eq!(reset["channel"], "news", "{reset}");
    assert_eq!(ws_text(&mut ws)?, "n3");
    let channels = api(&comet, "channels", &json!({}))?;
    assert_eq!(
        channels["channels"],
        json!([{"channel": "news", "subscribers": 1}, {"channel": "room", "subscribers": 1}])
    );
    api(
        &comet,
        "disconnect",
        &json!({"user": "dora", "reconnect": true}),
    )?;
    let (code, _) = ws_close(&mut ws)?;
    assert_eq!(code, 4000);
    Ok(())
}

/// Bad requests get the one error shape with a code a backend can act on.
#[test]
fn bad_requests_get_clear_errors() -> anyhow::Result<()> {
    let comet = node(None)?;
    let url = comet.url("/comet/api/info");
    let r = send("POST", &url, &[], Some(b"{}"))?;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = send(
        "POST",
        &url,
        &[("authorization", "Bearer wrong")],
        Some(b"{}"),
    )?;
    assert_eq!(r.status, 403, "{}", r.body);
    let auth = format!("Bearer {KEY}");
    let r = send("GET", &url, &[("authorization", &auth)], None)?;
    assert_eq!(r.status, 405, "{}", r.body);
    let r = send("POST", &url, &[("authorization", &auth)], Some(b"not json"))?;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.header("access-control-allow-origin").is_none());

    let cases = [
        ("nothing", json!({}), 404, "unknown-command"),
        ("publish", json!({"data": "x"}), 400, "bad-request"),
        (
            "publish",
            json!({"channel": "a b", "data": "x"}),
            400,
            "invalid-channel",
        ),
        (
            "publish",
            json!({"channel": "a", "data": "x", "extra": 1}),
            400,
            "bad-request",
        ),
        (
            "history",
            json!({"channel": "a", "since": "nonsense"}),
            400,
            "invalid-cursor",
        ),
        (
            "disconnect",
            json!({"user": "u", "code": 1000}),
            400,
            "bad-request",
        ),
        (
            "disconnect",
            json!({"user": "u", "code": 4600, "reconnect": true}),
            400,
            "bad-request",
        ),
        ("disconnect", json!({"code": 4500}), 400, "bad-request"),
        (
            "disconnect",
            json!({"user": "u", "code": 4008}),
            400,
            "bad-request",
        ),
        (
            "subscribe",
            json!({"user": "u", "connection": "c", "channel": "a"}),
            400,
            "bad-request",
        ),
        (
            "broadcast",
            json!({"channels": [], "data": "x"}),
            400,
            "too-many",
        ),
    ];
    for (method, params, status, code) in cases {
        let (got, body) = call(&comet, method, &params)?;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{method} {params}: {body}"
        );
    }
    let many: Vec<Value> = (0..101).map(|_| json!({"method": "info"})).collect();
    let (status, body) = call(&comet, "batch", &json!({ "commands": many }))?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("too-many")),
        "{body}"
    );
    Ok(())
}
