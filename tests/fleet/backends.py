"""Both spool backends, for the one suite that runs against each (test_spool_backends.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from redis import Redis

from tests.support.redis_server import RedisServer

PREFIX = "mixpanel-proxy:spool"


def spool_extra(backend: str, tmp_path: Path, redis: RedisServer | None,
                **overrides: Any) -> dict[str, Any]:
    spool = {"enabled": True, "path": str(tmp_path / "spool.db"), "backoff_min": 0.05,
             "backoff_max": 0.2, "poll_interval": 0.1, "backend": backend, **overrides}
    extra: dict[str, Any] = {"spool": spool}
    if backend == "redis":
        assert redis is not None
        spool.setdefault("claim_after", 1.0)
        spool.setdefault("partitions", 4)
        extra["redis"] = {"url": redis.url, "retry_interval": 0.2}
    return extra


class Held:
    """What a backend holds now, read from outside the relay (as an operator would)."""

    def __init__(self, backend: str, tmp_path: Path, redis: RedisServer | None) -> None:
        self.backend = backend
        self.path = tmp_path / "spool.db"
        self.redis = redis

    def _client(self) -> Redis:
        assert self.redis is not None
        return Redis(port=self.redis.port, host="127.0.0.1")

    def waiting(self) -> list[bytes]:
        """Bodies waiting to be sent, in the order accepted per stream."""
        if self.backend == "sqlite":
            return [bytes(row[0]) for row in _sqlite(self.path, "SELECT body FROM entries "
                                                                "ORDER BY id")]
        with self._client() as client:
            bodies = []
            for key in sorted(client.scan_iter(f"{PREFIX}:*:[uo]*")):
                if b":lease:" in key:
                    continue
                bodies += [fields[b"body"] for _, fields in client.xrange(key)]
            return bodies

    def dead(self) -> list[dict[str, Any]]:
        if self.backend == "sqlite":
            rows = _sqlite(self.path, "SELECT body, status, reason, answer FROM dead ORDER BY id")
            return [{"body": bytes(body), "status": status, "reason": reason,
                     "answer": bytes(answer)} for body, status, reason, answer in rows]
        with self._client() as client:
            return [{"body": fields[b"body"], "status": int(fields[b"status"]),
                     "reason": fields[b"reason"].decode(), "answer": fields[b"answer"]}
                    for _, fields in client.xrange(f"{PREFIX}:dead")]


def _sqlite(path: Path, query: str) -> list[Any]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()
