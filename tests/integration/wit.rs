//! Evolving the WIT world: a component built against `comet:edge@0.1.0`,
//! checked in (tests/fixtures/wit-0.1.0), keeps loading and running.

use comet_testkit::{Comet, get, publish, ws_connect, ws_json, ws_send};
use serde_json::json;

use crate::COMET;

/// The hello example as built against 0.1.0: its routes, the `kv` and
/// `log` imports, and a channel over WebSocket with the SDK's default
/// hooks.
#[test]
fn a_component_built_against_0_1_0_still_runs() -> anyhow::Result<()> {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/wit-0.1.0/hello.wasm"
    );
    let comet = Comet::start(COMET, &[fixture, "--publish-token", "t"])?;
    let r = get(&comet.url("/hello?name=old"))?;
    assert_eq!((r.status, r.body.as_str()), (200, "hello, old!\n"));
    let visits = || -> anyhow::Result<i64> {
        let body: serde_json::Value = serde_json::from_str(&get(&comet.url("/counter"))?.body)?;
        body["visits"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no visits in {body}"))
    };
    let first = visits()?;
    assert_eq!(visits()?, first + 1, "kv counts");

    let mut ws = ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    ws_send(
        &mut ws,
        &json!({"op": "subscribe", "channel": "news", "id": 1}),
    )?;
    let subscribed = ws_json(&mut ws)?;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let r = publish(&comet, "t", "news", "still here")?;
    assert_eq!(r.status, 200, "{}", r.body);
    let message = ws_json(&mut ws)?;
    assert_eq!(message["data"], "still here", "{message}");
    Ok(())
}
