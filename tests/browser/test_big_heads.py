"""A big site's cookies on the way to a first-party relay: real Chromium sends the SDK's /track
with a Cookie header past 16 KB (issue 14 item 6), and the relay must take it and forward the
batch byte for byte (never the cookies)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from proxy.server.limits import MAX_HEAD
from tests.conftest import US_TOKEN
from tests.support.browser import Site, calls, open_tab, snippet_page
from tests.support.fakes import FakeUpstream
from tests.support.waits import eventually

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
async def big_site() -> AsyncIterator[Site]:
    """The first-party site, taking the same big heads (its page gets the cookies too)."""
    served = Site()
    await served.server.start_server(max_field_size=MAX_HEAD, max_line_size=MAX_HEAD)
    yield served
    await served.server.close()


async def test_a_16_kb_cookie_header_does_not_cost_the_event(
        browser: Browser, big_site: Site, relay: str, upstreams: dict[str, FakeUpstream]) -> None:
    # Cookies do not tell ports apart: served from 127.0.0.1, the page shares its cookies with
    # the relay on 127.0.0.1, as a site shares them with its relay on a first-party host.
    url = big_site.add(snippet_page(relay, US_TOKEN, {"batch_flush_interval_ms": 100},
                                "mixpanel.track('Big cookies', {n: 1});"))
    url = url.replace("//localhost:", "//127.0.0.1:")
    tab = await open_tab(browser)
    await tab.context.add_cookies([{"name": f"site{n}", "value": "v" * 4000,
                                    "url": "http://127.0.0.1/"} for n in range(4)])
    await tab.goto_and_wait_loaded(url)
    us = upstreams["us"]
    await eventually(lambda: calls(us, "track") and tab.statuses("/track"),
                     "the event at the US fake, and its answer in the browser")

    [request, *_] = tab.requests_to("/track")
    cookie = await request.header_value("cookie")
    assert cookie is not None and len(cookie) > 16_000
    assert set(tab.statuses("/track")) == {200}
    sent = {r.post_data_buffer for r in tab.requests_to("/track")}
    for received in calls(us, "track"):
        assert received.body in sent, "the relay must forward the browser's bytes unchanged"
        assert "Cookie" not in received.headers
    assert tab.cors_errors() == []
