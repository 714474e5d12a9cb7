//! Unit tests of the transports against a fake `Hooks` and the memory broker.

use super::Enabled;

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
