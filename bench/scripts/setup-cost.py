#!/usr/bin/env python3
"""Server CPU per connection set-up, servers alternated: N subscribers
connect and subscribe to one channel at a fixed rate, against a fresh server
each time, ROUNDS times over. For comet that is the upgrade or stream
request, on-connect, the subscribe (operation or query), on-subscribe and
the acknowledgement. Scenario (a) of bench/run-all.sh measures the same
once per server; this script is for before/after comparisons in one session
(`COMET_BASE=/path/to/older/comet ... --servers comet-base,comet,nchan`).

Usage: bench/scripts/setup-cost.py [--servers comet,bare,nchan]
       [--transports ws,sse] [--subscribers 10000] [--rate 2000] [--rounds 2]
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


def one(server, transport, subscribers, rate, index):
    port = suite.port_for(index)
    with suite.Server(server, port) as srv:
        name = "setup-%s-%s" % (server, transport)
        cmd, out = suite.loadgen(server, srv, name, transport, subscribers,
                                 connect_rate=rate)
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
            raise RuntimeError("loadgen failed against %s" % server)
        report = json.loads(out.read_text())
    if report["connected"] != subscribers:
        raise RuntimeError("%s: %d of %d subscribed" % (server, report["connected"], subscribers))
    return report["server_cpu_us_per_connection"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", default="comet,bare,nchan")
    p.add_argument("--transports", default="ws,sse")
    p.add_argument("--subscribers", type=int, default=10000)
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    suite.RESULTS = Path(tempfile.mkdtemp(prefix="comet-setup-"))
    def measure(server, transport, index):
        us = one(server, transport, a.subscribers, a.rate, index)
        suite.log("%s %s: %.1f us of server CPU per connection" % (server, transport, us))
        return us

    figures = suite.alternated(a.servers.split(","), a.transports.split(","), a.rounds, measure)
    print("| server | transport | server CPU µs per connection (runs) | median |")
    print("|---|---|---|---|")
    for (server, transport), runs in figures.items():
        print("| %s | %s | %s | %.1f |" % (
            server, transport, " / ".join("%.1f" % r for r in runs), statistics.median(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
