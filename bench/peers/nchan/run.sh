#!/usr/bin/env bash
# Runs nginx with Nchan in the foreground on 127.0.0.1:PORT until killed.
# Usage: [NCHAN_REDIS_URL=redis://HOST:PORT] bench/peers/nchan/run.sh PORT [WORKERS]
# Needs Debian's nginx-light and libnginx-mod-nchan. With several workers the
# listen socket uses reuseport, so the kernel spreads connections over them
# (each worker is one process, limited to 20,000 sockets). With
# NCHAN_REDIS_URL, channels live in that Redis (Nchan's Redis backend). With
# NCHAN_TLS_CERT and NCHAN_TLS_KEY (PEM), the listener serves TLS with nginx's
# defaults (session tickets on).
set -euo pipefail
port=${1:?usage: run.sh PORT [WORKERS]}
workers=${2:-1}
here=$(cd "$(dirname "$0")" && pwd)
dir=${BENCH_RUN_DIR:-/tmp/comet-bench}/nchan-$port
rm -rf "$dir" && mkdir -p "$dir"
reuseport=""
[ "$workers" -gt 1 ] && reuseport=" reuseport"
redis=""
[ -n "${NCHAN_REDIS_URL:-}" ] && redis="nchan_redis_url \"$NCHAN_REDIS_URL\"; nchan_use_redis on;"
ssl=""
ssl_files=""
if [ -n "${NCHAN_TLS_CERT:-}" ]; then
    ssl=" ssl"
    ssl_files="ssl_certificate $NCHAN_TLS_CERT; ssl_certificate_key $NCHAN_TLS_KEY;"
fi
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@WORKERS@|$workers|g" \
    -e "s|@REUSEPORT@|$reuseport|g" -e "s|@REDIS@|$redis|g" \
    -e "s|@SSL@|$ssl|g" -e "s|@SSL_FILES@|$ssl_files|g" "$here/nginx.conf.in" >"$dir/nginx.conf"
ulimit -n 20000
exec nginx -p "$dir" -c "$dir/nginx.conf"
