//! A handler that misbehaves on purpose, one way per route, so the tests can
//! check that the host contains each failure to one event.

use comet_sdk::{Handler, Reply, Request, Response};

struct Misbehave;

impl Handler for Misbehave {
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
            _ => Response::not_found(),
        }
        .into()
    }
}

/// Loop forever without calling the host.
fn spin() -> Response {
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
