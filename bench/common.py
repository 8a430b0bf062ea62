"""What every benchmark script needs: a free loopback port, waiting for a server to answer, and
an nginx.conf around its servers.
Both are the tests' own helpers (tests/support/), so bench/ and tests/ wait and pick ports alike."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waits import eventually_blocking

__all__ = ["free_port", "nginx_conf", "running", "wait_for"]

ROOT = Path(__file__).resolve().parents[1]


def wait_for(url: str, timeout: float = 20.0) -> None:
    """Poll `url` until it answers (any status but a refused connection) or `timeout` passes."""
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False

    eventually_blocking(answers, what=f"{url} to come up", timeout=timeout)


@contextmanager
def running(command: list[str], probe: str, log: Path | None = None,
            cwd: Path = ROOT) -> Iterator[int]:
    """Run `command` (from the repository root, or `cwd`) until the block ends, once `probe`
    answers; its pid. Its stderr goes to `log`, or nowhere."""
    with open(log or "/dev/null", "w") as stderr:
        proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for(probe)
            yield proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def nginx_conf(workdir: Path, http: str, workers: int = 1, error_log: str = "nginx.log") -> str:
    """A whole nginx.conf for a benchmark run in `workdir`: `http` is its http block's body."""
    return f"""
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/{error_log} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;{http}
}}
"""
