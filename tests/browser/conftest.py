"""Browser fixtures: one headless Chromium for the whole package (each test gets fresh contexts
over its own DevTools connection), the first-party site, and the relay stack under test."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.conftest import RelayFactory
from tests.support.browser import Site, launch_chromium
from tests.support.fake_cdn import FakeCdn


@pytest.fixture(scope="package")
def chromium_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DevTools endpoint of a Chromium started once for every browser test."""
    root = tmp_path_factory.mktemp("chromium")
    profile = root / "profile"
    profile.mkdir()
    process, endpoint = launch_chromium(profile, root / "chromium.log")
    yield endpoint
    _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
async def browser(chromium_endpoint: str) -> AsyncIterator[Browser]:
    """A Playwright connection to the shared Chromium, bound to this test's event loop."""
    async with async_playwright() as playwright:
        connected = await playwright.chromium.connect_over_cdp(chromium_endpoint)
        yield connected
        await connected.close()   # closes this test's contexts; Chromium itself keeps running


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    served = Site()
    await served.server.start_server()
    yield served
    await served.server.close()


@pytest.fixture
async def relay(make_relay: RelayFactory, fake_cdn: FakeCdn) -> str:
    """The relay under test, on its own origin: the three projects of tests/conftest.py, and the
    SDK bundles relayed from the fake CDN under /libs/."""
    client = await make_relay({"assets": {"cdn_url": fake_cdn.url}}, projects=True)
    return str(client.make_url("")).rstrip("/")
