"""A throw-away redis-server of one's own on 127.0.0.1, for the benchmarks (``bench/``) and the chaos test
(``echoflow/chaos``): its queues, pub/sub and stream hold only their traffic, and it can be crashed and restarted
without touching the machine's Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """``port``: a free one when not given (or 0). ``persistent``: an append-only file fsynced on every write, as
    the production Redis of docker-compose.yml keeps its stream and queues across a restart (the chaos test restarts
    it); otherwise nothing is kept."""

    def __init__(self, workdir: Path, *, port: int | None = None, persistent: bool = False) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; this runs a private one (apt-get install redis-server)")
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability,
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"the private redis-server on port {self.port} did not start")

    def stop(self, *, crash: bool = False) -> None:
        """Shut it down (SIGTERM, then SIGKILL after 10 s), or with ``crash`` kill it at once, as a failing host
        would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if crash:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
