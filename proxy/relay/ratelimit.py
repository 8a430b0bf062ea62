"""Token-bucket rate limits per client IP and per project token (pure, no I/O).

Over the limit the relay answers 503 with Retry-After, not 429: mixpanel-iphone deletes a batch
on any 4xx, and every SDK that retries 429 retries 503; a limited client only slows down. Buckets
live in a bounded LRU: an evicted bucket comes back full, which errs on the side of serving.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from cachetools import LRUCache

from ..config import RateLimitConfig

Clock = Callable[[], float]


class TokenBuckets:
    """Buckets of `burst` tokens refilled at `rate` per second, one per key."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000,
                 clock: Clock = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(maxsize=max_keys)

    def take(self, key: str) -> float:
        """Spend one token for `key`: 0.0 when allowed, else the seconds until one is back."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate


class RateLimiter:
    """The relay's two limits; either may be off (rate 0)."""

    def __init__(self, config: RateLimitConfig, clock: Clock = time.monotonic) -> None:
        self._by_ip = (TokenBuckets(config.ip_per_second, config.ip_burst, clock=clock)
                       if config.ip_per_second > 0 else None)
        self._by_token = (TokenBuckets(config.token_per_second, config.token_burst, clock=clock)
                          if config.token_per_second > 0 else None)

    def check_ip(self, client_ip: str) -> int:
        """0 when the client may go on, else the Retry-After seconds to answer with."""
        return _retry_after(self._by_ip.take(client_ip)) if self._by_ip else 0

    def check_tokens(self, tokens: Iterable[str]) -> int:
        if self._by_token is None:
            return 0
        waits = [self._by_token.take(token) for token in tokens]
        return _retry_after(max(waits, default=0.0))


def _retry_after(seconds: float) -> int:
    return math.ceil(seconds) if seconds > 0 else 0
