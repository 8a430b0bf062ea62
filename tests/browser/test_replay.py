"""Scenario 2: Session Replay at 100 %, through the relay: the recorder bundle comes from the
relay, `/record` batches reach the project's region as gzip with the token's Authorization, and
`seq` advances only because the relay answers exactly what the SDK counts as success."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser

from tests.conftest import IN_TOKEN
from tests.support.browser import (
    Site,
    basic,
    calls,
    flush_replay_batch,
    open_tab,
    query,
    records,
    replay_id_once_recording,
    rrweb_events,
    snippet_page,
)
from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream
from tests.support.waits import eventually

pytestmark = pytest.mark.browser

RECORDING = {"batch_flush_interval_ms": 100, "record_sessions_percent": 100}
FULL_SNAPSHOT = 2      # rrweb EventType.FullSnapshot
BATCHES = 3


async def test_replay_batches_reach_the_projects_region_in_order(
        browser: Browser, site: Site, relay: str,
        upstreams: dict[str, FakeUpstream]) -> None:
    url = site.add(snippet_page(relay, IN_TOKEN, RECORDING, ""))
    tab = await open_tab(browser)
    await tab.goto_and_wait_loaded(url)
    replay_id = await replay_id_once_recording(tab)
    await tab.evaluate("() => mixpanel.track('Replay check')")
    india = upstreams["in"]
    for _ in range(BATCHES):
        await flush_replay_batch(tab, india)

    batches = calls(india, "record")
    # The SDK's own 10 s interval may add a batch on a slow machine: seq stays gapless anyway.
    assert len(batches) >= BATCHES
    assert [query(b)["seq"] for b in batches] == [str(n) for n in range(len(batches))]
    for received in batches:
        params = query(received)
        assert (params["format"], params["replay_id"]) == ("gzip", replay_id)
        assert received.headers["Authorization"] == basic(IN_TOKEN)
        assert received.headers["Content-Type"] == "application/octet-stream"
        assert "Content-Encoding" not in received.headers   # gzip is signalled by format= only
        assert received.headers["X-Forwarded-For"] == "127.0.0.1"
    first: list[dict[str, Any]] = rrweb_events(batches[0])
    assert FULL_SNAPSHOT in {event["type"] for event in first}
    assert set(tab.statuses("/record")) == {200}

    await eventually(lambda: any(r["event"] == "Replay check" for r in records(india, "track")),
                     "the tracked event at the India fake")
    tracked = next(r for r in records(india, "track") if r["event"] == "Replay check")
    assert tracked["properties"]["$mp_replay_id"] == replay_id
    assert not upstreams["us"].received and not upstreams["eu"].received
    assert tab.cors_errors() == []
    assert tab.offsite_requests() == []


async def test_recorder_bundle_comes_through_the_relay_once_from_the_cdn(
        browser: Browser, site: Site, relay: str, fake_cdn: FakeCdn) -> None:
    url = site.add(snippet_page(relay, IN_TOKEN, RECORDING))
    loads = 3
    for _ in range(loads):   # a fresh context each time: nothing comes from the browser's cache
        tab = await open_tab(browser)
        await tab.goto_and_wait_loaded(url)
        await replay_id_once_recording(tab)
        bundles = [r.url for r in tab.requests if "mixpanel-recorder" in r.url]
        assert len(bundles) == 1 and bundles[0].startswith(f"{relay}/libs/"), bundles
        assert tab.statuses("mixpanel-recorder") == [200]
        assert tab.offsite_requests() == []
        await tab.context.close()

    recorder = urlsplit(bundles[0]).path.rsplit("/", 1)[1]
    assert recorder in fake_cdn.files, "the SDK asked for the recorder under its CDN name"
    assert fake_cdn.count(recorder) == 1
    assert fake_cdn.count("mixpanel-2-latest.min.js") == 1
