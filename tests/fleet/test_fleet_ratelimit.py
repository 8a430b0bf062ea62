"""`[limits.rate] backend = "redis"`: one bucket per client IP and per token for the whole fleet.

Three relays (apps in this process, each with its own registry and Redis connection pool) share
one real redis-server; the count is what the fake upstream received.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.redis_server import RedisServer

SLOW = 0.01      # no token comes back during a test: the burst alone decides


def limits(redis: RedisServer, backend: str = "redis", **rate: float) -> dict[str, Any]:
    return {"limits": {"rate": {"backend": backend, **rate}},
            "redis": {"url": redis.url, "retry_interval": 0.2}}


async def post_track(client: Any, token: str = US_TOKEN) -> int:
    response = await client.post("/track/", data=browser_form([event(token)]), headers=FORM)
    await response.read()
    return int(response.status)


async def fleet(make_relay: RelayFactory, extra: dict[str, Any]) -> list[Any]:
    return [await make_relay(extra, projects=True, registry=CollectorRegistry())
            for _ in range(3)]


@pytest.mark.parametrize(("backend", "accepted"), [("redis", 6), ("local", 9)])
async def test_ip_burst_is_shared_by_the_fleet(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], redis_server: RedisServer,
        backend: str, accepted: int) -> None:
    """Burst 6, three relays, three requests each: the fleet takes 6 (local buckets: 9)."""
    relays = await fleet(make_relay, limits(redis_server, backend, ip_per_second=SLOW,
                                            ip_burst=6))
    statuses = [await post_track(relay) for _ in range(3) for relay in relays]
    assert statuses.count(200) == accepted
    assert statuses.count(503) == 9 - accepted
    assert len(upstreams["us"].received) == accepted


async def test_token_limit_is_shared_by_the_fleet(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream],
        redis_server: RedisServer) -> None:
    relays = await fleet(make_relay, limits(redis_server, token_per_second=SLOW, token_burst=4))
    statuses = [await post_track(relay) for _ in range(2) for relay in relays]
    assert statuses == [200] * 4 + [503] * 2
    assert len(upstreams["us"].received) == 4


@pytest.mark.slow   # measures a rate over real time
async def test_fleet_rate_holds_within_ten_percent(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream],
        redis_server: RedisServer) -> None:
    """N requests per second per IP across three relays, each sending as fast as it can: the
    fleet accepts the burst plus N per second elapsed, within 10 %. The burst is one second's
    worth, so a stalled sender (a busy machine) loses no tokens while it waits."""
    rate, seconds = 20, 2.0
    relays = await fleet(make_relay, limits(redis_server, ip_per_second=rate, ip_burst=rate))
    statuses: list[int] = []
    started = time.monotonic()
    last_sent = started

    async def hammer(relay: Any) -> None:
        nonlocal last_sent
        while (now := time.monotonic()) - started < seconds:
            last_sent = max(last_sent, now)
            statuses.append(await post_track(relay))

    await asyncio.gather(*(hammer(relay) for relay in relays))
    # Tokens that refill after the last request was sent are never asked for: not expected.
    elapsed = last_sent - started
    expected = rate + rate * elapsed
    accepted = statuses.count(200)
    print(f"fleet rate: {accepted} accepted of {len(statuses)} in {elapsed:.2f} s, "
          f"expected {expected:.1f}")
    assert statuses.count(503) > accepted, "the senders did not outrun the limit"
    assert abs(accepted - expected) <= 0.1 * expected, (accepted, expected, elapsed)
    assert len(upstreams["us"].received) == accepted


async def test_fails_open_to_local_buckets_when_redis_is_down(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream],
        redis_server: RedisServer) -> None:
    registry = CollectorRegistry()
    relay = await make_relay(limits(redis_server, ip_per_second=SLOW, ip_burst=2),
                             projects=True, registry=registry)
    assert [await post_track(relay) for _ in range(3)] == [200, 200, 503]
    redis_server.stop()
    # Redis gone: this process's own buckets decide (a fresh burst of 2), never a refusal
    # because of the outage, and each such check is counted.
    assert [await post_track(relay) for _ in range(3)] == [200, 200, 503]
    assert registry.get_sample_value("mixpanel_proxy_rate_limit_fallback_total") == 3
    assert registry.get_sample_value("mixpanel_proxy_redis_up") == 0
    body = await (await relay.get("/readyz")).json()
    # Reported, but not a reason to be unready: the relay serves, the limit failing open.
    assert "redis" not in body["failed"]
    assert "unreachable" in body["checks"]["redis"]["detail"]
    redis_server.start()
    await asyncio.sleep(0.3)             # past [redis] retry_interval: Redis is tried again
    # Back on the fleet bucket, which Redis kept (AOF): still empty.
    assert await post_track(relay) == 503
    assert registry.get_sample_value("mixpanel_proxy_redis_up") == 1
    assert len(upstreams["us"].received) == 4
