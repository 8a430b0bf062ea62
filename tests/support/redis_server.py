"""A real `redis-server` (Debian's package) on loopback, on a free port, in a temp dir, AOF on.

`stop()` shuts it down cleanly (SHUTDOWN: the AOF is flushed), `kill()` SIGKILLs it (what the
last second of `appendfsync everysec` may lose), `start()` starts it again on the same port and
directory so the AOF is replayed: a restart as an operator or a crash would do it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.waits import eventually_blocking

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    def __init__(self, appendfsync: str = "everysec", maxmemory: str = "0",
                 replica_of: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-redis-"))
        self.port = _free_port()
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.replica_of = replica_of       # the port of a primary on loopback
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.dir), "--daemonize", "no", "--save", "",
                "--appendonly", "yes", "--appendfsync", self.appendfsync,
                "--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction",
                "--logfile", str(self.dir / "redis.log")]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        try:
            eventually_blocking(self._started, "redis-server to answer PING", timeout)
        except AssertionError as exc:
            raise RuntimeError(f"redis-server did not start: {self.log()[-2000:]}") from exc

    def _started(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.process.returncode}")
        return self._answers_ping()

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self, *args: str) -> bytes:
        """One raw command (RESP), its first reply chunk: for test setup (CONFIG SET ...)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"".join(parts))
            return conn.recv(65536)

    def stop(self) -> None:
        """A clean shutdown: SIGTERM makes redis-server flush the AOF and exit."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a cut-off network)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def _end(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
