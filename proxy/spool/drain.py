"""One drainer per region: sends stored requests upstream, oldest first, byte for byte.

A round reads the region's oldest entries and sends them, one lane at a time per ordered lane
(profile/group updates and replay batches of one project, in the order accepted) and unordered
events side by side. An entry is deleted only after the upstream accepted it; a final refusal
moves it to dead letter; anything retryable ends the round, and the region waits: exponential
backoff with jitter between `backoff_min` and `backoff_max`, never shorter than a Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Protocol

from yarl import URL

from ..config.spool import SpoolConfig
from ..upstream.client import REPLAYABLE_ENDPOINTS, UpstreamAnswer, UpstreamClient, UpstreamFailure
from .backend import SpoolBackend
from .entry import Refusal, SpoolEntry, is_retryable, refusal_in_success, stale_track_records

log = logging.getLogger("mixpanel_proxy.spool")
_INLINE_DECODE = 64 * 1024     # bytes of /track body checked on the loop; bigger: in a thread


class Ledger(Protocol):
    """The spool's bookkeeping, told of every entry that leaves the queue."""

    def delivered(self, entry: SpoolEntry) -> None: ...

    def buried(self, entry: SpoolEntry, cause: str) -> None: ...


class Drainer:
    def __init__(self, region: str, config: SpoolConfig, store: SpoolBackend,
                 upstream: UpstreamClient, base_urls: Mapping[str, str], ledger: Ledger) -> None:
        self.region = region
        self._config = config
        self._store = store
        self._upstream = upstream
        self._base_urls = base_urls          # endpoint -> the region's base URL for it
        self._ledger = ledger
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._not_before = 0.0               # monotonic time before which nothing is sent
        self._halt_round = False
        self._round_retry_after = 0.0
        self.oldest: float | None = None     # created_at of the oldest entry seen waiting
        self._drained = 0                    # entries delivered in the current round

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"drain-{self.region}")

    async def stop(self, grace: float) -> None:
        """Start nothing new; give in-flight sends `grace` seconds, then cancel them (their
        entries stay stored and are sent again on the next start)."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._wakeup.set()

    def defer(self, seconds: float) -> None:
        """Send nothing for `seconds` (an upstream's Retry-After seen by the relay)."""
        self._not_before = max(self._not_before, time.monotonic() + seconds)

    @property
    def backing_off(self) -> bool:
        return time.monotonic() < self._not_before

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if not await self._sleep(self._not_before - time.monotonic()):
                return
            self._wakeup.clear()
            try:
                entries = await self._store.batch(self.region, self._config.drain_batch)
            except Exception:
                log.exception("spool: reading region %s failed", self.region)
                self._back_off(0.0)
                continue
            self.oldest = entries[0].created_at if entries else None
            if not entries:
                await self._idle()
            elif await self._guarded_round(entries):
                if self._failures:
                    log.info("spool: region %s recovered after %d failed round(s)",
                             self.region, self._failures)
                self._failures = 0
            else:
                self._back_off(self._round_retry_after)

    async def _guarded_round(self, entries: list[SpoolEntry]) -> bool:
        try:
            return await self._round(entries)
        except Exception:     # a disk error must not end the drainer: log, back off, retry
            log.exception("spool: a drain round of region %s failed", self.region)
            return False

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds` unless stopping; False when stopping."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._stopping.wait(), seconds)
            except TimeoutError:
                pass
        return not self._stopping.is_set()

    async def _idle(self) -> None:
        waits = [asyncio.ensure_future(self._wakeup.wait()),
                 asyncio.ensure_future(self._stopping.wait())]
        _, pending = await asyncio.wait(waits, timeout=self._config.poll_interval,
                                        return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()

    def _back_off(self, retry_after: float) -> None:
        ceiling = min(self._config.backoff_max, self._config.backoff_min * 2 ** self._failures)
        delay = max(self._config.backoff_min, random.uniform(ceiling / 2, ceiling))
        delay = max(delay, min(retry_after, self._config.retry_after_max))
        self._failures += 1
        self._not_before = max(self._not_before, time.monotonic() + delay)
        log.info("spool: region %s backs off %.1f s", self.region, delay)

    async def _round(self, entries: list[SpoolEntry]) -> bool:
        """Send `entries`; True when nothing retryable went wrong."""
        lanes: dict[object, list[SpoolEntry]] = {}
        for entry in entries:
            lanes.setdefault(entry.lane or entry.id, []).append(entry)
        self._halt_round = False
        self._round_retry_after = 0.0
        gate = asyncio.Semaphore(self._config.drain_concurrency)
        self._drained = 0
        await asyncio.gather(*(self._run_lane(lane, gate) for lane in lanes.values()))
        if self._drained:
            log.info("spool: region %s: drained %d entries", self.region, self._drained)
        return not self._halt_round

    async def _run_lane(self, lane: list[SpoolEntry], gate: asyncio.Semaphore) -> None:
        for entry in lane:
            async with gate:
                if self._halt_round or self._stopping.is_set():
                    return
                # Flagged (durably, sharing the fsync with the other lanes' flags) before it
                # leaves: a crash from here on may deliver it twice, and the next start counts it.
                await self._store.mark_in_flight([entry.id], True)
                if not await self._deliver(entry):
                    self._halt_round = True
                    await self._store.mark_in_flight([entry.id], False)
                    return

    async def _deliver(self, entry: SpoolEntry) -> bool:
        """Send one entry; True when it has left the queue (delivered or buried)."""
        check = (entry, time.time(), self._config.track_max_age)
        # Decoding a big batch would stall every request on this loop: a thread does it.
        stale = (await asyncio.to_thread(stale_track_records, *check)
                 if len(entry.body) > _INLINE_DECODE else stale_track_records(*check))
        if stale:
            return await self._bury(entry, "track_window", Refusal(
                f"{stale} event(s) older than Mixpanel's {self._config.track_max_age:.0f}-second "
                "/track window; not sent (recover them through /import)"))
        try:
            # As the relay sends it: a GET without a body carries none at all.
            body = entry.body if entry.body or entry.method == "POST" else None
            answer = await self._upstream.send(
                entry.method, self._url(entry), entry.headers, body,
                replayable=entry.endpoint in REPLAYABLE_ENDPOINTS)
        except UpstreamFailure as failure:
            log.info("spool: region %s: %s", self.region, failure.message)
            return False
        return await self._judge(entry, answer)

    async def _judge(self, entry: SpoolEntry, answer: UpstreamAnswer) -> bool:
        status = answer.status
        if is_retryable(status):
            self._round_retry_after = max(self._round_retry_after,
                                          retry_after_seconds(answer.headers.get("Retry-After")))
            return False
        headers = {name: value for name, value in answer.headers.items()
                   if name.lower() in ("content-type", "retry-after")}
        if 200 <= status < 300:
            refused = refusal_in_success(status, answer.body)
            if refused is None:
                await self._store.delete(entry)
                self._ledger.delivered(entry)
                self._drained += 1
                return True
            return await self._bury(entry, "upstream_refused",
                                    Refusal(refused, status, answer.body, headers))
        cause = "upstream_4xx" if 400 <= status < 500 else "other_status"
        return await self._bury(entry, cause, Refusal(
            f"the upstream answered {status}", status, answer.body, headers))

    async def _bury(self, entry: SpoolEntry, cause: str, refusal: Refusal) -> bool:
        await self._store.bury(entry, refusal)
        self._ledger.buried(entry, cause)
        log.warning("spool: region %s: /%s entry %d moved to dead letter: %s", self.region,
                    entry.endpoint, entry.id, refusal.reason)
        return True

    def _url(self, entry: SpoolEntry) -> URL:
        target = self._base_urls[entry.endpoint] + entry.path
        query = entry.query.decode()
        return URL(f"{target}?{query}" if query else target, encoded=True)


def retry_after_seconds(value: str | None) -> float:
    """A Retry-After header in seconds: delta-seconds or an HTTP date; 0 when absent or bad."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0
