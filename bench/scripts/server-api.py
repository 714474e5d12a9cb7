#!/usr/bin/env python3
"""The server API on two comet nodes sharing one redis-server: latency of
`disconnect`, `presence` and `history` (newest 50 of 100) sent to node A,
p50 and p99 over sequential keep-alive requests, beside `publish` (one
Redis script, the baseline); then N WebSocket clients
of distinct users on node B, and the time from a `disconnect` of one of
them (sent to node A) until that client has the close frame, with the CPU
both nodes spent per disconnect (utime + stime from /proc).

Usage: bench/scripts/server-api.py [--requests 1000] [--clients 10000]
       [--disconnects 20]
Needs `cargo build --release -p comet-host`, the test guests (built by
`cargo test`: target/guests/.../channels_app.wasm), redis-server and the
Python package `websockets`.
"""

import argparse
import asyncio
import http.client
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time

import websockets

import suite

KEY = "bench-api-key"
GUEST = suite.ROOT / "target" / "guests" / "wasm32-wasip2" / "release" / "channels_app.wasm"


def start_node(port, redis_url, data_dir):
    cmd = [
        str(suite.TARGET / "comet"), "run", str(GUEST),
        "--listen", "127.0.0.1:%d" % port, "--no-admin", "--api-key", KEY,
        "--broker", redis_url, "--data-dir", data_dir,
        "--max-connections", "19800", "--max-connections-per-ip", "0",
    ]
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    suite.wait_port(port)
    return proc


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Api:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method, params):
        body = json.dumps(params)
        self.conn.request("POST", "/comet/api/" + method, body,
                          {"authorization": "Bearer " + KEY, "content-type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("%s: %d %s" % (method, r.status, data))
        return json.loads(data)["result"]


def percentiles(samples):
    samples = sorted(samples)
    at = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    return {"p50_ms": round(at(0.50) * 1000, 3), "p99_ms": round(at(0.99) * 1000, 3)}


def latency(api, method, params, n):
    api.call(method, params)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        api.call(method, params)
        times.append(time.perf_counter() - t)
    return percentiles(times)


async def open_clients(port, n):
    """n WebSockets of users u0..u(n-1) on channel `room`, from several
    source addresses (a source address has about 28,000 ports)."""
    clients = []
    sem = asyncio.Semaphore(200)

    async def one(i):
        async with sem:
            ws = await websockets.connect(
                "ws://127.0.0.1:%d/comet/ws?channel=room&user=u%d" % (port, i),
                local_addr=("127.0.0.%d" % (2 + i % 8), 0), compression=None,
                open_timeout=60, ping_interval=None, max_queue=None)
            first = json.loads(await ws.recv())
            assert first["type"] == "subscribed", first
            return ws

    clients = await asyncio.gather(*(one(i) for i in range(n)))
    return clients


async def closed(ws):
    try:
        while True:
            await ws.recv()
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


async def disconnects(api_a, nodes, clients, count):
    loop = asyncio.get_running_loop()
    step = max(1, len(clients) // count)
    times, codes = [], []
    cpu0 = [cpu_s(p.pid) for p in nodes]
    for k in range(count):
        i = k * step
        watch = asyncio.ensure_future(closed(clients[i]))
        t = time.perf_counter()
        await loop.run_in_executor(None, api_a.call, "disconnect",
                                   {"user": "u%d" % i, "reason": "bench"})
        codes.append(await asyncio.wait_for(watch, 30))
        times.append(time.perf_counter() - t)
    cpu = [(cpu_s(p.pid) - c) / count for p, c in zip(nodes, cpu0)]
    assert all(c == 4500 for c in codes), codes
    return times, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--disconnects", type=int, default=20)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    redis = suite.RedisServer(suite.port_for(40) + 5)
    tmp = tempfile.TemporaryDirectory()
    pa, pb = suite.port_for(41), suite.port_for(42)
    nodes = [start_node(pa, redis.url, tmp.name + "/a"), start_node(pb, redis.url, tmp.name + "/b")]
    try:
        api = Api(pa)
        for i in range(100):
            api.call("publish", {"channel": "log", "data": "message %d" % i})
        report = {
            "requests": a.requests,
            # The baseline: what publishing through the server API costs.
            "publish (baseline)": latency(api, "publish", {"channel": "other", "data": "x"}, a.requests),
            "disconnect (no connection)": latency(api, "disconnect", {"user": "nobody"}, a.requests),
            "presence": latency(api, "presence", {"channel": "room"}, a.requests),
            "history newest 50": latency(api, "history",
                                         {"channel": "log", "limit": 50, "reverse": True}, a.requests),
        }

        async def clients_part():
            t = time.perf_counter()
            clients = await open_clients(pb, a.clients)
            report["clients"] = len(clients)
            report["open_s"] = round(time.perf_counter() - t, 1)
            times, cpu = await disconnects(api, nodes, clients, a.disconnects)
            report["disconnect until closed"] = percentiles(times)
            report["cpu_ms_per_disconnect"] = {"node A": round(cpu[0] * 1000, 2),
                                               "node B": round(cpu[1] * 1000, 2)}
            for ws in clients:
                ws.transport.abort()

        asyncio.run(clients_part())
        print(json.dumps(report, indent=2))
    finally:
        for p in nodes:
            p.terminate()
            p.wait()
        redis.stop()


if __name__ == "__main__":
    main()
