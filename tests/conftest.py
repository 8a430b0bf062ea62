"""Shared fixtures: three fake regional upstreams and a factory for relays pointed at them; the
test tiers (`slow`: see `pytest_collection_modifyitems`); and which build runs (pure Python or
compiled: see `pytest_sessionstart`)."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.compiled import compiled_modules
from proxy.config import parse_config
from tests.support.edge_server import EdgeTestServer
from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream

RelayFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

# What makes a test slow, by what it uses: these markers and fixtures start Chromium, nginx or
# relay process trees. Anything else slow carries `@pytest.mark.slow` itself.
SLOW_MARKERS = frozenset({"browser", "nginx"})
SLOW_FIXTURES = frozenset({"browser", "chromium_endpoint", "stack", "start_relay"})

US_TOKEN = "tok_us_1234"
EU_TOKEN = "tok_eu_5678"
IN_TOKEN = "tok_in_9012"


# Set by .ci/compiled-suite, which runs the suite against the compiled wheel's package.
EXPECT_COMPILED = "MIXPANEL_PROXY_EXPECT_COMPILED"


def pytest_report_header() -> str:
    modules = compiled_modules()
    return f"build: {sum(modules.values())} of {len(modules)} listed modules compiled"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Run against the build the run asked for, or not at all: .ci/compiled-suite proves the
    compiled build only if the compiled modules are what got imported; any other run tests the
    `.py` sources, and a stray compiled module (a `build_ext --inplace` in the checkout) would
    shadow them without a word."""
    modules = compiled_modules()
    expect = os.environ.get(EXPECT_COMPILED) == "1"
    wrong = sorted(name for name, compiled in modules.items() if compiled != expect)
    if wrong:
        import proxy
        problem = ("not compiled" if expect else
                   "imported as compiled extensions, shadowing their .py (delete the .so files)")
        pytest.exit(f"{', '.join(wrong)}: {problem}; package at {proxy.__file__}", returncode=3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` whatever starts Chromium, nginx or relay processes, so that
    `pytest -m "not slow"` is the one-minute inner loop; plain `pytest` still runs everything."""
    for item in items:
        markers = {marker.name for marker in item.iter_markers()}
        fixtures = set(getattr(item, "fixturenames", ()))
        if markers & SLOW_MARKERS or fixtures & SLOW_FIXTURES or _on_the_general_path(item):
            item.add_marker(pytest.mark.slow)


def _on_the_general_path(item: pytest.Item) -> bool:
    """Every relay test runs through both paths (the `make_relay` fixture's two params); the
    inner loop takes the plain path, which serves production's plain requests, and the full suite
    both."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "general_path" in callspec.id


@asynccontextmanager
async def running_upstreams() -> AsyncIterator[dict[str, FakeUpstream]]:
    """The three fake regions, listening on loopback until the block ends."""
    fakes = {name: FakeUpstream(name) for name in ("us", "eu", "in")}
    try:
        for fake in fakes.values():
            fake.server = TestServer(fake.app(), host="127.0.0.1")
            await fake.server.start_server()
        yield fakes
    finally:
        for fake in fakes.values():
            fake.release()                  # a test that failed while holding answers
            if fake.server is not None:
                await fake.server.close()


@asynccontextmanager
async def running_cdn() -> AsyncIterator[FakeCdn]:
    """A fake cdn.mxpnl.com serving the real mixpanel-browser bundles
    (see tests/support/fake_cdn.py)."""
    cdn = FakeCdn()
    await cdn.start()
    try:
        yield cdn
    finally:
        await cdn.close()


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, FakeUpstream]]:
    async with running_upstreams() as fakes:
        yield fakes


@pytest.fixture
async def fake_cdn() -> AsyncIterator[FakeCdn]:
    async with running_cdn() as cdn:
        yield cdn


def relay_config(upstreams: dict[str, FakeUpstream], extra: dict[str, Any] | None = None,
                 projects: bool = False) -> dict[str, Any]:
    """A config dict with every region pointed at its fake; `extra` is merged in per section."""
    data: dict[str, Any] = {
        "regions": {name: {"url": fake.url} for name, fake in upstreams.items()},
        "upstream": {"connect_timeout": 1.0, "read_timeout": 2.0},
        # No background region probes unless a test asks: fakes record only the test's traffic.
        "health": {"probe_interval": 0},
    }
    if projects:
        data["projects"] = [
            {"token": US_TOKEN, "region": "us", "project_id": 1},
            {"token": EU_TOKEN, "region": "eu", "project_id": 2},
            {"token": IN_TOKEN, "region": "in", "project_id": 3},
        ]
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **copy.deepcopy(value)}
        else:
            data[key] = copy.deepcopy(value)
    return data


@pytest.fixture(params=[True, False], ids=["plain_path", "general_path"])
async def make_relay(upstreams: dict[str, FakeUpstream],
                     request: pytest.FixtureRequest) -> AsyncIterator[RelayFactory]:
    """Relays served as a worker serves them: through the lean edge
    (tests/support/edge_server.py). Every test runs twice: with the edge's plain path (plain
    requests answered in callbacks, relay/plain.py) and with it off (every request through
    `ApiRelay.handle`), so both paths answer to the same tests."""
    clients: list[TestClient[Any, Any]] = []
    fast_path: bool = request.param

    async def factory(extra: dict[str, Any] | None = None, projects: bool = False,
                      registry: CollectorRegistry | None = None) -> TestClient[Any, Any]:
        config = parse_config(relay_config(upstreams, extra, projects))
        app = create_app(config, registry=registry or CollectorRegistry())
        client: TestClient[Any, Any] = TestClient(EdgeTestServer(app, host="127.0.0.1",
                                                                 fast_path=fast_path))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
