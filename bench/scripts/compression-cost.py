#!/usr/bin/env python3
"""What WebSocket compression (permessage-deflate) costs comet, variants
alternated in one session: N WebSocket subscribers of one channel, then a
publisher at a fixed rate of PAYLOAD-byte messages padded with words (text
that compresses about as prose does). `plain`: the clients offer nothing;
`deflate`: they offer permessage-deflate, comet compresses each message once
and they inflate it. Reports server CPU per delivery, memory per idle
connection, and the bytes of one message's frame on the wire (read off a
raw socket, with and without the offer).

Usage: bench/scripts/compression-cost.py [--subscribers 10000] [--rate 10]
       [--duration 10] [--rounds 2] [--payload 1024]
Needs `cargo build --release -p comet-host -p comet-bench`.
"""

import argparse
import socket
import statistics
import tempfile
import urllib.request
from pathlib import Path

import suite

VARIANTS = {"plain": [], "deflate": ["--ws-deflate"]}


def one(variant, a, index):
    port = suite.port_for(index)
    with suite.Server("comet", port) as srv:
        name = "deflate-%s" % variant
        flags = ["--payload-bytes", str(a.payload), "--payload-words"] + VARIANTS[variant]
        report = suite.run_loadgen("comet", srv, name, "ws", a.subscribers, rates=[a.rate],
                                   duration=a.duration, extra=flags)
    step = suite.checked_step(report, variant)
    return {
        "kib": report["kib_per_connection"],
        "delivery_us": step["server_cpu_us_per_delivery"],
        "p99_ms": step["latency_us"]["p99"] / 1000.0,
    }


def frame_bytes(port, publish_port, offer, payload):
    """The bytes of the frame one published `payload` comes in, on a raw
    socket that offers permessage-deflate or not."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    extensions = "sec-websocket-extensions: permessage-deflate\r\n" if offer else ""
    s.sendall(("GET /comet/ws?channel=wire HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\n"
               "connection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "sec-websocket-version: 13\r\n%s\r\n" % extensions).encode())
    f = s.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass

    def frame():
        first, second = f.read(2)
        n = second & 0x7F
        head = 2
        if n == 126:
            n, head = int.from_bytes(f.read(2), "big"), 4
        elif n == 127:
            n, head = int.from_bytes(f.read(8), "big"), 10
        f.read(n)
        return first, head + n

    frame()  # subscribed
    request = urllib.request.Request(
        "http://127.0.0.1:%d/comet/publish/wire" % publish_port, data=payload.encode(),
        headers={"authorization": "Bearer %s" % suite.TOKEN}, method="POST")
    urllib.request.urlopen(request).read()
    first, n = frame()
    s.close()
    return n, bool(first & 0x40)


def words(n):
    """A payload like the load generator's `--payload-words`."""
    vocab = ["the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for",
             "on", "are", "as", "with", "his", "they", "at", "be", "this", "have", "from", "or",
             "one", "had", "by", "word", "but", "not", "what", "all"]
    state, out = 7, "~s1t1765000000000000000~"
    while len(out) < n:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out += " " + vocab[state >> 59]
    return out[:n]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=10000)
    p.add_argument("--rate", type=float, default=10, help="publishes per second")
    p.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--payload", type=int, default=1024, help="payload bytes")
    a = p.parse_args()
    suite.RESULTS = Path(tempfile.mkdtemp(prefix="comet-deflate-"))
    figures = {}
    index = 0
    for _ in range(a.rounds):
        for variant in VARIANTS:
            r = one(variant, a, index)
            index += 1
            suite.log("%s: %.2f KiB/connection, %.2f us/delivery, p99 %.0f ms"
                      % (variant, r["kib"], r["delivery_us"], r["p99_ms"]))
            figures.setdefault(variant, []).append(r)
    with suite.Server("comet", suite.port_for(index)) as srv:
        payload = words(a.payload)
        wire = {v: frame_bytes(srv.port, srv.publish_port, v == "deflate", payload)
                for v in VARIANTS}
    print("| variant | KiB per idle connection | CPU per delivery (us) | p99 (ms) "
          "| bytes of one message's frame |")
    print("|---|---|---|---|---|")
    for variant, rs in figures.items():
        med = lambda k: statistics.median(r[k] for r in rs)
        n, packed = wire[variant]
        print("| %s | %.2f | %.2f | %.0f | %d%s |" % (variant, med("kib"), med("delivery_us"),
              med("p99_ms"), n, " (compressed)" if packed else ""))


if __name__ == "__main__":
    main()
