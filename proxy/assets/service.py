"""The bundle cache at work: serve from memory, refresh through one CDN request per name at a
time (single flight), serve stale copies while revalidating and when the CDN fails, and keep
an optional disk copy for restarts.

    get(name) -> fresh copy ............................................ hit
              -> stale (ttl < age < ttl + swr) -> copy, refresh behind .. stale
              -> none / expired -> one fetch, shared by every caller ... miss / coalesced
                   -> CDN 304 ........................................... revalidated
                   -> CDN 200 replacing a held copy ..................... updated
                   -> CDN broken, copy within stale_if_error ............ stale_error
                   -> CDN broken, no usable copy -> BrokenAsset ......... error
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from cachetools import TTLCache

from ..config.assets import AssetsConfig
from ..ops.metrics import ASSET_CACHE_RESULTS, Metrics
from ..upstream.client import UpstreamClient
from .cache import AssetCache, CachedAsset, Freshness, Origin, Policy
from .disk import DiskStore, StoredAsset
from .fetch import BrokenAsset, CdnFetcher, NotModified, VariantBuilder
from .rewrite import Rewriter

__all__ = ["AssetService"]

log = logging.getLogger(__name__)

# After a failed fetch, a name with a usable stale copy is not fetched again for this long:
# during a CDN outage, clients get the stale copy at once instead of each waiting for a timeout.
RETRY_AFTER_CDN_ERROR = 5.0
# Names the CDN said it does not have are not asked for again for this long (bounded set):
# a client making up names cannot turn each request into a CDN request.
MISSING_FOR = 60.0
MISSING_NAMES_KEPT = 1024


class AssetService:
    def __init__(self, config: AssetsConfig, upstream: UpstreamClient, metrics: Metrics,
                 api_host: str | None = None) -> None:
        self.clock: Callable[[], float] = time.time   # wall clock: fetch times go to disk
        self.policy = Policy(config.ttl, config.stale_while_revalidate, config.stale_if_error)
        self._config = config
        self._metrics = metrics
        self._cache = AssetCache(config.max_bytes, on_evict=self._evicted)
        self._fetcher = CdnFetcher(upstream, config.cdn_url, config.timeout,
                                   config.max_file_size)
        api = api_host if config.rewrite_api_host else None
        self._builder = VariantBuilder(Rewriter.for_relay(config.lib_base_url, api),
                                       config.brotli_quality)
        self._disk = DiskStore(config.disk_dir) if config.disk_dir else None
        self._flights: dict[str, asyncio.Task[CachedAsset]] = {}
        self._retry_at: dict[str, float] = {}
        self._missing: TTLCache[str, BrokenAsset] = TTLCache(
            MISSING_NAMES_KEPT, MISSING_FOR, timer=lambda: self.clock())
        self._chores: set[asyncio.Future[Any]] = set()
        # Label lookups resolved once: a hit is on the hot path.
        self._results = {result: metrics.asset_cache.labels(result)
                         for result in ASSET_CACHE_RESULTS}
        metrics.asset_cache_bytes.set_function(lambda: self._cache.bytes_held)
        metrics.asset_cache_entries.set_function(lambda: len(self._cache))

    def cached(self) -> list[CachedAsset]:
        return self._cache.snapshot()

    async def get(self, name: str) -> CachedAsset:
        """The copy to serve for `name`; BrokenAsset when the CDN failed and none is usable."""
        held = self._cache.get(name)
        if held is not None:
            now = self.clock()
            state = self.policy.freshness(held, now)
            if state is Freshness.FRESH:
                self._count("hit")
                return held
            backing_off = now < self._retry_at.get(name, 0.0)
            if state is Freshness.STALE:
                self._count("stale")
                if not backing_off:
                    self._refresh_behind(name, held)
                return held
            if backing_off and self.policy.usable_on_error(held, now):
                self._count("stale_error")
                return held
        elif (missing := self._missing.get(name)) is not None:
            self._count("error")
            raise BrokenAsset(missing.kind, missing.message, missing.cdn_status)
        try:
            return await self._join(name, held)
        except BrokenAsset:
            if held is not None and self.policy.usable_on_error(held, self.clock()):
                self._count("stale_error")
                return held
            self._count("error")
            raise

    async def lifecycle(self, _app: object) -> AsyncIterator[None]:
        """For `app.cleanup_ctx`: load the disk copies and prefetch, then stop cleanly."""
        await self.start()
        yield
        await self.stop()

    async def start(self) -> None:
        if self._disk is not None:
            stored = await self._in_executor(self._disk.load_all)
            await self._restore(stored or [])
        await asyncio.gather(*(self._prefetch(name) for name in self._config.prefetch))

    async def stop(self) -> None:
        pending = [*self._flights.values(), *self._chores]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _restore(self, stored: list[StoredAsset]) -> None:
        # Oldest first, so the most recent copies end up the most recently used.
        built = await asyncio.gather(*(
            self._builder.build(item.name, item.origin, item.fetched_at)
            for item in reversed(stored)))
        for asset in built:
            self._cache.put(asset)
        log.info("assets: %d bundle(s) restored from %s", len(self._cache),
                 self._config.disk_dir)

    async def _prefetch(self, name: str) -> None:
        try:
            await self.get(name)
        except BrokenAsset as exc:
            log.warning("assets: prefetch of %s failed: %s", name, exc.message)

    async def _join(self, name: str, held: CachedAsset | None) -> CachedAsset:
        flight = self._flights.get(name)
        if flight is None:
            self._count("miss" if held is None else "expired")
            flight = self._start_flight(name, held)
        else:
            self._count("coalesced")
        # shield: one caller giving up (client gone) must not cancel the others' fetch.
        return await asyncio.shield(flight)

    def _refresh_behind(self, name: str, held: CachedAsset) -> None:
        if name not in self._flights:
            self._start_flight(name, held)

    def _start_flight(self, name: str, held: CachedAsset | None) -> asyncio.Task[CachedAsset]:
        flight = self._flights[name] = asyncio.create_task(self._refresh(name, held))
        flight.add_done_callback(lambda _: self._flights.pop(name, None))
        # Its waiters may all be gone (or none, when refreshing behind): retrieve the outcome
        # so a failure is logged, never reported as "exception was never retrieved".
        flight.add_done_callback(_log_failure)
        return flight

    async def _refresh(self, name: str, held: CachedAsset | None) -> CachedAsset:
        try:
            result = await self._fetcher.fetch(name, held.origin if held else None)
        except BrokenAsset as exc:
            self._metrics.asset_cdn_failures.labels(exc.kind).inc()
            if held is not None:
                self._retry_at[name] = self.clock() + RETRY_AFTER_CDN_ERROR
            elif exc.missing:
                self._missing[name] = exc
            log.warning("assets: %s", exc.message)
            raise
        self._retry_at.pop(name, None)
        now = self.clock()
        if isinstance(result, NotModified):
            assert held is not None
            asset = held.revalidated(now)
            self._count("revalidated")
        else:
            asset = await self._builder.build(name, result, now)
            if held is not None:
                self._count("updated")
        self._cache.put(asset)
        self._save(name, asset.origin, now)
        return asset

    def _save(self, name: str, origin: Origin, fetched_at: float) -> None:
        if self._disk is not None:
            self._chore(self._disk.save, name, origin, fetched_at)

    def _evicted(self, name: str) -> None:
        # Called from inside the cache's own bookkeeping: look again once it is done, as a
        # replaced entry is evicted and put back under the same name.
        asyncio.get_running_loop().call_soon(self._forget_if_gone, name)

    def _forget_if_gone(self, name: str) -> None:
        if name not in self._cache:
            self._retry_at.pop(name, None)
            if self._disk is not None:
                self._chore(self._disk.delete, name)

    def _chore(self, function: Callable[..., None], *args: Any) -> None:
        chore = asyncio.ensure_future(self._in_executor(function, *args))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    async def _in_executor(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, function, *args)
        except OSError as exc:
            log.warning("assets: disk cache %s: %s", self._config.disk_dir, exc)
            return None

    def _count(self, result: str) -> None:
        self._results[result].inc()


def _log_failure(task: asyncio.Task[CachedAsset]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("assets: background revalidation failed: %s", task.exception())
