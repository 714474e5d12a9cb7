#!/usr/bin/env bash
# Requests/s of the hello example under comet next to a bare hyper hello-world,
# measured with wrk in one session (2 threads, 64 keep-alive connections),
# alternating the two servers so that machine noise hits both.
#
# Usage: [COMET_BASE=/path/to/older/comet] bench/scripts/wrk-hello.sh [SECONDS] [ROUNDS]
# Needs wrk (apt-get install wrk). Prints one line per run and the ratio of
# the medians. The hello example opts in to instance reuse; "comet-fresh" is
# the same binary and guest with --events-per-instance 1 (a fresh instance per
# event), so both figures come from one session. With COMET_BASE, that build
# serves the same guest too and takes its turn in each round (a before/after
# in one session).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -q -p comet-host -p comet-bench
hello=guest-examples/hello

# comet builds the guest itself; its log goes to /dev/null (the guest logs a line
# per request, as the example does). COMET_LOG sets the filter, default info.
RUST_LOG=${COMET_LOG:-info} ./target/release/comet run "$hello" --listen 127.0.0.1:18080 --no-admin >/tmp/wrk-comet.out 2>/dev/null &
comet_pid=$!
RUST_LOG=${COMET_LOG:-info} ./target/release/comet run "$hello" --listen 127.0.0.1:18083 --no-admin --events-per-instance 1 >/tmp/wrk-comet-fresh.out 2>/dev/null &
fresh_pid=$!
./target/release/bare-hyper 127.0.0.1:18081 >/dev/null &
bare_pid=$!
base_pid=
if [ -n "${COMET_BASE:-}" ]; then
  RUST_LOG=${COMET_LOG:-info} "$COMET_BASE" run "$hello" --listen 127.0.0.1:18082 --no-admin >/tmp/wrk-comet-base.out 2>/dev/null &
  base_pid=$!
fi
trap 'kill $comet_pid $fresh_pid $bare_pid $base_pid 2>/dev/null || true' EXIT
for out in /tmp/wrk-comet.out /tmp/wrk-comet-fresh.out ${base_pid:+/tmp/wrk-comet-base.out}; do
  for _ in $(seq 100); do
    grep -q serving "$out" 2>/dev/null && break
    sleep 0.2
  done
done

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name pid port
  local before after rps
  before=$(cpu "$2")
  rps=$(wrk -t2 -c64 -d"${secs}s" "http://127.0.0.1:$3/hello?name=world" | awk '/Requests\/sec/ {print $2}')
  after=$(cpu "$2")
  local ticks=$((after - before))
  # server CPU per request in microseconds (clock ticks are 1/100 s)
  awk -v n="$1" -v r="$rps" -v t="$ticks" -v s="$secs" \
    'BEGIN { printf "%-11s %10.0f req/s  %6.1f us server CPU/request\n", n, r, t * 10000 / (r * s) }'
  echo "$rps" >>"/tmp/wrk-$1.rps"
}
rm -f /tmp/wrk-comet.rps /tmp/wrk-comet-fresh.rps /tmp/wrk-bare-hyper.rps /tmp/wrk-comet-base.rps
for _ in $(seq "$rounds"); do
  run bare-hyper "$bare_pid" 18081
  [ -n "$base_pid" ] && run comet-base "$base_pid" 18082
  run comet-fresh "$fresh_pid" 18083
  run comet "$comet_pid" 18080
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(median /tmp/wrk-comet.rps)
b=$(median /tmp/wrk-bare-hyper.rps)
f=$(median /tmp/wrk-comet-fresh.rps)
awk -v c="$c" -v b="$b" 'BEGIN { printf "median: comet %.0f req/s, bare hyper %.0f req/s, ratio %.2f\n", c, b, c / b }'
awk -v c="$f" -v b="$b" 'BEGIN { printf "median: comet-fresh %.0f req/s, bare hyper %.0f req/s, ratio %.2f\n", c, b, c / b }'
if [ -n "$base_pid" ]; then
  awk -v c="$c" -v b="$(median /tmp/wrk-comet-base.rps)" 'BEGIN { printf "median: comet %.0f req/s, COMET_BASE %.0f req/s, ratio %.2f\n", c, b, c / b }'
fi
