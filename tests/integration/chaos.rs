use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use comet_testkit::{Comet, Lines, admin, get, guests, publish, ws_connect, ws_json, ws_send};
use serde_json::{Value, json};

use crate::COMET;

const TOKEN: &str = "test-token";
const CHANNELS: usize = 4;
/// Messages per channel: 2,500 (10,000 in all) in CI, where the suite runs
/// a debug build next to the other tests; `COMET_CHAOS_PER_CHANNEL=5000`
/// makes it 20,000.
fn per_channel() -> u64 {
    env_or("COMET_CHAOS_PER_CHANNEL", 2_500)
}

/// Clients per transport: 25 (100 in all) in CI, so the rest of the suite,
/// running at the same time, keeps its deadlines; `COMET_CHAOS_CLIENTS=50`
/// makes it 200 (with 20,000 messages: about 8 minutes here, alone).
fn clients_per_transport() -> usize {
    env_or("COMET_CHAOS_CLIENTS", 25)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so a failure can be rerun.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Sse,
    Ndjson,
    Poll,
    Ws,
}

/// Messages received by one client, checked as they come: each must be the
/// next of its channel.
struct Received {
    name: String,
    next: u64,
}

impl Received {
    fn take(&mut self, message: &Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            message["type"] == "message",
            "{}: not a message (a reset?): {message}",
            self.name
        );
        let n: u64 = message["data"].as_str().unwrap_or_default().parse()?;
        anyhow::ensure!(
            n == self.next,
            "{}: got {n}, expected {} (lost or repeated)",
            self.name,
            self.next
        );
        self.next += 1;
        Ok(())
    }
}

/// One client: connect with its cursor, read a random number of messages,
/// drop the connection abruptly, again, until it has every message of its
/// channel.
fn client(
    base: &str,
    transport: Transport,
    channel: usize,
    start: String,
    seed: u64,
) -> anyhow::Result<()> {
    let per_channel = per_channel();
    let mut dice = Dice(seed | 1);
    let mut received = Received {
        name: format!("{transport:?} client on c{channel}"),
        next: 0,
    };
    let mut cursor = start;
    let ch = format!("c{channel}");
    while received.next < per_channel {
        let mut budget = 1 + dice.below(400);
        match transport {
            Transport::Sse => {
                let mut sse = Lines::open(
                    &format!("{base}/comet/sse?channel={ch}"),
                    &[("last-event-id", &cursor)],
                )?;
                while budget > 0 && received.next < per_channel {
                    let event = sse.event()?;
                    received.take(&event.json())?;
                    cursor = event.id.unwrap_or_default();
                    budget -= 1;
                }
            }
            Transport::Ndjson => {
                let mut stream = Lines::open(
                    &format!("{base}/comet/stream?channel={ch}&since={cursor}"),
                    &[],
                )?;
                while budget > 0 && received.next < per_channel {
                    let m = stream.json()?;
                    received.take(&m)?;
                    cursor = m["cursor"].as_str().unwrap_or_default().to_string();
                    budget -= 1;
                }
            }
            Transport::Poll => {
                let r = get(&format!(
                    "{base}/comet/poll?channel={ch}&since={cursor}&timeout=2000"
                ))?;
                anyhow::ensure!(r.status == 200, "poll: {} {}", r.status, r.body);
                let v: Value = serde_json::from_str(&r.body)?;
                anyhow::ensure!(v["resets"] == json!([]), "poll reset: {v}");
                for m in v["messages"].as_array().into_iter().flatten() {
                    received.take(m)?;
                }
                cursor = v["cursor"].as_str().unwrap_or_default().to_string();
            }
            Transport::Ws => {
                let mut ws = ws_connect(&format!("{}/comet/ws", base.replace("http", "ws")))?;
                ws_send(
                    &mut ws,
                    &json!({"op": "subscribe", "channel": ch, "since": cursor}),
                )?;
                anyhow::ensure!(ws_json(&mut ws)?["type"] == "subscribed");
                while budget > 0 && received.next < per_channel {
                    let m = ws_json(&mut ws)?;
                    received.take(&m)?;
                    cursor = m["cursor"].as_str().unwrap_or_default().to_string();
                    budget -= 1;
                }
                // Dropped without a close frame.
            }
        }
    }
    Ok(())
}

/// A hundred clients over all four transports keep dropping and resuming
/// with their cursors while 10,000 messages are published and the module
/// is swapped under them: every client gets every message of its channel,
/// once, in order.
#[test]
fn clients_that_keep_dropping_lose_and_repeat_nothing() -> anyhow::Result<()> {
    let comet = Comet::start(
        COMET,
        &[
            guests::CHANNELS_APP,
            "--name",
            "app",
            "--publish-token",
            TOKEN,
            "--history-len",
            "20000",
            "--queue-len",
            "20000",
            // What is checked here is delivery, not deadlines. CI runs this
            // debug build next to the whole suite on two cores, where a
            // publish hook once passed the default 1 s deadline (a 500):
            // before the scheduler counted CPU time, a preempted hook looked
            // busy and waited at nice 19; a slow debug build still may.
            "--deadline-ms",
            "20000",
            "--cpu-ms",
            "20000",
        ],
    )?;
    let base = comet.url("");
    // Every client starts from a message published before it connects.
    let starts: Vec<String> = (0..CHANNELS)
        .map(|c| {
            let r = publish(&comet, TOKEN, &format!("c{c}"), "start")?;
            let v: Value = serde_json::from_str(&r.body)?;
            Ok(v["cursor"].as_str().unwrap_or_default().to_string())
        })
        .collect::<anyhow::Result<_>>()?;
    let mut clients = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for transport in [
        Transport::Sse,
        Transport::Ndjson,
        Transport::Poll,
        Transport::Ws,
    ] {
        for i in 0..clients_per_transport() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let (base, start, channel) = (base.clone(), starts[i % CHANNELS].clone(), i % CHANNELS);
            let s = seed;
            clients.push(std::thread::spawn(move || {
                client(&base, transport, channel, start, s)
            }));
        }
    }
    // The module is swapped for a new version while all this goes on: after
    // each sixth of the messages is published, up to five times.
    let progress = Arc::new(Progress::default());
    let swapper = {
        let progress = progress.clone();
        let total = per_channel() * CHANNELS as u64;
        let bytes = std::fs::read(guests::CHANNELS_APP)?;
        let comet_admin = comet.admin_url("");
        std::thread::spawn(move || -> anyhow::Result<u32> {
            let mut swaps = 0;
            while swaps < 5 {
                let next = total * (u64::from(swaps) + 1) / 6;
                let finished = progress.wait(next, Duration::from_secs(600))?;
                if finished {
                    break;
                }
                let auth = format!("Bearer {}", comet_testkit::ADMIN_TOKEN);
                let r = comet_testkit::send(
                    "PUT",
                    &format!("{comet_admin}/admin/modules/app"),
                    &[("authorization", &auth)],
                    Some(&bytes),
                )?;
                anyhow::ensure!(r.status == 201, "swap: {} {}", r.status, r.body);
                swaps += 1;
            }
            Ok(swaps)
        })
    };
    let publishers: Vec<_> = (0..CHANNELS)
        .map(|c| {
            let url = format!("{base}/comet/publish/c{c}");
            let progress = progress.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for n in 0..per_channel() {
                    let r = agent
                        .post(&url)
                        .header("authorization", &format!("Bearer {TOKEN}"))
                        .header("content-type", "text/plain")
                        .send(n.to_string().as_bytes())?;
                    let status = r.status();
                    if status != 200 {
                        let body = r.into_body().read_to_string().unwrap_or_default();
                        anyhow::bail!("publish {n}: {status} {body}");
                    }
                    progress.update(|(published, _)| *published += 1);
                }
                Ok(())
            })
        })
        .collect();
    for p in publishers {
        p.join().expect("publisher")?;
    }
    for c in clients {
        c.join().expect("client")?;
    }
    progress.update(|(_, finished)| *finished = true);
    let swaps = swapper.join().expect("swapper")?;
    assert!(swaps >= 1, "the module was never swapped");
    let r = admin(&comet, "GET", "/admin/modules/app", None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(())
}

/// Messages published so far and whether the run is over, with a signal for
/// each change: what the swapper waits on.
#[derive(Default)]
struct Progress {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Progress {
    fn update(&self, change: impl FnOnce(&mut (u64, bool))) {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// Wait until `published` messages are out (`false`) or the run is over
    /// (`true`).
    fn wait(&self, published: u64, timeout: Duration) -> anyhow::Result<bool> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (state, wait) = self
            .changed
            .wait_timeout_while(state, timeout, |&mut (n, finished)| {
                n < published && !finished
            })
            .unwrap_or_else(|p| p.into_inner());
        anyhow::ensure!(
            !wait.timed_out(),
            "timed out after {timeout:?} waiting for {published} messages"
        );
        Ok(state.1)
    }
}
