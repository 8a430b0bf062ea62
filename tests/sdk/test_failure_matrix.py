"""Each SDK's reading of the relay's answers when things go wrong: nothing is deleted unsent.

For every official SDK family the same request goes through the relay while the relay is over
its rate limit, the upstream is down or rate-limits, or the batch is oversize, and the SDK's own
reading of the answer (tests/sdk/shapes.py, ported from its source) must be `kept` (retried
later), `raised` (a server SDK hands the failure to its caller) or `delivered` with the records
really upstream. `deleted` is loss.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.sdk.shapes import Shape
from tests.support.fakes import FakeUpstream
from tests.support.helpers import event

TRACK = shapes.TRACK_BATCHES
SLOW = 0.01     # a refill so slow that the burst alone decides within a test


def one_batch(sdk: str) -> Shape:
    return TRACK[sdk]([event(US_TOKEN, "matrix", n=1)])


@pytest.mark.parametrize("sdk", sorted(TRACK))
async def test_rate_limit_is_never_read_as_delete(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay({"limits": {"rate": {"ip_per_second": SLOW, "ip_burst": 1}}},
                              registry=registry)
    first = await shapes.send(client, one_batch(sdk))
    assert one_batch(sdk).reading(first.status, first.body) == "delivered"
    over = await shapes.send(client, one_batch(sdk))
    assert over.status == 503
    assert int(over.headers["Retry-After"]) >= 1
    assert over.json()["limit"] == "ip_per_second"
    assert one_batch(sdk).reading(over.status, over.body) in ("kept", "raised")
    assert len(upstreams["us"].received) == 1
    assert registry.get_sample_value("mixpanel_proxy_rejections_total",
                                     {"reason": "rate_limit"}) == 1


@pytest.mark.parametrize("sdk", sorted(TRACK))
async def test_token_rate_limit_is_never_read_as_delete(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(
        {"limits": {"rate": {"token_per_second": SLOW, "token_burst": 1}}}, projects=True)
    assert (await shapes.send(client, one_batch(sdk))).status == 200
    over = await shapes.send(client, one_batch(sdk))
    assert (over.status, over.json()["limit"]) == (503, "token_per_second")
    assert one_batch(sdk).reading(over.status, over.body) in ("kept", "raised")


@pytest.mark.parametrize("sdk", sorted(TRACK))
async def test_upstream_429_is_never_read_as_delete(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    upstreams["us"].answer(429, {"code": 429, "error": "Project exceeded rate limits",
                                 "status": "Too Many Requests"}, {"Retry-After": "7"})
    client = await make_relay()
    reply = await shapes.send(client, one_batch(sdk))
    assert (reply.status, reply.headers["Retry-After"]) == (503, "7")
    assert one_batch(sdk).reading(reply.status, reply.body) in ("kept", "raised")


@pytest.mark.parametrize("sdk", sorted(TRACK))
async def test_upstream_down_is_never_read_as_delete(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    await upstreams["us"].go_down()
    reply = await shapes.send(client, one_batch(sdk))
    assert reply.status == 503 and int(reply.headers["Retry-After"]) >= 1
    assert one_batch(sdk).reading(reply.status, reply.body) in ("kept", "raised")


@pytest.mark.parametrize("sdk", sorted(TRACK))
async def test_upstream_down_with_the_spool_is_delivered_from_disk(
        sdk: str, tmp_path: Path, make_relay: RelayFactory,
        upstreams: dict[str, FakeUpstream]) -> None:
    """The success is the SDK's own, given once the request sits in the durable spool."""
    registry = CollectorRegistry()
    client = await make_relay({"spool": {"enabled": True, "path": str(tmp_path / "spool.db"),
                                         "backoff_min": 30.0}}, registry=registry)
    await upstreams["us"].go_down()
    reply = await shapes.send(client, one_batch(sdk))
    assert one_batch(sdk).reading(reply.status, reply.body) == "delivered", reply.body
    assert registry.get_sample_value("mixpanel_proxy_spool_stored_total",
                                     {"region": "us", "endpoint": "track"}) == 1


@pytest.mark.parametrize("sdk", sorted(TRACK))
async def test_oversize_batch_is_delivered_not_refused(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    records = [event(US_TOKEN, "big", n=n, blob="x" * 52_000) for n in range(50)]
    shape = TRACK[sdk](records)
    client = await make_relay()
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered", (reply.status, reply.body)
    assert sum(len(shapes.records_of(received)) for received in upstreams["us"].received) == 50


# Strict mode's 403 for a token `[[projects]]` does not list: the one deliberate refusal. What
# each SDK does with it (README "SDKs"): the queueing mobile SDKs keep the data on the device
# (and retry) until the token is listed; the browser and mixpanel-iphone drop the batch.
STRICT_403 = {
    "android": "kept", "android-gzip": "kept", "swift": "kept", "swift-gzip": "kept",
    "unity": "kept", "react-native-js": "kept", "iphone": "deleted", "browser": "deleted",
    "python": "raised", "ruby": "raised", "node": "raised", "java": "raised", "go": "raised",
    "php": "raised",
}


@pytest.mark.parametrize("sdk", sorted(TRACK))
async def test_strict_mode_unlisted_token_is_the_documented_exception(
        sdk: str, make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    shape = TRACK[sdk]([event("tok_not_listed", "stray")])
    reply = await shapes.send(client, shape)
    assert reply.status == 403
    assert "not a project this relay serves" in reply.json()["error"]
    assert all(not fake.received for fake in upstreams.values())
    assert shape.reading(reply.status, reply.body) == STRICT_403[sdk]
