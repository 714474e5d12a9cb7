#!/usr/bin/env python3
"""A bystander's latency while other guests spin: one comet serves two
modules (the misbehave test guest at /spin, the hello example at /hello);
wrk measures /hello alone, then while SPINNERS clients each keep one /spin
request running (each spins until its CPU budget or deadline).

Usage: fairness.py COMET_BINARY [SPINNERS]   (needs wrk; run from the repo)
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = 18480
MISBEHAVE = os.path.join(ROOT, "target/guests/wasm32-wasip2/release/misbehave.wasm")
HELLO = os.path.join(ROOT, "target/guests/wasm32-wasip2/release/hello.wasm")


def wrk(seconds=8):
    out = subprocess.run(["wrk", "-t1", "-c4", "-d%ds" % seconds, "--latency",
                          "http://127.0.0.1:%d/hello?name=b" % PORT],
                         capture_output=True, text=True).stdout
    pct = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"p50": pct.get("50"), "p99": pct.get("99"), "rps": float(rps.group(1)) if rps else 0}


def main():
    binary = sys.argv[1]
    spinners = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    manifest = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    manifest.write(f"""
[server]
listen = "127.0.0.1:{PORT}"
[modules.misbehave]
path = "{MISBEHAVE}"
[modules.hello]
path = "{HELLO}"
[[routes]]
prefix = "/spin"
module = "misbehave"
[[routes]]
prefix = "/hello"
module = "hello"
""")
    manifest.close()
    proc = subprocess.Popen([binary, "run", "--config", manifest.name, "--no-admin", "--no-cache"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, RUST_LOG="error"))
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", PORT), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        idle = wrk()
        stop = threading.Event()
        spun = [0]

        def spin():
            while not stop.is_set():
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/spin" % PORT, timeout=30).read()
                except Exception:  # noqa: BLE001 - 500 is the expected answer
                    pass
                spun[0] += 1

        threads = [threading.Thread(target=spin) for _ in range(spinners)]
        for t in threads:
            t.start()
        time.sleep(1)
        loaded = wrk()
        stop.set()
        for t in threads:
            t.join()
        print({"binary": binary, "spinners": spinners, "alone": idle, "while_spinning": loaded,
               "spin_requests": spun[0]})
    finally:
        proc.terminate()
        proc.wait()
        os.unlink(manifest.name)


if __name__ == "__main__":
    main()
