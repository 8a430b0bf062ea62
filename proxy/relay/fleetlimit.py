"""`[limits.rate] backend`: where the token buckets live.

`LocalLimiter` is `ratelimit.RateLimiter` (buckets in this process) behind the async interface
the handler awaits. `FleetLimiter` keeps one bucket per client IP and per project token for the
whole fleet in Redis: one atomic Lua script (EVALSHA; redis-py loads it again after a Redis
restart) refills and spends a bucket on Redis's own clock, so every relay sees the same tokens.
When Redis is unreachable it fails open to the local buckets (a limit per process, as with
`backend = "local"`) and counts each such check: an outage never turns into refused traffic.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from ..config import RateLimitConfig
from ..ops.fleetmetrics import FleetMetrics
from ..upstream.redislink import REDIS_DOWN, RedisLink
from .ratelimit import RateLimiter

# KEYS[1]: the bucket (a hash: t = tokens, s = stamp). ARGV: rate per second, burst, ttl in ms.
# Returns the seconds until a token is back ("0" when one was spent), as a string: Redis would
# truncate a Lua number to an integer.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local kept = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(kept[1])
local stamp = tonumber(kept[2])
if tokens == nil or stamp == nil then
  tokens = burst
  stamp = now
end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tostring(wait)
"""


class Limiter(Protocol):
    """What the handler asks: 0 to go on, else the Retry-After seconds to answer with."""

    async def check_ip(self, client_ip: str) -> int: ...

    async def check_tokens(self, tokens: Iterable[str]) -> int: ...

    @property
    def local(self) -> RateLimiter | None:
        """The buckets, when they are this process's alone: checked without awaiting."""


class LocalLimiter:
    """Buckets in this process (`backend = "local"`, the default)."""

    def __init__(self, config: RateLimitConfig) -> None:
        self._buckets = RateLimiter(config)

    async def check_ip(self, client_ip: str) -> int:
        return self._buckets.check_ip(client_ip)

    async def check_tokens(self, tokens: Iterable[str]) -> int:
        return self._buckets.check_tokens(tokens)

    @property
    def local(self) -> RateLimiter:
        return self._buckets


class FleetLimiter:
    """One bucket per key for the whole fleet, in Redis; local buckets while Redis is down."""

    def __init__(self, config: RateLimitConfig, link: RedisLink, metrics: FleetMetrics) -> None:
        self._config = config
        self._link = link
        self._metrics = metrics
        self._local = RateLimiter(config)
        self._take = link.client.register_script(_TAKE)
        self._prefix = f"{link.prefix}:rate"

    @property
    def local(self) -> None:
        return None        # the fleet's buckets are in Redis: every check awaits it

    async def check_ip(self, client_ip: str) -> int:
        rate, burst = self._config.ip_per_second, self._config.ip_burst
        if rate <= 0:
            return 0
        return await self._spend(f"{self._prefix}:ip:{client_ip}", rate, burst,
                                 lambda: self._local.check_ip(client_ip))

    async def check_tokens(self, tokens: Iterable[str]) -> int:
        rate, burst = self._config.token_per_second, self._config.token_burst
        if rate <= 0:
            return 0
        waits = [await self._spend(f"{self._prefix}:token:{token}", rate, burst,
                                   _local_token(self._local, token))
                 for token in tokens]
        return max(waits, default=0)

    async def _spend(self, key: str, rate: float, burst: int,
                     fallback: Callable[[], int]) -> int:
        if not self._link.usable:
            return self._fail_open(fallback)
        # The key lives as long as a bucket takes to fill from empty (then it is full anyway).
        ttl_ms = max(1000, math.ceil(burst / rate * 1000) + 1000)
        try:
            wait = await self._call(key, rate, burst, ttl_ms)
        except REDIS_DOWN as exc:
            self._link.failed(exc)
            return self._fail_open(fallback)
        self._link.succeeded()
        return math.ceil(wait) if wait > 0 else 0

    async def _call(self, key: str, rate: float, burst: int, ttl_ms: int) -> float:
        answer: Awaitable[bytes] = self._take(keys=[key], args=[repr(rate), burst, ttl_ms])
        return float(await answer)

    def _fail_open(self, fallback: Callable[[], int]) -> int:
        self._metrics.rate_fallback.inc()
        return fallback()


def _local_token(local: RateLimiter, token: str) -> Callable[[], int]:
    return lambda: local.check_tokens([token])
