"""/metrics and /status with several workers: one coherent view of the whole relay.

The relay runs as `python -m proxy serve` with `workers = 2` (a supervisor and its workers, as in
production). Scrapes land on whichever worker accepts them; each must count every worker's
requests, never go backwards, and survive a reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import relay_config
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.processes import RelayProcess
from tests.support.waits import eventually

pytestmark = pytest.mark.slow

SENT = 300
SCRAPES = 20          # during the load; then more until every worker has published


@pytest.fixture
async def relay(upstreams: dict[str, FakeUpstream],
                tmp_path: Path) -> AsyncIterator[RelayProcess]:
    process = RelayProcess(tmp_path, relay_config(upstreams, {"server": {"workers": 2}}))
    await process.start()
    await eventually(lambda: len(process.worker_pids()) == 2, what="two workers")
    yield process
    await process.stop()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def requests_total(text: str) -> float:
    return sum(samples(text, "mixpanel_proxy_requests_total").values())


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    # A new connection per scrape, so that scrapes spread over the workers.
    async with session.get(f"{url}/metrics", headers={"Connection": "close"}) as response:
        assert response.status == 200
        return await response.text()


async def send(session: aiohttp.ClientSession, url: str, count: int) -> None:
    body = browser_form([event("tok")])
    for _ in range(count):
        async with session.post(f"{url}/track", data=body, headers=FORM) as response:
            assert response.status == 200
            await response.read()


async def test_scrapes_under_load_are_monotonic_and_sum_every_worker(
        relay: RelayProcess) -> None:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)   # spread over both workers
    async with aiohttp.ClientSession(connector=connector) as session:
        senders = [asyncio.create_task(send(session, relay.url, SENT // 6)) for _ in range(6)]
        seen: list[float] = []
        for _ in range(SCRAPES):
            seen.append(requests_total(await scrape(session, relay.url)))
            await asyncio.sleep(0.02)       # paces traffic: scrapes spread over the load
        await asyncio.gather(*senders)

        # Each worker publishes its counts every second (and at once when it answers a scrape).
        async def every_request_counted() -> str | None:
            text = await scrape(session, relay.url)
            seen.append(requests_total(text))
            return text if seen[-1] == SENT else None

        final = await eventually(every_request_counted, what=f"a scrape counting all {SENT}")
    assert seen == sorted(seen), f"a scrape went backwards: {seen}"
    assert requests_total(final) == SENT
    pids = {dict(labels)["pid"]
            for labels in samples(final, "mixpanel_proxy_worker_resident_memory_bytes")}
    assert pids == {str(pid) for pid in relay.worker_pids()}
    assert samples(final, "process_start_time_seconds")           # the supervisor's
    (build,) = samples(final, "mixpanel_proxy_build_info")
    assert dict(build)["version"]


async def test_a_reload_keeps_the_counters_and_counts_itself(relay: RelayProcess) -> None:
    async with aiohttp.ClientSession() as session:
        await send(session, relay.url, 10)
        before = await scrape(session, relay.url)
        started = samples(before, "process_start_time_seconds")
        await relay.reload()
        await send(session, relay.url, 5)

        async def all_counted() -> str | None:    # once every worker has published
            text = await scrape(session, relay.url)
            return text if requests_total(text) == 15 else None

        after = await eventually(all_counted, what="a scrape counting all 15 requests")
    assert requests_total(after) == 15
    reloads = samples(after, "mixpanel_proxy_config_reloads_total")
    assert reloads[(("result", "ok"),)] == 1
    assert samples(after, "process_start_time_seconds") == started   # uptime not reset


async def test_status_page_counts_every_worker(relay: RelayProcess) -> None:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(send(session, relay.url, 10) for _ in range(4)))

        async def status_page() -> str:
            async with session.get(f"{relay.url}/status") as response:
                return await response.text()

        async def counts_all() -> bool:
            return '<td>40</td>' in await status_page()

        # A page with all 40 is drawn from what every worker published: they all have.
        await eventually(counts_all, what="a /status page counting all 40")
        pages = [await status_page() for _ in range(6)]
    # The requests table's "answered" cell for track, on every page whichever worker drew it.
    assert all('<td>40</td>' in page for page in pages), pages[0][:2000]


async def test_function_gauges_reach_every_scrape(upstreams: dict[str, FakeUpstream],
                                                  tmp_path: Path) -> None:
    """The spool's gauges come from a function each worker calls: a scrape shows them whichever
    worker answers (multiprocess mode would otherwise read 0 from the files)."""
    spool = {"enabled": True, "path": str(tmp_path / "spool.db"), "track_max_age": 1e10,
             "backoff_min": 30.0, "backoff_max": 60.0, "poll_interval": 0.2}
    process = RelayProcess(tmp_path, relay_config(upstreams, {"server": {"workers": 2},
                                                              "spool": spool}))
    await upstreams["us"].go_down()
    await process.start()
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(send(session, process.url, 1) for _ in range(4)))

            async def waiting_now() -> list[float]:
                return [samples(await scrape(session, process.url),
                                "mixpanel_proxy_spool_entries").get((("region", "us"),), 0.0)
                        for _ in range(8)]

            async def every_store_followed() -> bool:    # the file, each poll_interval
                return await waiting_now() == [4.0] * 8

            await eventually(every_store_followed, what="8 scrapes in a row showing 4 waiting")
            waiting = [samples(await scrape(session, process.url),
                               "mixpanel_proxy_spool_entries") for _ in range(8)]
    finally:
        await process.stop()
    assert [found[(("region", "us"),)] for found in waiting] == [4.0] * 8, waiting
