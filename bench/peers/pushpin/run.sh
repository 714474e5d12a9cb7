#!/usr/bin/env bash
# Runs Pushpin (with its own zurl) on 127.0.0.1:PORT and its GRIP origin on
# ORIGIN_PORT, in the foreground until killed; the HTTP publish endpoint is
# 127.0.0.1:PUBLISH_PORT/publish/.
# Usage: bench/peers/pushpin/run.sh PORT PUBLISH_PORT ORIGIN_PORT
# Needs Debian's pushpin and `pip install tornado` (for the origin).
set -euo pipefail
port=${1:?usage: run.sh PORT PUBLISH_PORT ORIGIN_PORT}
pubport=${2:?usage: run.sh PORT PUBLISH_PORT ORIGIN_PORT}
origin=${3:?usage: run.sh PORT PUBLISH_PORT ORIGIN_PORT}
here=$(cd "$(dirname "$0")" && pwd)
dir=${BENCH_RUN_DIR:-/tmp/comet-bench}/pushpin-$port
rm -rf "$dir" && mkdir -p "$dir/run" "$dir/log"
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@PUBPORT@|$pubport|g" \
    "$here/pushpin.conf.in" >"$dir/pushpin.conf"
# over_http: WebSocket clients reach the origin as WebSocket-over-HTTP.
echo "* 127.0.0.1:$origin,over_http" >"$dir/routes"
ulimit -n 20000
python3 "$here/origin.py" "$origin" &
origin_pid=$!
trap 'kill $origin_pid 2>/dev/null || true' EXIT
pushpin --config "$dir/pushpin.conf" --logfile "$dir/log/pushpin.log" &
pushpin_pid=$!
trap 'kill $pushpin_pid $origin_pid 2>/dev/null || true' EXIT TERM INT
wait $pushpin_pid
