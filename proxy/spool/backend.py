"""The interface the relay (`service.Spool`) and the drainers (`drain.Drainer`) use of a spool
store, whichever holds the data: SQLite (`store.SpoolStore`, the embedded default) or Redis
(`redisstore.RedisSpoolStore`, a fleet), or Redis with a local SQLite fallback
(`fallback.FallbackStore`). One test suite runs against each (tests/fleet/test_spool_backends.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .entry import Refusal, SpoolEntry
from .store import Snapshot


class SpoolBackend(Protocol):
    # What the store holds now, as this process last saw it (read on every request: no I/O).
    @property
    def totals(self) -> tuple[int, int, int]:
        """Live bytes, dead bytes, dead entries."""
        ...

    @property
    def lanes(self) -> dict[tuple[str, str], int]:
        """(region, endpoint) -> waiting entries."""
        ...

    @property
    def commits(self) -> int:
        """Writes made durable (the benchmark reads it)."""
        ...

    async def open(self) -> Snapshot: ...

    async def close(self) -> None: ...

    async def add(self, entry: SpoolEntry) -> int:
        """Store `entry`; returns only once it is durable. SpoolError when it is not."""
        ...

    async def delete(self, entry: SpoolEntry) -> None:
        """The upstream accepted `entry`: remove it."""
        ...

    async def bury(self, entry: SpoolEntry, refusal: Refusal) -> None:
        """Move `entry` to the dead letters, with the upstream's refusal."""
        ...

    async def mark_in_flight(self, ids: Sequence[int], in_flight: bool) -> None: ...

    async def batch(self, region: str, limit: int) -> list[SpoolEntry]:
        """What to send next for `region`: per ordered lane in the order accepted."""
        ...

    async def snapshot(self) -> Snapshot: ...

    async def claim_interrupted(self) -> int:
        """Entries a stopped drainer left in flight (possible duplicates), now ours to send."""
        ...

    def take_drain_role(self) -> bool:
        """Whether this process drains (SQLite: the one holding the file's lock)."""
        ...

    def release_drain_role(self) -> None: ...
