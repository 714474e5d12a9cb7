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
. bench/scripts/wrk-common.sh
secs=${1:-10}
rounds=${2:-3}

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
wait_serving /tmp/wrk-comet.out /tmp/wrk-comet-fresh.out ${base_pid:+/tmp/wrk-comet-base.out}

rm -f /tmp/wrk-comet.runs /tmp/wrk-comet-fresh.runs /tmp/wrk-bare-hyper.runs /tmp/wrk-comet-base.runs
hello_run() { wrk_run "$1" "$2" "http://127.0.0.1:$3/hello?name=world" "$secs"; }
for _ in $(seq "$rounds"); do
  hello_run bare-hyper "$bare_pid" 18081
  [ -n "$base_pid" ] && hello_run comet-base "$base_pid" 18082
  hello_run comet-fresh "$fresh_pid" 18083
  hello_run comet "$comet_pid" 18080
done
c=$(median /tmp/wrk-comet.runs 2)
b=$(median /tmp/wrk-bare-hyper.runs 2)
f=$(median /tmp/wrk-comet-fresh.runs 2)
awk -v c="$c" -v b="$b" 'BEGIN { printf "median: comet %.0f req/s, bare hyper %.0f req/s, ratio %.2f\n", c, b, c / b }'
awk -v c="$f" -v b="$b" 'BEGIN { printf "median: comet-fresh %.0f req/s, bare hyper %.0f req/s, ratio %.2f\n", c, b, c / b }'
if [ -n "$base_pid" ]; then
  awk -v c="$c" -v b="$(median /tmp/wrk-comet-base.runs 2)" 'BEGIN { printf "median: comet %.0f req/s, COMET_BASE %.0f req/s, ratio %.2f\n", c, b, c / b }'
fi
