"""The relay as a real process (`python -m proxy serve`), killed with SIGKILL in the middle of a
drain and started again: nothing it answered for is lost; the duplicates are counted."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import US_TOKEN, relay_config
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form
from tests.support.metrics import scrape_url, value
from tests.support.processes import RelayProcess
from tests.support.waits import eventually
from tests.test_spool import fresh, on_disk, spool_config

pytestmark = pytest.mark.slow   # relay process trees, SIGKILLed and restarted

REQUESTS = 40


async def test_sigkill_mid_drain_loses_nothing(
        upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us = upstreams["us"]
    config = relay_config(upstreams, spool_config(tmp_path, drain_concurrency=4))
    first = RelayProcess(tmp_path, config)
    await first.start()
    us.answer(503)                                   # stored, answered 200
    bodies = [browser_form(fresh(US_TOKEN, f"event-{n}")) for n in range(REQUESTS)]
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(f"{first.url}/track/", data=body, headers=FORM) as response:
                assert response.status == 200
                assert await response.read() == b"1"
    assert len(on_disk(tmp_path)) == REQUESTS        # each 200 came after its commit
    assert (tmp_path / "spool.db").stat().st_mode & 0o777 == 0o600

    us.answer(200)
    us.delay = 0.3                                   # slow acceptance: sends are in flight
    us.clear()
    await eventually(lambda: len(us.received) >= 10, what="the drain to be under way")
    first.kill_all()
    assert await first.wait() == -signal.SIGKILL
    left = len(on_disk(tmp_path))
    assert 0 < left < REQUESTS, left

    us.delay = 0.0
    second = RelayProcess(tmp_path, config)
    await second.start()
    try:
        await eventually(lambda: not on_disk(tmp_path), timeout=30, what="the drain after restart")
        received = [item.body for item in us.received if item.path == "/track/"]
        assert set(received) == set(bodies)                       # nothing lost
        duplicates = len(received) - len(set(received))
        counted = value(await scrape_url(f"{second.url}/metrics"),
                        "mixpanel_proxy_spool_redeliveries_total") or 0.0
        assert counted >= duplicates            # every duplicate was announced as possible
        assert counted <= 4                     # at most drain_concurrency were in flight
    finally:
        await second.stop()
