"""One suite, both spool backends (`[spool] backend = "sqlite"` and `"redis"`): the store
interface (proxy/spool/backend.py) and the relay on top of it. The SQLite-only suites
(tests/test_spool*.py) stay as they were."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from proxy.config import parse_config
from proxy.ops.fleetmetrics import FleetMetrics
from proxy.ops.metrics import Metrics
from proxy.spool import admin
from proxy.spool.backend import SpoolBackend
from proxy.spool.entry import Refusal, SpoolEntry
from proxy.spool.fallback import build
from proxy.spool.store import SpoolStore
from proxy.upstream.redislink import RedisLink
from tests.conftest import US_TOKEN, RelayFactory
from tests.fleet.backends import Held, spool_extra
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, basic, browser_form, event, python_sdk_form
from tests.support.redis_server import RedisServer
from tests.support.waits import eventually

BACKENDS = ["sqlite", "redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_or_none(backend: str, request: pytest.FixtureRequest) -> RedisServer | None:
    return request.getfixturevalue("redis_server") if backend == "redis" else None


@pytest.fixture
def held(backend: str, tmp_path: Path, redis_or_none: RedisServer | None) -> Held:
    return Held(backend, tmp_path, redis_or_none)


@dataclass
class Outage:
    """A relay spooling on the backend under test, its metrics, and its US region, down."""

    client: TestClient[Any, Any]
    registry: CollectorRegistry
    us: FakeUpstream


@pytest.fixture
async def outage(make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
                 backend: str, redis_or_none: RedisServer | None) -> Outage:
    registry = CollectorRegistry()
    client = await make_relay(spool_extra(backend, tmp_path, redis_or_none), projects=True,
                              registry=registry)
    await upstreams["us"].go_down()
    return Outage(client, registry, upstreams["us"])


@pytest.fixture
async def store(backend: str, tmp_path: Path, redis_or_none: RedisServer | None
                ) -> AsyncIterator[SpoolBackend]:
    opened: SpoolBackend
    link = None
    if backend == "sqlite":
        opened = SpoolStore(str(tmp_path / "spool.db"))
    else:
        config = parse_config({"regions": {"us": {}, "eu": {}},
                               **spool_extra(backend, tmp_path, redis_or_none)})
        metrics = Metrics(CollectorRegistry())
        link = RedisLink(config.redis)
        opened = build(config, link, FleetMetrics(metrics), metrics)
    await opened.open()
    yield opened
    await opened.close()
    if link is not None:
        await link.close()


def entry(endpoint: str, body: bytes, project: str = "", region: str = "us") -> SpoolEntry:
    return SpoolEntry(region, endpoint, "POST", f"/{endpoint}/", b"ip=0",
                      {"Content-Type": "application/x-www-form-urlencoded"}, body,
                      project=project, created_at=time.time())


def fresh(name: str = "page view") -> dict[str, Any]:
    return event(US_TOKEN, name, time=time.time() - 60)


# -- the store interface --------------------------------------------------------------------------
async def test_add_batch_delete_keeps_bytes_and_counts(store: SpoolBackend) -> None:
    stored = [entry("track", b"data=%d" % n) for n in range(3)]
    for item in stored:
        item.id = await store.add(item)
    other = entry("track", b"data=eu", region="eu")
    await store.add(other)
    assert store.lanes[("us", "track")] == 3 and store.lanes[("eu", "track")] == 1
    assert store.totals[0] == sum(item.size for item in stored) + other.size
    batch = await store.batch("us", 10)
    assert [(item.body, item.query, item.headers, item.path) for item in batch] == [
        (item.body, item.query, item.headers, item.path) for item in stored]
    await store.delete(batch[0])
    assert [item.body for item in await store.batch("us", 10)] == [b"data=1", b"data=2"]
    snapshot = await store.snapshot()
    assert snapshot.lanes == {("us", "track"): 2, ("eu", "track"): 1}
    assert snapshot.live_bytes == sum(item.size for item in batch[1:]) + other.size
    assert "us" in snapshot.oldest


async def test_bury_moves_to_dead_letters(store: SpoolBackend) -> None:
    await store.add(entry("track", b"data=bad"))
    [item] = await store.batch("us", 10)
    await store.bury(item, Refusal("the upstream answered 400", 400, b'{"error":"x"}'))
    assert await store.batch("us", 10) == []
    snapshot = await store.snapshot()
    assert (snapshot.dead_entries, snapshot.dead_bytes, snapshot.live_bytes) == (
        1, item.size, 0)


async def test_ordered_lanes_come_back_in_the_order_accepted(store: SpoolBackend) -> None:
    for n in range(6):
        for project in ("A", "B"):
            await store.add(entry("engage", b"%s-%d" % (project.encode(), n), project))
    await store.add(entry("track", b"data=t"))
    batch = await store.batch("us", 64)
    for project in ("A", "B"):
        assert [item.body for item in batch if item.project == project] == [
            b"%s-%d" % (project.encode(), n) for n in range(6)]
    # Delivered the first two of A: the rest still come in order, behind nothing newer.
    for item in [item for item in batch if item.project == "A"][:2]:
        await store.delete(item)
    again = await store.batch("us", 64)
    assert [item.body for item in again if item.project == "A"] == [
        b"A-%d" % n for n in range(2, 6)]


# -- the relay on each backend --------------------------------------------------------------------
async def test_down_then_back_delivers_every_accepted_request(
        outage: Outage, held: Held) -> None:
    client, registry, us = outage.client, outage.registry, outage.us
    bodies = [browser_form([fresh(f"e{n}")]) for n in range(5)]
    for body in bodies:
        response = await client.post("/track/", data=body, headers=FORM)
        assert (response.status, await response.read()) == (200, b"1")
    assert sorted(held.waiting()) == sorted(bodies)          # each 200 came after the write
    assert registry.get_sample_value("mixpanel_proxy_spool_entries", {"region": "us"}) == 5
    await us.come_back()
    await eventually(lambda: len(us.received) >= 5 and not held.waiting(), what="the drain")
    assert sorted(item.body for item in us.received) == sorted(bodies)


async def test_engage_order_per_project_survives_the_outage(
        outage: Outage, held: Held) -> None:
    client, us = outage.client, outage.us
    for n in range(8):
        update = [{"$token": US_TOKEN, "$distinct_id": "u1", "$set": {"step": n}}]
        response = await client.post("/engage/", data=python_sdk_form(update), headers=FORM)
        assert response.status == 200
    await us.come_back()
    await eventually(lambda: len(us.received) >= 8 and not held.waiting(), what="the drain")
    steps = [item.records()[0]["$set"]["step"] for item in us.received]
    assert steps == list(range(8))


async def test_record_order_per_replay_survives_the_outage(
        outage: Outage, held: Held) -> None:
    """Two replays' batches interleaved: each replay's `seq` reaches the upstream in order."""
    client, us = outage.client, outage.us
    headers = {"Content-Type": "application/octet-stream", "Authorization": basic(US_TOKEN)}
    for seq in range(5):
        for replay in ("r1", "r2"):
            response = await client.post(f"/record/?format=gzip&seq={seq}&replay_id={replay}",
                                         data=b"\x1f\x8b" + f"{replay}-{seq}".encode(),
                                         headers=headers)
            assert response.status == 200
    await us.come_back()
    await eventually(lambda: len(us.received) >= 10 and not held.waiting(), what="the drain")
    for replay in ("r1", "r2"):
        seqs = [item.query for item in us.received if f"replay_id={replay}" in item.query]
        assert seqs == [f"format=gzip&seq={seq}&replay_id={replay}" for seq in range(5)]


async def test_final_refusal_and_stale_track_go_to_dead_letters(
        outage: Outage, held: Held) -> None:
    client, registry, us = outage.client, outage.registry, outage.us
    stale = browser_form(event(US_TOKEN, time=time.time() - 6 * 86400))
    refused = browser_form(fresh("refused"))
    for body in (stale, refused):
        assert (await client.post("/track/", data=body, headers=FORM)).status == 200
    us.answer(400, {"status": 0, "error": "invalid data"}, {"Content-Type": "application/json"})
    await us.come_back()
    await eventually(lambda: len(held.dead()) == 2, what="two dead letters")
    dead = {item["body"]: item for item in held.dead()}
    assert dead[stale]["status"] == 0
    assert "older than Mixpanel's 432000-second /track window" in dead[stale]["reason"]
    assert dead[refused]["status"] == 400
    assert json.loads(dead[refused]["answer"]) == {"status": 0, "error": "invalid data"}
    assert not held.waiting()
    assert [item.body for item in us.received] == [refused]    # the stale one was never sent
    await eventually(lambda: registry.get_sample_value(
        "mixpanel_proxy_spool_dead_entries") == 2, what="the dead-letter gauge")


# -- `mixpanel-proxy spool status|retry-dead|purge` ----------------------------------------------
async def test_spool_commands_on_each_backend(
        store: SpoolBackend, backend: str, tmp_path: Path, redis_or_none: RedisServer | None,
        held: Held, capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config({"regions": {"us": {}, "eu": {}},
                           **spool_extra(backend, tmp_path, redis_or_none)})
    for body in (b"data=ok", b"data=bad1", b"data=bad2"):
        await store.add(entry("track", body))
    for item in (await store.batch("us", 10))[1:]:
        await store.bury(item, Refusal("the upstream answered 400", 400, b"no"))
    await store.close()        # SQLite: retry-dead and purge refuse while a relay drains

    async def command(action: str, everything: bool = False) -> str:
        # In a thread, as the CLI runs it: the Redis commands start an event loop of their own.
        assert await asyncio.to_thread(admin.run, action, config, everything) == 0
        return capsys.readouterr().out

    shown = await command("status")
    assert "waiting: 1 requests" in shown and "us /track: 1" in shown
    assert "dead letters: 2 requests" in shown
    assert "2 x HTTP 400: the upstream answered 400" in shown
    assert "2 dead letters moved back" in await command("retry-dead")
    assert sorted(held.waiting()) == [b"data=bad1", b"data=bad2", b"data=ok"]
    assert held.dead() == []
    assert "waiting: 3 requests" in await command("status")
    assert "purged 0 dead letters and 3 waiting requests" in await command("purge", True)
    assert held.waiting() == []
    assert "waiting: 0 requests" in await command("status")
    await store.open()         # the fixture closes it again
