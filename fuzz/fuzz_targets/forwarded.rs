//! `X-Forwarded-For` and `Forwarded` values from whoever sends them: no
//! panic; a value over the bound is refused; the client chosen is one of
//! the hops or the peer, and the peer only when no hop is an untrusted
//! address before an opaque one.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use comet_wire::forwarded::{Hop, MAX_FORWARDED_BYTES, client, forwarded, x_forwarded_for};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    // Trust the 10.0.0.0/8 block, as an operator might.
    let trusted = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10);
    for parsed in [x_forwarded_for(text.split('\n')), forwarded(text.split('\n'))] {
        let Ok(hops) = parsed else { continue };
        assert!(text.len() <= MAX_FORWARDED_BYTES);
        let chosen = client(peer, &hops, trusted);
        assert!(
            chosen == peer || hops.contains(&Hop::Addr(chosen)),
            "{chosen} from {hops:?}"
        );
    }
});
