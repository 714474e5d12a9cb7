use std::time::{Duration, Instant};

use comet_testkit::{Comet, admin, get, guests, post};

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
    comet.wait_log_until(
        &format!("request id {id} in the log"),
        Duration::from_secs(5),
        |log| log.contains(id),
    )
}

/// The sum of metric `name` over all its labels, from `/metrics`.
fn metric_sum(comet: &Comet, name: &str) -> anyhow::Result<f64> {
    let metrics = admin(comet, "GET", "/metrics", None)?.body;
    let prefix = format!("{name}{{");
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Infinite loops are interrupted at the deadline while requests to a healthy
/// route keep succeeding, even with more loops than worker threads.
#[test]
fn infinite_loop_hits_the_deadline_and_others_are_served() -> anyhow::Result<()> {
    let comet = Comet::start(
        COMET,
        &[
            guests::MISBEHAVE,
            "--deadline-ms",
            "500",
            "--cpu-ms",
            "5000",
        ],
    )?;
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
    // While the loops run (all four, as the metrics say), a healthy route
    // still answers. Each loop logs a line as it begins.
    comet.wait_for("four events running", Duration::from_secs(30), || {
        let running = metric_sum(&comet, "comet_events_running").ok()?;
        // On a machine so loaded that the loops ended first, the check below
        // still runs (after them).
        (running >= 4.0 || spinners.iter().all(|s| s.is_finished())).then_some(())
    })?;
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
    // Each loop computed past 5 ms and finished on the hot runtime.
    let hot = metric_sum(&comet, "comet_events_hot_total")?;
    assert!(hot >= 4.0, "{hot} events moved to the hot runtime");
    Ok(())
}

/// With no event in flight the epoch ticker sleeps (an idle server does not
/// wake 1,000 times a second), and the next event wakes it: a loop that
/// starts while it sleeps is still cut at its deadline.
#[test]
fn an_idle_server_stops_ticking_and_a_loop_still_meets_its_deadline() -> anyhow::Result<()> {
    const PARKED: &str = "epoch ticker idle";
    let comet = Comet::start(
        COMET,
        &[
            guests::MISBEHAVE,
            "--deadline-ms",
            "300",
            "--cpu-ms",
            "5000",
        ],
    )?;
    // The kernel names what a sleeping thread waits in: a parked thread
    // waits on a futex, a ticking one in its sleep between ticks.
    let epoch_thread_waits_on_a_futex = || -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", comet.pid())) else {
            return false;
        };
        tasks.flatten().any(|task| {
            let read = |name| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
            read("comm").trim() == "comet-epoch" && read("wchan").contains("futex")
        })
    };
    // The ticker logs a line as it parks; then it waits on a futex.
    let parked = |times: usize| -> anyhow::Result<()> {
        comet.wait_log_until("the epoch ticker to park", Duration::from_secs(30), |log| {
            log.matches(PARKED).count() >= times
        })?;
        // The line is written a few instructions before the futex wait:
        // give the ticker's core those instructions.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !epoch_thread_waits_on_a_futex() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the epoch ticker said it parked but does not wait on a futex"
            );
            std::thread::yield_now();
        }
        Ok(())
    };
    parked(1)?;
    let before = comet.stderr().matches(PARKED).count();
    let started = Instant::now();
    let r = get(&comet.url("/spin"))?;
    let elapsed = started.elapsed();
    assert_failed(&comet, &r, "deadline")?;
    assert!(
        elapsed < Duration::from_secs(10),
        "deadline not enforced: {elapsed:?}"
    );
    // Idle again, it parks again.
    parked(before + 1)?;
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
    // Log lines are written by a thread of their own: one may trail the
    // response it belongs to.
    let id = r.header("x-request-id").unwrap_or_default();
    comet.wait_log_until(
        "the panic message with the request id",
        Duration::from_secs(10),
        |log| {
            log.lines()
                .any(|l| l.contains(id) && l.contains("this handler panics on purpose"))
        },
    )?;
    let r = get(&comet.url("/stack"))?;
    assert_failed(&comet, &r, "stack overflow")?;
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
    assert_failed(
        &comet,
        &r,
        "a response body of 100001 bytes, over the 100000 byte limit",
    )?;

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

/// A module whose static initialiser never returns compiles and
/// instantiates, but is refused at deploy (`does-not-start`, with the
/// reason), and the version before it keeps serving; at start it stops
/// `comet run` with the reason.
#[test]
fn a_module_that_does_not_start_is_refused_at_deploy() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::HELLO, "--deadline-ms", "300"])?;
    let r = comet_testkit::admin(
        &comet,
        "PUT",
        "/admin/modules/hello",
        Some(&std::fs::read(guests::BAD_START)?),
    )?;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("does-not-start"), "{}", r.body);
    assert!(
        r.body.contains("CPU time") || r.body.contains("deadline"),
        "{}",
        r.body
    );
    assert_eq!(get(&comet.url("/hello"))?.status, 200);
    let (status, _, stderr) = comet_testkit::run_to_exit(
        COMET,
        &[
            "run",
            guests::BAD_START,
            "--deadline-ms",
            "300",
            "--no-admin",
            "--no-cache",
            "--listen",
            "127.0.0.1:0",
        ],
    )?;
    assert!(!status.success());
    assert!(stderr.contains("does not start"), "{stderr}");
    Ok(())
}

/// A hook that fails (on-connect, on-subscribe) is logged with its module,
/// event and id, and the client's answer carries the same id.
#[test]
fn hook_failures_are_logged_with_their_id() -> anyhow::Result<()> {
    let comet = Comet::start(COMET, &[guests::MISBEHAVE])?;
    let r = get(&comet.url("/comet/poll?channel=a&trap=1&timeout=0"))?;
    assert_eq!(r.status, 500, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["error"], "hook-failed", "{v}");
    let id = v["request_id"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "{v}");
    comet.wait_log_until(
        "the on-connect failure in the log",
        Duration::from_secs(10),
        |log| {
            log.lines()
                .any(|l| l.contains(&id) && l.contains("on-connect") && l.contains("misbehave"))
        },
    )?;
    let mut ws = comet_testkit::ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    comet_testkit::ws_send(
        &mut ws,
        &serde_json::json!({"op": "subscribe", "channel": "trap", "id": 5}),
    )?;
    let frame = comet_testkit::ws_json(&mut ws)?;
    assert_eq!(
        (frame["error"].as_str(), frame["id"].as_i64()),
        (Some("hook-failed"), Some(5))
    );
    let id = frame["request_id"].as_str().unwrap_or_default().to_string();
    comet.wait_log_until(
        "the on-subscribe failure in the log",
        Duration::from_secs(10),
        |log| {
            log.lines()
                .any(|l| l.contains(&id) && l.contains("on-subscribe"))
        },
    )?;
    Ok(())
}

/// The misbehave guest with 20 s of deadline and CPU, for tests about
/// bytes and counts, not time: their heavy events (filling 40 MiB, copying
/// 32 MiB into kv, 20,000 log calls) compute long enough to run at nice 19
/// (see scheduler.rs), which next to the rest of the suite in a debug build
/// can take longer than the default deadline.
fn patient_misbehave() -> anyhow::Result<Comet> {
    Comet::start(
        COMET,
        &[
            guests::MISBEHAVE,
            "--deadline-ms",
            "20000",
            "--cpu-ms",
            "20000",
        ],
    )
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0")
        .parse()?)
}

/// What a guest returns is copied only within its limits: 40 MiB of
/// headers, a 50 MiB frame to send and a 1 MiB session are refused
/// without the host taking that memory.
#[test]
fn guest_output_is_checked_before_it_is_copied() -> anyhow::Result<()> {
    let comet = patient_misbehave()?;
    get(&comet.url("/ok"))?;
    let before = rss_kib(comet.pid())?;
    let r = get(&comet.url("/big-headers?n=40"))?;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("bytes in all"), "{}", r.body);
    let r = get(&comet.url("/big-session"))?;
    assert_eq!(r.status, 500, "{}", r.body);
    let mut ws = comet_testkit::ws_connect(&format!("ws://{}/comet/ws", comet.addr))?;
    comet_testkit::ws_send(
        &mut ws,
        &serde_json::json!({"op": "message", "data": "send 50"}),
    )?;
    let frame = comet_testkit::ws_json(&mut ws)?;
    assert_eq!(frame["error"], "hook-failed", "{frame}");
    let grown = rss_kib(comet.pid())?.saturating_sub(before);
    assert!(grown < 32 << 10, "the host grew by {grown} KiB");
    Ok(())
}

/// kv has a byte budget per module: 256 values of 1 MiB stop at 32 MiB.
#[test]
fn kv_has_a_byte_budget() -> anyhow::Result<()> {
    let comet = patient_misbehave()?;
    let r = get(&comet.url("/kv-fill?n=256"))?;
    assert_eq!(r.status, 200, "{}", r.body);
    let (stored, error) = r.body.split_once(' ').unwrap_or_default();
    let stored: usize = stored.parse()?;
    assert!((1..=32).contains(&stored), "{}", r.body);
    assert!(error.contains("full"), "{}", r.body);
    Ok(())
}

/// One event may write 100 log lines; the rest are counted in one line.
#[test]
fn guest_logging_is_limited_per_event() -> anyhow::Result<()> {
    let comet = patient_misbehave()?;
    let r = get(&comet.url("/log-flood?n=20000"))?;
    assert_eq!(r.status, 200, "{}", r.body);
    comet.wait_log_until("the suppression summary", Duration::from_secs(10), |log| {
        log.contains("suppressed 19900 log lines")
    })?;
    let lines = comet.stderr().matches("line ").count();
    assert!(lines <= 100, "{lines} guest lines logged");
    Ok(())
}

/// A guest that computes without pause is cut off at its CPU budget,
/// sooner than its wall-clock deadline. (Once hot it runs at nice 19: on a
/// machine saturated by the rest of the suite its 100 ms of CPU can take
/// seconds, hence the long deadline.)
#[test]
fn a_spinning_guest_is_cut_at_its_cpu_budget() -> anyhow::Result<()> {
    let comet = Comet::start(
        COMET,
        &[
            guests::MISBEHAVE,
            "--deadline-ms",
            "60000",
            "--cpu-ms",
            "100",
        ],
    )?;
    let started = Instant::now();
    let r = get(&comet.url("/spin"))?;
    assert_failed(&comet, &r, "100 ms of CPU time")?;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}
