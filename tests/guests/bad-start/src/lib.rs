//! A handler whose static initialiser never returns: it compiles and
//! instantiates, and fails only once code runs (initialisers run on the
//! first export call). The host must refuse it at deploy.

use comet_sdk::{Handler, Reply, Request, Response};

struct App;

impl Handler for App {
    fn on_request(_request: Request) -> Reply {
        Response::text("never reached\n").into()
    }
}

comet_sdk::export_handler!(App);

extern "C" fn spin_forever() {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Run before anything else, as C++ static constructors do.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = spin_forever;
