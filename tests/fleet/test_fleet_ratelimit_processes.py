"""The fleet rate limit with real relay processes (`python -m proxy serve`, two workers each):
three relays on one redis-server; a burst shared by six processes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import US_TOKEN, relay_config
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.processes import RelayProcess
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow


async def test_three_relay_processes_share_one_ip_bucket(
        upstreams: dict[str, FakeUpstream], redis_server: RedisServer, tmp_path: Path) -> None:
    config = relay_config(upstreams, {
        "server": {"workers": 2},
        "limits": {"rate": {"backend": "redis", "ip_per_second": 0.01, "ip_burst": 10}},
        "redis": {"url": redis_server.url}}, projects=True)
    relays = []
    for n in range(3):
        workdir = tmp_path / f"relay{n}"
        workdir.mkdir()
        relays.append(RelayProcess(workdir, config))
    try:
        for relay in relays:
            await relay.start()
        statuses = []
        async with aiohttp.ClientSession() as session:
            for _ in range(6):
                for relay in relays:
                    async with session.post(f"{relay.url}/track/", headers=FORM,
                                            data=browser_form([event(US_TOKEN)])) as response:
                        await response.read()
                        statuses.append(response.status)
        # Six processes, one bucket: 10 of 18 pass (per-process buckets would pass all 18).
        assert statuses.count(200) == 10 and statuses.count(503) == 8
        assert len(upstreams["us"].received) == 10
    finally:
        for relay in relays:
            await relay.stop()
