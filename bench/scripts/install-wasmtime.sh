#!/usr/bin/env bash
# Installs wasmtime-cli 48 from crates.io into bench/.tools (for `wasmtime
# serve` in scenario (e) of bench/run-all.sh). A long build: 10+ minutes on
# two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 cargo install wasmtime-cli --version '^48' --locked --root .tools
