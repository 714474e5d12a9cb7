#!/usr/bin/env bash
# One guest crate built with WASI and without (tests/guests/no-wasi-app), each
# served by the release comet with a fresh instance per event
# (--events-per-instance 1), under wrk in one session (2 threads, 64
# keep-alive connections), alternating the two so machine noise hits both.
#
# Usage: bench/scripts/wrk-no-wasi.sh [SECONDS] [ROUNDS]
# Needs wrk. Prints one line per run, then the medians and their ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/scripts/wrk-common.sh
secs=${1:-8}
rounds=${2:-3}

# comet-testkit's build script builds both guests into target/guests.
cargo build --release -q -p comet-host -p comet-testkit
with=target/guests/wasm32-wasip2/release/no_wasi_app.wasm
without=target/guests/wasm32-unknown-unknown/release/no_wasi_app.component.wasm

start() { # module port log
  ./target/release/comet run "$1" --listen "127.0.0.1:$2" --no-admin --events-per-instance 1 \
    >"$3" 2>&1 &
}
start "$with" 18090 /tmp/wrk-wasi.out
with_pid=$!
start "$without" 18091 /tmp/wrk-no-wasi.out
without_pid=$!
trap 'kill $with_pid $without_pid 2>/dev/null || true' EXIT
wait_serving /tmp/wrk-wasi.out /tmp/wrk-no-wasi.out

rm -f /tmp/wrk-wasi.runs /tmp/wrk-no-wasi.runs
for _ in $(seq "$rounds"); do
  wrk_run wasi "$with_pid" http://127.0.0.1:18090/ok "$secs"
  wrk_run no-wasi "$without_pid" http://127.0.0.1:18091/ok "$secs"
done
awk -v a="$(median /tmp/wrk-wasi.runs 2)" -v b="$(median /tmp/wrk-no-wasi.runs 2)" \
  -v c="$(median /tmp/wrk-wasi.runs 4)" -v d="$(median /tmp/wrk-no-wasi.runs 4)" \
  'BEGIN { printf "median: with WASI %.0f req/s at %.1f us, without %.0f req/s at %.1f us: %.2fx the requests, %.2fx the CPU\n", a, c, b, d, b / a, d / c }'
