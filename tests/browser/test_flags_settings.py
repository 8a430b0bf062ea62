"""Scenario 5: feature flags and remote settings round-trip through the relay with the token's
Authorization header, and the settings answer lands before the SDK's 500 ms abort."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser

from tests.conftest import EU_TOKEN
from tests.support.browser import (
    Site,
    basic,
    calls,
    open_tab,
    query,
    replay_id_once_recording,
    snippet_page,
)
from tests.support.fakes import FakeUpstream
from tests.support.waits import eventually

pytestmark = pytest.mark.browser

# Recording is off locally; only the remote settings (the fake answers record_sessions_percent
# 100) can turn it on, and the SDK applies them only if they arrive within its 500 ms abort.
OPTIONS = {"batch_flush_interval_ms": 100, "flags": True, "remote_settings_mode": "fallback",
           "record_sessions_percent": 0}
SETTINGS_TIMINGS = """() => performance.getEntriesByType('resource')
    .filter(entry => entry.name.includes('/settings/')).map(entry => entry.duration)"""


async def test_flags_and_remote_settings_round_trip(
        browser: Browser, site: Site, relay: str,
        upstreams: dict[str, FakeUpstream]) -> None:
    tab = await open_tab(browser)
    await tab.goto_and_wait_loaded(site.add(snippet_page(relay, EU_TOKEN, OPTIONS, "")))

    variant = await tab.evaluate("() => mixpanel.flags.get_variant_value('demo', 'fallback')")
    assert variant is True, "the flag value the EU fake answered"
    await replay_id_once_recording(tab)   # started only because the remote settings said 100
    eu = upstreams["eu"]
    settings = await eventually(lambda: calls(eu, "settings"), "/settings at the EU fake")
    flags = await eventually(lambda: calls(eu, "flags"), "/flags at the EU fake")

    assert settings[0].headers["Authorization"] == basic(EU_TOKEN)
    assert query(settings[0])["sdk_config"] == "1"
    assert flags[0].headers["Authorization"] == basic(EU_TOKEN)
    assert flags[0].headers["traceparent"].startswith("00-")
    flag_query = query(flags[0])
    assert flag_query["token"] == EU_TOKEN
    assert "distinct_id" in json.loads(flag_query["context"])
    assert set(tab.statuses("/settings")) == {200} and set(tab.statuses("/flags")) == {200}
    durations = await tab.evaluate(SETTINGS_TIMINGS)
    assert durations and max(durations) < 500, durations
    assert not upstreams["us"].received and not upstreams["in"].received
    assert tab.cors_errors() == []
