#!/usr/bin/env python3
"""Soak: thousands of connections with churn, on SSE, long-poll and
WebSocket, while a publisher publishes steadily; the server's RSS and open
file descriptors are sampled every --sample-s seconds. Each client session
subscribes to one of --channels channels, reads a few messages (checking
their offsets rise by one), closes, and comes back as a new session that
resumes with its cursor. Ends by itself after --duration-s; then waits for
the server's connection count to fall and samples once more.

Usage: soak.py COMET_BINARY [--clients N] [--duration-s S] [--rate R]
                            [--sample-s S] [-- comet run flags...]
Standard library only. Runs the trivial bench guest. Prints one line per
sample and a summary; exits 1 when a client saw a gap, a duplicate or an
error, so a run can fail.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import sys
import time
import urllib.parse
import urllib.request

from cometproc import ROOT, Comet

PORT = 18590
TOKEN = "soak"


class Totals:
    def __init__(self):
        self.sessions = 0
        self.messages = 0
        self.errors = 0
        self.gaps = 0
        self.dups = 0
        self.resets = 0
        self.last_error = ""


class Client:
    """What one client keeps across its sessions: its cursor and the last
    number seen, updated together as each message is handled, so a session
    cut in the middle resumes exactly after what it counted."""

    def __init__(self, channel):
        self.channel = channel
        self.cursor = None
        self.last = None


def check(totals, client, msg, cursor):
    """The publisher numbers each channel's messages: across a client's
    sessions the numbers rise by one (no gap, no duplicate)."""
    seq = int(msg["data"])
    if client.last is not None and seq > client.last + 1:
        totals.gaps += 1
    elif client.last is not None and seq <= client.last:
        totals.dups += 1
    client.last = seq
    if cursor:
        client.cursor = cursor
    totals.messages += 1


def reset(totals, client, cursor):
    totals.resets += 1
    client.last = None
    if cursor:
        client.cursor = cursor


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head


async def sse_session(client, want, totals):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    try:
        cursor = client.cursor
        q = "channel=%s" % client.channel + ("&since=%s" % urllib.parse.quote(cursor) if cursor else "")
        writer.write(b"GET /comet/sse?%s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n" % q.encode())
        status, _ = await read_head(reader)
        if status != 200:
            raise RuntimeError("sse status %d" % status)
        got = 0
        event, data, event_id = "", "", None
        while got < want:
            line = (await reader.readline()).decode()
            if not line:
                raise RuntimeError("sse closed")
            line = line.rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line == "" and data:
                # Chunked transfer: size lines are skipped by the json guard.
                try:
                    msg = json.loads(data)
                except ValueError:
                    msg = None
                if event == "reset":
                    reset(totals, client, event_id)
                elif event == "subscribed":
                    client.cursor = event_id or client.cursor
                elif isinstance(msg, dict) and msg.get("type") == "message":
                    check(totals, client, msg, event_id)
                    got += 1
                event, data, event_id = "", "", None
    finally:
        writer.close()


async def poll_session(client, want, totals):
    got = 0
    while got < want:
        q = {"channel": client.channel, "timeout": "10000"}
        if client.cursor:
            q["since"] = client.cursor
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        try:
            writer.write(b"GET /comet/poll?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                         % urllib.parse.urlencode(q).encode())
            status, head = await read_head(reader)
            body = await reader.read()
        finally:
            writer.close()
        if status != 200:
            raise RuntimeError("poll status %d" % status)
        if b"chunked" in head.lower():
            raw, body = body, b""
            while raw:
                size, _, rest = raw.partition(b"\r\n")
                n = int(size, 16)
                if n == 0:
                    break
                body += rest[:n]
                raw = rest[n + 2:]
        doc = json.loads(body)
        for _ in doc.get("resets", []):
            reset(totals, client, None)
        for msg in doc.get("messages", []):
            check(totals, client, msg, None)
            got += 1
        client.cursor = doc.get("cursor", client.cursor)


def ws_frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_read(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def ws_session(client, want, totals):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    try:
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET /comet/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: %s\r\n\r\n" % key)
        status, _ = await read_head(reader)
        if status != 101:
            raise RuntimeError("ws status %d" % status)
        op = {"op": "subscribe", "channel": client.channel, "id": 1}
        if client.cursor:
            op["since"] = client.cursor
        writer.write(ws_frame(json.dumps(op)))
        got = 0
        while got < want:
            opcode, data = await ws_read(reader)
            if opcode == 0x8:
                raise RuntimeError("ws closed: %r" % data[2:])
            if opcode != 0x1:
                continue
            msg = json.loads(data)
            kind = msg.get("type")
            if kind == "reset":
                reset(totals, client, msg.get("cursor"))
            elif kind == "subscribed":
                client.cursor = client.cursor or msg.get("cursor")
            elif kind == "error":
                raise RuntimeError("ws error %s" % msg.get("error"))
            elif kind == "message":
                check(totals, client, msg, msg.get("cursor"))
                got += 1
        writer.write(b"\x88\x82" + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
    finally:
        writer.close()


async def client(i, args, totals, stop):
    """One client: sessions on its transport until the run ends."""
    transport = (sse_session, poll_session, ws_session)[i % 3]
    state = Client("soak%d" % (i % args.channels))
    await asyncio.sleep(random.random() * 5)
    while time.time() < stop:
        try:
            want = random.randint(1, 5)
            await asyncio.wait_for(transport(state, want, totals), 60)
            totals.sessions += 1
        except Exception as e:  # noqa: BLE001 - counted and shown, the run goes on
            if time.time() >= stop:
                break
            totals.errors += 1
            totals.last_error = "%s: %s" % (transport.__name__, e)
            await asyncio.sleep(1)


async def publisher(args, stop):
    """Publishes "0", "1", ... to each channel in turn; a refused publish is
    retried with the same number, so the numbers have no holes."""
    loop = asyncio.get_running_loop()
    seq = [0] * args.channels
    i = 0
    while time.time() < stop:
        c = i % args.channels

        def post():
            req = urllib.request.Request(
                "http://127.0.0.1:%d/comet/publish/soak%d" % (PORT, c),
                data=str(seq[c]).encode(), headers={"Authorization": "Bearer " + TOKEN,
                                                    "Content-Type": "text/plain"})
            urllib.request.urlopen(req, timeout=10).read()

        try:
            await loop.run_in_executor(None, post)
            seq[c] += 1
            i += 1
        except Exception:  # noqa: BLE001 - retried with the same number
            pass
        await asyncio.sleep(1 / args.rate)


async def sampler(comet, args, totals, stop, t0):
    while time.time() < stop:
        rss, fds = comet.rss_kib(), comet.fds()
        print("t=%5.0fs rss=%7.1f MiB fds=%6d sessions=%8d messages=%9d errors=%d gaps=%d dups=%d resets=%d"
              % (time.time() - t0, rss / 1024, fds, totals.sessions, totals.messages,
                 totals.errors, totals.gaps, totals.dups, totals.resets), flush=True)
        await asyncio.sleep(args.sample_s)


async def run(comet, args):
    totals = Totals()
    t0 = time.time()
    stop = t0 + args.duration_s
    tasks = [asyncio.create_task(client(i, args, totals, stop)) for i in range(args.clients)]
    tasks.append(asyncio.create_task(publisher(args, stop)))
    tasks.append(asyncio.create_task(sampler(comet, args, totals, stop, t0)))
    await asyncio.wait(tasks, timeout=args.duration_s + 1)
    # Sessions still waiting for a message when publishing stopped end here.
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--rate", type=float, default=200, help="publishes per second")
    parser.add_argument("--sample-s", type=float, default=10)
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(flags) - (1 if flags else 0)])
    args.flags = flags
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # Every client comes from 127.0.0.1: lift the per-address bound, which
    # would otherwise (rightly) refuse past 2,048 connections.
    run_args = [os.path.join(ROOT, "bench", "guest", "trivial"), "--no-admin",
                "--publish-token", TOKEN, "--max-connections-per-ip", "0"] + args.flags
    with Comet(args.binary, run_args, PORT) as comet:
        rss0, fds0 = comet.rss_kib(), comet.fds()
        print("start: rss=%.1f MiB fds=%d, %d clients (SSE, long-poll, WebSocket), %.0f s"
              % (rss0 / 1024, fds0, args.clients, args.duration_s), flush=True)
        totals = asyncio.run(run(comet, args))
        # Sockets close as the clients' tasks end; wait for the fds to settle.
        end = time.time() + 30
        while time.time() < end and comet.fds() > fds0 + 5:
            time.sleep(0.5)
        rss1, fds1 = comet.rss_kib(), comet.fds()
        print("end: rss=%.1f MiB (start %.1f) fds=%d (start %d); sessions=%d messages=%d "
              "errors=%d gaps=%d dups=%d resets=%d%s"
              % (rss1 / 1024, rss0 / 1024, fds1, fds0, totals.sessions, totals.messages,
                 totals.errors, totals.gaps, totals.dups, totals.resets,
                 "; last error: " + totals.last_error if totals.last_error else ""))
        ok = (comet.alive() and totals.gaps == 0 and totals.dups == 0
              and totals.errors == 0 and totals.messages > 0)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
