#!/usr/bin/env python3
"""What TLS costs, servers alternated in one session: for each variant, N
subscribers connect to a fresh server and subscribe to one channel, sit idle
(memory per connection), then a publisher publishes at a fixed rate (server
CPU per delivery). Set-up CPU per connection is measured while they connect.

Variants: `plain` (comet over plain HTTP), `tls` (comet's own TLS, clients
resuming sessions), `tls-full` (every client a full handshake), `tls-h2`
(SSE only: STREAMS streams per shared HTTP/2 connection), and with
`--nchan` the same for nginx+Nchan (`nchan`, `nchan-tls`). The certificate
is a self-signed P-256 one made with openssl.

Usage: bench/scripts/tls-cost.py [--transports ws,sse] [--subscribers 10000]
       [--rate 5] [--duration 10] [--rounds 2] [--streams 100] [--nchan]
Needs `cargo build --release -p comet-host -p comet-bench`.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import suite


def certificate(dir):
    cert, key = Path(dir) / "cert.pem", Path(dir) / "key.pem"
    subprocess.run([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost",
        # An end-entity certificate (the clients trust it directly).
        "-addext", "basicConstraints=critical,CA:FALSE", "-days", "2",
    ], check=True, capture_output=True)
    return cert, key


# variant: (server, loadgen flags, transports it applies to)
def variants(cert, streams, nchan):
    tls = ["--tls-ca", str(cert)]
    v = {
        "plain": ("comet", [], ("ws", "sse")),
        "tls": ("comet-tls", tls, ("ws", "sse")),
        "tls-full": ("comet-tls", tls + ["--tls-no-resume"], ("ws", "sse")),
        "tls-h2": ("comet-tls", tls + ["--h2-streams", str(streams)], ("sse",)),
    }
    if nchan:
        v["nchan"] = ("nchan", [], ("ws", "sse"))
        v["nchan-tls"] = ("nchan-tls", tls, ("ws", "sse"))
    return v


def one(variant, spec, transport, a, index):
    server, flags, _ = spec
    port = suite.port_for(index)
    with suite.Server(server, port) as srv:
        name = "tls-%s-%s" % (variant, transport)
        report = suite.run_loadgen(server, srv, name, transport, a.subscribers,
                                   rates=[a.rate], duration=a.duration, extra=flags)
    step = suite.checked_step(report, variant)
    return {
        "kib": report["kib_per_connection"],
        "setup_us": report["server_cpu_us_per_connection"],
        "delivery_us": step["server_cpu_us_per_delivery"],
        "p99_ms": step["latency_us"]["p99"] / 1000.0,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transports", default="ws,sse")
    p.add_argument("--subscribers", type=int, default=10000)
    p.add_argument("--rate", type=float, default=5, help="publishes per second")
    p.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--streams", type=int, default=100, help="SSE streams per HTTP/2 connection")
    p.add_argument("--nchan", action="store_true", help="also nginx+Nchan, plain and TLS")
    a = p.parse_args()
    suite.RESULTS = Path(tempfile.mkdtemp(prefix="comet-tls-"))
    cert, key = certificate(suite.RESULTS)
    os.environ["BENCH_TLS_CERT"], os.environ["BENCH_TLS_KEY"] = str(cert), str(key)
    specs = variants(cert, a.streams, a.nchan)
    figures = {}
    index = 0
    for _ in range(a.rounds):
        for transport in a.transports.split(","):
            for variant, spec in specs.items():
                if transport not in spec[2]:
                    continue
                r = one(variant, spec, transport, a, index)
                index += 1
                suite.log("%s %s: %.2f KiB/connection, %.0f us set-up, %.2f us/delivery, p99 %.0f ms"
                          % (variant, transport, r["kib"], r["setup_us"], r["delivery_us"],
                             r["p99_ms"]))
                figures.setdefault((variant, transport), []).append(r)
    print("| variant | transport | KiB per idle connection | set-up CPU per connection (us) "
          "| CPU per delivery (us) | p99 (ms) |")
    print("|---|---|---|---|---|---|")
    for (variant, transport), rs in figures.items():
        med = lambda k: statistics.median(r[k] for r in rs)
        print("| %s | %s | %.2f | %.0f | %.2f | %.0f |"
              % (variant, transport, med("kib"), med("setup_us"), med("delivery_us"), med("p99_ms")))


if __name__ == "__main__":
    main()
