"""Scenario 6: the upstream is down for a while, then back. The relay answers 503 while it is
down, the SDK keeps its batches and retries, and every event arrives once the upstream returns.
A replay batch refused with Retry-After is resent when the answer says, which only works if the
relay exposes that header to cross-origin scripts."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.conftest import IN_TOKEN, US_TOKEN
from tests.support import browser as kit  # the harness (`browser` is the fixture)
from tests.support.fakes import FakeUpstream
from tests.support.waits import eventually

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
    return [r["properties"]["n"] for r in kit.records(fake, "track")
            if r["event"] == "During outage"]


async def test_events_tracked_while_the_upstream_is_down_all_arrive(
        browser: Browser, site: kit.Site, relay: str,
        upstreams: dict[str, FakeUpstream]) -> None:
    us = upstreams["us"]
    await us.go_down()   # connection refused from now on
    tab = await kit.open_tab(browser)
    await tab.goto_and_wait_loaded(site.add(kit.snippet_page(relay, US_TOKEN, OPTIONS, "")))
    await tab.evaluate(TRACK_DURING_OUTAGE)
    await eventually(lambda: tab.statuses("/track").count(503) >= 3
                     and 503 in tab.statuses("/engage"),
                     "the relay answering 503 to the SDK's retries")

    await us.come_back()
    await eventually(lambda: sorted(set(outage_events(us))) == list(range(EVENTS))
                     and kit.records(us, "engage") and 200 in tab.statuses("/track"),
                     "every event after the upstream came back", timeout=20)

    assert set(tab.statuses("/track")) == {200, 503}
    assert any(r.get("$set", {}).get("outage") is True for r in kit.records(us, "engage"))
    assert tab.cors_errors() == []


async def test_a_refused_replay_batch_is_resent_when_retry_after_says(
        browser: Browser, site: kit.Site, relay: str, upstreams: dict[str, FakeUpstream]) -> None:
    india = upstreams["in"]
    india.answer(429, {"error": "rate limited"}, {"Retry-After": "1"})
    tab = await kit.open_tab(browser)
    options = {"batch_flush_interval_ms": 100, "record_sessions_percent": 100}
    await tab.goto_and_wait_loaded(site.add(kit.snippet_page(relay, IN_TOKEN, options)))
    replay_id = await kit.replay_id_once_recording(tab)
    await tab.page.click("#buy")
    await tab.page.wait_for_timeout(400)   # past the recorder's 250 ms enqueue throttle
    # Pausing flushes at once (429) but stops the batcher; resuming flushes again (429), and
    # that refusal is the one whose Retry-After schedules the next attempt.
    await tab.evaluate("() => mixpanel.pause_session_recording()")
    await tab.evaluate("() => mixpanel.resume_session_recording()")
    await eventually(lambda: len(kit.calls(india, "record")) >= 2, "two refused /record attempts")
    india.answer(200)
    await eventually(lambda: len(kit.calls(india, "record")) >= 3,
                     "the batch resent after Retry-After")
    batches = kit.calls(india, "record")

    # The SDK's own backoff would be 20 s (twice its 10 s replay interval); 1 s means it read
    # Retry-After, which a cross-origin fetch sees only through Access-Control-Expose-Headers.
    gap = batches[2].at - batches[1].at
    assert 0.9 <= gap < 10, gap
    assert {kit.query(b)["seq"] for b in batches[:3]} == {"0"}
    assert {kit.query(b)["replay_id"] for b in batches} == {replay_id}
    assert 2 in {event["type"] for event in kit.rrweb_events(batches[2])}   # the full snapshot
    await eventually(lambda: 200 in tab.statuses("/record"), "the accepted batch's answer")
    # The upstream's 429 reaches the SDK as 503 + its Retry-After (mixpanel-iphone deletes a
    # batch on any non-5xx); mixpanel-browser honours Retry-After on both, as the gap shows.
    assert tab.statuses("/record")[:3] == [503, 503, 200]
    assert tab.cors_errors() == []
