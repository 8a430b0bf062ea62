"""Tally: updates batched over a window export exactly what the same updates made one by one
through prometheus_client would (compared on the exposition text), and any read of the registry
sees them all."""

from __future__ import annotations

import asyncio
import math

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from proxy.ops.metrics import Metrics
from proxy.ops.tally import WINDOW_SECONDS, Tally
from tests.support.metrics import sample

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# On a bound, between bounds, below the first, past the last, zero, negative, twice the same.
VALUES = [0.001, 0.0005, 0.01, 0.05, 0.05, 1.0, 7.5, 0.0, -1.0, 0.1000001]


def histograms() -> tuple[CollectorRegistry, Histogram, Counter]:
    registry = CollectorRegistry()
    latency = Histogram("latency_seconds", "test", ("region",), buckets=BUCKETS,
                        registry=registry)
    sent = Counter("sent_bytes", "test", ("region",), registry=registry)
    return registry, latency, sent


def exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]   # creation times differ between the two registries


async def test_a_window_of_updates_exports_what_observe_and_inc_would() -> None:
    expected, latency, sent = histograms()
    for value in VALUES:
        latency.labels("us").observe(value)
        sent.labels("us").inc(10)
    latency.labels("eu").observe(0.02)

    batched, latency, sent = histograms()
    tally = Tally()
    for value in VALUES:                          # turns apart, within one window
        tally.observe(latency.labels("us"), value)
        tally.add(sent.labels("us"), 10)
        await asyncio.sleep(0)
    tally.observe(latency.labels("eu"), 0.02)
    # A registry without TallyFirst (Metrics registers one) shows nothing until the window ends.
    assert 'latency_seconds_count{region="us"} 0.0' in exposition(batched)
    assert exposition(batched) != exposition(expected)
    await asyncio.sleep(WINDOW_SECONDS * 2 + 0.05)     # surely past the window: applied
    assert exposition(batched) == exposition(expected)


async def test_reading_the_registry_applies_what_the_tally_holds_first() -> None:
    metrics = Metrics(CollectorRegistry())
    requests = metrics.child(metrics.requests, "track", "us", "2xx")
    for _ in range(3):
        metrics.tally.add(requests)
    metrics.tally.observe(metrics.route("track", "us").upstream_seconds, 0.2)
    # Within the window: a read (a scrape, a page, a test) sees every update made before it.
    assert sample(metrics.registry, "mixpanel_proxy_requests_total", endpoint="track",
                  region="us", status="2xx") == 3
    assert sample(metrics.registry, "mixpanel_proxy_upstream_seconds_count", region="us",
                  endpoint="track") == 1
    metrics.tally.add(requests)
    assert b'status="2xx"} 4.0' in metrics.exposition()


async def test_nan_is_summed_and_counted_in_no_bucket_as_observe_does() -> None:
    expected, latency, _ = histograms()
    for value in (math.nan, 0.5):
        latency.labels("us").observe(value)
    batched, latency_b, _ = histograms()
    tally = Tally()
    for value in (math.nan, 0.5):
        tally.observe(latency_b.labels("us"), value)
    tally.flush()
    assert exposition(batched) == exposition(expected)


def test_without_a_loop_updates_apply_at_once() -> None:
    registry, latency, _ = histograms()
    Tally().observe(latency.labels("us"), 0.05)
    assert 'latency_seconds_count{region="us"} 1.0' in exposition(registry)
