//! Unit tests of the transports against a fake `Hooks` and the memory
//! broker: no component, no edge. What a client receives is read off real
//! loopback sockets where a socket is involved (SSE and WebSocket, on their
//! raw entry points), and off the response otherwise (long-poll, the
//! publish API).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::{Conn, Enabled, EndpointConfig, Endpoints, RawRequest};
use crate::channels::{
    ChannelName, ChannelRules, MemoryBroker, Namespaces, Node, NodeConfig, Payload,
};
use crate::hooks::{
    Action, CloseFrame, CloseInfo, ConnectOutcome, ConnectRequest, ConnectionInfo, HookError,
    Hooks, Modules, Outgoing, Publication, PublishSource, PublishVerdict, Publisher, Rejection,
    Request, RequestOutcome, Response, Router, SubscribeOutcome, SubscribeRequest,
};
use crate::http::Peer;
use crate::metrics::Metrics;

/// The publish API's token in these tests.
const TOKEN: &str = "test-token";

/// Hooks that decide by simple rules, and remember the connections that
/// closed:
/// - on-connect rejects a query with `reject`, else accepts with a session;
/// - on-subscribe denies channels that start with `deny`;
/// - on-publish rejects `bad`, replaces `shout` with `SHOUT`;
/// - on-message answers `echo` with a frame and a publish to `rw:echo`, and
///   `bye` with a close.
#[derive(Debug, Default)]
struct Fake {
    closed: Mutex<Vec<CloseInfo>>,
    close_seen: tokio::sync::Notify,
}

#[async_trait]
impl Hooks for Fake {
    fn name(&self) -> &str {
        "fake"
    }

    fn max_request_body(&self) -> usize {
        1024
    }

    async fn on_request(&self, _: Arc<str>, _: Request) -> Result<RequestOutcome, HookError> {
        Ok(RequestOutcome::Respond(Response::not_found()))
    }

    async fn on_connect(
        &self,
        _: Arc<str>,
        request: ConnectRequest,
    ) -> Result<ConnectOutcome, HookError> {
        if request.query.contains("reject") {
            return Ok(ConnectOutcome::Reject(Rejection {
                status: 401,
                reason: "who are you?".into(),
            }));
        }
        Ok(ConnectOutcome::Accept(vec![("user".into(), "u1".into())]))
    }

    async fn on_subscribe(
        &self,
        _: Arc<str>,
        connection: &ConnectionInfo,
        request: SubscribeRequest,
    ) -> Result<SubscribeOutcome, HookError> {
        assert_eq!(connection.session, [("user".into(), "u1".into())]);
        if request.channel.starts_with("deny") {
            return Ok(SubscribeOutcome::Deny("not yours".into()));
        }
        Ok(SubscribeOutcome::Allow)
    }

    async fn on_publish(
        &self,
        _: Arc<str>,
        publication: &Publication,
    ) -> Result<PublishVerdict, HookError> {
        Ok(match &publication.payload {
            Payload::Text(t) if t == "bad" => PublishVerdict::Reject("bad word".into()),
            Payload::Text(t) if t == "shout" => {
                PublishVerdict::Replace(Payload::Text("SHOUT".into()))
            }
            _ => PublishVerdict::Accept,
        })
    }

    async fn on_message(
        &self,
        _: Arc<str>,
        _: &ConnectionInfo,
        frame: Payload,
    ) -> Result<Vec<Action>, HookError> {
        Ok(match frame {
            Payload::Text(t) if t == "echo" => vec![
                Action::Send(Payload::Text("echo back".into())),
                Action::Publish(Outgoing {
                    channel: "rw:echo".into(),
                    payload: Payload::Text("from on-message".into()),
                }),
            ],
            Payload::Text(t) if t == "bye" => vec![Action::Close(CloseFrame {
                code: 4000,
                reason: "bye".into(),
            })],
            _ => Vec::new(),
        })
    }

    fn on_close(self: Arc<Self>, _: ConnectionInfo, info: CloseInfo) {
        self.closed.lock().unwrap().push(info);
        self.close_seen.notify_one();
    }
}

/// Modules, when a test has none but its fake.
#[derive(Debug)]
struct NoOthers;

impl Modules for NoOthers {
    fn current(&self, _: &str) -> Option<Arc<dyn Hooks>> {
        None
    }
}

/// A fake's hooks, and the endpoints over a memory broker where the `rw`
/// namespace lets clients publish.
fn setup() -> (Arc<Fake>, Endpoints) {
    let metrics = Arc::new(Metrics::default());
    let mut namespaces = Namespaces::default();
    namespaces.by_name.insert(
        "rw".into(),
        ChannelRules {
            client_publish: true,
            ..ChannelRules::default()
        },
    );
    let node = Node::new(
        Arc::new(MemoryBroker::default()),
        NodeConfig {
            namespaces,
            ..NodeConfig::default()
        },
        metrics.clone(),
    );
    let router = Router::new(Arc::new(NoOthers), node.clone());
    let mut config = EndpointConfig::new(TOKEN.into());
    config.hold_timeout = Duration::from_secs(5);
    let endpoints = Endpoints {
        config,
        publisher: Arc::new(Publisher::new(node, router, metrics)),
    };
    (Arc::new(Fake::default()), endpoints)
}

fn conn() -> Conn {
    Conn {
        peer: Peer::new("127.0.0.1:9".parse().unwrap()),
        slot: Arc::new(()),
        hangup: None,
    }
}

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

/// Publish `text` to `name` through the publish path, as the API does.
async fn publish(endpoints: &Endpoints, hooks: &Fake, name: &str, text: &str) {
    endpoints
        .publisher
        .publish(
            hooks,
            "test".into(),
            &channel(name),
            Payload::Text(text.into()),
            PublishSource::Api,
        )
        .await
        .unwrap();
}

/// Wait (bounded) until `channel` has `n` local subscribers.
async fn subscribers(endpoints: &Endpoints, name: &str, n: usize) {
    let node = endpoints.node().clone();
    let name = channel(name);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let now = node.top_channels(100);
            if now.iter().any(|(c, count, _)| *c == name && *count == n) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the subscription in time");
}

/// A connection to a raw entry point: the client's side, and the server
/// serving `head` (which the client has sent) in the background.
async fn raw(hooks: &Arc<Fake>, endpoints: Arc<Endpoints>, head: &str) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    let (endpoint, request, len) = comet_wire::head::parse(head.as_bytes()).expect("a raw head");
    let hooks: Arc<dyn Hooks> = hooks.clone();
    tokio::spawn(async move {
        let request = RawRequest {
            endpoint,
            request,
            len,
        };
        super::serve_raw(hooks, &endpoints, server, request, conn()).await;
    });
    client
}

/// Read from `client` until the bytes read contain `needle`; all of them.
async fn read_until(client: &mut TcpStream, seen: &mut String, needle: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.contains(needle) {
            let mut buf = [0u8; 4096];
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before {needle:?}; read: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in time; read: {seen}"));
}

/// An SSE stream opens with its retry, a `subscribed` event whose `id:` is
/// the stream's cursor, then the backlog after the client's cursor, then
/// live messages, each with its own cursor.
#[tokio::test]
async fn an_sse_stream_opens_with_its_cursor_then_delivers() {
    let (hooks, endpoints) = setup();
    let endpoints = Arc::new(endpoints);
    publish(&endpoints, &hooks, "news", "before").await;
    let mut client = raw(
        &hooks,
        endpoints.clone(),
        "GET /comet/sse?channel=news HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await;
    let mut seen = String::new();
    read_until(&mut client, &mut seen, "event: subscribed").await;
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(seen.contains("retry: 2000"), "{seen}");
    // Subscribed from now on: the message published before is not sent.
    subscribers(&endpoints, "news", 1).await;
    publish(&endpoints, &hooks, "news", "live").await;
    read_until(&mut client, &mut seen, "live").await;
    assert!(!seen.contains("before"), "{seen}");
    let id = seen
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an id line");
    // The last id resumes right after "live": a second stream from it
    // gets only what follows.
    publish(&endpoints, &hooks, "news", "after").await;
    let head = format!("GET /comet/sse?channel=news&since={id} HTTP/1.1\r\nhost: t\r\n\r\n");
    let mut again = raw(&hooks, endpoints.clone(), &head).await;
    let mut seen = String::new();
    read_until(&mut again, &mut seen, "after").await;
    assert!(!seen.contains("live"), "{seen}");
}

/// A stream's on-connect and on-subscribe refusals are HTTP errors, in the
/// one JSON shape.
#[tokio::test]
async fn sse_refusals_are_json_errors() {
    let (hooks, endpoints) = setup();
    let endpoints = Arc::new(endpoints);
    let mut seen = String::new();
    let mut denied = raw(
        &hooks,
        endpoints.clone(),
        "GET /comet/sse?channel=deny-x HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await;
    read_until(&mut denied, &mut seen, "}").await;
    assert!(seen.starts_with("HTTP/1.1 403 Forbidden"), "{seen}");
    assert!(seen.contains(r#""error":"denied""#), "{seen}");
    let mut seen = String::new();
    let mut rejected = raw(
        &hooks,
        endpoints.clone(),
        "GET /comet/sse?channel=a&reject=1 HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await;
    read_until(&mut rejected, &mut seen, "}").await;
    assert!(seen.starts_with("HTTP/1.1 401 Unauthorized"), "{seen}");
    assert!(seen.contains(r#""message":"who are you?""#), "{seen}");
}

/// The WebSocket operations: subscribe, publish (where clients may, through
/// on-publish), unsubscribe, a custom frame for on-message and its actions,
/// the errors of each, and the close on-message asks for.
#[tokio::test]
async fn websocket_operations_and_their_answers() {
    let (hooks, endpoints) = setup();
    let endpoints = Arc::new(endpoints);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let head = format!(
        "GET /comet/ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
    );
    let mut client = raw(&hooks, endpoints.clone(), &head).await;
    let mut seen = String::new();
    read_until(&mut client, &mut seen, "\r\n\r\n").await;
    assert!(
        seen.starts_with("HTTP/1.1 101 Switching Protocols"),
        "{seen}"
    );
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        client,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let send = async |ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
                      v: serde_json::Value| {
        ws.send(Frame::Text(v.to_string().into())).await.unwrap();
    };
    async fn next(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Frame {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame")
    }
    async fn json(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> serde_json::Value {
        loop {
            match next(ws).await {
                Frame::Text(t) => return serde_json::from_str(&t).unwrap(),
                Frame::Ping(_) | Frame::Pong(_) => continue,
                other => panic!("not a text frame: {other:?}"),
            }
        }
    }

    send(
        &mut ws,
        serde_json::json!({"op": "subscribe", "channel": "rw:room", "id": 1}),
    )
    .await;
    let subscribed = json(&mut ws).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["id"].as_i64()),
        (Some("subscribed"), Some(1))
    );
    assert!(subscribed["cursor"].is_string(), "{subscribed}");

    send(
        &mut ws,
        serde_json::json!({"op": "subscribe", "channel": "deny-x", "id": 2}),
    )
    .await;
    let denied = json(&mut ws).await;
    assert_eq!(
        (denied["error"].as_str(), denied["id"].as_i64()),
        (Some("denied"), Some(2))
    );

    send(
        &mut ws,
        serde_json::json!({"op": "publish", "channel": "ro", "data": "x", "id": 3}),
    )
    .await;
    let forbidden = json(&mut ws).await;
    assert_eq!(forbidden["error"], "forbidden", "{forbidden}");

    send(
        &mut ws,
        serde_json::json!({"op": "publish", "channel": "rw:room", "data": "bad", "id": 4}),
    )
    .await;
    let rejected = json(&mut ws).await;
    assert_eq!(
        (rejected["error"].as_str(), rejected["id"].as_i64()),
        (Some("rejected"), Some(4))
    );

    // An accepted publish: its ack, and the message itself (replaced by
    // on-publish) to this subscriber, in either order.
    send(
        &mut ws,
        serde_json::json!({"op": "publish", "channel": "rw:room", "data": "shout", "id": 5}),
    )
    .await;
    let (a, b) = (json(&mut ws).await, json(&mut ws).await);
    let (ack, message) = if a["type"] == "ack" { (a, b) } else { (b, a) };
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_i64()),
        (Some("ack"), Some(5)),
        "{ack}"
    );
    assert_eq!(message["data"], "SHOUT", "{message}");
    assert_eq!(message["channel"], "rw:room", "{message}");

    send(&mut ws, serde_json::json!({"op": "hop"})).await;
    let bad = json(&mut ws).await;
    assert_eq!(bad["error"], "bad-operation", "{bad}");

    // A custom frame: on-message's send, then its publish (acknowledged,
    // and delivered here too: subscribed first).
    send(
        &mut ws,
        serde_json::json!({"op": "subscribe", "channel": "rw:echo", "id": 6}),
    )
    .await;
    assert_eq!(json(&mut ws).await["type"], "subscribed");
    send(
        &mut ws,
        serde_json::json!({"op": "message", "data": "echo"}),
    )
    .await;
    let mut texts = Vec::new();
    while texts.len() < 3 {
        if let Frame::Text(t) = next(&mut ws).await {
            texts.push(t.to_string());
        }
    }
    assert_eq!(texts[0], "echo back", "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains(r#""type":"ack""#)),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("from on-message")),
        "{texts:?}"
    );

    send(
        &mut ws,
        serde_json::json!({"op": "unsubscribe", "channel": "rw:room", "id": 7}),
    )
    .await;
    let left = json(&mut ws).await;
    assert_eq!(
        (left["type"].as_str(), left["was_subscribed"].as_bool()),
        (Some("unsubscribed"), Some(true))
    );

    // on-message asks to close: the close frame carries its code, and
    // on-close is told.
    send(&mut ws, serde_json::json!({"op": "message", "data": "bye"})).await;
    let close = loop {
        if let Frame::Close(frame) = next(&mut ws).await {
            break frame;
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(4000));
    // The answer to the close, which tungstenite queued while reading.
    let _ = ws.flush().await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while hooks.closed.lock().unwrap().is_empty() {
            hooks.close_seen.notified().await;
        }
    })
    .await
    .expect("on-close in time");
    assert_eq!(hooks.closed.lock().unwrap()[0].code, Some(4000));
}

/// A request under `/comet/` served through the hyper entry point, with a
/// body.
async fn serve(
    hooks: &Arc<Fake>,
    endpoints: &Endpoints,
    request: http::Request<Full<Bytes>>,
) -> (StatusCode, serde_json::Value) {
    let hooks: Arc<dyn Hooks> = hooks.clone();
    let response = super::serve(hooks, endpoints, request, conn()).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn get(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri).body(Full::default()).unwrap()
}

/// Long-poll answers at once when the client is behind, else holds until
/// a message arrives; every answer carries the cursor to poll with next.
#[tokio::test]
async fn long_poll_holds_until_a_message_or_answers_at_once() {
    let (hooks, endpoints) = setup();
    let endpoints = Arc::new(endpoints);
    // Nothing yet: the poll holds until the publish.
    let held = tokio::spawn({
        let (hooks, endpoints) = (hooks.clone(), endpoints.clone());
        async move { serve(&hooks, &endpoints, get("/comet/poll?channel=p")).await }
    });
    subscribers(&endpoints, "p", 1).await;
    publish(&endpoints, &hooks, "p", "first").await;
    let (status, answer) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["messages"][0]["data"], "first", "{answer}");
    let cursor = answer["cursor"].as_str().unwrap().to_string();
    // Behind by one: answered at once, with only what follows the cursor.
    publish(&endpoints, &hooks, "p", "second").await;
    let (_, answer) = serve(
        &hooks,
        &endpoints,
        get(&format!("/comet/poll?channel=p&since={cursor}")),
    )
    .await;
    let messages = answer["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{answer}");
    assert_eq!(messages[0]["data"], "second");
}

/// A long-poll with nothing to say ends at its timeout with an empty batch
/// and its cursor.
#[tokio::test(start_paused = true)]
async fn long_poll_times_out_with_its_cursor() {
    let (hooks, endpoints) = setup();
    let (status, answer) = serve(
        &hooks,
        &endpoints,
        get("/comet/poll?channel=quiet&timeout=20000"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["messages"], serde_json::json!([]), "{answer}");
    assert!(
        answer["cursor"].as_str().is_some_and(|c| !c.is_empty()),
        "{answer}"
    );
    // Longer than the server's hold timeout (5 s here) is cut to it.
    let started = tokio::time::Instant::now();
    serve(
        &hooks,
        &endpoints,
        get("/comet/poll?channel=quiet&timeout=600000"),
    )
    .await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

/// The publish API refuses, each with its status and code, a request that
/// is not a POST, one without the token or with a wrong one, a bad channel,
/// a payload over the limit, text that is not UTF-8, and what on-publish
/// rejects; and publishes the rest, answering with the cursor.
#[tokio::test]
async fn the_publish_api_refuses_with_a_code_or_publishes() {
    let (hooks, endpoints) = setup();
    let post = |channel: &str, token: Option<&str>, body: Vec<u8>, text: bool| {
        let mut request = http::Request::post(format!("/comet/publish/{channel}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let kind = if text {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        request
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let code = async |request| {
        let (status, body) = serve(&hooks, &endpoints, request).await;
        (
            status.as_u16(),
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(
        code(get("/comet/publish/a")).await,
        (405, "method-not-allowed".into())
    );
    assert_eq!(
        code(post("a", None, b"x".to_vec(), true)).await,
        (401, "unauthorized".into())
    );
    assert_eq!(
        code(post("a", Some("nope"), b"x".to_vec(), true)).await,
        (403, "forbidden".into())
    );
    assert_eq!(
        code(post("a%20b", Some(TOKEN), b"x".to_vec(), true)).await,
        (400, "invalid-channel".into())
    );
    assert_eq!(
        code(post("a", Some(TOKEN), vec![b'x'; 65 << 10], true)).await,
        (413, "too-large".into())
    );
    assert_eq!(
        code(post("a", Some(TOKEN), vec![0xff, 0xfe], true)).await,
        (400, "invalid-text".into())
    );
    assert_eq!(
        code(post("a", Some(TOKEN), b"bad".to_vec(), true)).await,
        (422, "rejected".into())
    );
    let (status, published) = serve(
        &hooks,
        &endpoints,
        post("a", Some(TOKEN), b"fine".to_vec(), true),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(published["channel"], "a");
    assert!(published["cursor"].is_string(), "{published}");
    // Binary payloads are taken as they are.
    let (status, _) = serve(
        &hooks,
        &endpoints,
        post("a", Some(TOKEN), vec![0xff, 0xfe], false),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// A handler's WebSocket accept is refused to a page of an origin the server
/// does not allow, as the built-in endpoint is; a handler's hold answers an
/// allowed origin with CORS headers, unless it sets its own.
#[tokio::test]
async fn handler_upgrades_and_holds_follow_the_origins() {
    use crate::channels::Session;
    use crate::hooks::{Header, Hold, StreamFormat, WebSocketAccept};
    use comet_wire::origin::Allowed;
    let (hooks, mut endpoints) = setup();
    endpoints.config.origins.allowed = vec![Allowed::parse("https://app.example").unwrap()];
    let hooks: Arc<dyn Hooks> = hooks;
    let upgrade = |origin: &str| {
        http::Request::get("/chat")
            .header("host", "rt.example")
            .header("origin", origin)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap()
    };
    let accept = || WebSocketAccept {
        channels: vec!["a".into()],
        session: Session::new(),
    };
    let mut evil = upgrade("https://evil.example");
    let refused =
        super::accept_websocket(&hooks, &endpoints, &mut evil, accept(), &conn()).unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let mut own = upgrade("https://rt.example");
    let upgraded =
        super::accept_websocket(&hooks, &endpoints, &mut own, accept(), &conn()).unwrap();
    assert_eq!(upgraded.status(), StatusCode::SWITCHING_PROTOCOLS);

    let hold = |headers: Vec<Header>| Hold {
        channels: vec!["h".into()],
        format: StreamFormat::LongPoll,
        since: None,
        timeout_ms: Some(0),
        headers,
    };
    let mut from_app = http::HeaderMap::new();
    from_app.insert("origin", "https://app.example".parse().unwrap());
    let cors = endpoints.config.origins.cors(&from_app);
    let held = super::hold(&hooks, &endpoints, hold(Vec::new()), &conn(), cors.clone())
        .await
        .unwrap();
    assert_eq!(
        held.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let own_cors = vec![Header {
        name: "access-control-allow-origin".into(),
        value: b"*".to_vec(),
    }];
    let held = super::hold(&hooks, &endpoints, hold(own_cors), &conn(), cors)
        .await
        .unwrap();
    assert_eq!(held.headers()["access-control-allow-origin"], "*");
}

/// A transport turned off answers 403 `transport-disabled`.
#[tokio::test]
async fn a_disabled_transport_is_refused() {
    let (hooks, mut endpoints) = setup();
    endpoints.config.transports = Enabled::parse("sse").unwrap();
    let (status, body) = serve(&hooks, &endpoints, get("/comet/poll?channel=a")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "transport-disabled");
}

#[test]
fn transports_parse_and_refuse_nonsense() {
    let only_sse = Enabled::parse("sse, poll").unwrap();
    assert!(only_sse.sse && only_sse.poll && !only_sse.websocket && !only_sse.stream);
    assert!(only_sse.serves("client.js") && !only_sse.serves("ws"));
    assert_eq!(
        Enabled::parse("websocket,sse,stream,poll").unwrap(),
        Enabled::default()
    );
    assert!(
        Enabled::parse("carrier-pigeon")
            .unwrap_err()
            .contains("unknown transport")
    );
    assert!(Enabled::parse("").unwrap_err().contains("at least one"));
}
