use std::time::Duration;

use comet_testkit::redis::RedisServer;
use comet_testkit::{
    Comet, Lines, get, guests, publish, status, wait_connections, ws_connect, ws_json, ws_send,
};
use serde_json::{Value, json};

use crate::COMET;

const TOKEN: &str = "test-token";

/// A Redis server, or `None` (and a note) where `redis-server` is not
/// installed; CI installs it.
fn redis(appendonly: bool) -> anyhow::Result<Option<RedisServer>> {
    if !RedisServer::available() {
        eprintln!("skipped: redis-server is not installed");
        return Ok(None);
    }
    Ok(Some(RedisServer::start(appendonly)?))
}

/// A comet node of the channels test guest on `redis`.
fn node(redis: &RedisServer) -> anyhow::Result<Comet> {
    let url = redis.url();
    Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--broker",
            &url,
            "--publish-token",
            TOKEN,
            "--client-publish",
        ],
    )
}

fn published(comet: &Comet, channel: &str, body: &str) -> anyhow::Result<Value> {
    let r = publish(comet, TOKEN, channel, body)?;
    anyhow::ensure!(r.status == 200, "publish: {} {}", r.status, r.body);
    Ok(serde_json::from_str(&r.body)?)
}

fn data(v: &Value) -> String {
    v["data"].as_str().unwrap_or_default().to_string()
}

fn ws_url(comet: &Comet) -> String {
    format!("ws://{}/comet/ws", comet.addr)
}

/// Two nodes on one Redis: a subscriber of node B receives, in order,
/// what node A's publish API, WebSocket clients and guests publish, and
/// on-publish runs once per publish.
#[test]
fn two_nodes_serve_one_set_of_channels() -> anyhow::Result<()> {
    let Some(redis) = redis(false)? else {
        return Ok(());
    };
    let a = node(&redis)?;
    let b = node(&redis)?;
    assert_eq!(status(&a)?["broker"]["kind"], "redis");
    let mut sse = Lines::open(&b.url("/comet/sse?channel=x"), &[])?;
    published(&a, "x", "from the API")?;
    let mut ws = ws_connect(&ws_url(&a))?;
    ws_send(
        &mut ws,
        &json!({"op": "publish", "channel": "x", "data": "from a client", "id": 1}),
    )?;
    assert_eq!(ws_json(&mut ws)?["type"], "ack");
    let r = get(&a.url("/publish-from-guest?channel=x&text=from%20a%20guest"))?;
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<String> = (0..3)
        .map(|_| sse.event().map(|e| data(&e.json())))
        .collect::<Result<_, _>>()?;
    assert_eq!(got, ["from the API", "from a client", "from a guest"]);
    // kv is shared too: either node reads the count.
    assert_eq!(get(&b.url("/kv?key=published:x"))?.body, "3");
    Ok(())
}

/// A client of node A leaves, messages are published, and it comes back to
/// node B with its cursor: it gets exactly what it missed, on every
/// transport.
#[test]
fn a_client_resumes_on_another_node() -> anyhow::Result<()> {
    let Some(redis) = redis(false)? else {
        return Ok(());
    };
    let a = node(&redis)?;
    let b = node(&redis)?;

    // Long-poll.
    let v: Value = serde_json::from_str(&get(&a.url("/comet/poll?channel=p&timeout=0"))?.body)?;
    let cursor = v["cursor"].as_str().unwrap_or_default().to_string();
    for i in 1..=3 {
        published(&a, "p", &format!("p{i}"))?;
    }
    let v: Value = serde_json::from_str(
        &get(&b.url(&format!("/comet/poll?channel=p&since={cursor}&timeout=0")))?.body,
    )?;
    assert_eq!(v["resets"], json!([]), "{v}");
    let texts: Vec<String> = v["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(data)
        .collect();
    assert_eq!(texts, ["p1", "p2", "p3"]);

    // SSE, by Last-Event-ID.
    let mut sse = Lines::open(&a.url("/comet/sse?channel=s"), &[])?;
    published(&a, "s", "s0")?;
    let last = sse.event()?.id.unwrap_or_default();
    drop(sse);
    published(&a, "s", "s1")?;
    published(&a, "s", "s2")?;
    let mut sse = Lines::open(&b.url("/comet/sse?channel=s"), &[("last-event-id", &last)])?;
    assert_eq!(data(&sse.event()?.json()), "s1");
    assert_eq!(data(&sse.event()?.json()), "s2");

    // NDJSON, by the message's cursor.
    let mut stream = Lines::open(&a.url("/comet/stream?channel=n"), &[])?;
    published(&a, "n", "n0")?;
    let cursor = stream.json()?["cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    drop(stream);
    published(&a, "n", "n1")?;
    let mut stream = Lines::open(
        &b.url(&format!("/comet/stream?channel=n&since={cursor}")),
        &[],
    )?;
    assert_eq!(data(&stream.json()?), "n1");

    // WebSocket, subscribing with the cursor.
    let mut ws = ws_connect(&ws_url(&a))?;
    ws_send(&mut ws, &json!({"op": "subscribe", "channel": "w"}))?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    published(&a, "w", "w0")?;
    let cursor = ws_json(&mut ws)?["cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    drop(ws);
    published(&a, "w", "w1")?;
    let mut ws = ws_connect(&ws_url(&b))?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "w", "since": cursor}),
    )?;
    assert_eq!(ws_json(&mut ws)?["type"], "subscribed");
    assert_eq!(data(&ws_json(&mut ws)?), "w1");
    Ok(())
}

/// Node A is killed (SIGKILL) while 200 SSE clients are connected to it and
/// messages flow; each reconnects to node B with its last event id and ends
/// with every message once, in order.
#[test]
fn clients_of_a_killed_node_resume_on_the_other() -> anyhow::Result<()> {
    let Some(redis) = redis(false)? else {
        return Ok(());
    };
    let mut a = node(&redis)?;
    let b = node(&redis)?;
    const CLIENTS: usize = 200;
    const MESSAGES: usize = 300;
    let start = published(&b, "k", "start")?["cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (a_url, b_url) = (a.url("/comet/sse?channel=k"), b.url("/comet/sse?channel=k"));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (a_url, b_url, start) = (a_url.clone(), b_url.clone(), start.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<usize>> {
                let mut got = Vec::new();
                let mut last = start;
                let mut url = a_url;
                while got.len() < MESSAGES {
                    let mut sse = match Lines::open(&url, &[("last-event-id", &last)]) {
                        Ok(sse) => sse,
                        Err(_) => {
                            url = b_url.clone();
                            continue;
                        }
                    };
                    while got.len() < MESSAGES {
                        let Ok(event) = sse.event() else { break };
                        anyhow::ensure!(event.event == "message", "{event:?}");
                        got.push(data(&event.json()).parse()?);
                        last = event.id.unwrap_or_default();
                    }
                    url = b_url.clone();
                }
                Ok(got)
            })
        })
        .collect();
    wait_connections(&a, "sse", CLIENTS as u64)?;
    for i in 0..MESSAGES {
        if i == MESSAGES / 2 {
            a.kill();
        }
        published(&b, "k", &i.to_string())?;
    }
    let expected: Vec<usize> = (0..MESSAGES).collect();
    for client in clients {
        assert_eq!(client.join().expect("client thread")?, expected);
    }
    Ok(())
}

/// Collect the next `n` events of `sse` as `reset` or the message's data.
fn events(sse: &mut Lines, n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|_| {
            let e = sse.event()?;
            Ok(if e.event == "reset" {
                "reset".into()
            } else {
                data(&e.json())
            })
        })
        .collect()
}

/// Redis down: publishes answer 503 `unavailable`, streams stay open, and
/// when Redis is back the node resubscribes by itself. Without persistence
/// the history is gone, so the stream gets a reset before the new messages;
/// with appendonly nothing is lost and no reset is needed.
#[test]
fn redis_restarts_reset_or_resume_but_never_skip() -> anyhow::Result<()> {
    for appendonly in [false, true] {
        let Some(mut redis) = redis(appendonly)? else {
            return Ok(());
        };
        let comet = node(&redis)?;
        let mut sse = Lines::open(&comet.url("/comet/sse?channel=r"), &[])?;
        published(&comet, "r", "1")?;
        published(&comet, "r", "2")?;
        assert_eq!(events(&mut sse, 2)?, ["1", "2"]);

        redis.stop();
        let r = publish(&comet, TOKEN, "r", "lost")?;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("unavailable"), "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(status(&comet)?["connections"]["by_transport"]["sse"], 1);

        redis.restart()?;
        comet.wait_for("the node to resubscribe", Duration::from_secs(30), || {
            (status(&comet).ok()?["broker"]["subscribed"] == true).then_some(())
        })?;
        comet.wait_for("publishing to work again", Duration::from_secs(30), || {
            publish(&comet, TOKEN, "r", "3")
                .ok()
                .filter(|r| r.status == 200)
        })?;
        let expected: &[&str] = if appendonly { &["3"] } else { &["reset", "3"] };
        assert_eq!(
            events(&mut sse, expected.len())?,
            expected,
            "appendonly {appendonly}"
        );
    }
    Ok(())
}

/// kv and presence span the nodes: the hello example's counter counts
/// requests to either node; presence lists subscribers of both nodes and
/// drops a killed node's.
#[test]
fn kv_and_presence_span_nodes() -> anyhow::Result<()> {
    let Some(redis) = redis(false)? else {
        return Ok(());
    };
    let url = redis.url();
    let hello = |_: ()| Comet::start(COMET, &[guests::HELLO, "--broker", &url]);
    let (h1, h2) = (hello(())?, hello(())?);
    let visits = |comet: &Comet| -> anyhow::Result<i64> {
        let v: Value = serde_json::from_str(&get(&comet.url("/counter"))?.body)?;
        Ok(v["visits"].as_i64().unwrap_or_default())
    };
    assert_eq!([visits(&h1)?, visits(&h2)?, visits(&h1)?], [1, 2, 3]);

    let a = node(&redis)?;
    let mut b = node(&redis)?;
    let _on_a = Lines::open(&a.url("/comet/sse?channel=who"), &[])?;
    let _on_b = Lines::open(&b.url("/comet/sse?channel=who"), &[])?;
    let presence = |comet: &Comet| -> Option<u64> {
        let v: Value =
            serde_json::from_str(&get(&comet.url("/presence?channel=who")).ok()?.body).ok()?;
        v["connections"].as_u64()
    };
    // Node a shares its presence every few seconds and logs each round:
    // b's entry arrives, or expires, between two of them.
    a.wait_for("both nodes' subscribers", Duration::from_secs(30), || {
        (presence(&a) == Some(2)).then_some(())
    })?;
    b.kill();
    a.wait_for(
        "the killed node's subscribers to go",
        Duration::from_secs(60),
        || (presence(&a) == Some(1)).then_some(()),
    )?;
    Ok(())
}

/// A node whose pub/sub connection stays up on TCP but delivers nothing
/// (the failure of slact/nchan#442 and centrifugal/centrifugo#1189) notices
/// within its probe interval, reconnects, and reads what it missed from
/// history: its subscriber gets every message.
#[test]
fn a_silent_subscription_is_noticed_and_nothing_is_lost() -> anyhow::Result<()> {
    use comet_testkit::redis::Proxy;
    let Some(redis) = redis(false)? else {
        return Ok(());
    };
    let proxy = Proxy::start(redis.port)?;
    let proxied = proxy.url();
    let a = Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--broker",
            &proxied,
            "--publish-token",
            TOKEN,
        ],
    )?;
    let b = node(&redis)?;
    let mut sse = Lines::open(&a.url("/comet/sse?channel=quiet"), &[])?;
    published(&b, "quiet", "before")?;
    assert_eq!(events(&mut sse, 1)?, ["before"]);
    proxy.freeze();
    published(&b, "quiet", "during")?;
    // Probed (10 s), replaced, caught up from history.
    assert_eq!(events(&mut sse, 1)?, ["during"]);
    published(&b, "quiet", "after")?;
    assert_eq!(events(&mut sse, 1)?, ["after"]);
    Ok(())
}

/// `kv.increment-with-ttl` is a fixed window, in memory and on Redis: the
/// first increment sets the expiry, later ones keep it, and once it has
/// passed the count starts again.
#[test]
fn an_increment_with_a_ttl_is_a_fixed_window() -> anyhow::Result<()> {
    let redis = redis(false)?;
    let memory = Comet::start(COMET, &[guests::CHANNELS_APP])?;
    let mut nodes = vec![memory];
    if let Some(redis) = &redis {
        nodes.push(node(redis)?);
    }
    for comet in &nodes {
        let hit = |ttl_ms: u64| hit_key(comet, "w", ttl_ms);
        // A long window counts on.
        assert_eq!(hit(3_600_000)?, 1);
        assert_eq!(hit(3_600_000)?, 2);
        assert_eq!(hit(3_600_000)?, 3);
        // A short one on another key ends, and the count starts again.
        assert_eq!(hit_key(comet, "s", 300)?, 1);
        comet.wait_for("the 300 ms window to end", Duration::from_secs(10), || {
            (hit_key(comet, "s", 300).ok()? == 1).then_some(())
        })?;
    }
    Ok(())
}

/// One hit of the test guest's fixed-window counter `key`: the count.
fn hit_key(comet: &Comet, key: &str, ttl_ms: u64) -> anyhow::Result<u64> {
    let r = get(&comet.url(&format!("/hit?key={key}&ttl_ms={ttl_ms}")))?;
    anyhow::ensure!(r.status == 200, "hit: {} {}", r.status, r.body);
    Ok(r.body.parse()?)
}
