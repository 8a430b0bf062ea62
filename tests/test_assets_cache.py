"""The asset relay's cache against a fake CDN serving the real mixpanel-browser 2.83.0 bundles:
hits, misses, single flight, TTL and revalidation, stale-while-revalidate, stale-if-error,
broken CDN answers, byte bound, prefetch and a restart from disk with the CDN down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from proxy.assets.wire import ASSETS_KEY
from tests.conftest import RelayFactory
from tests.support.fake_cdn import FakeCdn
from tests.support.metrics import sample
from tests.support.waits import eventually

LOADER = "mixpanel-2-latest.min.js"
RECORDER = "mixpanel-recorder-CZqK2y7C.min.js"
TTL = 60.0

AssetRelay = Callable[..., Awaitable[tuple[TestClient[Any, Any], CollectorRegistry]]]


class FakeClock:
    """The only thing mocked: wall-clock time, so TTLs pass without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def asset_relay(make_relay: RelayFactory, fake_cdn: FakeCdn, clock: FakeClock) -> AssetRelay:
    async def factory(**assets: Any) -> tuple[TestClient[Any, Any], CollectorRegistry]:
        registry = CollectorRegistry()
        settings = {"cdn_url": fake_cdn.url, "brotli_quality": 4, "ttl": TTL,
                    "stale_while_revalidate": 0, "timeout": 2.0, **assets}
        client = await make_relay({"assets": settings}, registry=registry)
        client.app[ASSETS_KEY].clock = clock
        return client, registry

    return factory


def cache_results(registry: CollectorRegistry, result: str) -> float:
    return sample(registry, "mixpanel_proxy_asset_cache_total", result=result)


def cdn_failures(registry: CollectorRegistry, kind: str) -> float:
    return sample(registry, "mixpanel_proxy_asset_cdn_failures_total", kind=kind)


async def get_body(client: TestClient[Any, Any], name: str) -> tuple[int, bytes]:
    response = await client.get(f"/libs/{name}", headers={"Accept-Encoding": "identity"})
    return response.status, await response.read()


async def test_miss_then_hit(asset_relay: AssetRelay, fake_cdn: FakeCdn) -> None:
    client, registry = await asset_relay()
    assert await get_body(client, LOADER) == (200, fake_cdn.files[LOADER])
    assert await get_body(client, LOADER) == (200, fake_cdn.files[LOADER])
    assert fake_cdn.count(LOADER) == 1
    assert fake_cdn.requests[0].headers["Accept-Encoding"] == "identity"
    assert (cache_results(registry, "miss"), cache_results(registry, "hit")) == (1, 1)
    held = registry.get_sample_value("mixpanel_proxy_asset_cache_bytes")
    assert held is not None and held > len(fake_cdn.files[LOADER])


async def test_fifty_concurrent_misses_make_one_cdn_request(
        asset_relay: AssetRelay, fake_cdn: FakeCdn) -> None:
    client, registry = await asset_relay()
    fake_cdn.gate = asyncio.Event()
    requests = [asyncio.create_task(get_body(client, RECORDER)) for _ in range(50)]
    # The CDN answers only once all 50 requests are inside the relay, waiting on the fetch.
    await eventually(lambda: cache_results(registry, "miss") + cache_results(
        registry, "coalesced") == 50)
    fake_cdn.gate.set()
    answers = await asyncio.gather(*requests)
    assert all(answer == (200, fake_cdn.files[RECORDER]) for answer in answers)
    assert fake_cdn.count(RECORDER) == 1
    assert (cache_results(registry, "miss"), cache_results(registry, "coalesced")) == (1, 49)


async def test_after_ttl_the_copy_is_revalidated_with_304(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, clock: FakeClock) -> None:
    client, registry = await asset_relay()
    await get_body(client, LOADER)
    clock.advance(TTL - 1)
    await get_body(client, LOADER)
    assert fake_cdn.count(LOADER) == 1
    clock.advance(2)
    assert await get_body(client, LOADER) == (200, fake_cdn.files[LOADER])
    revalidation = fake_cdn.requests[-1]
    assert fake_cdn.count(LOADER) == 2
    assert revalidation.headers["If-None-Match"] == fake_cdn.etag(LOADER)
    assert "If-Modified-Since" in revalidation.headers
    assert cache_results(registry, "revalidated") == 1
    clock.advance(TTL - 1)   # the 304 restarted the TTL
    await get_body(client, LOADER)
    assert fake_cdn.count(LOADER) == 2


async def test_a_new_release_replaces_the_copy_after_ttl(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, clock: FakeClock) -> None:
    client, registry = await asset_relay()
    await get_body(client, LOADER)
    fake_cdn.publish(LOADER, fake_cdn.files[LOADER] + b"\n/* 2.83.1 */\n")
    assert await get_body(client, LOADER) != (200, fake_cdn.files[LOADER])
    clock.advance(TTL + 1)
    assert await get_body(client, LOADER) == (200, fake_cdn.files[LOADER])
    assert cache_results(registry, "updated") == 1


async def test_stale_while_revalidate_serves_the_old_copy_at_once(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, clock: FakeClock) -> None:
    client, registry = await asset_relay(stale_while_revalidate=600)
    old = fake_cdn.files[LOADER]
    await get_body(client, LOADER)
    fake_cdn.publish(LOADER, old + b"\n/* next */\n")
    fake_cdn.gate = asyncio.Event()                          # the CDN answers nothing for now
    clock.advance(TTL + 1)
    assert await get_body(client, LOADER) == (200, old)      # not waiting for the CDN
    assert cache_results(registry, "stale") == 1
    fake_cdn.gate.set()
    await eventually(lambda: cache_results(registry, "updated") == 1)
    assert await get_body(client, LOADER) == (200, fake_cdn.files[LOADER])
    assert fake_cdn.count(LOADER) == 2


async def test_stale_if_error_serves_the_last_good_copy(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, clock: FakeClock) -> None:
    client, registry = await asset_relay(stale_if_error=3600)
    good = fake_cdn.files[LOADER]
    await get_body(client, LOADER)
    fake_cdn.misbehave("status_500")
    clock.advance(TTL + 1)
    assert await get_body(client, LOADER) == (200, good)
    assert await get_body(client, LOADER) == (200, good)
    # The second request did not wait for the failing CDN again (back-off).
    assert fake_cdn.count(LOADER) == 2
    assert cache_results(registry, "stale_error") == 2
    assert cdn_failures(registry, "status") == 1
    clock.advance(3600)
    response = await client.get(f"/libs/{LOADER}")
    assert response.status == 502
    assert (await response.json())["reason"] == "status"


@pytest.mark.parametrize("mode, kind", [
    ("status_500", "status"), ("html", "content_type"), ("html_as_js", "html"),
    ("truncated", "protocol"), ("wrong_type", "content_type"),
])
async def test_a_broken_cdn_answer_is_never_relayed(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, mode: Any, kind: str) -> None:
    client, registry = await asset_relay()
    fake_cdn.misbehave(mode)
    response = await client.get(f"/libs/{LOADER}")
    body = await response.json()
    assert response.status == 502
    assert response.content_type == "application/json"
    assert body["reason"] == kind and LOADER in body["error"]
    assert cdn_failures(registry, kind) == 1
    assert cache_results(registry, "error") == 1
    fake_cdn.misbehave("ok")   # nothing broken was cached: the next request fetches again
    assert await get_body(client, LOADER) == (200, fake_cdn.files[LOADER])


async def test_a_broken_new_version_keeps_the_good_copy(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, clock: FakeClock) -> None:
    client, registry = await asset_relay()
    good = fake_cdn.files[LOADER]
    await get_body(client, LOADER)
    fake_cdn.publish(LOADER, good + b"/* next */")
    fake_cdn.misbehave("truncated")
    clock.advance(TTL + 1)
    assert await get_body(client, LOADER) == (200, good)
    assert cdn_failures(registry, "protocol") == 1


async def test_a_name_the_cdn_lacks_is_a_404_asked_once(
        asset_relay: AssetRelay, fake_cdn: FakeCdn) -> None:
    client, _ = await asset_relay()
    for _ in range(3):
        response = await client.get("/libs/mixpanel-recorder-NoSuchAa.min.js")
        assert response.status == 404
        assert "no bundle named" in (await response.json())["error"]
    assert fake_cdn.count() == 1


async def test_immutable_bundles_are_never_revalidated(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, clock: FakeClock) -> None:
    client, _ = await asset_relay()
    await get_body(client, RECORDER)
    clock.advance(365 * 86400)
    assert await get_body(client, RECORDER) == (200, fake_cdn.files[RECORDER])
    assert fake_cdn.count(RECORDER) == 1


async def test_the_cache_is_bounded_by_bytes(asset_relay: AssetRelay, fake_cdn: FakeCdn) -> None:
    targeting = "mixpanel-targeting-CZx8RgZ1.min.js"
    # Room for the recorder's variants, not for the recorder and the targeting bundle together.
    client, registry = await asset_relay(max_bytes=550_000)
    await get_body(client, RECORDER)
    await get_body(client, targeting)
    await get_body(client, RECORDER)
    assert fake_cdn.count(RECORDER) == 2
    held = registry.get_sample_value("mixpanel_proxy_asset_cache_bytes")
    assert held is not None and 0 < held <= 550_000


async def test_prefetch_loads_at_start(asset_relay: AssetRelay, fake_cdn: FakeCdn) -> None:
    client, registry = await asset_relay(prefetch=[LOADER, RECORDER])
    assert (fake_cdn.count(LOADER), fake_cdn.count(RECORDER)) == (1, 1)
    assert await get_body(client, LOADER) == (200, fake_cdn.files[LOADER])
    assert cache_results(registry, "hit") == 1


async def test_restart_with_disk_cache_and_the_cdn_down(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, tmp_path: Path, clock: FakeClock) -> None:
    disk = {"disk_dir": str(tmp_path / "bundles")}
    first, _ = await asset_relay(**disk)
    for name in (LOADER, RECORDER):
        assert (await get_body(first, name))[0] == 200
    await eventually(lambda: len(list((tmp_path / "bundles").glob("*.json"))) == 2)
    await first.close()
    await fake_cdn.go_down()
    clock.advance(TTL + 1)   # the loader copy is past its TTL: revalidation fails, it is served
    second, registry = await asset_relay(prefetch=[LOADER], **disk)
    for name in (LOADER, RECORDER):
        assert await get_body(second, name) == (200, fake_cdn.files[name])
    assert cdn_failures(registry, "connect") == 1
    assert fake_cdn.count() == 2


async def test_a_damaged_disk_copy_is_skipped(
        asset_relay: AssetRelay, fake_cdn: FakeCdn, tmp_path: Path) -> None:
    disk = {"disk_dir": str(tmp_path)}
    first, _ = await asset_relay(**disk)
    await get_body(first, RECORDER)
    await eventually(lambda: (tmp_path / f"{RECORDER}.json").exists())
    await first.close()
    (tmp_path / RECORDER).write_bytes(b"<html>disk full</html>")
    second, _ = await asset_relay(**disk)
    assert await get_body(second, RECORDER) == (200, fake_cdn.files[RECORDER])
    assert fake_cdn.count(RECORDER) == 2

