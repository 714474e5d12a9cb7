#!/usr/bin/env python3
"""Anonymous-publish flood: one WebSocket client publishes N messages of
SIZE bytes to N distinct channels; prints the server's RSS before, right
after, and after history expiry (when --history-age-s is among the flags).

Usage: flood.py COMET_BINARY [comet run flags...]
Needs `pip install websocket-client`. Runs the trivial bench guest.
"""

import json
import os
import socket
import subprocess
import sys
import time

import websocket  # websocket-client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, SIZE, PORT = 1500, 60 << 10, 18490


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    binary, flags = sys.argv[1], sys.argv[2:]
    cmd = [binary, "run", os.path.join(ROOT, "bench", "guest", "trivial"), "--listen",
           "127.0.0.1:%d" % PORT, "--no-admin", "--publish-token", "t"] + flags
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, RUST_LOG="warn"))
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        ws = websocket.create_connection("ws://127.0.0.1:%d/comet/ws" % PORT)
        payload = "x" * SIZE

        def flood(lo, hi):
            refused = 0
            for i in range(lo, hi):
                ws.send(json.dumps({"op": "publish", "channel": "flood:%d" % i, "data": payload, "id": i}))
                answer = json.loads(ws.recv())
                if answer.get("type") != "ack":
                    refused += 1
            return refused

        flood(0, 50)
        before = rss_kib(proc.pid)
        refused = flood(50, N)
        after = rss_kib(proc.pid)
        ws.close()
        result = {"flags": flags, "published": N - 50 - refused, "refused": refused,
                  "rss_before_kib": before, "rss_after_kib": after,
                  "grown_mib": round((after - before) / 1024, 1)}
        if any(f == "--history-age-s" for f in flags):
            age = int(flags[flags.index("--history-age-s") + 1])
            time.sleep(age + 12)  # the age, then the 5 s sweep, twice
            result["rss_after_expiry_kib"] = rss_kib(proc.pid)
        print(json.dumps(result))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
