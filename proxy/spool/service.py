"""The spool as the relay sees it: decide when a request is stored, store it, answer for it.

`on_failure`: the relay forwards first and calls `after()` with the outcome; an unreachable or
timed-out upstream, a 5xx or a 429 gets the request stored and the client the success answer its
SDK expects, once the write is durable. A request is stored without trying the upstream first
(`takes_first`) in `always` mode, while its region's drainer is backing off (the upstream just
failed: don't make every client wait for a timeout), and while an ordered lane (profile, group,
replay updates) of its region has entries waiting, so a newer update never overtakes an older one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ..config import Config
from ..decide.routing import RoutedRequest
from ..ops.accesslog import request_facts
from ..ops.metrics import Metrics
from ..relay import answers
from ..upstream.client import UpstreamAnswer, UpstreamClient, UpstreamFailure
from .backend import SpoolBackend
from .drain import Drainer, retry_after_seconds
from .entry import ORDERED_ENDPOINTS, SpoolEntry, is_retryable, project_of
from .store import SpoolError, SpoolStore

log = logging.getLogger("mixpanel_proxy.spool")
Outcome = UpstreamAnswer | UpstreamFailure


class Spool:
    """One per app. Every worker process stores into the same file; the one holding the drain
    lock (see `take_drain_lock`) runs the drainers, and another takes over when it exits.
    With `[spool] backend = "redis"` the store is Redis (`fallback.build`), and every process of
    every relay drains it."""

    def __init__(self, config: Config, upstream: UpstreamClient, metrics: Metrics,
                 store_factory: Callable[[], SpoolBackend] | None = None) -> None:
        self.config = config.spool
        self._store_factory = store_factory
        self._grace = min(5.0, config.server.shutdown_timeout)   # for in-flight drain sends
        self._metrics = metrics
        self._upstream = upstream
        self._base_urls = {
            region.name: {endpoint: str(region.base_url(endpoint)).rstrip("/")
                          for endpoint in config.limits.body}
            for region in config.regions.values()}
        self._endpoints = frozenset(self.config.endpoints if self.config.active else ())
        self._always = self.config.mode == "always"
        self._store: SpoolBackend | None = None
        self._drainers: dict[str, Drainer] = {}
        self._owner = False
        self._watcher: asyncio.Task[None] | None = None
        self._oldest: dict[str, float] = {}     # region -> created_at, when not draining
        self._reserved: Counter[tuple[str, str]] = Counter()   # being written by this process
        self._reserved_bytes = 0

    # -- lifecycle -------------------------------------------------------------------------------
    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """An app cleanup_ctx: open before serving (a bad file stops the start), close after."""
        await self.open()
        yield
        await self.close(self._grace)

    async def open(self) -> None:
        """Open the file (SpoolError if it is unusable); drain it if no other process does."""
        store: SpoolBackend = (
            self._store_factory() if self._store_factory is not None
            else SpoolStore(self.config.path, group_commit=self.config.group_commit))
        snapshot = await store.open()
        self._store = store
        self._oldest = snapshot.oldest
        self._export(store)
        await self._try_to_own()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self, grace: float = 5.0) -> None:
        """Stop the drainers, commit what is queued, close the file, release the drain lock."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for drainer in self._drainers.values():
            await drainer.stop(grace)
        self._drainers.clear()
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()
            store.release_drain_role()
        self._owner = False

    async def _watch(self) -> None:
        """Refresh the counters other processes change, and take over draining when free."""
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self._try_to_own()
                if self._store is not None:
                    self._oldest = (await self._store.snapshot()).oldest
            except Exception:
                log.exception("spool: refreshing %s failed", self.config.path)

    async def _try_to_own(self) -> None:
        if self._owner or self._store is None or not self._store.take_drain_role():
            return
        self._owner = True
        interrupted = await self._store.claim_interrupted()
        if interrupted:
            # Sent but not confirmed when the last owner stopped: sent again, possibly twice at
            # Mixpanel (which deduplicates on event, distinct_id, time and $insert_id).
            self._metrics.spool_redeliveries.inc(interrupted)
            log.warning("spool: %d entries were in flight when the relay stopped; they are sent "
                        "again (possible duplicates)", interrupted)
        for region, base_urls in self._base_urls.items():
            drainer = Drainer(region, self.config, self._store, self._upstream, base_urls, self)
            drainer.oldest = self._oldest.get(region)
            self._drainers[region] = drainer
            drainer.start()

    def _export(self, store: SpoolBackend) -> None:
        """Gauges read at scrape time from the store's counters, which follow the file."""
        metrics = self._metrics
        for region in self._base_urls:
            metrics.spool_entries.labels(region).set_function(_waiting_in(store, region))
            metrics.spool_oldest_age.labels(region).set_function(self._age_of(region))
        metrics.spool_bytes.labels("live").set_function(lambda: store.totals[0])
        metrics.spool_bytes.labels("dead").set_function(lambda: store.totals[1])
        metrics.spool_dead_entries.set_function(lambda: store.totals[2])

    # -- the relay's hooks -----------------------------------------------------------------------
    def takes_first(self, region: str, endpoint: str) -> bool:
        if endpoint not in self._endpoints or self._store is None:
            return False
        if self._always:
            return True
        lane = (region, endpoint)
        if endpoint in ORDERED_ENDPOINTS and (self._store.lanes.get(lane) or self._reserved[lane]):
            return True
        drainer = self._drainers.get(region)
        return drainer is not None and drainer.backing_off

    def would_keep(self, endpoint: str, outcome: Outcome) -> bool:
        """Whether `after` could store this outcome's request (a cheap test before awaiting it)."""
        return endpoint in self._endpoints and self._store is not None and _failed(outcome)

    async def after(self, entry: SpoolEntry, routed: RoutedRequest, outcome: Outcome) -> Outcome:
        """The upstream's outcome, or the success of a stored copy when the upstream failed."""
        if entry.endpoint not in self._endpoints or self._store is None or not _failed(outcome):
            return outcome
        drainer = self._drainers.get(entry.region)
        if isinstance(outcome, UpstreamAnswer) and drainer is not None:
            wait = retry_after_seconds(outcome.headers.get("Retry-After"))
            if wait:
                drainer.defer(min(wait, self.config.retry_after_max))
        stored = await self.store(entry, routed)
        if isinstance(stored, UpstreamAnswer):
            return stored
        return UpstreamFailure("spool", f"{_describe(outcome)}, and {stored}")

    async def store(self, entry: SpoolEntry, routed: RoutedRequest) -> UpstreamAnswer | str:
        """Store `entry` durably and return the success answer, or say why it was not stored."""
        store = self._store
        if store is None:
            return "the spool is closed"
        size = entry.size
        if self._held_bytes() + size > self.config.max_bytes:
            self._metrics.spool_refused.labels("full").inc()
            return "the spool is full"
        lane = (entry.region, entry.endpoint)
        self._reserved_bytes += size      # counted before the write: concurrent writers see it
        self._reserved[lane] += 1         # and no newer update of this lane overtakes it
        stamped = replace(entry, created_at=time.time(), project=project_of(
            entry.endpoint, entry.headers, entry.query, entry.body))
        try:
            await store.add(stamped)
        except SpoolError as exc:
            self._metrics.spool_refused.labels("write_error").inc()
            log.error("spool: %s", exc)
            return "the spool cannot write"
        else:
            self._oldest.setdefault(entry.region, stamped.created_at)
        finally:
            self._reserved_bytes -= size
            self._reserved[lane] -= 1
        self._metrics.spool_stored.labels(entry.region, entry.endpoint).inc()
        request_facts().note("stored")      # the access line says so: the 200 is the spool's
        drainer = self._drainers.get(entry.region)
        if drainer is not None:
            if drainer.oldest is None:
                drainer.oldest = stamped.created_at
            drainer.wake()
        return _success(routed)

    def _held_bytes(self) -> int:
        live, dead, _ = self._store.totals if self._store is not None else (0, 0, 0)
        return live + dead + self._reserved_bytes

    # -- the drainers' ledger --------------------------------------------------------------------
    def delivered(self, entry: SpoolEntry) -> None:
        self._metrics.spool_delivered.labels(entry.region).inc()

    def buried(self, entry: SpoolEntry, cause: str) -> None:
        self._metrics.spool_dead_lettered.labels(entry.region, cause).inc()

    def _age_of(self, region: str) -> Callable[[], float]:
        def age() -> float:
            drainer = self._drainers.get(region)
            oldest = drainer.oldest if drainer is not None else self._oldest.get(region)
            return 0.0 if oldest is None else max(0.0, time.time() - oldest)

        return age


def _waiting_in(store: SpoolBackend, region: str) -> Callable[[], float]:
    return lambda: sum(count for (name, _), count in store.lanes.items() if name == region)


def _failed(outcome: Outcome) -> bool:
    """Unreachable, timed out, 5xx or 429 (and 408): the same bytes may be taken later."""
    return isinstance(outcome, UpstreamFailure) or is_retryable(outcome.status)


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, UpstreamFailure):
        return outcome.message
    return f"the upstream answered {outcome.status}"


def _success(routed: RoutedRequest) -> UpstreamAnswer:
    body, content_type = answers.success_for(routed)
    return UpstreamAnswer(200, CIMultiDictProxy(CIMultiDict({"Content-Type": content_type})),
                          body)
