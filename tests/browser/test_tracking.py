"""Scenarios 1 and 3: the SDK's XHR batches and its unload beacon, through the relay, as Chromium
sends them: right region, right token, `ip=1`, the derived client IP, and the exact bytes."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from playwright.async_api import Browser

from tests.conftest import EU_TOKEN, US_TOKEN
from tests.support.browser import Site, calls, open_tab, query, records, snippet_page
from tests.support.fakes import FakeUpstream
from tests.support.waits import eventually

pytestmark = pytest.mark.browser

FAST = {"batch_flush_interval_ms": 100}

TRACK_IDENTIFY_PEOPLE_GROUPS = """
mixpanel.track('Signed up', {plan: 'pro'});
mixpanel.identify('user-42');
mixpanel.people.set({name: 'Ada', plan: 'pro'});
mixpanel.get_group('company', 'acme').set({seats: 12});
"""


def event_names(fake: FakeUpstream) -> set[str]:
    return {record["event"] for record in records(fake, "track")}


async def test_events_profiles_and_groups_reach_the_projects_region(
        browser: Browser, site: Site, relay: str,
        upstreams: dict[str, FakeUpstream]) -> None:
    url = site.add(snippet_page(relay, EU_TOKEN, {**FAST, "track_pageview": True},
                                TRACK_IDENTIFY_PEOPLE_GROUPS))
    tab = await open_tab(browser)
    await tab.goto_and_wait_loaded(url)
    eu = upstreams["eu"]
    await eventually(lambda: {"$mp_web_page_view", "Signed up", "$identify"} <= event_names(eu)
                     and records(eu, "engage") and records(eu, "groups")
                     and tab.statuses("/track") and tab.statuses("/groups"),
                     "events, a profile update and a group update at the EU fake")

    assert {r["properties"]["token"] for r in records(eu, "track")} == {EU_TOKEN}
    profile = next(r for r in records(eu, "engage") if "$set" in r)
    assert (profile["$token"], profile["$distinct_id"]) == (EU_TOKEN, "user-42")
    assert {"name": "Ada", "plan": "pro"}.items() <= profile["$set"].items()
    group = records(eu, "groups")[0]
    assert (group["$token"], group["$group_key"], group["$group_id"]) == (
        EU_TOKEN, "company", "acme")
    assert group["$set"] == {"seats": 12}
    for received in eu.received:
        assert query(received)["ip"] == "1", received.path
        assert received.headers["X-Forwarded-For"] == "127.0.0.1"
        assert received.headers["X-Real-IP"] == "127.0.0.1"
    assert not upstreams["us"].received and not upstreams["in"].received
    assert set(tab.statuses("/track")) == {200}
    assert tab.cors_errors() == []
    assert tab.offsite_requests() == []


@pytest.mark.parametrize("payload_format", ["base64", "json"])
async def test_both_payload_formats_pass_byte_for_byte(
        browser: Browser, site: Site, relay: str,
        upstreams: dict[str, FakeUpstream], payload_format: str) -> None:
    options = {**FAST, "api_payload_format": payload_format}
    url = site.add(snippet_page(relay, US_TOKEN, options,
                                "mixpanel.track('Format check', {n: 1});"))
    tab = await open_tab(browser)
    await tab.goto_and_wait_loaded(url)
    us = upstreams["us"]
    await eventually(lambda: "Format check" in event_names(us) and tab.statuses("/track"),
                     "the event at the US fake, and its answer in the browser")

    sent = {request.post_data_buffer for request in tab.requests_to("/track")}
    for received in calls(us, "track"):
        assert received.body in sent, "the relay must forward the browser's bytes unchanged"
        data = unquote_to_bytes(received.body.partition(b"data=")[2])
        assert data.startswith(b"[") is (payload_format == "json"), data[:40]
    assert tab.cors_errors() == []


async def test_unload_beacon_flushes_the_queue(
        browser: Browser, site: Site, relay: str,
        upstreams: dict[str, FakeUpstream]) -> None:
    # A flush interval longer than the test: only the unload beacon can deliver the event.
    options = {"batch_flush_interval_ms": 60_000}
    url = site.add(snippet_page(relay, US_TOKEN, options,
                                "mixpanel.track('Leaving', {n: 1});"))
    elsewhere = site.add("<!doctype html><title>elsewhere</title><p>bye</p>")
    tab = await open_tab(browser)
    await tab.goto_and_wait_loaded(url)
    await tab.page.wait_for_timeout(300)
    us = upstreams["us"]
    assert not calls(us, "track"), "nothing may be sent before the page is hidden"
    await tab.page.goto(elsewhere)
    beacons = await eventually(lambda: calls(us, "track"), "the unload beacon at the US fake")

    assert [r["event"] for r in beacons[0].records()] == ["Leaving"]
    assert beacons[0].headers["Content-Type"] == "text/plain;charset=UTF-8"
    assert query(beacons[0])["ip"] == "1"
    assert beacons[0].headers["X-Forwarded-For"] == "127.0.0.1"
