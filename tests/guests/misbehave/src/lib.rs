//! A handler that misbehaves on purpose, one way per route, so the tests can
//! check that the host contains each failure to one event.

use comet_sdk::{
    Action, ConnectOutcome, ConnectRequest, Connection, Handler, Payload, Reply, Request, Response,
    SubscribeOutcome, SubscribeRequest, WebsocketAccept, kv, log,
};

struct Misbehave;

impl Handler for Misbehave {
    fn on_connect(request: ConnectRequest) -> ConnectOutcome {
        if request.query.contains("trap") {
            panic!("on-connect panics on purpose");
        }
        ConnectOutcome::accept(Vec::<(String, String)>::new())
    }

    fn on_subscribe(_connection: Connection, request: SubscribeRequest) -> SubscribeOutcome {
        if request.channel == "trap" {
            panic!("on-subscribe panics on purpose");
        }
        SubscribeOutcome::Allow
    }

    /// `send N`: send one frame of N MiB.
    fn on_message(_connection: Connection, frame: Payload) -> Vec<Action> {
        let mib: usize = frame
            .as_text()
            .and_then(|t| t.strip_prefix("send "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        vec![Action::send(vec![0u8; mib << 20])]
    }

    fn on_request(request: Request) -> Reply {
        let n: usize = request
            .query_param("n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if request.path == "/hold" {
            return comet_sdk::Hold::new(["a"], comet_sdk::StreamFormat::Sse).into();
        }
        match request.path.as_str() {
            "/ok" => Response::text("ok\n"),
            // A static that counts events: 1 in every fresh instance.
            "/count" => {
                static EVENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let events = EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Response::text(format!("{events}\n"))
            }
            "/spin" => spin(),
            "/grow" => grow(),
            "/trap" => panic!("this handler panics on purpose"),
            "/stack" => Response::text(format!("{}", recurse(n.max(1)))),
            "/big" => Response::new(200).with_body(vec![b'x'; n]),
            "/headers" => (0..n).fold(Response::text("many headers\n"), |r, i| {
                r.with_header(&format!("x-h{i}"), "v")
            }),
            "/bad-header" => Response::text("bad\n").with_header("not a header", "v"),
            "/bad-status" => Response::new(42),
            // Headers that together hold n MiB of guest memory.
            "/big-headers" => (0..n).fold(Response::text("big headers\n"), |r, i| {
                r.with_header(&format!("x-h{i}"), "v".repeat(1 << 20))
            }),
            // Fill kv with 1 MiB values until the store says no.
            "/kv-fill" => {
                let value = vec![7u8; 1 << 20];
                let mut stored = 0;
                let mut error = String::new();
                for i in 0..n {
                    match kv::set(&format!("big{i}"), &value) {
                        Ok(()) => stored += 1,
                        Err(e) => {
                            error = e.to_string();
                            break;
                        }
                    }
                }
                Response::text(format!("{stored} {error}"))
            }
            "/log-flood" => {
                for i in 0..n {
                    log::info(&format!("line {i}"), &[]);
                }
                Response::text("logged\n")
            }
            // A session that would sit with the connection for its life.
            "/big-session" => {
                return WebsocketAccept {
                    channels: vec!["a".into()],
                    session: vec![("blob".into(), "x".repeat(1 << 20))],
                }
                .into();
            }
            _ => Response::not_found(),
        }
        .into()
    }
}

/// Loop forever without calling the host (after one log line, which tells a
/// test that the loop began).
fn spin() -> Response {
    log::info("spinning", &[]);
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Allocate and touch memory until something stops us.
fn grow() -> Response {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// Recurse without end (each frame keeps a little state alive).
#[allow(unconditional_recursion)]
fn recurse(depth: usize) -> u64 {
    let frame = std::hint::black_box([depth as u64; 16]);
    frame[depth % 16] + recurse(depth + 1)
}

comet_sdk::export_handler!(Misbehave);
