#!/usr/bin/env python3
"""RSS and open file descriptors of a comet process after each hostile case
of the hardening issue, run one after another against the misbehave test
guest: aliased 40 MiB of response headers (4 at once), kv filled with 1 MiB
values, a log flood, memory bombs, spinning guests, 1,000 silent sockets,
and a WebSocket ping flood; then 15 s of quiet.

Usage: hostile-rss.py COMET_BINARY   (run from the repository, after the
tests have built the guests: target/guests/wasm32-wasip2/release/)
Standard library only. Prints one line per case.
"""

import base64
import os
import socket
import sys
import threading
import time
import urllib.request

from cometproc import ROOT, Comet

MISBEHAVE = os.path.join(ROOT, "target/guests/wasm32-wasip2/release/misbehave.wasm")
PORT = 18690


def get(path, timeout=30):
    try:
        return urllib.request.urlopen("http://127.0.0.1:%d%s" % (PORT, path), timeout=timeout).status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:  # noqa: BLE001 - refused, reset or unreadable answers are the point
        return None


def at_once(path, n):
    threads = [threading.Thread(target=get, args=(path,)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def silent_sockets(n):
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", PORT), timeout=5))
        except OSError:
            break
    return socks


def ping_flood(seconds):
    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /comet/ws?channel=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % key)
    ping = bytes([0x89, 0x80]) + b"\0\0\0\0"
    end = time.time() + seconds
    try:
        while time.time() < end:
            s.sendall(ping * 100)
    except OSError:
        pass
    s.close()


def main():
    binary = sys.argv[1]
    run_args = [MISBEHAVE, "--no-admin", "--no-cache"]
    try:
        comet = Comet(binary, run_args + ["--max-connections-per-ip", "0"], PORT)
    except RuntimeError:
        # A build from before --max-connections-per-ip (it had no such bound).
        comet = Comet(binary, run_args, PORT)
    with comet:
        def report(case):
            print("%-48s rss %7.1f MiB  fds %5d" % (case, comet.rss_kib() / 1024, comet.fds()),
                  flush=True)

        report("start")
        at_once("/big-headers?n=40", 4)
        report("4 x 40 MiB of headers at once")
        get("/kv-fill?n=256")
        report("kv: 256 values of 1 MiB")
        get("/log-flood?n=250000")
        report("log flood: 250,000 lines in one event")
        at_once("/grow", 4)
        report("4 memory bombs at once")
        at_once("/spin", 4)
        report("4 spinning guests at once")
        socks = silent_sockets(1000)
        time.sleep(1)
        report("%d silent sockets, after 1 s" % len(socks))
        time.sleep(11)
        report("the same, after 12 s (header timeout 10 s)")
        for sock in socks:
            sock.close()
        ping_flood(5)
        report("WebSocket ping flood for 5 s")
        time.sleep(15)
        report("after 15 s quiet")


if __name__ == "__main__":
    main()
