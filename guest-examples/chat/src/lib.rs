//! A chat room after Tornado's chat demo.
//!
//! - `GET /?room=NAME` serves the page; it talks WebSocket (`/comet/ws`) and
//!   falls back to long-poll (`/comet/poll`) plus `POST /say`.
//! - The nickname comes from the `nick` cookie (`POST /nick` sets it); it is
//!   stored as a session attribute on connect and stamped on every message by
//!   on-publish, so a client cannot post as someone else.
//! - on-publish rejects empty or oversized messages and escapes HTML.
//! - Rooms named `private-*` need the token from the `room_token` config value
//!   (`comet run guest-examples/chat --var room_token=...`), checked by
//!   on-subscribe, Hookbox style.

use comet_sdk::json::{Value, json};
use comet_sdk::{
    ConnectOutcome, ConnectRequest, Connection, Handler, Payload, Publication, PublishSource,
    PublishVerdict, Reply, Request, Response, SubscribeOutcome, SubscribeRequest, channels, config,
    cookie,
};

/// Longest message, in characters.
const MAX_TEXT: usize = 500;
/// Longest nickname, in characters.
const MAX_NICK: usize = 32;

struct Chat;

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn room_token() -> String {
    config::get("room_token").unwrap_or_else(|| "letmein".into())
}

fn nick_of(request: &Request) -> String {
    request
        .cookie("nick")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "anonymous".into())
}

#[comet_sdk::handler]
impl Handler for Chat {
    fn on_request(request: Request) -> Reply {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/") => {
                let room = request
                    .query_param("room")
                    .unwrap_or_else(|| "lobby".into());
                let token = request.query_param("token").unwrap_or_default();
                Response::html(page(&room, &nick_of(&request), &token)).into()
            }
            ("POST", "/nick") => {
                let nick = request
                    .form()
                    .into_iter()
                    .find(|(k, _)| k == "nick")
                    .map(|(_, v)| {
                        v.chars()
                            .filter(|c| c.is_alphanumeric() || *c == '_')
                            .take(MAX_NICK)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                Response::redirect("/")
                    .with_header("set-cookie", format!("nick={nick}; Path=/; SameSite=Lax"))
                    .into()
            }
            // The long-poll fallback posts here; the handler publishes.
            ("POST", "/say") => {
                let form = request.form();
                let get = |name: &str| {
                    form.iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let message = json!({ "nick": nick_of(&request), "text": get("text") });
                match channels::publish(&format!("chat:{}", get("room")), message.to_string()) {
                    Ok(cursor) => Response::json(&json!({ "cursor": cursor })).into(),
                    Err(e) => Response::json(&json!({ "error": e.to_string() }))
                        .with_status(400)
                        .into(),
                }
            }
            _ => Response::not_found().into(),
        }
    }

    fn on_connect(request: ConnectRequest) -> ConnectOutcome {
        let nick = request
            .headers
            .iter()
            .find(|h| h.name == "cookie")
            .and_then(|h| core::str::from_utf8(&h.value).ok())
            .and_then(|c| cookie(c, "nick"))
            .filter(|n| !n.is_empty());
        match nick {
            // The reserved attribute `user` names the connection's user for
            // the server API (a backend can disconnect them by name).
            Some(nick) => ConnectOutcome::accept([("nick", nick.clone()), ("user", nick)]),
            None => ConnectOutcome::accept([("nick", "anonymous".to_string())]),
        }
    }

    fn on_subscribe(_connection: Connection, request: SubscribeRequest) -> SubscribeOutcome {
        let Some(room) = request.channel.strip_prefix("chat:") else {
            return SubscribeOutcome::Deny("only chat:ROOM channels here".into());
        };
        if room.starts_with("private-") && request.token.as_deref() != Some(room_token().as_str()) {
            return SubscribeOutcome::Deny("this room needs the right token".into());
        }
        SubscribeOutcome::Allow
    }

    fn on_publish(publication: Publication) -> PublishVerdict {
        let Some(body) = publication.payload.as_text() else {
            return PublishVerdict::Reject("messages are text".into());
        };
        let parsed: Value = comet_sdk::json::from_str(body).unwrap_or(Value::Null);
        let text = parsed["text"].as_str().unwrap_or_default().trim();
        if text.is_empty() {
            return PublishVerdict::Reject("empty message".into());
        }
        if text.chars().count() > MAX_TEXT {
            return PublishVerdict::Reject(format!("messages are at most {MAX_TEXT} characters"));
        }
        // A client's nickname is the one in its session; a handler's publish
        // (POST /say) carries the nickname it read from the cookie.
        let nick = match &publication.source {
            PublishSource::Client(connection) => connection
                .session("nick")
                .unwrap_or("anonymous")
                .to_string(),
            _ => parsed["nick"].as_str().unwrap_or("anonymous").to_string(),
        };
        let clean = json!({ "nick": escape_html(&nick), "text": escape_html(text) });
        PublishVerdict::Replace(Payload::Text(clean.to_string()))
    }
}

fn page(room: &str, nick: &str, token: &str) -> String {
    let config = json!({ "room": room, "token": token });
    PAGE.replace("{{NICK}}", &escape_html(nick))
        .replace("{{ROOM}}", &escape_html(room))
        .replace("{{CONFIG}}", &config.to_string().replace('<', "\\u003c"))
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>comet chat: {{ROOM}}</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}#log{border:1px solid #ccc;height:20em;overflow-y:auto;padding:.5em}#log p{margin:.2em 0}.nick{font-weight:bold}</style>
</head><body>
<h1>#{{ROOM}}</h1>
<form method="post" action="/nick">you are <b id="me">{{NICK}}</b> · nickname <input name="nick" size="10"><button>set</button></form>
<div id="log"></div>
<form id="say"><input id="text" autocomplete="off" size="50" placeholder="say something"><button>send</button></form>
<p id="status">connecting…</p>
<script type="module">
// The browser client the server embeds: WebSocket, then SSE, then long-poll;
// it reconnects and resumes by cursor. `?transports=sse,poll` picks others.
import { Comet } from "/comet/client.js";
const cfg = {{CONFIG}};
const channel = "chat:" + cfg.room;
const log = document.getElementById("log"), status = document.getElementById("status");
function line(html, cls) {
  const p = document.createElement("p");
  if (cls) p.className = cls;
  p.innerHTML = html;
  log.appendChild(p); log.scrollTop = log.scrollHeight;
}
const only = new URLSearchParams(location.search).get("transports");
const comet = new Comet("", { transports: only ? only.split(",") : undefined, token: cfg.token });
window.comet = comet; // for the console (and the browser tests)
comet.on("state", s => {
  status.textContent = s.state === "connected" ? "connected (" + s.transport + ")"
    : s.state + (s.reason ? ": " + s.reason : "");
});
comet.on("error", e => { status.textContent = e.message; });
const room = comet.subscribe(channel, { token: cfg.token });
room.on("message", m => {
  let d; try { d = JSON.parse(m.data); } catch (e) { return; }
  // The server escaped nick and text in on-publish.
  line('<span class="nick">' + d.nick + '</span>: ' + d.text);
});
room.on("reset", r => line("(some messages were missed: " + r.reason + ")", "reset"));
// Over WebSocket the client publishes (on-publish checks it); otherwise the
// page posts to the handler, which publishes.
function send(text) {
  if (comet.transport === "websocket" && comet.state === "connected") {
    return comet.publish(channel, JSON.stringify({ text })).catch(e => { status.textContent = e.message; });
  }
  return fetch("/say", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" },
    body: "room=" + encodeURIComponent(cfg.room) + "&text=" + encodeURIComponent(text) });
}
Object.assign(window, { comet, room, send });
document.getElementById("say").onsubmit = ev => { ev.preventDefault();
  const t = document.getElementById("text"); if (t.value) send(t.value); t.value = ""; };
</script>
</body></html>
"#;
