"""Mixpanel's own SDK telemetry tokens in strict mode: answered locally, counted, never forwarded.

mixpanel-android up to 7.5.1 queues an "Integration" event under Mixpanel's token
`85053bf24bba75239b16a601d9387e17` (`src/main/java/com/mixpanel/android/mpmetrics/
MixpanelAPI.java` @ v7.4.0, `sendHttpEvent`), flushed in its own per-token batch; Android retries
every 4xx, so a strict relay's 403 would head the app's queue until the data expires.
mixpanel-iphone sends the same event (`Sources/Mixpanel.m` @ b75007a) and, in DEBUG builds,
events plus an /engage `$add` under `metrics-1`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from tests.conftest import US_TOKEN, RelayFactory
from tests.sdk import shapes
from tests.support.fakes import FakeUpstream
from tests.support.helpers import event

INTEGRATION_TOKEN = "85053bf24bba75239b16a601d9387e17"
APP_TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"     # the app's own, not listed


def integration(mp_lib: str) -> dict[str, Any]:
    return {"event": "Integration", "properties": {
        "token": INTEGRATION_TOKEN, "mp_lib": mp_lib, "distinct_id": APP_TOKEN,
        "$lib_version": "7.4.0", "Project Token": APP_TOKEN}}


def telemetry_count(registry: CollectorRegistry, endpoint: str) -> float:
    return registry.get_sample_value("mixpanel_proxy_telemetry_records_total",
                                     {"endpoint": endpoint}) or 0.0


async def test_android_integration_event_is_answered_locally_in_strict_mode(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay({"routing": {"strict": True}}, projects=True, registry=registry)
    shape = shapes.android("track", [integration("Android")])
    reply = await shapes.send(client, shape)
    assert (reply.status, reply.body) == (200, b"1")
    assert shape.reading(reply.status, reply.body) == "delivered"
    assert all(not fake.received for fake in upstreams.values())
    assert telemetry_count(registry, "track") == 1


async def test_iphone_debug_telemetry_is_answered_locally_in_strict_mode(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay({"routing": {"strict": True}}, projects=True, registry=registry)
    launch = {"event": "SDK Debug Launch", "properties": {
        "token": "metrics-1", "mp_lib": "iphone", "distinct_id": APP_TOKEN, "DevX": True}}
    add = {"$token": "metrics-1", "$distinct_id": APP_TOKEN, "$add": {"SDK Debug Launch": 1}}
    for shape in (shapes.iphone("track", [launch]), shapes.iphone("engage", [add]),
                  shapes.iphone("track", [integration("iphone")])):
        reply = await shapes.send(client, shape)
        assert (reply.status, reply.body) == (200, b"1")
    assert all(not fake.received for fake in upstreams.values())
    assert (telemetry_count(registry, "track"), telemetry_count(registry, "engage")) == (2, 1)


async def test_telemetry_records_leave_a_mixed_batch_and_the_rest_is_forwarded(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"routing": {"strict": True}}, projects=True)
    shape = shapes.swift("track", [event(US_TOKEN, "real"), integration("swift")])
    reply = await shapes.send(client, shape)
    assert shape.reading(reply.status, reply.body) == "delivered"
    (received,) = upstreams["us"].received
    assert [record["event"] for record in shapes.records_of(received)] == ["real"]


async def test_telemetry_is_forwarded_untouched_when_not_strict(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay(projects=True)
    shape = shapes.android("track", [integration("Android")])
    reply = await shapes.send(client, shape)
    assert reply.status == 200
    (received,) = upstreams["us"].received
    assert received.body == shape.body
