use std::time::Duration;

use anyhow::Context;

use comet_testkit::{Comet, get, guests};

use crate::COMET;

/// The interfaces a component imports (`wasi:cli/stdout@0.2.6`, say);
/// the names without a package are the nested components' own imports.
fn imports(path: &str) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path)?;
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::ComponentImportSection(section) = payload? {
            for import in section {
                let name = import?.name.name;
                if name.contains(':') {
                    names.push(name.to_string());
                }
            }
        }
    }
    Ok(names)
}

/// The same crate built both ways: with WASI it imports the WASI
/// interfaces Rust's std links; without, only comet's own.
#[test]
fn a_guest_built_without_wasi_imports_only_comets_interfaces() -> anyhow::Result<()> {
    let with = imports(guests::NO_WASI_APP_WASIP2)?;
    assert!(with.iter().any(|i| i.starts_with("wasi:")), "{with:?}");
    let without = imports(guests::NO_WASI_APP)?;
    assert!(!without.is_empty(), "no imports read");
    assert!(
        without.iter().all(|i| i.starts_with("comet:edge/")),
        "{without:?}"
    );
    Ok(())
}

/// `comet run DIR` builds a crate that says `wasi = false` without WASI and
/// serves it: it answers, logs, grows its memory, and a panic fails only its
/// event, with the message in the log (sent by the SDK: there is no stderr).
#[test]
fn run_builds_and_serves_a_guest_without_wasi() -> anyhow::Result<()> {
    let comet = Comet::start_crate(COMET, "tests/guests/no-wasi-app")?;
    comet.wait_log_until("the build's target", Duration::from_secs(10), |log| {
        log.contains("no-wasi-app for wasm32-unknown-unknown")
    })?;
    // Its static data leaves the allocator's first segment room.
    assert!(
        !comet.stderr().contains("less than the allocator's first"),
        "{}",
        comet.stderr()
    );
    assert_eq!(get(&comet.url("/hello?name=lean"))?.body, "hello, lean!\n");
    comet.wait_log_until("the guest's log line", Duration::from_secs(10), |log| {
        log.contains("greeted") && log.contains("lean")
    })?;
    assert_eq!(get(&comet.url("/grow"))?.body, format!("{}\n", 7u64 << 22));

    let r = get(&comet.url("/panic"))?;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(!r.body.contains("on purpose"), "{}", r.body);
    let id = r
        .header("x-request-id")
        .context("the 500 has no x-request-id")?
        .to_string();
    comet.wait_log_until("the panic message", Duration::from_secs(10), |log| {
        log.lines().any(|l| {
            l.contains(&id) && l.contains("guest panicked") && l.contains("panics on purpose")
        })
    })?;
    assert_eq!(get(&comet.url("/ok"))?.body, "ok\n");
    Ok(())
}
