"""Tally: updates batched per turn of the loop export exactly what the same updates made one by
one through prometheus_client would (compared on the exposition text)."""

from __future__ import annotations

import asyncio
import math

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from proxy.ops.tally import Tally

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


async def test_one_turn_of_observations_exports_what_observe_would() -> None:
    expected, latency, sent = histograms()
    for value in VALUES:
        latency.labels("us").observe(value)
        sent.labels("us").inc(10)
    latency.labels("eu").observe(0.02)

    batched, latency, sent = histograms()
    tally = Tally()
    for value in VALUES:                          # one turn: nothing applied yet
        tally.observe(latency.labels("us"), value)
        tally.add(sent.labels("us"), 10)
    tally.observe(latency.labels("eu"), 0.02)
    assert 'latency_seconds_count{region="us"} 0.0' in exposition(batched)
    assert exposition(batched) != exposition(expected)
    await asyncio.sleep(0)                        # the end of the turn: applied
    assert exposition(batched) == exposition(expected)


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
