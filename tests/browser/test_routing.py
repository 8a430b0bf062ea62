"""Scenario 4: one relay, three projects: per-token routing sends an EU and an India project to
their regions (`[[projects]]`), and a project the config does not list to the default region."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser

from tests.conftest import EU_TOKEN, IN_TOKEN
from tests.support.browser import (
    Site,
    Tab,
    basic,
    calls,
    flush_replay_batch,
    open_tab,
    records,
    replay_id_once_recording,
    snippet_page,
)
from tests.support.fakes import FakeUpstream
from tests.support.waits import eventually

pytestmark = pytest.mark.browser

UNLISTED_TOKEN = "tok_unlisted_3456"   # not in [[projects]]: the default region (us) serves it
PROJECTS = {EU_TOKEN: "eu", IN_TOKEN: "in", UNLISTED_TOKEN: "us"}
OPTIONS = {"batch_flush_interval_ms": 100, "record_sessions_percent": 100}


def activity(region: str) -> str:
    # Profile updates of an anonymous user wait for identify(): identify first.
    return (f"mixpanel.identify('user-{region}');"
            f"mixpanel.track('Hello', {{region: {json.dumps(region)}}});"
            f"mixpanel.people.set({{region: {json.dumps(region)}}});")


def delivered(fake: FakeUpstream) -> bool:
    return bool(records(fake, "track") and records(fake, "engage") and calls(fake, "record"))


async def test_each_project_reaches_its_own_region(
        browser: Browser, site: Site, relay: str,
        upstreams: dict[str, FakeUpstream]) -> None:
    tabs: dict[str, Tab] = {}
    for token, region in PROJECTS.items():
        tab = tabs[token] = await open_tab(browser)
        await tab.goto_and_wait_loaded(site.add(snippet_page(relay, token, OPTIONS,
                                                             activity(region))))
    for token, region in PROJECTS.items():
        await replay_id_once_recording(tabs[token])
        await flush_replay_batch(tabs[token], upstreams[region])
    await eventually(lambda: all(delivered(fake) for fake in upstreams.values()),
                     "events, profiles and replay batches at all three fakes")

    for token, region in PROJECTS.items():
        fake = upstreams[region]
        assert {r["properties"]["token"] for r in records(fake, "track")} == {token}
        assert {r["properties"]["region"] for r in records(fake, "track")
                if r["event"] == "Hello"} == {region}
        assert {r["$token"] for r in records(fake, "engage")} == {token}
        assert {b.headers["Authorization"] for b in calls(fake, "record")} == {basic(token)}
        assert tabs[token].cors_errors() == []
