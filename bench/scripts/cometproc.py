"""A comet process for the benchmark scripts: started with its output
discarded, waited for until its port accepts, measured from /proc, and
stopped when the `with` block ends. Standard library only."""

import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Comet:
    """`comet run ARGS --listen 127.0.0.1:PORT` (RUST_LOG=warn)."""

    def __init__(self, binary, args, port, start_timeout_s=300):
        self.port = port
        self.proc = subprocess.Popen(
            [binary, "run"] + list(args) + ["--listen", "127.0.0.1:%d" % port],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"))
        deadline = time.time() + start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("comet exited with %s at start" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError("comet did not listen on %d" % port)
                time.sleep(0.2)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        for line in open("/proc/%d/status" % self.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
