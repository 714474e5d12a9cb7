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
secs=${1:-8}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

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
for out in /tmp/wrk-wasi.out /tmp/wrk-no-wasi.out; do
  for _ in $(seq 100); do
    grep -q serving "$out" 2>/dev/null && break
    sleep 0.2
  done
done

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name pid port
  local before after rps
  before=$(cpu "$2")
  rps=$(wrk -t2 -c64 -d"${secs}s" "http://127.0.0.1:$3/ok" | awk '/Requests\/sec/ {print $2}')
  after=$(cpu "$2")
  # server CPU per request in microseconds (clock ticks are 1/100 s)
  awk -v n="$1" -v r="$rps" -v t="$((after - before))" -v s="$secs" \
    'BEGIN { printf "%-8s %10.0f req/s  %6.1f us server CPU/request\n", n, r, t * 10000 / (r * s) }' |
    tee -a "/tmp/wrk-$1.runs"
}
rm -f /tmp/wrk-wasi.runs /tmp/wrk-no-wasi.runs
for _ in $(seq "$rounds"); do
  run wasi "$with_pid" 18090
  run no-wasi "$without_pid" 18091
done
median() { awk "{print \$$2}" "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
awk -v a="$(median /tmp/wrk-wasi.runs 2)" -v b="$(median /tmp/wrk-no-wasi.runs 2)" \
  -v c="$(median /tmp/wrk-wasi.runs 4)" -v d="$(median /tmp/wrk-no-wasi.runs 4)" \
  'BEGIN { printf "median: with WASI %.0f req/s at %.1f us, without %.0f req/s at %.1f us: %.2fx the requests, %.2fx the CPU\n", a, c, b, d, b / a, d / c }'
