#!/usr/bin/env bash
# Runs the Tornado broadcast server in the foreground on 127.0.0.1:PORT.
# Usage: bench/peers/tornado/run.sh PORT   (needs `pip install tornado`)
set -euo pipefail
port=${1:?usage: run.sh PORT}
ulimit -n 20000
exec python3 "$(dirname "$0")/server.py" "$port"
