"""`Tally`: the request path's counter and gauge updates, applied together at most
WINDOW_SECONDS later, or at once when anything reads the registry.

A prometheus_client update takes a lock and validates the metric on every call; a /track request
makes about ten of them, which measured as a tenth of the relay's CPU per request. Collected in a
dict, they cost a dict update each, and a counter's updates of a whole window become one `inc`
(applied once per turn of the loop, they still cost a twentieth of a request: a turn holds a
request or two). The upstream latency histogram has its own cheap path (latency.py).

Nothing reads a stale value: `TallyFirst`, registered ahead of every metric, applies what waits
whenever the registry is collected (a scrape, a page, a publish to the other workers, a test's
read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

WINDOW_SECONDS: Final = 0.1


class _Incrementable(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Tally:
    __slots__ = ("_counts", "_loop", "_due")

    def __init__(self) -> None:
        self._counts: dict[_Incrementable, float] = {}     # a series -> its increment, waiting
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = False

    def add(self, series: _Incrementable, amount: float = 1.0) -> None:
        """`series.inc(amount)` soon (a Gauge takes negative amounts)."""
        counts = self._counts
        counts[series] = counts.get(series, 0.0) + amount
        if not self._due:
            self._schedule()

    def _schedule(self) -> None:
        loop = self._loop = running_loop(self._loop)
        if loop is None:                  # no loop (a unit test, a command): at once
            self.flush()
            return
        self._due = True
        loop.call_later(WINDOW_SECONDS, self.flush)

    def flush(self) -> None:
        self._due = False
        counts, self._counts = self._counts, {}
        for series, amount in counts.items():
            if amount:
                series.inc(amount)


class TallyFirst(Collector):
    """Registered before every metric: collecting the registry applies what the tally holds
    first, so every reader sees every update made before it read."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    def describe(self) -> list[Metric]:
        return []               # no series of its own: it never clashes with a metric's name

    def collect(self) -> Iterator[Metric]:
        self._tally.flush()
        return iter(())


def running_loop(known: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
    """`known` while it is open, else the running loop (asked only then: the question costs a
    system call), else None (no loop: a unit test, a command)."""
    if known is not None and not known.is_closed():
        return known
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
