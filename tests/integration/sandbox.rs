use std::time::{Duration, Instant};

use comet_testkit::{Comet, get, guests, post, wait_for};

use crate::COMET;

/// An event that fails answers 500 `handler-failed` with a JSON body naming
/// the request id, which also appears in the host's log line for the failure.
fn assert_failed(comet: &Comet, r: &comet_testkit::Reply, needle: &str) -> anyhow::Result<()> {
    assert_eq!(r.status, 500, "{}", r.body);
    let id = r.header("x-request-id").expect("request id header");
    let v: serde_json::Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["request_id"], id);
    assert_eq!(v["error"], "handler-failed", "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "expected {needle:?} in {message:?}"
    );
    // The log line is written just before the response.
    wait_for(
        &format!("request id {id} in the log"),
        Duration::from_secs(5),
        || comet.stderr().contains(id).then_some(()),
    )
}

/// Infinite loops are interrupted at the deadline while requests to a healthy
/// route keep succeeding, even with more loops than worker threads.
#[test]
fn infinite_loop_hits_the_deadline_and_others_are_served() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::MISBEHAVE, "--deadline-ms", "500"])?;
    let spin_url = comet.url("/spin");
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let url = spin_url.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                get(&url).map(|r| (r, started.elapsed()))
            })
        })
        .collect();
    // While the loops run, a healthy route still answers.
    std::thread::sleep(Duration::from_millis(100));
    let mut healthy = 0;
    for _ in 0..10 {
        let r = get(&comet.url("/ok"))?;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "ok\n");
        healthy += 1;
    }
    assert_eq!(healthy, 10);
    for spinner in spinners {
        let (r, elapsed) = spinner.join().expect("spinner thread")?;
        assert_failed(&comet, &r, "deadline")?;
        assert!(
            elapsed >= Duration::from_millis(500),
            "answered before the deadline: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "deadline not enforced: {elapsed:?}"
        );
    }
    assert_eq!(get(&comet.url("/ok"))?.status, 200);
    Ok(())
}

/// A guest that hoards memory is stopped at the memory limit.
#[test]
fn memory_bomb_is_stopped_at_the_limit() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::MISBEHAVE, "--memory-mib", "16"])?;
    let r = get(&comet.url("/grow"))?;
    assert_failed(&comet, &r, "16777216 byte memory limit")?;
    assert_eq!(get(&comet.url("/ok"))?.status, 200);
    Ok(())
}

/// A panic (a wasm trap) and a stack overflow each fail only their own event.
#[test]
fn traps_answer_500() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::MISBEHAVE])?;
    let r = get(&comet.url("/trap"))?;
    assert_failed(&comet, &r, "trapped")?;
    // The panic message is logged with the event's id, not sent to the client.
    assert!(!r.body.contains("on purpose"), "{}", r.body);
    let log = comet.stderr();
    let id = r.header("x-request-id").unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains(id) && l.contains("this handler panics on purpose")),
        "panic message with request id missing from:\n{log}"
    );
    let r = get(&comet.url("/stack"))?;
    assert_failed(&comet, &r, "trapped")?;
    assert_eq!(get(&comet.url("/ok"))?.status, 200);
    Ok(())
}

/// Oversized or malformed responses are refused; a body within the limit passes.
#[test]
fn guest_output_is_bounded() -> anyhow::Result<()> {
    let comet = Comet::start(
        COMET,
        &[
            guests::MISBEHAVE,
            "--max-response-body",
            "100000",
            "--max-headers",
            "8",
        ],
    )?;
    let r = get(&comet.url("/big?n=100000"))?;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 100_000);

    let r = get(&comet.url("/big?n=100001"))?;
    assert_failed(&comet, &r, "100001 byte body, over the 100000 byte limit")?;

    let r = get(&comet.url("/headers?n=7"))?;
    assert_eq!(r.status, 200);
    let r = get(&comet.url("/headers?n=8"))?;
    assert_failed(&comet, &r, "9 headers, over the limit of 8")?;

    let r = get(&comet.url("/bad-header"))?;
    assert_failed(&comet, &r, "invalid header name")?;
    let r = get(&comet.url("/bad-status"))?;
    assert_failed(&comet, &r, "invalid status code 42")?;
    Ok(())
}

/// A request body over the limit is refused with 413 before the guest runs.
#[test]
fn request_body_is_bounded() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO, "--max-request-body", "1024"])?;
    let r = post(&comet.url("/echo"), "application/json", &[b' '; 1025])?;
    assert_eq!(r.status, 413);
    let r = post(&comet.url("/echo"), "application/json", b"[1]")?;
    assert_eq!(r.status, 200);
    Ok(())
}
