#!/usr/bin/env python3
"""Anonymous-publish flood: WebSocket clients publish N messages of SIZE
bytes to N distinct channels (15 connections, each within the server's
frame budget of 100 frames/s); prints the server's RSS before, right after,
and after history expiry (when --history-age-s is among the flags).

Usage: flood.py COMET_BINARY [comet run flags...]
Needs `pip install websocket-client`. Runs the trivial bench guest.
"""

import json
import os
import sys
import threading
import time

import websocket  # websocket-client

from cometproc import ROOT, Comet

N, SIZE, PORT = 1500, 60 << 10, 18490


def main():
    binary, flags = sys.argv[1], sys.argv[2:]
    run_args = [os.path.join(ROOT, "bench", "guest", "trivial"), "--no-admin",
                "--publish-token", "t"] + flags
    with Comet(binary, run_args, PORT) as comet:
        payload = "x" * SIZE
        CONNECTIONS = 15

        def flood(lo, hi):
            """Publish lo..hi over the connections in parallel; refusals."""
            refused = [0]

            def one(k):
                ws = websocket.create_connection("ws://127.0.0.1:%d/comet/ws" % PORT)
                for i in range(lo + k, hi, CONNECTIONS):
                    ws.send(json.dumps({"op": "publish", "channel": "flood:%d" % i,
                                        "data": payload, "id": i}))
                    if json.loads(ws.recv()).get("type") != "ack":
                        refused[0] += 1
                    time.sleep(0.012)  # within 100 frames/s
                ws.close()

            threads = [threading.Thread(target=one, args=(k,)) for k in range(CONNECTIONS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return refused[0]

        flood(0, 50)
        before = comet.rss_kib()
        refused = flood(50, N)
        after = comet.rss_kib()
        result = {"flags": flags, "published": N - 50 - refused, "refused": refused,
                  "rss_before_kib": before, "rss_after_kib": after,
                  "grown_mib": round((after - before) / 1024, 1)}
        if any(f == "--history-age-s" for f in flags):
            age = int(flags[flags.index("--history-age-s") + 1])
            time.sleep(age + 12)  # the age, then the 5 s sweep, twice
            result["rss_after_expiry_kib"] = comet.rss_kib()
        print(json.dumps(result))


if __name__ == "__main__":
    main()
