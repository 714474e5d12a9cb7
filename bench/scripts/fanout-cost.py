#!/usr/bin/env python3
"""Server CPU per delivery and p99 of fan-out, servers alternated: N
subscribers of one channel, a publisher at a fixed rate, against a fresh
server each time, ROUNDS times over. Scenario (b) of bench/run-all.sh
measures the same once per server at several rates; this script is for
before/after comparisons in one session
(`COMET_BASE=/path/to/older/comet ... --servers comet-base,comet,nchan`).

Usage: bench/scripts/fanout-cost.py [--servers comet,bare,nchan]
       [--transports ws,sse] [--subscribers 10000] [--rate 5] [--duration 15]
       [--rounds 2]
Needs `cargo build --release -p comet-host -p comet-bench` (bench/run-all.sh
does it) and, for Nchan, Debian's nginx-light and libnginx-mod-nchan. The
load generator's reports go to a temporary directory.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import suite


def one(server, transport, a, index):
    port = suite.port_for(index)
    with suite.Server(server, port) as srv:
        name = "fanout-%s-%s" % (server, transport)
        cmd, out = suite.loadgen(server, srv, name, transport, a.subscribers,
                                 rates=[a.rate], duration=a.duration)
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
            raise RuntimeError("loadgen failed against %s" % server)
        report = json.loads(out.read_text())
    if report["connected"] != a.subscribers:
        raise RuntimeError("%s: %d of %d subscribed" % (server, report["connected"], a.subscribers))
    step = report["steps"][0]
    if step["gaps"] or step["dups"]:
        raise RuntimeError("%s: %d gaps, %d duplicates" % (server, step["gaps"], step["dups"]))
    return step["server_cpu_us_per_delivery"], step["latency_us"]["p99"] / 1000.0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", default="comet,bare,nchan")
    p.add_argument("--transports", default="ws,sse")
    p.add_argument("--subscribers", type=int, default=10000)
    p.add_argument("--rate", type=float, default=5, help="publishes per second")
    p.add_argument("--duration", type=float, default=15, help="measured seconds per run")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    suite.RESULTS = Path(tempfile.mkdtemp(prefix="comet-fanout-"))
    def measure(server, transport, index):
        us, p99 = one(server, transport, a, index)
        suite.log("%s %s: %.2f us of server CPU per delivery, p99 %.0f ms"
                  % (server, transport, us, p99))
        return us, p99

    figures = suite.alternated(a.servers.split(","), a.transports.split(","), a.rounds, measure)
    print("| server | transport | server CPU µs per delivery (runs) | median | p99 ms (runs) |")
    print("|---|---|---|---|---|")
    for (server, transport), runs in figures.items():
        print("| %s | %s | %s | %.2f | %s |" % (
            server, transport, " / ".join("%.2f" % r[0] for r in runs),
            statistics.median(r[0] for r in runs), " / ".join("%.0f" % r[1] for r in runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
