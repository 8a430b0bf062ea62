"""The durable spool against real fake upstreams: what clients are told, what lands on disk, what
the upstream finally receives (byte for byte), and what goes to dead letter."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream, Received
from tests.support.helpers import BEACON, FORM, basic, browser_form, event, python_sdk_form
from tests.support.metrics import sample
from tests.support.waits import eventually

Client = TestClient[Any, Any]


def spool_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {"spool": {"enabled": True, "path": str(tmp_path / "spool.db"), "backoff_min": 0.05,
                      "backoff_max": 0.2, "poll_interval": 0.1, **overrides}}


def on_disk(tmp_path: Path, table: str = "entries") -> list[sqlite3.Row]:
    """Read the spool file directly, as a second process would."""
    conn = sqlite3.connect(tmp_path / "spool.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()


def fresh(token: str, name: str = "page view") -> dict[str, Any]:
    """An event of a minute ago: helpers.event's fixed time is past Mixpanel's /track window."""
    return event(token, name, time=time.time() - 60)


REQUESTS: list[tuple[str, bytes, dict[str, str], bytes]] = [
    # (target, body, headers, expected client answer)
    ("/track/?ip=1&_=1764330000000",
     browser_form([fresh(US_TOKEN, "a"), fresh(US_TOKEN, "b")]),
     {**FORM, "User-Agent": "Mozilla/5.0 test"}, b"1"),
    ("/track/?verbose=1", browser_form(fresh(US_TOKEN, "c")), BEACON, b'{"status":1,"error":null}'),
    ("/engage/", python_sdk_form([{"$token": US_TOKEN, "$distinct_id": "u", "$set": {"a": 1}}]),
     FORM, b'{"status":1,"error":null}'),
    ("/record/?format=gzip&seq=0&replay_id=r1", b"\x1f\x8b\x08\x00binary\x00\xff",
     {"Content-Type": "application/octet-stream", "Authorization": basic(US_TOKEN)},
     b'{"code":200,"status":"OK"}'),
]


async def send_all(client: Client, spooled: bool = True) -> None:
    for target, body, headers, expected in REQUESTS:
        response = await client.post(target, data=body, headers=headers)
        assert response.status == 200, await response.text()
        answer = await response.read()
        if spooled:        # the relay's own answer, in exactly the SDK's form
            assert answer == expected
        else:
            assert json.loads(answer) == json.loads(expected)


def wire(received: Received) -> tuple[str, str, str, dict[str, str], bytes]:
    return received.method, received.path, received.query, received.headers, received.body


async def test_down_then_back_delivers_byte_identical(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    # What the relay sends when the upstream is up: the reference for the replays.
    direct = await make_relay()
    await send_all(direct, spooled=False)
    reference = [wire(received) for received in us.received]
    us.clear()

    registry = CollectorRegistry()
    client = await make_relay(spool_config(tmp_path), registry=registry)
    await us.go_down()
    await send_all(client)
    rows = on_disk(tmp_path)
    assert [(row["endpoint"], bytes(row["body"])) for row in rows] == [
        (target.split("/")[1], body) for target, body, _, _ in REQUESTS]
    assert sample(registry, "mixpanel_proxy_spool_entries", region="us") == len(REQUESTS)
    assert sample(registry, "mixpanel_proxy_spool_oldest_age_seconds", region="us") > 0
    assert sample(registry, "mixpanel_proxy_spool_bytes", kind="live") > sum(
        len(body) for _, body, _, _ in REQUESTS)

    await us.come_back()
    await eventually(lambda: len(us.received) >= len(REQUESTS), what="the drain")
    await eventually(lambda: not on_disk(tmp_path), what="an empty spool")
    assert [wire(received) for received in us.received] == reference
    await eventually(lambda: sample(registry, "mixpanel_proxy_spool_delivered_total",
                                    region="us") == len(REQUESTS), what="the delivered count")
    assert sample(registry, "mixpanel_proxy_spool_entries", region="us") == 0
    assert sample(registry, "mixpanel_proxy_spool_bytes", kind="live") == 0
    await eventually(lambda: sample(registry, "mixpanel_proxy_spool_oldest_age_seconds",
                                    region="us") == 0, what="no oldest entry")


async def test_final_answers_and_read_endpoints_are_not_stored(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    client = await make_relay(spool_config(tmp_path))
    us.answer(400, {"status": 0, "error": "bad data"}, {"Content-Type": "application/json"})
    response = await client.post("/track/", data=browser_form(fresh(US_TOKEN)), headers=FORM)
    assert (response.status, await response.json()) == (400, {"status": 0, "error": "bad data"})
    us.answer(503)
    response = await client.post("/flags/?token=x", headers={"Authorization": basic(US_TOKEN)})
    assert response.status == 503          # /flags answers carry data: never stored
    assert on_disk(tmp_path) == []


@pytest.mark.slow   # waits out a real Retry-After
async def test_429_retry_after_is_respected(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    us.answer(429, b"slow down", {"Retry-After": "1"})
    client = await make_relay(spool_config(tmp_path))
    response = await client.post("/track/", data=browser_form(fresh(US_TOKEN)), headers=FORM)
    assert (response.status, await response.read()) == (200, b"1")
    await eventually(lambda: len(us.received) >= 2, what="the first retry")
    us.answer(200)
    await eventually(lambda: not on_disk(tmp_path), what="the delivery")
    gaps = [later.at - earlier.at for earlier, later in pairwise(us.received)]
    # backoff_min is 0.05 s: only the upstream's Retry-After explains waits of a second.
    assert len(gaps) >= 2 and all(gap >= 0.95 for gap in gaps), gaps
    assert len({received.body for received in us.received}) == 1


async def test_400_goes_to_dead_letter_with_the_answer(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    registry = CollectorRegistry()
    client = await make_relay(spool_config(tmp_path), registry=registry)
    await us.go_down()
    body = browser_form(fresh(US_TOKEN))
    assert (await client.post("/track/", data=body, headers=FORM)).status == 200
    us.answer(400, {"status": 0, "error": "invalid data"}, {"Content-Type": "application/json"})
    await us.come_back()
    await eventually(lambda: on_disk(tmp_path, "dead"), what="the dead letter")
    dead = on_disk(tmp_path, "dead")
    assert len(dead) == 1 and bytes(dead[0]["body"]) == body
    assert dead[0]["status"] == 400
    assert json.loads(dead[0]["answer"]) == {"status": 0, "error": "invalid data"}
    assert not on_disk(tmp_path)
    # A later request stored and delivered: the drain has gone round since, and never sent the
    # 400 again.
    await us.go_down()
    later = browser_form(fresh(US_TOKEN, "later"))
    assert (await client.post("/track/", data=later, headers=FORM)).status == 200
    us.answer(200)
    await us.come_back()
    await eventually(lambda: len(us.received) == 2 and not on_disk(tmp_path), what="the drain")
    assert [r.body for r in us.received] == [body, later]
    assert sample(registry, "mixpanel_proxy_spool_dead_lettered_total", region="us",
                  cause="upstream_4xx") == 1
    assert sample(registry, "mixpanel_proxy_spool_dead_entries") == 1


async def test_track_older_than_five_days_goes_to_dead_letter(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    client = await make_relay(spool_config(tmp_path))
    await us.go_down()
    stale = event(US_TOKEN, time=time.time() - 6 * 86400)
    fresh = event(US_TOKEN, time=(time.time() - 3600) * 1000)    # milliseconds are understood
    big_stale = [event(US_TOKEN, f"e{n}", pad="x" * 400, time=time.time() - 6 * 86400)
                 for n in range(300)]                           # > 64 KiB: checked off the loop
    for payload in (stale, fresh, big_stale):
        assert (await client.post("/track/", data=browser_form(payload), headers=FORM)
                ).status == 200
    await us.come_back()
    await eventually(lambda: len(us.received) == 1 and not on_disk(tmp_path), what="the drain")
    assert us.received[0].records()[0]["properties"]["time"] == fresh["properties"]["time"]
    dead = on_disk(tmp_path, "dead")
    assert [row["status"] for row in dead] == [0, 0]
    reasons = sorted(row["reason"] for row in dead)
    assert reasons[0].startswith("1 event(s) older than Mixpanel's 432000-second /track window")
    assert reasons[1].startswith("300 event(s) older")


async def test_full_spool_answers_503_with_retry_after(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    registry = CollectorRegistry()
    client = await make_relay(spool_config(tmp_path, max_bytes=2048), registry=registry)
    await upstreams["us"].go_down()
    body = browser_form([fresh(US_TOKEN, "x" * 200) for _ in range(3)])
    assert 1000 < len(body) < 2000
    assert (await client.post("/track/", data=body, headers=FORM)).status == 200
    response = await client.post("/track/", data=body, headers=FORM)
    assert response.status == 503
    assert response.headers["Retry-After"] == "10"
    assert "the spool is full" in (await response.json())["error"]
    assert len(on_disk(tmp_path)) == 1
    assert sample(registry, "mixpanel_proxy_spool_refused_total", reason="full") == 1


async def test_always_mode_stores_first_and_forwards_in_background(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    us.hold()                   # the upstream answers nothing until released
    client = await make_relay({**spool_config(tmp_path, mode="always"),
                               "upstream": {"read_timeout": 60.0}})
    body = browser_form(fresh(US_TOKEN))
    # The client has its 200 while the upstream has answered nothing: it never waited for it
    # (nor for a read timeout, a minute here: the bound only catches that).
    response = await asyncio.wait_for(client.post("/track/", data=body, headers=FORM), 30)
    assert (response.status, await response.read()) == (200, b"1")
    assert len(on_disk(tmp_path)) == 1
    us.release()
    await eventually(lambda: us.received and not on_disk(tmp_path), what="the background send")
    assert us.received[0].body == body


@pytest.mark.slow   # waits out real backoff periods
async def test_ordered_updates_never_overtake_stored_ones(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    eu = upstreams["eu"]
    client = await make_relay(spool_config(tmp_path, backoff_min=0.5, backoff_max=0.5),
                              projects=True)
    eu.answer(503)
    first = python_sdk_form([{"$token": EU_TOKEN, "$distinct_id": "u", "$set": {"plan": "a"}}])
    second = python_sdk_form([{"$token": EU_TOKEN, "$distinct_id": "u", "$unset": ["plan"]}])
    assert (await client.post("/engage/", data=first, headers=FORM)).status == 200
    eu.answer(200)
    eu.delay = 0.3
    # The upstream is back, but the first update still waits (or is on its way): the second is
    # stored behind it instead of overtaking it.
    assert (await client.post("/engage/", data=second, headers=FORM)).status == 200
    assert second in [bytes(row["body"]) for row in on_disk(tmp_path)]
    await eventually(lambda: not on_disk(tmp_path), what="the drain")
    delivered = [received.body for received in eu.received if received.body in (first, second)]
    assert delivered[-2:] == [first, second]
    assert delivered.index(second) > max(i for i, b in enumerate(delivered) if b == first)


async def test_mode_off_stores_nothing_new_but_drains_the_file(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    us.answer(503)
    first = await make_relay(spool_config(tmp_path, backoff_min=30.0, backoff_max=30.0))
    old = browser_form(fresh(US_TOKEN, "old"))
    assert (await first.post("/track/", data=old, headers=FORM)).status == 200
    await first.close()
    off = await make_relay(spool_config(tmp_path, mode="off"))
    response = await off.post("/track/", data=browser_form(fresh(US_TOKEN, "new")),
                              headers=FORM)
    assert response.status == 503 and "Retry-After" in response.headers
    assert [bytes(row["body"]) for row in on_disk(tmp_path)] == [old]
    us.answer(200)
    await eventually(lambda: not on_disk(tmp_path), what="the drain in mode off")
    assert us.received[-1].body == old


async def test_a_200_that_says_0_is_a_refusal(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    client = await make_relay(spool_config(tmp_path))
    await us.go_down()
    assert (await client.post("/track/?verbose=1", data=browser_form(fresh(US_TOKEN)),
                              headers=FORM)).status == 200
    us.answer(200, {"status": 0, "error": "token missing"}, {"Content-Type": "application/json"})
    await us.come_back()
    await eventually(lambda: on_disk(tmp_path, "dead"), what="the dead letter")
    dead = on_disk(tmp_path, "dead")[0]
    assert dead["reason"] == "the upstream refused the payload: token missing"
    assert dead["status"] == 200
