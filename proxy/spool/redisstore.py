"""The spool on Redis Streams (`[spool] backend = "redis"`): one durable queue for a fleet.

Keys (under `[redis] key_prefix`, `P` below):
- `P:spool:{region}:u`: /track and /import of a region: any relay drains it, in parallel (a
  consumer group; each relay process is a consumer).
- `P:spool:{region}:o:{n}`: /engage, /groups and /record, hashed by (endpoint, lane) onto
  `[spool] partitions` streams. One relay at a time drains a partition: it holds the lease key
  `P:spool:lease:{region}:{n}` (renewed while it lives, lapsing `claim_after` seconds after it
  died), and reads its pending entries before new ones, so a lane is sent in the order accepted.
- `P:spool:dead`: dead letters; `P:spool:counts`: waiting entries per lane and byte totals.

An entry is written by one script (XADD, then the counters): the relay answers only after Redis
acknowledged it (and, with `[redis] wait_replicas`, after WAIT saw it on that many replicas).
It is removed (XACK + XDEL) only after the upstream accepted it, or moved to dead letter (XADD
to the dead stream first, so a refused write leaves it where it was). A relay that dies leaves
its entries pending in the group: another relay claims them after `claim_after` seconds
(XAUTOCLAIM for the parallel streams, XCLAIM under the lease for the ordered ones) and counts
them as redeliveries: they may have reached the upstream once already.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from ..config import RedisConfig, SpoolConfig
from ..upstream.redislink import REDIS_DOWN, RedisLink
from .entry import Refusal, SpoolEntry
from .redisformat import (
    ADD,
    BURY,
    DELETE,
    GROUP,
    LEASE,
    RELEASE,
    Keys,
    decode,
    encode,
    entry_id,
    lane_field,
    snapshot_of,
    stream_id,
)
from .store import Snapshot, SpoolError

log = logging.getLogger("mixpanel_proxy.spool")
class RedisSpoolStore:
    """The SpoolBackend on Redis (see proxy/spool/backend.py for the interface)."""

    def __init__(self, config: SpoolConfig, redis: RedisConfig, link: RedisLink,
                 regions: Iterable[str], on_claimed: Callable[[int, bool], None]) -> None:
        self._config = config
        self._redis_config = redis
        self._link = link
        self._client = link.client
        self._keys = Keys(link.prefix, config.partitions)
        self._regions = tuple(regions)
        self._on_claimed = on_claimed
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._add = self._client.register_script(ADD)
        self._delete = self._client.register_script(DELETE)
        self._bury = self._client.register_script(BURY)
        self._lease = self._client.register_script(LEASE)
        self._release = self._client.register_script(RELEASE)
        self._held: dict[str, list[int]] = {}          # region -> partitions leased
        self._leased_at: dict[str, float] = {}         # region -> when leases were last taken
        self._claim_at: dict[str, float] = {}          # region -> next XAUTOCLAIM (monotonic)
        # Sent and accepted upstream, but Redis did not confirm the removal (it went down):
        # when such an entry comes back in a batch, it is counted as a redelivery.
        self._unconfirmed: set[int] = set()
        self._renewer: asyncio.Task[None] | None = None
        self.commits = 0
        self.totals = (0, 0, 0)
        self.lanes: dict[tuple[str, str], int] = {}
        self._last = Snapshot()

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> Snapshot:
        """Create the streams' consumer groups; Redis down is not fatal (the relay falls back
        or answers 503 until it is back)."""
        try:
            await self.ensure_groups()
        except REDIS_DOWN as exc:
            self._link.failed(exc)
            log.warning("spool: redis unreachable at start: %s", exc)
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        return await self.snapshot()

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        leases = [self._keys.lease(region, n) for region, held in self._held.items()
                  for n in held]
        if leases:   # handed over at once, not after claim_after
            with contextlib.suppress(*REDIS_DOWN):
                await self._release(keys=leases, args=[self.consumer])
        self._held.clear()

    async def ensure_groups(self) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for region in self._regions:
                for key in self._keys.streams(region):
                    pipe.xgroup_create(key, GROUP, id="0", mkstream=True)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, BaseException) and "BUSYGROUP" not in str(result):
                raise result

    # -- writes ------------------------------------------------------------------------------
    async def add(self, entry: SpoolEntry) -> int:
        """Store `entry`; returns once Redis acknowledged it (and WAIT saw it on the replicas)."""
        keys = [self._keys.of(entry), self._keys.counts]
        args = [lane_field(entry), entry.size, *encode(entry)]
        wait = self._redis_config.wait_replicas
        try:
            if not wait:           # one round trip (EVALSHA; the script is loaded on NOSCRIPT)
                results = [await self._add(keys=keys, args=args)]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    # One connection: WAIT counts the replicas that have this very write.
                    await self._add(keys=keys, args=args, client=pipe)
                    pipe.wait(wait, int(self._redis_config.wait_timeout * 1000))
                    results = await pipe.execute()
        except REDIS_DOWN as exc:
            self._link.failed(exc)
            raise SpoolError(f"redis: write failed ({_short(exc)})") from exc
        self._link.succeeded()
        new_id, lane_count, live = results[0]
        if wait and int(results[1]) < wait:
            # Stored on the primary (it will be delivered), but not as durable as asked: the
            # client is not told success, and its retry is deduplicated by Mixpanel.
            raise SpoolError(f"redis: {results[1]} of {wait} replicas acknowledged the write "
                             "in time")
        self.commits += 1
        self.lanes = {**self.lanes, (entry.region, entry.endpoint): int(lane_count)}
        self.totals = (int(live), self.totals[1], self.totals[2])
        return entry_id(new_id)

    async def delete(self, entry: SpoolEntry) -> None:
        await self._confirm(self._delete, entry, [self._keys.of(entry), self._keys.counts],
                        [stream_id(entry.id), lane_field(entry), entry.size])
        self._count(entry)

    async def bury(self, entry: SpoolEntry, refusal: Refusal) -> None:
        dead = [*encode(entry), "failed_at", repr(time.time()), "reason", refusal.reason,
                "status", refusal.status, "answer", refusal.kept_answer(),
                "answer_headers", json.dumps(refusal.answer_headers)]
        keys = [self._keys.of(entry), self._keys.counts, self._keys.dead]
        await self._confirm(self._bury, entry, keys,
                            [stream_id(entry.id), lane_field(entry), entry.size, *dead])
        self._count(entry)

    def _count(self, entry: SpoolEntry) -> None:
        lane = (entry.region, entry.endpoint)
        self.lanes = {**self.lanes, lane: max(0, self.lanes.get(lane, 0) - 1)}

    async def mark_in_flight(self, ids: Sequence[int], in_flight: bool) -> None:
        """Nothing to do: the consumer group's pending list is the in-flight mark."""

    async def claim_interrupted(self) -> int:
        """Claims happen as the drainers read (see `batch`); they are counted there."""
        return 0

    def take_drain_role(self) -> bool:
        return True      # every relay process drains: the consumer group shares the work

    def release_drain_role(self) -> None:
        return None

    async def _confirm(self, script: Any, entry: SpoolEntry, keys: list[str],
                       args: list[Any]) -> None:
        try:
            await script(keys=keys, args=args)
        except REDIS_DOWN as exc:
            self._link.failed(exc)
            self._unconfirmed.add(entry.id)
            raise SpoolError(f"redis: {_short(exc)}") from exc
        self._link.succeeded()
        self._unconfirmed.discard(entry.id)

    # -- reads -------------------------------------------------------------------------------
    async def batch(self, region: str, limit: int) -> list[SpoolEntry]:
        """What this process sends next for `region`: its leased partitions' pending entries
        (claimed from a dead holder if need be), then new ones; and the parallel stream's."""
        try:
            ordered = await self._ordered_batch(region, limit)
            unordered = await self._unordered_batch(region, limit)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):          # Redis lost its data (no AOF): start again
                await self.ensure_groups()
            raise
        except REDIS_DOWN as exc:
            self._link.failed(exc)
            raise
        self._link.succeeded()
        entries = ordered + unordered
        again = [entry.id for entry in entries if entry.id in self._unconfirmed]
        if again:
            self._on_claimed(len(again), False)     # ours, sent again
            self._unconfirmed.difference_update(again)
        return entries

    async def _ordered_batch(self, region: str, limit: int) -> list[SpoolEntry]:
        before = set(self._held.get(region, ()))
        partitions = await self._take_leases(region)
        keys = [self._keys.ordered(region, n) for n in partitions]
        if not keys:
            return []
        claimed = 0
        # A partition held all along has no other reader; one just taken over may hold a dead
        # holder's pending entries: they become ours, in id order, before anything newer.
        for key in [self._keys.ordered(region, n) for n in partitions if n not in before]:
            pending: Any = await self._client.xpending_range(key, GROUP, "-", "+", limit)
            theirs: list[Any] = [item["message_id"] for item in pending
                      if item["consumer"].decode() != self.consumer]
            if theirs:
                await self._client.xclaim(key, GROUP, self.consumer, 0, theirs, justid=True)
                claimed += len(theirs)
        if claimed:
            self._on_claimed(claimed, True)
        entries = await self._read(keys, "0", limit)
        fresh = await self._read(keys, ">", limit)
        return _in_stream_order(entries + fresh)

    async def _unordered_batch(self, region: str, limit: int) -> list[SpoolEntry]:
        key = self._keys.unordered(region)
        mine = await self._read([key], "0", limit)
        seen = {entry.id for entry in mine}
        now = time.monotonic()
        if len(mine) < limit and now >= self._claim_at.get(region, 0.0):
            # Looked at a few times per claim_after (sooner while a full batch was claimed).
            idle_ms = int(self._config.claim_after * 1000)
            answer = await self._client.xautoclaim(key, GROUP, self.consumer, idle_ms, "0-0",
                                                   count=limit - len(mine))
            taken = [decode(raw_id, fields) for raw_id, fields in answer[1] if fields]
            full = len(answer[1]) >= limit - len(mine)
            self._claim_at[region] = now if full else now + self._config.claim_after / 3
            others = [entry for entry in taken if entry.id not in seen]
            if others:
                self._on_claimed(len(others), True)
            mine += others
        if len(mine) < limit:
            mine += await self._read([key], ">", limit - len(mine))
        return mine

    async def _read(self, keys: list[str], start: str, count: int) -> list[SpoolEntry]:
        answer: Any = await self._client.xreadgroup(GROUP, self.consumer,
                                               dict.fromkeys(keys, start), count=count)
        entries = []
        for stream, messages in answer or []:
            gone = [raw_id for raw_id, fields in messages if not fields]
            if gone:      # deleted while pending (a purge): nothing left to send
                await self._client.xack(stream, GROUP, *gone)
            entries += [decode(raw_id, fields) for raw_id, fields in messages if fields]
        return entries

    async def _take_leases(self, region: str) -> list[int]:
        """Renew ours and take the free ones, a few times per claim_after (the renewer keeps
        them alive in between): a dead holder's partitions are taken within ~4/3 claim_after."""
        now = time.monotonic()
        if now - self._leased_at.get(region, -1e9) < self._config.claim_after / 3:
            return self._held.get(region, [])
        partitions = list(range(self._keys.partitions))
        ttl = int(self._config.claim_after * 1000)
        held = await self._lease(keys=[self._keys.lease(region, n) for n in partitions],
                                 args=[self.consumer, ttl])
        mine = [n for n, flag in zip(partitions, held, strict=True) if flag]
        self._held[region] = mine
        self._leased_at[region] = now
        return mine

    async def _renew_forever(self) -> None:
        """Leases outlive a long drain round: renewed every third of their time to live."""
        while True:
            await asyncio.sleep(self._config.claim_after / 3)
            for region, held in list(self._held.items()):
                if not held:
                    continue
                try:
                    still = await self._lease(
                        keys=[self._keys.lease(region, n) for n in held],
                        args=[self.consumer, int(self._config.claim_after * 1000)])
                except REDIS_DOWN:
                    # Not renewed: they may lapse. The next batch asks for them all again.
                    self._leased_at.pop(region, None)
                    self._held[region] = []
                    continue
                self._held[region] = [n for n, flag in zip(held, still, strict=True) if flag]

    async def snapshot(self) -> Snapshot:
        """The fleet's counters; the last one seen while Redis is unreachable."""
        try:
            counts: Any = await self._client.hgetall(self._keys.counts)
            oldest = await self._oldest()
        except REDIS_DOWN as exc:
            self._link.failed(exc)
            return self._last
        snapshot = snapshot_of(counts)
        snapshot.oldest = oldest
        self.lanes = dict(snapshot.lanes)
        self.totals = (snapshot.live_bytes, snapshot.dead_bytes, snapshot.dead_entries)
        self._last = snapshot
        return snapshot

    async def _oldest(self) -> dict[str, float]:
        oldest: dict[str, float] = {}
        async with self._client.pipeline(transaction=False) as pipe:
            for region in self._regions:
                for key in self._keys.streams(region):
                    pipe.xrange(key, "-", "+", count=1)
            results = await pipe.execute()
        streams = [region for region in self._regions for _ in self._keys.streams(region)]
        for region, first in zip(streams, results, strict=True):
            if first:
                created = float(first[0][1][b"created_at"])
                oldest[region] = min(created, oldest.get(region, created))
        return oldest


def _in_stream_order(entries: list[SpoolEntry]) -> list[SpoolEntry]:
    """Pending before fresh within a partition already; ids of one stream rise, and an entry
    read twice (pending and claimed) is sent once."""
    unique = {(entry.endpoint, entry.project, entry.id): entry for entry in entries}
    return sorted(unique.values(), key=lambda entry: entry.id)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
