"""Region health and readiness: what `/readyz` answers, and why.

`RegionHealth` learns from real upstream traffic (the relay reports every exchange) and from a
light background probe of regions that have been quiet or failing. `Readiness` combines it with
the other checks (config loaded, and any check a component registers, such as the spool's
"writable") into one verdict that names each failed check.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from ..config import Config
from ..upstream.client import UpstreamClient, UpstreamFailure
from .metrics import Metrics

__all__ = [
    "Check", "CheckResult", "Readiness", "RegionHealth", "RegionState", "directory_writable",
    "probe", "probe_regions_forever",
]

log = logging.getLogger("mixpanel_proxy.health")
_EWMA_WEIGHT = 0.2      # each new latency sample moves the smoothed latency by a fifth


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str


Check = Callable[[], CheckResult | Awaitable[CheckResult]]


@dataclass(slots=True)
class RegionState:
    name: str
    last_success: float | None = None      # Unix time
    last_failure: float | None = None
    last_error: str = ""
    latency: float | None = None           # smoothed seconds of successful exchanges
    last_latency: float | None = None
    published: float = 0.0                 # when the gauges last moved


class RegionHealth:
    """Per-region outcome of the latest exchanges; cheap enough to call on every request."""

    def __init__(self, regions: Iterable[str], metrics: Metrics, max_age: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._states = {name: RegionState(name) for name in regions}
        self._metrics = metrics
        self._max_age = max_age
        self._clock = clock

    def succeeded(self, region: str, seconds: float) -> None:
        state = self._states.get(region)
        if state is None:
            return
        now = self._clock()
        if state.last_error or now - state.published >= 1:
            # Busy regions move their gauges at most once a second, not on every request.
            state.published = now
            self._metrics.region_up.labels(region).set(1)
            self._metrics.region_last_success.labels(region).set(now)
        state.last_success = now
        state.last_error = ""
        state.last_latency = seconds
        state.latency = seconds if state.latency is None else (
            state.latency + _EWMA_WEIGHT * (seconds - state.latency))

    def failed(self, region: str, message: str) -> None:
        state = self._states.get(region)
        if state is None:
            return
        state.last_failure = self._clock()
        state.last_error = message
        self._metrics.region_up.labels(region).set(0)

    def states(self) -> list[RegionState]:
        return list(self._states.values())

    def state(self, region: str) -> RegionState | None:
        return self._states.get(region)

    def verdict(self, region: str) -> CheckResult:
        state = self._states.get(region)
        if state is None:
            return CheckResult(False, "not a configured region")
        now = self._clock()
        if state.last_success is None:
            if state.last_failure is None:
                return CheckResult(False, "not probed yet")
            return CheckResult(False, f"never reachable: {state.last_error}")
        if state.last_failure is not None and state.last_failure > state.last_success:
            return CheckResult(False, f"unreachable for {now - state.last_success:.0f} s: "
                                      f"{state.last_error}")
        age = now - state.last_success
        if self._max_age and age > self._max_age:
            return CheckResult(False, f"no answer for {age:.0f} s (max_age {self._max_age:g} s)")
        return CheckResult(True, f"answered {age:.0f} s ago")

    def needs_probe(self, region: str, interval: float) -> bool:
        """Quiet or failing regions are probed; busy healthy ones are proven by their traffic."""
        state = self._states[region]
        if state.last_success is None or state.last_error:
            return True
        return self._clock() - state.last_success >= interval


class Readiness:
    """Named checks, all of which must pass; `/readyz` reports each one.

    Ready means "can accept and keep traffic": the config is loaded, the spool (when on) takes
    writes, and the listener answered this very request. Region health is reported under
    `regions` but fails readiness only when `gate_regions` (`[health] require_regions`, which
    `check` allows only with the spool off): during a region outage every pod sees the same
    outage, and refusing them all at once would turn a partial failure into a total one.
    """

    def __init__(self, health: RegionHealth, regions: Iterable[str], metrics: Metrics,
                 gate_regions: bool = False) -> None:
        self.health = health
        self._regions = tuple(regions)
        self._gate_regions = gate_regions
        self._metrics = metrics
        self._config_source: str | None = None
        self._checks: dict[str, Check] = {}

    def config_loaded(self, source: str) -> None:
        self._config_source = source

    def add_check(self, name: str, check: Check) -> None:
        """Register another readiness check, e.g. the spool's `("spool", spool.writable)`."""
        self._checks[name] = check

    async def evaluate(self) -> tuple[bool, dict[str, Any]]:
        results: dict[str, CheckResult] = {"config": self._config_check()}
        regions = {region: self.health.verdict(region) for region in self._regions}
        if self._gate_regions:
            results.update((f"region.{region}", verdict) for region, verdict in regions.items())
        for name, check in self._checks.items():
            results[name] = await _run_check(check)
        failed = [name for name, result in results.items() if not result.ok]
        ready = not failed
        self._metrics.ready.set(1 if ready else 0)
        body = {"ready": ready, "failed": failed,
                "checks": _described(results), "regions": _described(regions),
                "unreachable": [region for region, verdict in regions.items() if not verdict.ok]}
        return ready, body

    def _config_check(self) -> CheckResult:
        if self._config_source is None:
            return CheckResult(False, "the config is not loaded yet")
        return CheckResult(True, f"loaded from {self._config_source}")


def _described(results: dict[str, CheckResult]) -> dict[str, dict[str, Any]]:
    return {name: {"ok": result.ok, "detail": result.detail} for name, result in results.items()}


def directory_writable(path: str | os.PathLike[str]) -> Check:
    """A check that a file can be created (and removed) next to `path`, off the event loop.

    The spool's readiness: its directory must take writes. A probe file is used instead of the
    spool file itself, so the store's own descriptors and locks are never touched.
    """
    directory = Path(path).parent

    def attempt() -> CheckResult:
        try:
            fd, name = tempfile.mkstemp(prefix=".readyz-", dir=directory)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            return CheckResult(False, f"{directory} is not writable ({exc.strerror})")
        return CheckResult(True, f"{directory} is writable")

    async def check() -> CheckResult:
        return await asyncio.get_running_loop().run_in_executor(None, attempt)

    return check


async def _run_check(check: Check) -> CheckResult:
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        return result
    except Exception as exc:  # a broken check is a failed check, never a 500 from /readyz
        return CheckResult(False, f"check raised {type(exc).__name__}: {exc}")


async def probe(upstream: UpstreamClient, url: URL, timeout: float,
                healthy: Callable[[int], bool] = lambda status: status < 500,
                ) -> tuple[bool, float, str]:
    """One GET; by default any answer below 500 means reachable. Returns (ok, seconds, what)."""
    started = time.perf_counter()
    try:
        answer = await upstream.send("GET", url, {}, None, timeout)
    except UpstreamFailure as failure:
        return False, time.perf_counter() - started, failure.message
    return healthy(answer.status), time.perf_counter() - started, f"answered {answer.status}"


async def probe_regions_forever(config: Config, upstream: UpstreamClient, health: RegionHealth,
                                metrics: Metrics) -> None:
    """The background probe: right away at start, then every probe_interval seconds."""
    settings = config.health
    urls = {name: _probe_url(config, name) for name in settings.regions}
    while True:
        due = [name for name in urls if health.needs_probe(name, settings.probe_interval)]
        try:
            await asyncio.gather(*(_probe_region(upstream, health, metrics, name, urls[name],
                                                 settings.probe_timeout) for name in due))
        except Exception:   # a bug in one round must not end probing (and freeze readiness)
            log.exception("region probe round failed")
        await asyncio.sleep(settings.probe_interval)


async def _probe_region(upstream: UpstreamClient, health: RegionHealth, metrics: Metrics,
                        region: str, url: URL, timeout: float) -> None:
    ok, seconds, detail = await probe(upstream, url, timeout)
    metrics.probes.labels(region, "ok" if ok else "failed").inc()
    if ok:
        health.succeeded(region, seconds)
    else:
        health.failed(region, detail)


def _probe_url(config: Config, region: str) -> URL:
    base = str(config.regions[region].url).rstrip("/")
    return URL(base + config.health.probe_path, encoded=True)
