"""A batch of valid records over the body limit is delivered in parts, not refused.

50 events of ~52 KB each (every one well within Mixpanel's 1 MB per event) make ~2.6 MB of JSON,
over the 2 MiB /track limit, plain or gzipped (the limit applies to the inflated body). Refused
with 413, Android, Swift, Unity and React Native would resend it forever (their queue waits
behind it) and mixpanel-iphone would delete it. The relay cuts it into parts under the limit and
answers success only when every part was accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.sdk.shapes import Shape
from tests.support.fakes import FakeUpstream
from tests.support.helpers import event

LIMIT = 2 * 1024 * 1024
BATCH: dict[str, Callable[[list[Any]], Shape]] = {
    **{sdk: shapes.TRACK_BATCHES[sdk] for sdk in (
        "android", "android-gzip", "swift", "swift-gzip", "iphone", "unity", "react-native-js",
        "browser", "python", "java", "go")},
    "swift-engage": lambda records: shapes.swift("engage", [
        {"$token": US_TOKEN, "$distinct_id": f"u{n}", "$set": {"blob": "p" * 52_000}}
        for n in range(50)]),
}


def big_batch() -> list[dict[str, Any]]:
    return [event(US_TOKEN, "big", n=n, blob="x" * 52_000, **{"$insert_id": f"big-{n:04d}"})
            for n in range(50)]


def delivered(upstreams: dict[str, FakeUpstream]) -> list[Any]:
    return [record for fake in upstreams.values() for received in fake.received
            for record in shapes.records_of(received)]


@pytest.mark.parametrize("projects", [False, True], ids=["plain", "projects"])
@pytest.mark.parametrize("sdk", sorted(BATCH))
async def test_oversize_batch_of_valid_records_is_delivered_in_parts(
        sdk: str, projects: bool, make_relay: RelayFactory,
        upstreams: dict[str, FakeUpstream]) -> None:
    shape = BATCH[sdk](big_batch())
    client = await make_relay(projects=projects)
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered", (reply.status, reply.body)
    parts = upstreams["us"].received
    assert len(parts) >= 2
    assert all(len(part.plain_body()) <= LIMIT for part in parts)
    records = delivered(upstreams)
    assert len(records) == 50
    if sdk != "swift-engage":
        assert sorted(r["properties"]["$insert_id"] for r in records) == \
            [f"big-{n:04d}" for n in range(50)]


async def test_a_failed_part_fails_the_whole_batch(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    upstreams["us"].answer(503, b"busy")
    client = await make_relay()
    shape = shapes.swift("track", big_batch())
    reply = await shapes.send(client, shape)
    assert reply.status == 503
    assert shape.reading(reply.status, reply.body) == "kept"


async def test_one_record_over_1_mb_cannot_be_split(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    records = [event(US_TOKEN, "small"), event(US_TOKEN, "huge", blob="y" * 1_100_000),
               *big_batch()[:30]]
    reply = await shapes.send(client, shapes.swift("track", records))
    assert reply.status == 413
    assert "1 MB" in reply.json()["error"]
    assert all(not fake.received for fake in upstreams.values())


async def test_past_split_max_is_still_413(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"limits": {"split_max": "3MiB"}})
    records = big_batch() + [event(US_TOKEN, "more", n=n, blob="z" * 52_000) for n in range(20)]
    reply = await shapes.send(client, shapes.swift("track", records))
    assert reply.status == 413
    assert all(not fake.received for fake in upstreams.values())
