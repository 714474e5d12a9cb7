//! A handler that uses every real-time hook, so the channel tests can check
//! that the host consults it: connect, subscribe, publish, message, close,
//! and guest-driven holds.

use comet_sdk::json::json;
use comet_sdk::{
    Action, CloseInfo, ConnectOutcome, ConnectRequest, Connection, Handler, Hold, Payload,
    Publication, PublishVerdict, Reply, Request, Response, StreamFormat, SubscribeOutcome,
    SubscribeRequest, WebsocketAccept, channels, kv,
};

struct App;

fn query(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl Handler for App {
    fn on_request(request: Request) -> Reply {
        let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            // The client's address as the host gives it (behind a proxy:
            // the one the proxy names).
            ["whoami"] => Response::json(&json!({ "remote": request.remote_addr })).into(),
            // GRIP style: the application's own URLs, backed by channels.
            ["rooms", room, "events"] => Hold::new([format!("room:{room}")], StreamFormat::Sse)
                .with_header("x-room", room)
                .into(),
            ["rooms", room, "poll"] => {
                let mut hold =
                    Hold::new([format!("room:{room}")], StreamFormat::LongPoll).timeout_ms(500);
                if let Some(since) = request.query_param("since") {
                    hold = hold.since(since);
                }
                hold.into()
            }
            ["rooms", room, "ws"] => WebsocketAccept {
                channels: vec![format!("room:{room}")],
                session: vec![(
                    "user".into(),
                    request.query_param("user").unwrap_or_default(),
                )],
            }
            .into(),
            ["publish-from-guest"] => {
                let channel = request.query_param("channel").unwrap_or_default();
                let text = request.query_param("text").unwrap_or_default();
                match channels::publish(&channel, text) {
                    Ok(cursor) => Response::json(&json!({ "cursor": cursor })).into(),
                    Err(e) => Response::json(&json!({ "error": e.to_string() }))
                        .with_status(400)
                        .into(),
                }
            }
            ["history"] => {
                let channel = request.query_param("channel").unwrap_or_default();
                // `newest=N`: the newest N, newest first (WIT 0.1.1).
                let read = match request.query_param("newest").and_then(|n| n.parse().ok()) {
                    Some(n) => channels::history_newest(&channel, n),
                    None => channels::history(&channel, None, 100),
                };
                match read {
                    Ok(page) => {
                        let texts: Vec<String> = page
                            .messages
                            .iter()
                            .map(|m| m.payload.as_text().unwrap_or_default().to_string())
                            .collect();
                        Response::json(&json!({ "messages": texts, "reset": page.reset })).into()
                    }
                    Err(e) => Response::json(&json!({ "error": e.to_string() }))
                        .with_status(400)
                        .into(),
                }
            }
            // A hold naming one channel many times: costs one subscription.
            ["hold-many"] => {
                let n: usize = request
                    .query_param("n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Hold::new(vec!["many".to_string(); n], StreamFormat::Ndjson).into()
            }
            // A fixed-window counter: `kv.increment-with-ttl` (WIT 0.1.1).
            ["hit"] => {
                let key = request.query_param("key").unwrap_or_default();
                let ms = request
                    .query_param("ttl_ms")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1000);
                match kv::increment_with_ttl(&key, 1, std::time::Duration::from_millis(ms)) {
                    Ok(n) => Response::text(n.to_string()).into(),
                    Err(e) => Response::text(e.to_string()).with_status(400).into(),
                }
            }
            ["kv"] => {
                let key = request.query_param("key").unwrap_or_default();
                let n = kv::get_string(&key)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "0".into());
                Response::text(n).into()
            }
            ["presence"] => {
                let channel = request.query_param("channel").unwrap_or_default();
                match channels::presence(&channel) {
                    Ok(p) => Response::json(&json!({ "connections": p.connections })).into(),
                    Err(e) => Response::json(&json!({ "error": e.to_string() }))
                        .with_status(400)
                        .into(),
                }
            }
            ["closed"] => {
                let n = kv::get_string("closed")
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "0".into());
                Response::text(n).into()
            }
            _ => Response::not_found().into(),
        }
    }

    fn on_connect(request: ConnectRequest) -> ConnectOutcome {
        if query(&request.query, "reject").is_some() {
            return ConnectOutcome::reject(401, "go away");
        }
        let user = query(&request.query, "user").unwrap_or_else(|| "anonymous".into());
        ConnectOutcome::accept([("user", user)])
    }

    fn on_subscribe(_connection: Connection, request: SubscribeRequest) -> SubscribeOutcome {
        let _ = kv::increment(&format!("subscribed:{}", request.channel), 1);
        if request.channel.starts_with("private:") && request.token.as_deref() != Some("secret") {
            return SubscribeOutcome::Deny("private channel: wrong token".into());
        }
        SubscribeOutcome::Allow
    }

    fn on_publish(publication: Publication) -> PublishVerdict {
        // Counted, so tests see it runs once per publish (on one node).
        let _ = kv::increment(&format!("published:{}", publication.channel), 1);
        match publication.payload.as_text() {
            Some("") => PublishVerdict::Reject("empty message".into()),
            Some("forbidden") => PublishVerdict::Reject("that word is not allowed".into()),
            Some(text) if text.starts_with("shout:") => {
                PublishVerdict::Replace(Payload::Text(text["shout:".len()..].to_uppercase()))
            }
            _ => PublishVerdict::Accept,
        }
    }

    fn on_message(connection: Connection, frame: Payload) -> Vec<Action> {
        let Some(text) = frame.as_text() else {
            return vec![Action::send(
                frame.as_bytes().iter().rev().copied().collect::<Vec<u8>>(),
            )];
        };
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("echo"), Some(rest), more) => {
                let mut s = rest.to_string();
                if let Some(m) = more {
                    s.push(' ');
                    s.push_str(m);
                }
                vec![Action::send(s)]
            }
            (Some("whoami"), None, None) => {
                vec![Action::send(
                    connection.session("user").unwrap_or("?").to_string(),
                )]
            }
            (Some("pub"), Some(channel), Some(text)) => vec![Action::publish(channel, text)],
            (Some("sub"), Some(channel), None) => vec![Action::Subscribe(channel.into())],
            (Some("rename"), Some(user), None) => vec![
                Action::SetSession(vec![("user".into(), user.into())]),
                Action::send("renamed"),
            ],
            (Some("bye"), None, None) => vec![Action::close(4001, "bye")],
            _ => vec![Action::send(format!("unknown command: {text}"))],
        }
    }

    fn on_close(_connection: Connection, _info: CloseInfo) {
        let _ = kv::increment("closed", 1);
    }
}

comet_sdk::export_handler!(App);
