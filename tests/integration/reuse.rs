use comet_testkit::{Comet, admin, get, guests};
use serde_json::json;

use crate::COMET;

/// The body of `GET path`, which must answer `status`.
fn body(comet: &Comet, path: &str, status: u16) -> anyhow::Result<String> {
    let r = get(&comet.url(path))?;
    assert_eq!(r.status, status, "{path}: {}", r.body);
    Ok(r.body.trim().to_string())
}

/// The one module's entry in `GET /admin/modules`.
fn module(comet: &Comet) -> anyhow::Result<serde_json::Value> {
    let modules: serde_json::Value =
        serde_json::from_str(&admin(comet, "GET", "/admin/modules", None)?.body)?;
    Ok(modules[0].clone())
}

/// The events one instance has served, by the guest's static counter.
fn count(comet: &Comet) -> anyhow::Result<u32> {
    Ok(body(comet, "/count", 200)?.parse()?)
}

/// The counts of `n` events one after another.
fn counts(comet: &Comet, n: usize) -> anyhow::Result<Vec<u32>> {
    (0..n).map(|_| count(comet)).collect()
}

/// A module that opts in keeps its instance from one event to the next
/// (the static counts on), until an event traps or prints: then the next
/// event starts a fresh instance (the count starts again at 1).
#[test]
fn a_module_that_opts_in_reuses_its_instance_until_an_event_fails() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::REUSE_APP])?;
    assert_eq!(module(&comet)?["current"]["reuses_instances"], json!(true));

    // Requests one after another: each finds the instance the last one left.
    assert_eq!((count(&comet)?, count(&comet)?, count(&comet)?), (1, 2, 3));
    let metrics = admin(&comet, "GET", "/metrics", None)?.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("comet_instances_started_total{") && l.ends_with(" 1")),
        "three events, one instance: {metrics}"
    );
    body(&comet, "/trap", 500)?;
    assert_eq!(count(&comet)?, 1, "a trapped instance is never used again");
    assert_eq!(body(&comet, "/print", 200)?, "2");
    assert!(
        comet.wait_log("printed on purpose", std::time::Duration::from_secs(10)),
        "{}",
        comet.stderr()
    );
    assert_eq!(count(&comet)?, 1, "an instance that printed is not kept");
    Ok(())
}

/// `--events-per-instance` bounds how many events share an instance; 1
/// turns reuse off.
#[test]
fn events_per_instance_bounds_reuse() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::REUSE_APP, "--events-per-instance", "2"])?;
    assert_eq!(counts(&comet, 5)?, [1, 2, 1, 2, 1]);

    let comet = Comet::start(COMET, &[guests::REUSE_APP, "--events-per-instance", "1"])?;
    assert_eq!(counts(&comet, 3)?, [1, 1, 1]);
    assert_eq!(module(&comet)?["current"]["reuses_instances"], json!(false));
    Ok(())
}

/// A module that does not opt in runs every event in a fresh instance.
#[test]
fn a_module_that_does_not_opt_in_gets_a_fresh_instance_per_event() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::MISBEHAVE])?;
    assert_eq!(module(&comet)?["current"]["reuses_instances"], json!(false));
    assert_eq!(counts(&comet, 3)?, [1, 1, 1]);
    Ok(())
}

/// Idle instances of all modules together hold at most a quarter of the
/// instance slots: with 3 slots none is kept, with 4 one is.
#[test]
fn idle_instances_hold_at_most_a_quarter_of_the_slots() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::REUSE_APP, "--max-instances", "3"])?;
    assert_eq!(counts(&comet, 3)?, [1, 1, 1]);

    let comet = Comet::start(COMET, &[guests::REUSE_APP, "--max-instances", "4"])?;
    assert_eq!(counts(&comet, 3)?, [1, 2, 3]);
    Ok(())
}

/// What a reused instance leaks stays within its memory limit: the event
/// that would grow past it fails alone, and the next starts fresh.
#[test]
fn a_leaking_instance_ends_at_its_memory_limit() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::REUSE_APP, "--memory-mib", "16"])?;
    let mut served = Vec::new();
    let failed = loop {
        let r = get(&comet.url("/leak"))?;
        if r.status != 200 {
            break r;
        }
        served.push(r.body.trim().parse::<u32>()?);
        anyhow::ensure!(served.len() < 8, "16 MiB held more than 8 leaks of 4 MiB");
    };
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert!(failed.body.contains("memory limit"), "{}", failed.body);
    assert_eq!(served, (1..=served.len() as u32).collect::<Vec<_>>());
    assert!(served.len() >= 2, "the instance served one event only");
    assert_eq!(count(&comet)?, 1);
    Ok(())
}

/// A new version of the module never gets an instance of the old one.
#[test]
fn a_new_version_starts_with_fresh_instances() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::REUSE_APP])?;
    assert_eq!((count(&comet)?, count(&comet)?), (1, 2));
    let name = module(&comet)?["name"].as_str().expect("name").to_string();
    let bytes = std::fs::read(guests::REUSE_APP)?;
    let r = admin(
        &comet,
        "PUT",
        &format!("/admin/modules/{name}"),
        Some(&bytes),
    )?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((count(&comet)?, count(&comet)?), (1, 2));
    Ok(())
}
