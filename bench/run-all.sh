#!/usr/bin/env bash
# The peer comparison in one command: installs what is missing (Debian
# packages, Python packages, the wasm32-wasip2 target), builds comet and the
# benchmark tools, runs every scenario against comet, a bare tokio baseline,
# Nchan, Pushpin and Tornado, prints the table, writes bench/results/*.json
# and bench/results/latency.png, regenerates the "Peer comparison"
# section of BENCHMARKS.md, and (full runs) measures the per-event cost with
# `cargo bench -p comet-host --bench event` (bench/results/event-bench.txt).
#
# Usage: bench/run-all.sh [--quick | --smoke] [--only comet,bare,...] [--scenarios a,b,c,d,e]
#   --smoke   about 10 s against comet only; exits non-zero on loss (for CI)
#   --quick   small numbers against every server (a few minutes)
# Scenario (e) includes `wasmtime serve` when a wasmtime CLI is found: $WASMTIME,
# bench/.tools/bin/wasmtime (where `bench/scripts/install-wasmtime.sh` puts
# it; a 10+ minute build) or the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
for a in "$@"; do [ "$a" = --smoke ] && smoke=1; done

# Tools. apt-get and pip only run when something is missing.
if [ "$smoke" = 0 ]; then
  missing=()
  command -v nginx >/dev/null || missing+=(nginx-light)
  [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing+=(libnginx-mod-nchan)
  command -v pushpin >/dev/null || missing+=(pushpin)
  command -v wrk >/dev/null || missing+=(wrk)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
  python3 -c 'import tornado, matplotlib' 2>/dev/null ||
    python3 -m pip install -q tornado matplotlib ||
    python3 -m pip install -q --break-system-packages tornado matplotlib
fi
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
nice -n 10 cargo build --release -q -p comet-host -p comet-bench

if [ "$smoke" = 0 ]; then
  export WASMTIME=${WASMTIME:-$(command -v bench/.tools/bin/wasmtime wasmtime 2>/dev/null | head -1 || true)}
  if [ -n "$WASMTIME" ]; then
    (cd bench/guest && nice -n 10 cargo build --release -q -p wasi-hello)
  else
    echo "run-all: no wasmtime CLI found; scenario (e) runs without \`wasmtime serve\`" >&2
  fi
fi

# A process may hold up to the hard limit of open files (20,000 here).
ulimit -n "$(ulimit -Hn)"
python3 bench/scripts/suite.py "$@"

# The per-event cost of a fresh instance (criterion; BENCHMARKS.md,
# "Per-event cost"), in full runs only.
case " $* " in
  *" --smoke "* | *" --quick "* | *" --report-only "*) ;;
  *)
    nice -n 10 cargo bench -q -p comet-host --bench event 2>&1 | tee bench/results/event-bench.txt
    # Again, now with the per-event figures in the goals table.
    python3 bench/scripts/suite.py --report-only >/dev/null
    ;;
esac
