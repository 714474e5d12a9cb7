//! A handler built without WASI: it answers, logs, allocates past its first
//! heap (so memory grows) and panics on request, so the tests see each work
//! without stdio. The benchmark builds the same crate both ways.

use comet_sdk::{Handler, Reply, Request, Response};

struct NoWasi;

#[comet_sdk::handler]
impl Handler for NoWasi {
    fn on_request(request: Request) -> Reply {
        match request.path.as_str() {
            "/ok" => Response::text("ok\n"),
            "/hello" => {
                let name = request
                    .query_param("name")
                    .unwrap_or_else(|| "world".into());
                comet_sdk::log::info("greeted", &[("name", &name)]);
                Response::text(format!("hello, {name}!\n"))
            }
            // 4 MiB: more than the heap in the initial memory.
            "/grow" => {
                let block = std::hint::black_box(vec![7u8; 4 << 20]);
                let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
                Response::text(format!("{sum}\n"))
            }
            "/panic" => panic!("this handler panics on purpose"),
            _ => Response::not_found(),
        }
        .into()
    }
}
