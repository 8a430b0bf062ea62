"""`LatencyHistogram`: the upstream latency histogram, observed on every exchange for a dict-free
bucket count, and exported as prometheus_client's `Histogram` exports it.

prometheus_client's `Histogram.observe` takes two locks and walks the bucket bounds in Python:
one call per /track request measured as 3 % of a worker's CPU, the largest metric cost left on the
request path. Here an observation is a binary search over the bounds and two additions on a
series the caller looked up once; a scrape builds the family from the counts (a custom collector,
prometheus_client's documented extension point). The exposition is the same text, `_created`
included: the tests compare the two.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["LatencyHistogram", "LatencySeries"]

_bucket_of: Final = bisect_left   # a Final name is a C static once compiled: no dict lookup


class LatencySeries:
    """One label set's buckets (each bucket's own count, not cumulative) and sum."""

    __slots__ = ("_bounds", "counts", "total", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        self.total += seconds
        if seconds == seconds:   # NaN never is: summed, but in no bucket, as prometheus_client does
            self.counts[_bucket_of(self._bounds, seconds)] += 1


class LatencyHistogram(Collector):
    """A histogram with the `Histogram` API the relay uses (`labels(...).observe(v)`)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        bounds = sorted(float(bound) for bound in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        self._les = [floatToGoString(bound) for bound in bounds]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, ...], LatencySeries] = {}
        registry.register(self)

    def labels(self, *values: str) -> LatencySeries:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name}: labels {self._labelnames}, given {values}")
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = LatencySeries(self._bounds)
        return series

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._les, series.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, series.total)
            # In the family, as Histogram has it: the text exposition writes it as a gauge.
            family.samples.append(Sample(f"{self._name}_created",
                                         dict(zip(self._labelnames, values, strict=True)),
                                         series.created))
        yield family
