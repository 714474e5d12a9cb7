#!/usr/bin/env python3
"""Deploy timings of the chat example with the release `comet` binary.

1. Upload-to-serving: PUT the chat component to a server that serves hello,
   and time until GET / answers with the chat page (cold compile, then the
   same bytes again from the compile cache).
2. Start-to-first-response: start `comet run chat.wasm` with a warm compile
   cache and time until GET / answers 200.

Usage: bench/scripts/deploy-times.py [ROUNDS]   (after `cargo build --release -p comet-host`)
Prints medians in ms. Ports 18180-18181 on loopback.
"""
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMET = os.path.join(ROOT, "target/release/comet")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
PORT, ADMIN = 18180, 18181
TOKEN = "bench-token"


def build(name):
    # `comet deploy` builds the crate before it connects; the upload to port 1
    # fails and the built component stays in the guest workspace's target.
    subprocess.run([COMET, "deploy", "--server", "http://127.0.0.1:1", "--token", "x", name,
                    os.path.join(ROOT, "guest-examples", name)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.path.join(ROOT, f"guest-examples/target/wasm32-wasip2/release/{name}.wasm")


def request(method, port, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_until(check, timeout=30.0):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            if check():
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.0005)
    raise RuntimeError("timed out")


def start(wasm, data_dir):
    env = dict(os.environ, COMET_ADMIN_TOKEN=TOKEN, COMET_PUBLISH_TOKEN=TOKEN, RUST_LOG="warn")
    return subprocess.Popen([COMET, "run", wasm, "--name", "app", "--listen", f"127.0.0.1:{PORT}",
                             "--admin-listen", f"127.0.0.1:{ADMIN}", "--data-dir", data_dir],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(p):
    p.terminate()
    p.wait(timeout=15)


def main():
    hello, chat = build("hello"), build("chat")
    chat_bytes = open(chat, "rb").read()
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/wasm"}
    serves_chat = lambda: request("GET", PORT, "/")[1].startswith(b"<!doctype html") or b"<html" in request("GET", PORT, "/")[1]

    cold, warm = [], []
    for _ in range(ROUNDS):
        data = tempfile.mkdtemp()
        p = start(hello, data)
        try:
            wait_until(lambda: request("GET", PORT, "/")[0] == 200)
            for sink in (cold, warm):
                t0 = time.perf_counter()
                status, body = request("PUT", ADMIN, "/admin/modules/app", chat_bytes, auth)
                assert status == 201, body
                sink.append((wait_until(serves_chat) - t0) * 1000)
                # Back to hello for the next measurement (same bytes: cached).
                request("POST", ADMIN, "/admin/modules/app/rollback", b"", auth)
        finally:
            stop(p)
            shutil.rmtree(data, ignore_errors=True)

    starts = []
    data = tempfile.mkdtemp()
    p = start(chat, data)  # fills the cache
    wait_until(lambda: request("GET", PORT, "/")[0] == 200)
    stop(p)
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        p = start(chat, data)
        try:
            starts.append((wait_until(lambda: request("GET", PORT, "/")[0] == 200) - t0) * 1000)
        finally:
            stop(p)
    shutil.rmtree(data, ignore_errors=True)

    med = statistics.median
    print(f"chat component: {len(chat_bytes)} bytes, {ROUNDS} rounds")
    print(f"upload-to-serving, compiled:       median {med(cold):7.1f} ms  (all: {', '.join(f'{x:.0f}' for x in cold)})")
    print(f"upload-to-serving, compile cache:  median {med(warm):7.1f} ms  (all: {', '.join(f'{x:.0f}' for x in warm)})")
    print(f"comet run start to first response, warm cache: median {med(starts):6.1f} ms  (all: {', '.join(f'{x:.0f}' for x in starts)})")


if __name__ == "__main__":
    main()
