"""The Redis spool when Redis does not take the write: never a false success.

Redis stopped, full (maxmemory) or cut off (SIGSTOP: connections hang) while requests arrive:
every 200 is an entry Redis (or the local SQLite fallback) holds and the upstream finally gets;
the rest are 503 + Retry-After. /readyz and the metrics say where requests go.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import US_TOKEN, RelayFactory
from tests.fleet.backends import Held, spool_extra
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.redis_server import RedisServer
from tests.support.waits import eventually


def fresh(name: str, **props: Any) -> bytes:
    return browser_form([event(US_TOKEN, name, time=time.time() - 60, **props)])


def store_gauge(registry: CollectorRegistry, store: str) -> float | None:
    return registry.get_sample_value("mixpanel_proxy_spool_store", {"store": store})


async def accepted_in_the_end(client: Any, body: bytes, what: str) -> None:
    """Post `body` until Redis takes it (200), each attempt before that an honest 503 +
    Retry-After. After a restart the relay tries Redis again after [redis] retry_interval, and a
    pooled connection to the stopped process may then fail once more and mark Redis down for
    another interval; a replica's acknowledgement may miss [redis] wait_timeout on a busy box."""
    async def attempt() -> bool:
        status, headers, _ = await post(client, body)
        assert status == 200 or (status == 503 and "Retry-After" in headers), status
        return status == 200
    await eventually(attempt, what=what)


async def post(client: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
    response = await client.post("/track/", data=body, headers=FORM)
    return response.status, dict(response.headers), await response.read()


async def test_no_fallback_answers_503_with_retry_after(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        redis_server: RedisServer) -> None:
    registry = CollectorRegistry()
    client = await make_relay(spool_extra("redis", tmp_path, redis_server), projects=True,
                              registry=registry)
    held = Held("redis", tmp_path, redis_server)
    await upstreams["us"].go_down()
    assert (await post(client, fresh("kept")))[0] == 200
    redis_server.stop()
    status, headers, body = await post(client, fresh("refused"))
    assert status == 503 and headers["Retry-After"] == "10"
    assert b"the spool cannot write" in body
    assert store_gauge(registry, "none") == 1
    # One write, or two: when the drainer is already backing off (its delivery of "kept" to
    # the down upstream failed) the spool takes the request first, then once more after the
    # upstream failed too (handler.py `_send`). Which one is a race with the drainer.
    assert registry.get_sample_value("mixpanel_proxy_spool_refused_total",
                                     {"reason": "write_error"}) in (1, 2)
    ready = await (await client.get("/readyz")).json()
    assert "spool" in ready["failed"]
    assert ready["checks"]["spool"]["detail"] == ("redis unreachable: answering 503 "
                                                  "(no local fallback)")
    redis_server.start()
    await accepted_in_the_end(client, fresh("after"), "redis to take writes again")
    assert store_gauge(registry, "redis") == 1
    await upstreams["us"].come_back()
    await eventually(lambda: len(upstreams["us"].received) == 2 and not held.waiting(),
                     what="the drain")
    names = sorted(item.records()[0]["event"] for item in upstreams["us"].received)
    assert names == ["after", "kept"]           # the refused one was never claimed


async def test_sqlite_fallback_then_moved_to_redis(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        redis_server: RedisServer) -> None:
    registry = CollectorRegistry()
    client = await make_relay(spool_extra("redis", tmp_path, redis_server, fallback="sqlite"),
                              projects=True, registry=registry)
    local = Held("sqlite", tmp_path, None)
    in_redis = Held("redis", tmp_path, redis_server)
    await upstreams["us"].go_down()
    redis_server.stop()
    bodies = [fresh(f"e{n}") for n in range(4)]
    for body in bodies:
        assert (await post(client, body))[:3:2] == (200, b"1")
    assert local.waiting() == bodies                    # durable on disk, in order
    assert store_gauge(registry, "sqlite") == 1
    ready = await (await client.get("/readyz")).json()
    assert "spool" not in ready["failed"]
    assert "local SQLite fallback" in ready["checks"]["spool"]["detail"]
    redis_server.start()

    def moved() -> bool:     # the counter goes up just after each entry leaves the file
        return registry.get_sample_value("mixpanel_proxy_spool_fallback_moved_total") == 4

    await eventually(lambda: not local.waiting() and moved(), what="the move to redis")
    assert sorted(in_redis.waiting()) == sorted(bodies)
    assert registry.get_sample_value("mixpanel_proxy_spool_fallback_moved_total") == 4
    await upstreams["us"].come_back()
    await eventually(lambda: len(upstreams["us"].received) == 4 and not in_redis.waiting(),
                     what="the drain")
    assert sorted(item.body for item in upstreams["us"].received) == sorted(bodies)


async def test_redis_at_maxmemory_answers_503_not_200(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        redis_server: RedisServer) -> None:
    client = await make_relay(spool_extra("redis", tmp_path, redis_server), projects=True)
    held = Held("redis", tmp_path, redis_server)
    await upstreams["us"].go_down()
    assert (await post(client, fresh("warm")))[0] == 200
    used = int(redis_server.command("INFO", "memory").split(b"used_memory:")[1].split(b"\r")[0])
    redis_server.command("CONFIG", "SET", "maxmemory", str(used + 256 * 1024))
    accepted, refused = [], 0
    for n in range(40):
        body = fresh(f"big{n}", pad="x" * 20_000)
        status, _, answer = await post(client, body)
        if status == 200:
            accepted.append(body)
        else:
            assert status == 503 and b"the spool cannot write" in answer
            refused += 1
    assert accepted and refused, (len(accepted), refused)
    stored = held.waiting()
    assert all(body in stored for body in accepted)     # every 200 is held by Redis
    redis_server.command("CONFIG", "SET", "maxmemory", "0")
    await upstreams["us"].come_back()
    await eventually(lambda: not held.waiting(), what="the drain")
    assert len(upstreams["us"].received) == len(accepted) + 1


@pytest.mark.slow   # holds Redis stopped for real time
async def test_redis_cut_off_while_requests_arrive(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        redis_server: RedisServer) -> None:
    """SIGSTOP: Redis's port still takes connections but nothing answers (a cut network).
    Requests in flight then get 503 after [redis] timeout, never a 200 for a lost write."""
    extra = spool_extra("redis", tmp_path, redis_server)
    extra["redis"].update(timeout=0.3, connect_timeout=0.3)
    client = await make_relay(extra, projects=True)
    held = Held("redis", tmp_path, redis_server)
    await upstreams["us"].go_down()
    outcomes: list[tuple[int, bytes]] = []

    async def sender(who: int) -> None:
        for n in range(30):
            body = fresh(f"s{who}-{n}")
            outcomes.append(((await post(client, body))[0], body))
            await asyncio.sleep(0.02)         # paces traffic: three steady senders

    async def cut() -> None:
        await eventually(lambda: len(outcomes) >= 6, what="traffic before the cut")
        redis_server.pause()
        await eventually(lambda: any(status == 503 for status, _ in outcomes),
                         what="the cut to reach a request")
        await asyncio.sleep(0.5)              # Redis stays cut off for real time: requests
        redis_server.resume()                 # keep arriving, each a 503 or a stored 200

    await asyncio.gather(*(sender(who) for who in range(3)), cut())
    accepted = [body for status, body in outcomes if status == 200]
    assert {status for status, _ in outcomes} <= {200, 503}
    assert 503 in {status for status, _ in outcomes}, "the cut did not reach a request"
    await upstreams["us"].come_back()
    await eventually(lambda: not held.waiting(), timeout=30, what="the drain")
    received = {item.body for item in upstreams["us"].received}
    assert set(accepted) <= received                     # nothing answered 200 is lost


@pytest.mark.slow       # a second redis-server, and its replication handshake
async def test_wait_replicas_answers_success_only_once_a_replica_has_it(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        redis_server: RedisServer) -> None:
    """`[redis] wait_replicas = 1`: with no replica in time, 503 (not 200); once a real replica
    follows the primary, 200, and the replica holds the entry."""
    extra = spool_extra("redis", tmp_path, redis_server)
    extra["redis"].update(wait_replicas=1, wait_timeout=0.2)
    client = await make_relay(extra, projects=True)
    await upstreams["us"].go_down()
    status, headers, _ = await post(client, fresh("alone"))
    assert status == 503 and "Retry-After" in headers
    replica = RedisServer(replica_of=redis_server.port)
    replica.start()
    try:
        await eventually(lambda: b"state=online" in redis_server.command("INFO", "replication"),
                         what="the primary to count the replica online")
        await accepted_in_the_end(client, body := fresh("replicated"), "a replica to ack")
        assert body in Held("redis", tmp_path, replica).waiting()
    finally:
        replica.cleanup()


async def test_relay_starts_while_redis_is_down(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        redis_server: RedisServer) -> None:
    """Redis down when the relay starts: it serves (503 for what it cannot store), and takes
    writes once Redis is up, its consumer groups created then."""
    redis_server.stop()
    client = await make_relay(spool_extra("redis", tmp_path, redis_server), projects=True)
    await upstreams["us"].go_down()
    assert (await post(client, fresh("early")))[0] == 503
    redis_server.start()
    await accepted_in_the_end(client, body := fresh("later"), "redis to take writes")
    await upstreams["us"].come_back()
    await eventually(lambda: [item.body for item in upstreams["us"].received] == [body],
                     what="the drain")
