"""The relay's one Redis client (redis-py's asyncio client), and whether Redis answers now.

Both fleet features (the Redis spool, the fleet rate limit) share one `RedisLink` per app. A
failed command marks Redis down for `[redis] retry_interval` seconds: while down, callers go to
their fallback at once instead of each paying a connect timeout; the next call after that tries
again, and a success marks it up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..config import RedisConfig

log = logging.getLogger("mixpanel_proxy.redis")
# What a Redis outage raises through redis-py: its own errors and the socket's.
REDIS_DOWN = (RedisError, OSError, TimeoutError)


def connect(config: RedisConfig) -> Redis:
    """A client on `config.url`; connections are made on first use, never here."""
    # One immediate retry: a pooled connection Redis closed (a restart) is replaced once,
    # then the failure is the caller's to handle, quickly.
    return Redis.from_url(
        config.url, socket_connect_timeout=config.connect_timeout,
        socket_timeout=config.timeout, retry=Retry(NoBackoff(), 1),
        health_check_interval=30, decode_responses=False)


class RedisLink:
    def __init__(self, config: RedisConfig, on_change: Callable[[bool], None] | None = None
                 ) -> None:
        self.config = config
        self.client = connect(config)
        self.prefix = config.key_prefix
        self._down_until = 0.0
        self.up = True
        self.last_error = ""
        self._on_change = on_change

    @property
    def usable(self) -> bool:
        """False while a recent failure says Redis is down (callers use their fallback)."""
        return self.up or time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.config.retry_interval
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if self.up:
            log.warning("redis %s is unreachable: %s", self.config.redacted_url(),
                        self.last_error)
            self._set(False)

    def succeeded(self) -> None:
        if not self.up:
            log.warning("redis %s answers again", self.config.redacted_url())
            self._set(True)

    def _set(self, up: bool) -> None:
        self.up = up
        if self._on_change is not None:
            self._on_change(up)

    async def ping(self) -> bool:
        try:
            await self.client.ping()
        except REDIS_DOWN as exc:
            self.failed(exc)
            return False
        self.succeeded()
        return True

    async def close(self) -> None:
        await self.client.aclose()
