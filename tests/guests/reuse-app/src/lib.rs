//! A handler that opts in to instance reuse and counts, in a static, the
//! events its instance has served: the tests read which events shared an
//! instance from the count.

use std::sync::atomic::{AtomicU32, Ordering};

use comet_sdk::{Handler, Reply, Request, Response};

/// Events this instance has served, this one included.
static EVENTS: AtomicU32 = AtomicU32::new(0);

struct Reuse;

#[comet_sdk::handler(reuse_instances)]
impl Handler for Reuse {
    fn on_request(request: Request) -> Reply {
        let events = EVENTS.fetch_add(1, Ordering::Relaxed) + 1;
        match request.path.as_str() {
            "/ok" => Response::text("ok\n"),
            "/count" => Response::text(format!("{events}\n")),
            "/trap" => panic!("this handler panics on purpose"),
            "/print" => {
                println!("printed on purpose");
                Response::text(format!("{events}\n"))
            }
            // Keeps 4 MiB more of the instance's memory with every call.
            "/leak" => {
                std::hint::black_box(Box::leak(vec![1u8; 4 << 20].into_boxed_slice()));
                Response::text(format!("{events}\n"))
            }
            _ => Response::not_found(),
        }
        .into()
    }
}
