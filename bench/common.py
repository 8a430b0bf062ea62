"""What every benchmark script needs: a free loopback port, and waiting for a server to answer.
Both are the tests' own helpers (tests/support/), so bench/ and tests/ wait and pick ports alike."""

from __future__ import annotations

import urllib.request

from tests.support.ports import free_port
from tests.support.waits import eventually_blocking

__all__ = ["free_port", "wait_for"]


def wait_for(url: str, timeout: float = 20.0) -> None:
    """Poll `url` until it answers (any status but a refused connection) or `timeout` passes."""
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False

    eventually_blocking(answers, what=f"{url} to come up", timeout=timeout)
