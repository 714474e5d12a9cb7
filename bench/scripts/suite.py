#!/usr/bin/env python3
"""The peer comparison: runs every scenario against every server in one
session, writes bench/results/*.json, prints the table and regenerates the
"Peer comparison" section of BENCHMARKS.md (with the plot).

Run it through bench/run-all.sh, which installs what is missing and builds
first. Usage: suite.py [--smoke] [--quick] [--only SERVER,...] [--scenarios a,b,...]
[--report-only]

Scenario f compares fan-out over WebSocket and SSE at one load; with
COMET_BASE=/path/to/an/older/comet it also runs that build ("comet-base"),
for before/after ratios from one session.

Scenario g is scale-out on Redis (a redis-server started for it): fan-out
with the Redis broker against the memory broker and against Nchan with and
without its Redis backend (Redis's own CPU counted separately); publishes
per second through one comet node and through two; 50,000 idle WebSocket
connections held by three comet processes sharing one port (--reuse-port)
and one Redis.
"""

import argparse
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
TARGET = ROOT / "target" / "release"
PEERS = ROOT / "bench" / "peers"
TOKEN = "bench-token"
SERVERS = ["comet", "bare", "nchan", "pushpin", "tornado"]
# Servers whose fan-out (b) is also run over SSE.
SSE_FANOUT = ["comet", "bare", "nchan"]
LABEL = {
    "comet": "comet (trivial guest, reusing instances)",
    "comet-fresh": "comet (trivial guest, a fresh instance per event)",
    "comet-redis": "comet, Redis broker (trivial guest)",
    "nchan-redis": "Nchan, Redis backend",
    "comet-base": "comet, COMET_BASE build (trivial guest)",
    "comet-tls": "comet over its own TLS (trivial guest)",
    "nchan-tls": "Nchan (nginx) over TLS",
    "bare": "bare tokio/hyper/tungstenite",
    "nchan": "Nchan (nginx)",
    "pushpin": "Pushpin",
    "tornado": "Tornado",
}
BASE_PORT = 18300
WASI_HELLO = ROOT / "bench" / "guest" / "target" / "wasm32-wasip2" / "release" / "wasi_hello.wasm"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_port(port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("nothing listens on port %d" % port)


def knows_flag(binary, flag):
    """Whether `binary run` takes `flag` (older comet builds may not)."""
    out = subprocess.run([binary, "run", "--help"], capture_output=True, text=True).stdout
    return flag in out


class Server:
    """One fresh server process (group), stopped on exit."""

    def __init__(self, name, port, workers=1):
        self.name = name
        self.port = port
        self.publish_port = port
        env = dict(os.environ)
        wait = [port]
        if name in ("comet", "comet-fresh", "comet-base", "comet-redis", "comet-tls"):
            env["RUST_LOG"] = "warn"
            binary = os.environ["COMET_BASE"] if name == "comet-base" else str(TARGET / "comet")
            cmd = [
                binary, "run", str(ROOT / "bench" / "guest" / "trivial"),
                "--listen", "127.0.0.1:%d" % port, "--publish-token", TOKEN,
                "--max-connections", "19800", "--no-admin",
            ]
            if knows_flag(binary, "--max-connections-per-ip"):
                # Builds before the per-address bound do not know the flag.
                cmd += ["--max-connections-per-ip", "0"]
            if name == "comet-redis":
                cmd += ["--broker", os.environ["BENCH_REDIS_URL"]]
            if name == "comet-tls":
                cmd += ["--tls-cert", os.environ["BENCH_TLS_CERT"],
                        "--tls-key", os.environ["BENCH_TLS_KEY"]]
            if name == "comet-fresh":
                # The trivial guest opts in to reuse; this turns it off.
                cmd += ["--events-per-instance", "1"]
        elif name in ("comet-hello", "comet-hello-fresh"):
            env["RUST_LOG"] = "warn"
            cmd = [
                str(TARGET / "comet"), "run", str(ROOT / "guest-examples" / "hello"),
                "--listen", "127.0.0.1:%d" % port, "--no-admin",
                # Set-up is measured against it too (bench/scripts/setup-cost.py).
                "--max-connections", "19800", "--max-connections-per-ip", "0",
            ]
            if name == "comet-hello-fresh":
                cmd += ["--events-per-instance", "1"]
        elif name == "bare":
            cmd = [str(TARGET / "bare-broadcast"), "127.0.0.1:%d" % port]
        elif name == "bare-hyper":
            cmd = [str(TARGET / "bare-hyper"), "127.0.0.1:%d" % port]
        elif name in ("nchan", "nchan-redis", "nchan-tls"):
            if name == "nchan-redis":
                env["NCHAN_REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
            if name == "nchan-tls":
                env["NCHAN_TLS_CERT"] = os.environ["BENCH_TLS_CERT"]
                env["NCHAN_TLS_KEY"] = os.environ["BENCH_TLS_KEY"]
            cmd = [str(PEERS / "nchan" / "run.sh"), str(port), str(workers)]
        elif name == "pushpin":
            self.publish_port = port + 1
            cmd = [str(PEERS / "pushpin" / "run.sh"), str(port), str(port + 1), str(port + 2)]
            wait = [port, port + 1, port + 2]
        elif name == "tornado":
            cmd = [str(PEERS / "tornado" / "run.sh"), str(port)]
        elif name == "wasmtime-serve":
            cmd = [
                os.environ.get("WASMTIME", "wasmtime"), "serve",
                # The Rust std links wasi:cli imports (as comet's guests do).
                "-S", "cli", "--addr",
                "127.0.0.1:%d" % port, str(WASI_HELLO),
            ]
        else:
            raise ValueError(name)
        self.log = open("/tmp/comet-bench-%s.log" % name, "w")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        for p in wait:
            wait_port(p, timeout=600 if name.startswith("comet") else 60)
        time.sleep(0.5)
        self.pid = self.proc.pid

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # nginx workers and Pushpin's services are in the same group.
        time.sleep(1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def loadgen(server, srv, name, transport, subscribers, rates=(), channels=1, publishers=1,
            duration=10, shard=None, source_addrs=1, hold=0, connect_rate=3000, extra_pid=None,
            extra=()):
    if source_addrs == 1 and subscribers >= 10000:
        # Exercise the spread over source addresses (IP_BIND_ADDRESS_NO_PORT)
        # and keep clear of the ephemeral port range of one address.
        source_addrs = 4
    out = RESULTS / ("%s.json" % name if shard is None else "%s.shard%d.json" % (name, shard[0]))
    cmd = [
        str(TARGET / "loadgen"), "--server", loadgen_server(server),
        "--addr", "127.0.0.1:%d" % srv.port,
        "--publish-addr", "127.0.0.1:%d" % srv.publish_port, "--token", TOKEN,
        "--server-pid", str(srv.pid), "--transport", transport,
        "--subscribers", str(subscribers), "--channels", str(channels),
        "--publishers", str(publishers), "--duration", str(duration),
        "--connect-rate", str(connect_rate), "--source-addrs", str(source_addrs),
        "--hold", str(hold), "--out", str(out),
    ]
    if rates:
        cmd += ["--rates", ",".join(str(r) for r in rates)]
    if shard is not None:
        cmd += ["--shard", "%d/%d" % shard]
    if extra_pid is not None:
        cmd += ["--extra-pid", str(extra_pid)]
    cmd += list(extra)
    log("$", " ".join(cmd))
    return cmd, out


def run_loadgen(*a, **kw):
    cmd, out = loadgen(*a, **kw)
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("loadgen failed (%d)" % r.returncode)
    rep = json.loads(out.read_text())
    log("  -> connected %d/%d, %.2f KiB/conn, steps: %s" % (
        rep["connected"], rep["subscribers"], rep["kib_per_connection"],
        ", ".join("%.0f pub/s %.0f del/s p99 %d us cpu %.2f us/del gaps %d" % (
            s["publish_rate"], s["delivery_rate"], s["latency_us"]["p99"],
            s["server_cpu_us_per_delivery"], s["gaps"]) for s in rep["steps"])))
    return rep


def checked_step(report, what):
    """The first step of a report whose subscribers all connected and that
    lost and repeated nothing; else a RuntimeError naming `what`."""
    if report["connected"] != report["subscribers"]:
        raise RuntimeError("%s: %d of %d subscribed"
                           % (what, report["connected"], report["subscribers"]))
    step = report["steps"][0]
    if step["gaps"] or step["dups"]:
        raise RuntimeError("%s: %d gaps, %d duplicates" % (what, step["gaps"], step["dups"]))
    return step


def ws_or_sse(server):
    return "ws"


def loadgen_server(server):
    """The name loadgen knows a server by."""
    return {"comet-base": "comet", "comet-redis": "comet", "comet-hello": "comet",
            "comet-fresh": "comet", "comet-hello-fresh": "comet",
            "nchan-redis": "nchan", "comet-tls": "comet", "nchan-tls": "nchan"}.get(server, server)


class RedisServer:
    """A redis-server for scenario g, without persistence."""

    def __init__(self, port):
        self.port = port
        self.url = "redis://127.0.0.1:%d" % port
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--maxclients", "60000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(port)
        os.environ["BENCH_REDIS_URL"] = self.url

    def flush(self):
        subprocess.run(["redis-cli", "-p", str(self.port), "FLUSHALL"], capture_output=True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def port_for(i):
    return BASE_PORT + 10 * (i % 50)


def alternated(servers, transports, rounds, one):
    """`one(server, transport, index)` for every transport and server, the
    servers alternated, ROUNDS times over (for before/after ratios from one
    session); returns {(server, transport): [results in round order]}."""
    figures = {}
    index = 0
    for _ in range(rounds):
        for transport in transports:
            for server in servers:
                figures.setdefault((server, transport), []).append(one(server, transport, index))
                index += 1
    return figures


# ---------------------------------------------------------------- scenarios

class Suite:
    def __init__(self, args):
        self.args = args
        self.n = 0
        self.summary = {"scenarios": {}}

    def fresh(self, name, **kw):
        self.n += 1
        return Server(name, port_for(self.n), **kw)

    def record(self, scenario, key, value):
        self.summary["scenarios"].setdefault(scenario, {})[key] = value
        (RESULTS / "summary.json").write_text(json.dumps(self.summary, indent=1) + "\n")

    def idle(self, servers):
        if "comet" in servers and "comet-fresh" not in servers:
            # Set-up with the trivial guest's events each in a fresh instance.
            servers = servers + ["comet-fresh"]
        sizes = [200] if self.args.smoke else ([1000] if self.args.quick else [10000, 18000])
        for server in servers:
            for transport in ["sse", "ws"]:
                for n in sizes:
                    name = "a-idle-%s-%s-%d" % (server, transport, n)
                    try:
                        with self.fresh(server) as srv:
                            rep = run_loadgen(server, srv, name, transport, n)
                        self.record("a", "%s/%s/%d" % (server, transport, n), {
                            "kib_per_connection": rep["kib_per_connection"],
                            "cpu_us_per_connection": rep.get("server_cpu_us_per_connection"),
                            "connected": rep["connected"], "subscribers": n,
                        })
                    except Exception as e:  # noqa: BLE001 - recorded in the table
                        log("  !! %s: %s" % (name, e))
                        self.record("a", "%s/%s/%d" % (server, transport, n), {"error": str(e)})
        if not (self.args.smoke or self.args.quick) and "nchan" in servers:
            self.idle_50k()

    def idle_50k(self):
        # 50,000 SSE connections to nginx with 3 workers (reuseport), from 3
        # load generator processes over 4 source addresses.
        n, shards = 50000, 3
        for transport in ["sse", "ws"]:
            name = "a-idle-nchan-%s-%d" % (transport, n)
            try:
                with self.fresh("nchan", workers=3) as srv:
                    procs = []
                    for i in range(shards):
                        cmd, out = loadgen("nchan", srv, name, transport, n, shard=(i, shards),
                                           source_addrs=4, hold=20, connect_rate=1500)
                        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL), out))
                    reps = []
                    for p, out in procs:
                        p.wait()
                        reps.append(json.loads(out.read_text()))
                connected = sum(r["connected"] for r in reps)
                grown = max(r["rss_connected_kib"] for r in reps) - min(r["rss_before_kib"] for r in reps)
                value = {"kib_per_connection": grown / max(connected, 1), "connected": connected,
                         "subscribers": n, "processes": reps[0]["server_processes"]}
                log("  -> nchan %s 50k: %s" % (transport, value))
                self.record("a", "nchan/%s/%d" % (transport, n), value)
            except Exception as e:  # noqa: BLE001
                log("  !! %s: %s" % (name, e))
                self.record("a", "nchan/%s/%d" % (transport, n), {"error": str(e)})

    def fanout(self, servers):
        if self.args.smoke:
            subs, rates = 200, [10]
        elif self.args.quick:
            subs, rates = 1000, [10, 50]
        else:
            subs, rates = 10000, [1, 2, 5, 10]
        # WebSocket for every server; SSE too for the servers issue 13's
        # fan-out goal names (comet, the bare baseline and Nchan), recorded
        # as "SERVER/sse".
        runs = [(server, "ws", server) for server in servers]
        runs += [(server, "sse", server + "/sse") for server in servers if server in SSE_FANOUT]
        for server, t, key in runs:
            name = "b-fanout-%s-%s" % (server, t)
            try:
                with self.fresh(server) as srv:
                    rep = run_loadgen(server, srv, name, t, subs, rates=rates,
                                      duration=5 if self.args.smoke else 10)
                self.record("b", key, {"transport": t, "report": name + ".json",
                                       "connected": rep["connected"], "steps": rep["steps"],
                                       "missing_at_end": rep["missing_at_end"]})
            except Exception as e:  # noqa: BLE001
                log("  !! %s: %s" % (name, e))
                self.record("b", key, {"error": str(e)})

    def fanout_transports(self, servers):
        """Fan-out to 10,000 subscribers of one channel at 50,000 deliveries/s,
        over WebSocket and over SSE (before/after comparisons)."""
        subs, rate = (1000, 50) if self.args.quick else (10000, 5)
        if os.environ.get("COMET_BASE") and "comet" in servers and "comet-base" not in servers:
            servers = ["comet-base"] + servers
        for server in servers:
            for t in ["ws", "sse"]:
                name = "f-fanout-%s-%s" % (server, t)
                try:
                    with self.fresh(server) as srv:
                        rep = run_loadgen(server, srv, name, t, subs, rates=[rate], duration=15)
                    self.record("f", "%s/%s" % (server, t), {
                        "report": name + ".json", "connected": rep["connected"],
                        "steps": rep["steps"], "missing_at_end": rep["missing_at_end"]})
                except Exception as e:  # noqa: BLE001
                    log("  !! %s: %s" % (name, e))
                    self.record("f", "%s/%s" % (server, t), {"error": str(e)})

    def redis(self, servers):
        """Scale-out on Redis (see the module docs)."""
        subs, rate = (1000, 50) if self.args.quick else (10000, 5)
        redis = RedisServer(BASE_PORT - 1)
        try:
            for server in ["comet", "comet-redis", "nchan", "nchan-redis"]:
                name = "g-fanout-%s-ws" % server
                redis.flush()
                try:
                    with self.fresh(server) as srv:
                        rep = run_loadgen(server, srv, name, "ws", subs, rates=[rate], duration=15,
                                          extra_pid=redis.proc.pid)
                    self.record("g", "fanout/%s" % server, {
                        "report": name + ".json", "connected": rep["connected"],
                        "steps": rep["steps"], "missing_at_end": rep["missing_at_end"]})
                except Exception as e:  # noqa: BLE001
                    log("  !! %s: %s" % (name, e))
                    self.record("g", "fanout/%s" % server, {"error": str(e)})
            self.publish_throughput(redis)
            if not self.args.quick:
                self.idle_reuse_port(redis)
        finally:
            redis.stop()

    def publish_throughput(self, redis):
        """wrk POSTs to the publish API of one comet node, then of two nodes
        at once (both on one Redis), 8 s each, 1,000 channels."""
        wrk = subprocess.run(["which", "wrk"], capture_output=True).returncode == 0
        if not wrk:
            self.record("g", "publish", {"error": "wrk is not installed"})
            return
        script = Path("/tmp/comet-bench-publish.lua")
        script.write_text(
            'local n = 0\n'
            'request = function()\n'
            '  n = n + 1\n'
            '  return wrk.format("POST", "/comet/publish/c" .. (n %% 1000), {["authorization"] = "Bearer %s", '
            '["content-type"] = "text/plain"}, "hello")\n'
            'end\n' % TOKEN)
        out = {}
        for nodes in [1, 2]:
            redis.flush()
            servers = [self.fresh("comet-redis") for _ in range(nodes)]
            try:
                procs = [subprocess.Popen(
                    ["wrk", "-t1", "-c16", "-d8s", "-s", str(script), "http://127.0.0.1:%d" % s.port],
                    stdout=subprocess.PIPE, text=True) for s in servers]
                rps = 0.0
                for p in procs:
                    text = p.communicate()[0]
                    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
                    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
                    if non2xx:
                        raise RuntimeError("%s publishes failed" % non2xx.group(1))
                    rps += float(m.group(1)) if m else 0.0
                out["%d-node" % nodes] = {"publishes_per_second": rps, "wrk": "wrk -t1 -c16 -d8s per node"}
                log("  -> %d node(s): %.0f publishes/s" % (nodes, rps))
            except Exception as e:  # noqa: BLE001
                log("  !! publish %d: %s" % (nodes, e))
                out["%d-node" % nodes] = {"error": str(e)}
            finally:
                for s in servers:
                    s.stop()
        self.record("g", "publish", out)

    def idle_reuse_port(self, redis):
        """50,000 idle WebSockets over three comet processes on one port."""
        n, procs_n = 50000, 3
        port = BASE_PORT + 495
        redis.flush()
        comet = [str(TARGET / "comet"), "run", str(ROOT / "bench" / "guest" / "trivial"),
                 "--listen", "127.0.0.1:%d" % port, "--publish-token", TOKEN, "--no-admin",
                 "--max-connections", "19800", "--reuse-port", "--broker", redis.url,
                 "--max-connections-per-ip", "0"]
        # One parent, so the load generator sums the three processes.
        line = " ".join(comet)
        parent = subprocess.Popen(
            ["bash", "-c", " & ".join([line] * procs_n) + " & wait"],
            env=dict(os.environ, RUST_LOG="warn"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_port(port, timeout=600)
            time.sleep(2)

            class Srv:
                pass
            srv = Srv()
            srv.port = srv.publish_port = port
            srv.pid = parent.pid
            name = "g-idle-comet-redis-ws-%d" % n
            shards = 3
            launched = []
            for i in range(shards):
                cmd, out = loadgen("comet-redis", srv, name, "ws", n, shard=(i, shards),
                                   source_addrs=4, hold=20, connect_rate=1500)
                launched.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL), out))
            reps = []
            for p, out in launched:
                p.wait()
                reps.append(json.loads(out.read_text()))
            connected = sum(r["connected"] for r in reps)
            grown = max(r["rss_connected_kib"] for r in reps) - min(r["rss_before_kib"] for r in reps)
            value = {"kib_per_connection": grown / max(connected, 1), "connected": connected,
                     "subscribers": n, "processes": reps[0]["server_processes"]}
            log("  -> comet x3 reuse-port 50k: %s" % value)
            self.record("g", "idle-50k", value)
        except Exception as e:  # noqa: BLE001
            log("  !! idle 50k: %s" % e)
            self.record("g", "idle-50k", {"error": str(e)})
        finally:
            os.killpg(parent.pid, signal.SIGTERM)
            parent.wait()

    def channels(self, servers):
        subs, channels = (1000, 100) if self.args.quick else (10000, 1000)
        for server in servers:
            t = ws_or_sse(server)
            out = {"transport": t}
            for label, publishers, rates in [("one", 1, [1000, 0]), ("several", 4, [0])]:
                name = "c-channels-%s-%s-%dpub" % (server, t, publishers)
                try:
                    with self.fresh(server) as srv:
                        rep = run_loadgen(server, srv, name, t, subs, rates=rates,
                                          channels=channels, publishers=publishers)
                    out[label] = {"publishers": publishers, "steps": rep["steps"],
                                  "connected": rep["connected"],
                                  "missing_at_end": rep["missing_at_end"]}
                except Exception as e:  # noqa: BLE001
                    log("  !! %s: %s" % (name, e))
                    out[label] = {"error": str(e)}
            self.record("c", server, out)

    def latency(self, servers):
        subs, channels, rate = (200, 10, 20) if self.args.smoke else (1000, 10, 100)
        runs = [(s, "sse") for s in servers]
        if "comet" in servers:
            runs += [("comet", "poll"), ("comet", "ws")]
        for server, t in runs:
            name = "d-latency-%s-%s" % (server, t)
            try:
                with self.fresh(server) as srv:
                    rep = run_loadgen(server, srv, name, t, subs, rates=[rate], channels=channels,
                                      duration=5 if self.args.smoke else 15)
                self.record("d", "%s/%s" % (server, t), {"steps": rep["steps"],
                                                         "connected": rep["connected"],
                                                         "missing_at_end": rep["missing_at_end"]})
            except Exception as e:  # noqa: BLE001
                log("  !! %s: %s" % (name, e))
                self.record("d", "%s/%s" % (server, t), {"error": str(e)})

    def http(self, servers):
        wrk = subprocess.run(["which", "wrk"], capture_output=True).returncode == 0
        if not wrk:
            self.record("e", "error", "wrk is not installed")
            return
        entries = [("comet-hello", "/hello?name=world"), ("comet-hello-fresh", "/hello?name=world"),
                   ("bare-hyper", "/")]
        if os.environ.get("WASMTIME") and WASI_HELLO.exists():
            entries.append(("wasmtime-serve", "/"))
        secs = 8
        for name, path in entries:
            try:
                with self.fresh(name) as srv:
                    url = "http://127.0.0.1:%d%s" % (srv.port, path)
                    subprocess.run(["wrk", "-t2", "-c64", "-d2s", url], capture_output=True)
                    cpu0 = cpu_seconds(srv.pid)
                    r = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % secs, url],
                                       capture_output=True, text=True)
                    cpu1 = cpu_seconds(srv.pid)
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
                value = {"requests_per_second": rps,
                         "server_cpu_us_per_request": (cpu1 - cpu0) * 1e6 / (rps * secs),
                         "url_path": path, "wrk": "wrk -t2 -c64 -d%ds" % secs}
                log("  -> %s: %s" % (name, value))
                self.record("e", name, value)
            except Exception as e:  # noqa: BLE001
                log("  !! %s: %s" % (name, e))
                self.record("e", name, {"error": str(e)})


def cpu_seconds(root):
    """utime + stime of a process tree, seconds (USER_HZ = 100)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            f = stat[stat.rfind(")") + 2:].split()
            parents[int(d)] = (int(f[1]), int(f[11]) + int(f[12]))
    tree, i = [root], 0
    while i < len(tree):
        tree += [p for p, (pp, _) in parents.items() if pp == tree[i]]
        i += 1
    return sum(parents[p][1] for p in tree if p in parents) / 100.0


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    return {
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
        "cores": os.cpu_count(),
        "memory": sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"),
        "kernel": platform.release(),
        "rustc": sh("rustc --version"),
        "nginx": sh("nginx -v 2>&1 | sed 's/.*nginx\\///'"),
        "nchan": sh("dpkg-query -W -f='${Version}' libnginx-mod-nchan"),
        "pushpin": sh("dpkg-query -W -f='${Version}' pushpin"),
        "tornado": sh("python3 -c 'import tornado; print(tornado.version)'"),
        "python": platform.python_version(),
        "wrk": sh("dpkg-query -W -f='${Version}' wrk"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": sh("cat /proc/loadavg"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="about 10 s, comet only, small numbers")
    ap.add_argument("--quick", action="store_true", help="small numbers, every server")
    ap.add_argument("--only", default=",".join(SERVERS))
    ap.add_argument("--scenarios", default="a,b,c,d,e")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    import report  # noqa: E402

    if args.report_only:
        report.main(ROOT)
        return 0
    suite = Suite(args)
    if args.smoke:
        return smoke(suite)
    servers = [s for s in args.only.split(",") if s]
    partial = set(servers) != set(SERVERS) or set(args.scenarios.split(",")) != set("abcde")
    summary_file = RESULTS / "summary.json"
    if partial and summary_file.exists():
        # A partial run updates the last full one.
        suite.summary = json.loads(summary_file.read_text())
    else:
        for old in list(RESULTS.glob("*.json")) + list(RESULTS.glob("*.png")):
            old.unlink()
    suite.summary["machine"] = machine()
    suite.summary["mode"] = "quick" if args.quick else "full"
    started = time.time()
    for s in args.scenarios.split(","):
        log("== scenario %s (%.0f s in)" % (s, time.time() - started))
        {"a": suite.idle, "b": suite.fanout, "c": suite.channels, "d": suite.latency,
         "e": suite.http, "f": suite.fanout_transports, "g": suite.redis}[s](servers)
    suite.summary["seconds"] = time.time() - started
    suite.record("meta", "done", True)
    report.main(ROOT)
    return 0


def smoke(suite):
    """A short run against comet only; fails when nothing is delivered or
    messages are lost. CI may run it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with suite.fresh("comet") as srv:
        cmd, out = loadgen("comet", srv, "smoke", "ws", 200, rates=[20], duration=5)
        cmd[cmd.index("--out") + 1] = "/tmp/comet-bench-smoke.json"
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rep = json.loads(Path("/tmp/comet-bench-smoke.json").read_text())
    step = rep["steps"][0]
    print(json.dumps(step, indent=1))
    ok = (rep["connected"] == 200 and step["deliveries"] > 0 and step["gaps"] == 0
          and step["dups"] == 0 and rep["missing_at_end"] == 0)
    print("smoke: %s" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
