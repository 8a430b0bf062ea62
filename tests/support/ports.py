"""Free loopback ports, for tests/ and bench/ alike."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free on both 127.0.0.1 and ::1 (nginx listens on both)."""
    while True:
        with socket.socket() as v4:
            v4.bind(("127.0.0.1", 0))
            port = int(v4.getsockname()[1])
            with socket.socket(socket.AF_INET6) as v6:
                try:
                    v6.bind(("::1", port))
                except OSError:
                    continue
                return port
