"""Tally: counter and gauge updates batched over a window export exactly what the same updates
made one by one through prometheus_client would (compared on the exposition text), and any read
of the registry sees them all."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from proxy.ops.metrics import Metrics
from proxy.ops.tally import WINDOW_SECONDS, Tally
from tests.support.metrics import sample

AMOUNTS = [10, 0.5, 0, 2048, 1]


def meters() -> tuple[CollectorRegistry, Counter, Gauge]:
    registry = CollectorRegistry()
    sent = Counter("sent_bytes", "test", ("region",), registry=registry)
    busy = Gauge("busy", "test", registry=registry)
    return registry, sent, busy


def exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]   # creation times differ between the two registries


async def test_a_window_of_updates_exports_what_inc_would() -> None:
    expected, sent, busy = meters()
    for amount in AMOUNTS:
        sent.labels("us").inc(amount)
        busy.inc()
        busy.dec()
    sent.labels("eu").inc(3)
    busy.inc()

    batched, sent, busy = meters()
    tally = Tally()
    for amount in AMOUNTS:                        # turns apart, within one window
        tally.add(sent.labels("us"), amount)
        tally.add(busy)
        tally.add(busy, -1)
        await asyncio.sleep(0)
    tally.add(sent.labels("eu"), 3)
    tally.add(busy)
    # A registry without TallyFirst (Metrics registers one) shows nothing until the window ends.
    assert 'sent_bytes_total{region="us"} 0.0' in exposition(batched)
    assert exposition(batched) != exposition(expected)
    await asyncio.sleep(WINDOW_SECONDS * 2 + 0.05)     # surely past the window: applied
    assert exposition(batched) == exposition(expected)


async def test_reading_the_registry_applies_what_the_tally_holds_first() -> None:
    metrics = Metrics(CollectorRegistry())
    requests = metrics.child(metrics.requests, "track", "us", "2xx")
    for _ in range(3):
        metrics.tally.add(requests)
    metrics.tally.add(metrics.in_flight)
    # Within the window: a read (a scrape, a page, a test) sees every update made before it.
    assert sample(metrics.registry, "mixpanel_proxy_requests_total", endpoint="track",
                  region="us", status="2xx") == 3
    assert sample(metrics.registry, "mixpanel_proxy_in_flight_requests") == 1
    metrics.tally.add(requests)
    assert b'status="2xx"} 4.0' in metrics.exposition()


def test_without_a_loop_updates_apply_at_once() -> None:
    registry, sent, _ = meters()
    Tally().add(sent.labels("us"), 5)
    assert 'sent_bytes_total{region="us"} 5.0' in exposition(registry)
