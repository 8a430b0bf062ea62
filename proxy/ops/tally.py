"""`Tally`: the request path's metric updates of one turn of the event loop, applied together
at its end.

A prometheus_client update takes a lock and validates the metric on every call; a /track request
makes about ten of them, which measured as a tenth of the relay's CPU per request. Collected in a
dict per turn and applied once per series, they cost a dict update each. A scrape, a page or a
publish to the other workers (all answered on later turns) sees every update of earlier turns.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class _Incrementable(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Observable(Protocol):
    def observe(self, amount: float) -> None: ...


class Tally:
    __slots__ = ("_counts", "_observed", "_loop", "_due")

    def __init__(self) -> None:
        self._counts: dict[_Incrementable, float] = {}     # a series -> its increment this turn
        self._observed: list[tuple[_Observable, float]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = False

    def add(self, series: _Incrementable, amount: float = 1.0) -> None:
        """`series.inc(amount)` at the end of this turn (a Gauge takes negative amounts)."""
        counts = self._counts
        counts[series] = counts.get(series, 0.0) + amount
        if not self._due:
            self._schedule()

    def observe(self, series: _Observable, value: float) -> None:
        self._observed.append((series, value))
        if not self._due:
            self._schedule()

    def _schedule(self) -> None:
        loop = self._loop = running_loop(self._loop)
        if loop is None:                  # no loop (a unit test, a command): at once
            self.flush()
            return
        self._due = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._due = False
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, []
        for series, amount in counts.items():
            if amount:
                series.inc(amount)
        for histogram, value in observed:
            histogram.observe(value)


def running_loop(known: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
    """`known` while it is open, else the running loop (asked only then: the question costs a
    system call), else None (no loop: a unit test, a command)."""
    if known is not None and not known.is_closed():
        return known
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
