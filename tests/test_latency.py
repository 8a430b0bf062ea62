"""LatencyHistogram: the upstream latency histogram exports the text prometheus_client's own
Histogram exports for the same observations, and joins the multiprocess files the same way."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from proxy.ops.latency import LatencyHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# On a bound, between bounds, below the first, past the last, zero, negative, twice the same,
# infinite and NaN (summed, counted in no bucket).
VALUES = [0.001, 0.0005, 0.01, 0.05, 0.05, 1.0, 7.5, 0.0, -1.0, 0.1000001, math.inf, math.nan]


def exposition(registry: CollectorRegistry) -> tuple[list[str], list[str]]:
    """The lines, and the `_created` lines with their times cut (they differ by microseconds)."""
    lines = generate_latest(registry).decode().splitlines()
    created = [line.rsplit(" ", 1)[0] for line in lines if "_created{" in line]
    return [line for line in lines if "_created{" not in line], created


def test_the_exposition_is_prometheus_clients_own() -> None:
    expected = CollectorRegistry()
    theirs = Histogram("latency_seconds", "Upstream latency.", ("region", "endpoint"),
                       buckets=BUCKETS, registry=expected)
    ours_registry = CollectorRegistry()
    ours = LatencyHistogram("latency_seconds", "Upstream latency.", ("region", "endpoint"),
                            BUCKETS, ours_registry)
    for value in VALUES:
        theirs.labels("us", "track").observe(value)
        ours.labels("us", "track").observe(value)
    theirs.labels("eu", "engage").observe(0.02)
    ours.labels("eu", "engage").observe(0.02)
    assert exposition(ours_registry) == exposition(expected)
    assert 'latency_seconds_bucket{endpoint="track",le="+Inf",region="us"} 11.0' in \
        exposition(ours_registry)[0]


def test_no_series_exports_the_family_alone() -> None:
    expected = CollectorRegistry()
    Histogram("latency_seconds", "doc", ("region",), buckets=BUCKETS, registry=expected)
    ours = CollectorRegistry()
    LatencyHistogram("latency_seconds", "doc", ("region",), BUCKETS, ours)
    assert exposition(ours) == exposition(expected)


def test_its_names_are_taken_in_the_registry() -> None:
    registry = CollectorRegistry()
    LatencyHistogram("latency_seconds", "doc", ("region",), BUCKETS, registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram("latency_seconds", "doc", ("region",), registry=registry)


def test_a_wrong_number_of_labels_is_refused() -> None:
    histogram = LatencyHistogram("latency_seconds", "doc", ("region", "endpoint"), BUCKETS,
                                 CollectorRegistry())
    with pytest.raises(ValueError, match="labels"):
        histogram.labels("us")
