"""Cache bookkeeping: what one cached bundle version holds, how fresh it is, and a byte-bounded
LRU of them. Pure: no I/O and no clock of its own (callers pass `now`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cachetools import Cache, LRUCache

from .encoding import Coding

__all__ = ["AssetCache", "CachedAsset", "Freshness", "Origin", "Policy", "Variant"]


@dataclass(frozen=True, slots=True)
class Origin:
    """The CDN's copy as it arrived (before any rewriting): what revalidation and disk keep."""

    body: bytes
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True, slots=True)
class Variant:
    coding: Coding
    body: bytes
    etag: str          # strong, and distinct per coding (RFC 9110 §8.8.3)


@dataclass(frozen=True)
class CachedAsset:
    name: str
    immutable: bool
    origin: Origin
    variants: dict[Coding, Variant]   # always holds "identity"
    fetched_at: float                 # wall clock of the last 200 or 304 from the CDN
    codings: tuple[Coding, ...] = field(default=())   # the compressed ones, best first

    @property
    def size(self) -> int:
        served = sum(len(v.body) for v in self.variants.values())
        # Without rewriting, the identity variant is the CDN's bytes object itself.
        shared = self.variants["identity"].body is self.origin.body
        return served if shared else served + len(self.origin.body)

    def variant(self, coding: Coding) -> Variant:
        return self.variants[coding]

    def revalidated(self, now: float) -> CachedAsset:
        return replace(self, fetched_at=now)


class Freshness(enum.Enum):
    FRESH = "fresh"        # serve
    STALE = "stale"        # serve, and revalidate in the background
    EXPIRED = "expired"    # revalidate first; serve it only if the CDN fails


@dataclass(frozen=True)
class Policy:
    ttl: float
    stale_while_revalidate: float
    stale_if_error: float

    def freshness(self, asset: CachedAsset, now: float) -> Freshness:
        if asset.immutable:
            return Freshness.FRESH
        age = now - asset.fetched_at
        if age < self.ttl:
            return Freshness.FRESH
        if age < self.ttl + self.stale_while_revalidate:
            return Freshness.STALE
        return Freshness.EXPIRED

    def usable_on_error(self, asset: CachedAsset, now: float) -> bool:
        return asset.immutable or now - asset.fetched_at < self.ttl + self.stale_if_error

    def max_age(self, asset: CachedAsset, now: float) -> int:
        """Seconds a browser may keep this copy: what is left of the relay's own TTL."""
        return max(0, int(self.ttl - (now - asset.fetched_at)))


class _EvictingLRU(LRUCache[str, CachedAsset]):
    def __init__(self, maxsize: int, on_evict: Callable[[str], None]) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda asset: asset.size)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, CachedAsset]:
        name, asset = super().popitem()
        self._on_evict(name)
        return name, asset


class AssetCache:
    """Name -> CachedAsset, least recently used first out once `max_bytes` would be passed."""

    def __init__(self, max_bytes: int, on_evict: Callable[[str], None] = lambda _: None) -> None:
        self._entries = _EvictingLRU(max_bytes, on_evict)

    def get(self, name: str) -> CachedAsset | None:
        return self._entries.get(name)

    def put(self, asset: CachedAsset) -> bool:
        """Keep `asset`; False when it alone is bigger than the whole cache."""
        try:
            self._entries[asset.name] = asset
        except ValueError:
            return False
        return True

    @property
    def bytes_held(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def snapshot(self) -> list[CachedAsset]:
        """Every cached version, for the status page. Cache.__getitem__ is called directly:
        LRUCache's own would count each look as a use and reorder the eviction queue."""
        return [Cache.__getitem__(self._entries, name) for name in list(self._entries)]
