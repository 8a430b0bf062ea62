"""`mixpanel-proxy check --online`: can this machine reach every upstream the config names?

Each region's API host(s) get one GET of `[health] probe_path` (any answer below 500 is
reachable), and the CDN one GET of the latest loader (only a 200 will do: that file is what the
asset relay fetches). Targets are probed concurrently, with the configured timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from yarl import URL

from ..config import Config
from ..endpoints import LATEST_LOADER
from ..upstream.client import UpstreamClient
from .health import probe

__all__ = ["Target", "TargetReport", "check_online", "probe_targets"]


@dataclass(frozen=True)
class Target:
    name: str                              # "region us", "region us/record", "cdn"
    url: URL
    healthy: Callable[[int], bool]


@dataclass(frozen=True)
class TargetReport:
    target: Target
    ok: bool
    seconds: float
    detail: str

    def line(self, width: int) -> str:
        verdict = "reachable" if self.ok else "UNREACHABLE"
        return (f"{self.target.name:<{width}}  {verdict:<11}  {self.seconds * 1000:8.1f} ms  "
                f"{self.target.url}  ({self.detail})")


def probe_targets(config: Config) -> list[Target]:
    """Every distinct upstream URL: each region's API host(s), then the CDN when assets are on."""
    targets: list[Target] = []
    for region in config.regions.values():
        seen = {str(region.url)}
        targets.append(Target(f"region {region.name}", _join(region.url, config.health.probe_path),
                              _answers))
        for endpoint, url in region.endpoint_urls.items():
            if str(url) not in seen:
                seen.add(str(url))
                targets.append(Target(f"region {region.name}/{endpoint}",
                                      _join(url, config.health.probe_path), _answers))
    if config.assets.enabled:
        targets.append(Target("cdn", _join(config.assets.cdn_url, "/" + LATEST_LOADER), _serves))
    return targets


async def check_online(config: Config) -> list[TargetReport]:
    upstream = UpstreamClient(config.upstream)
    await upstream.start()
    try:
        targets = probe_targets(config)
        results = await asyncio.gather(*(
            probe(upstream, target.url, config.health.probe_timeout, target.healthy)
            for target in targets))
    finally:
        await upstream.close()
    return [TargetReport(target, ok, seconds, detail)
            for target, (ok, seconds, detail) in zip(targets, results, strict=True)]


def _join(base: URL, path: str) -> URL:
    return URL(str(base).rstrip("/") + path, encoded=True)


def _answers(status: int) -> bool:
    return status < 500


def _serves(status: int) -> bool:
    return status == 200
