"""Scenario 6: the upstream is down for a while, then back. The relay answers 503 while it is
down, the SDK keeps its batches and retries, and every event arrives once the upstream returns."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser

from tests.browser.harness import Site, eventually, open_tab, records, snippet_page
from tests.conftest import US_TOKEN
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.browser

EVENTS = 5
# A small flush interval keeps the SDK's retry backoff (twice the interval, doubling) short.
OPTIONS = {"batch_flush_interval_ms": 100}
TRACK_DURING_OUTAGE = f"""() => {{
  mixpanel.identify('user-outage');
  for (let n = 0; n < {EVENTS}; n++) mixpanel.track('During outage', {{n: n}});
  mixpanel.people.set({{outage: true}});
}}"""


def outage_events(fake: FakeUpstream) -> list[int]:
    return [r["properties"]["n"] for r in records(fake, "track") if r["event"] == "During outage"]


async def test_events_tracked_while_the_upstream_is_down_all_arrive(
        browser: Browser, site: Site, relay: str,
        upstreams: dict[str, FakeUpstream]) -> None:
    us = upstreams["us"]
    assert us.server is not None
    port = us.server.port
    await us.server.close()   # connection refused from now on
    tab = await open_tab(browser)
    await tab.goto_and_wait_loaded(site.add(snippet_page(relay, US_TOKEN, OPTIONS, "")))
    await tab.evaluate(TRACK_DURING_OUTAGE)
    await eventually(lambda: tab.statuses("/track").count(503) >= 3
                     and 503 in tab.statuses("/engage"),
                     "the relay answering 503 to the SDK's retries")

    us.server = TestServer(us.app(), host="127.0.0.1", port=port)
    await us.server.start_server()
    await eventually(lambda: sorted(set(outage_events(us))) == list(range(EVENTS))
                     and records(us, "engage") and 200 in tab.statuses("/track"),
                     "every event after the upstream came back", timeout=20)

    assert set(tab.statuses("/track")) == {200, 503}
    assert any(r.get("$set", {}).get("outage") is True for r in records(us, "engage"))
    assert tab.cors_errors() == []
