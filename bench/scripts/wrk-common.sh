# Shared by the wrk scripts (sourced): waiting for servers, and one wrk run
# with the server's CPU per request.

command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

# Wait until each log file given says "serving" (up to 20 s each).
wait_serving() {
  local out
  for out in "$@"; do
    for _ in $(seq 100); do
      grep -q serving "$out" 2>/dev/null && break
      sleep 0.2
    done
  done
}

# The CPU time a process has used, in clock ticks (1/100 s).
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }

# wrk_run NAME PID URL SECONDS: one wrk run (2 threads, 64 connections) on
# URL; prints NAME, requests/s and the server's CPU per request in µs, and
# appends the same line to /tmp/wrk-NAME.runs.
wrk_run() {
  local before after rps
  before=$(cpu "$2")
  rps=$(wrk -t2 -c64 -d"$4s" "$3" | awk '/Requests\/sec/ {print $2}')
  after=$(cpu "$2")
  awk -v n="$1" -v r="$rps" -v t="$((after - before))" -v s="$4" \
    'BEGIN { printf "%-11s %10.0f req/s  %6.1f us server CPU/request\n", n, r, t * 10000 / (r * s) }' |
    tee -a "/tmp/wrk-$1.runs"
}

# median FILE COLUMN: the median of one column of a .runs file.
median() { awk "{print \$$2}" "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
