"""`[spool] backend = "redis"` as the relay uses it: the Redis spool, and what happens when Redis
does not answer.

Never a false success: a write Redis did not acknowledge goes to the local SQLite spool at
`[spool] path` when `fallback = "sqlite"`, else fails (the client gets 503 + Retry-After). Once
Redis answers again, one process per file moves the local entries into Redis, oldest first, and
new writes keep going to the local file until it is empty, so an ordered lane (a project's
profile updates) never has a newer entry in Redis overtaking an older one still on disk.
The drainers read Redis only: the local file is a waiting room, never sent upstream directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from ..config import Config
from ..ops.fleetmetrics import FleetMetrics
from ..ops.metrics import Metrics
from ..upstream.redislink import RedisLink
from .entry import Refusal, SpoolEntry
from .redisstore import RedisSpoolStore
from .store import Snapshot, SpoolError, SpoolStore

log = logging.getLogger("mixpanel_proxy.spool")
_MOVE_BATCH = 64


class FallbackStore:
    def __init__(self, redis: RedisSpoolStore, local: SpoolStore | None, link: RedisLink,
                 fleet: FleetMetrics, regions: Iterable[str]) -> None:
        self.redis = redis
        self.local = local
        self._link = link
        self._fleet = fleet
        self._regions = tuple(regions)
        self._mover: asyncio.Task[None] | None = None
        self.where = "redis"          # where the latest write went: redis, sqlite or none
        fleet.spool_goes_to("redis")

    @property
    def totals(self) -> tuple[int, int, int]:
        live, dead, entries = self.redis.totals
        return live + self._local_live(), dead, entries

    @property
    def lanes(self) -> dict[tuple[str, str], int]:
        if self.local is None or not self.local.lanes:
            return self.redis.lanes
        merged = dict(self.redis.lanes)
        for lane, count in self.local.lanes.items():
            merged[lane] = merged.get(lane, 0) + count
        return merged

    @property
    def commits(self) -> int:
        return self.redis.commits + (self.local.commits if self.local is not None else 0)

    def _local_live(self) -> int:
        return self.local.totals[0] if self.local is not None else 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> Snapshot:
        if self.local is not None:
            await self.local.open()
        snapshot = await self.redis.open()
        if self.local is not None:
            self._mover = asyncio.get_running_loop().create_task(self._move_forever())
        return snapshot

    async def close(self) -> None:
        if self._mover is not None:
            self._mover.cancel()
            await asyncio.gather(self._mover, return_exceptions=True)
            self._mover = None
        await self.redis.close()
        if self.local is not None:
            await self.local.close()
            self.local.release_drain_role()

    # -- writes ------------------------------------------------------------------------------
    async def add(self, entry: SpoolEntry) -> int:
        if self._local_live() == 0 and self._link.usable:
            try:
                entry_id = await self.redis.add(entry)
            except SpoolError as exc:
                return await self._add_locally(entry, str(exc))
            self._goes_to("redis")
            return entry_id
        return await self._add_locally(entry, "redis is unreachable" if not self._link.usable
                                       else "older entries wait in the local fallback")

    async def _add_locally(self, entry: SpoolEntry, why: str) -> int:
        if self.local is None:
            self._goes_to("none")
            raise SpoolError(f"{why}; no local fallback ([spool] fallback = \"none\")")
        entry_id = await self.local.add(entry)
        self._goes_to("sqlite")
        return entry_id

    def _goes_to(self, where: str) -> None:
        if where != self.where:
            log.warning("spool: accepted requests now go to %s", where)
            self.where = where
            self._fleet.spool_goes_to(where)

    async def delete(self, entry: SpoolEntry) -> None:
        await self.redis.delete(entry)

    async def bury(self, entry: SpoolEntry, refusal: Refusal) -> None:
        await self.redis.bury(entry, refusal)

    async def mark_in_flight(self, ids: Sequence[int], in_flight: bool) -> None:
        await self.redis.mark_in_flight(ids, in_flight)

    async def batch(self, region: str, limit: int) -> list[SpoolEntry]:
        return await self.redis.batch(region, limit)

    async def snapshot(self) -> Snapshot:
        if self.local is not None:
            await self.local.snapshot()
        return await self.redis.snapshot()

    async def claim_interrupted(self) -> int:
        return await self.redis.claim_interrupted()

    def take_drain_role(self) -> bool:
        return self.redis.take_drain_role()

    def release_drain_role(self) -> None:
        self.redis.release_drain_role()

    def readiness(self) -> tuple[bool, str]:
        """/readyz: where accepted requests go now. A relay storing into its local fallback is
        still ready (nothing is lost); one answering 503 for want of Redis is not."""
        if self._link.usable and self._link.up:
            waiting = self._local_live()
            return True, ("redis" + (f"; {waiting} bytes of the local fallback moving to redis"
                                     if waiting else ""))
        if self.local is not None:
            return True, "redis unreachable: storing into the local SQLite fallback"
        return False, "redis unreachable: answering 503 (no local fallback)"

    # -- back to Redis -----------------------------------------------------------------------
    async def _move_forever(self) -> None:
        while True:
            await asyncio.sleep(self._link.config.retry_interval)
            with contextlib.suppress(SpoolError):
                await self.move_to_redis()

    async def move_to_redis(self) -> int:
        """Move the local fallback's entries into Redis, oldest first; how many moved."""
        local = self.local
        if local is None or not self._link.usable:
            return 0
        if self._local_live() == 0:
            await local.snapshot()            # another worker may have written to the file
            if self._local_live() == 0:
                return 0
        if not local.take_drain_role():
            return 0                         # another process of this relay moves them
        moved = 0
        for region in self._regions:
            while entries := await local.batch(region, _MOVE_BATCH):
                for entry in entries:
                    # In Redis before it leaves the file: a crash between the two sends it
                    # twice (counted as a redelivery risk), never zero times.
                    await self.redis.add(entry)
                    await local.delete(entry)
                    self._fleet.spool_moved.inc()
                    moved += 1
        if moved:
            log.warning("spool: %d requests moved from the local fallback to redis", moved)
            self._goes_to("redis")
        return moved


def build(config: Config, link: RedisLink, fleet: FleetMetrics, metrics: Metrics
          ) -> FallbackStore:
    """The store of `[spool] backend = "redis"` (no I/O here: `open` connects)."""
    def claimed(count: int, from_another: bool) -> None:
        """Entries that may have reached the upstream once already (redeliveries); those
        taken over from another relay process are counted apart as well."""
        metrics.spool_redeliveries.inc(count)
        if from_another:
            fleet.spool_claimed.inc(count)

    redis = RedisSpoolStore(config.spool, config.redis, link, config.regions, claimed)
    local = (SpoolStore(config.spool.path, group_commit=config.spool.group_commit)
             if config.spool.fallback == "sqlite" else None)
    return FallbackStore(redis, local, link, fleet, config.regions)
