"""The one metrics reader: a sample straight from a relay's registry (in-process relays), or
/metrics read the way Prometheus reads it: over HTTP, parsed from the exposition (relay processes,
and tests of the exposition itself)."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0.0 while it has none (a labelled counter never incremented)."""
    return registry.get_sample_value(name, labels) or 0.0


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for one in family.samples:
            samples[(one.name, frozenset(one.labels.items()))] = one.value
    return samples


async def scrape(client: TestClient[Any, Any], url: str = "/metrics") -> Samples:
    """Scrape an in-process relay, checking the exposition's content type on the way."""
    response = await client.get(url)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return parse(await response.text())


async def scrape_url(url: str) -> Samples:
    """Scrape a relay process (or anything) at `url` (its /metrics)."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return parse(await response.text())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))
