"""The proof of the Redis spool: three relay processes on one redis-server, the upstream down,
10,000 events accepted across all three; then, mid-drain, one relay SIGKILLed and Redis killed
and started again. Every accepted event arrives; duplicates only as redeliveries the metrics
count; /engage order per project intact although a project's updates went through all three.

Redis runs with `appendfsync always` here, so its SIGKILL loses nothing it acknowledged (with
`everysec`, the default of tests/support/redis_server.py, a crash may lose the last second:
see the README, "A fleet on Redis").
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import EU_TOKEN, IN_TOKEN, US_TOKEN, relay_config
from tests.fleet.backends import Held
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event, python_sdk_form
from tests.support.processes import RelayProcess
from tests.support.redis_server import RedisServer
from tests.support.waits import eventually

pytestmark = pytest.mark.slow

EVENTS, PER_REQUEST = 10_000, 50
UPDATES = 30                       # /engage updates per project, spread over the three relays
TOKENS = (US_TOKEN, EU_TOKEN, IN_TOKEN)


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendfsync="always")
    server.start()
    yield server
    server.cleanup()


async def metric(relay: RelayProcess, name: str) -> float:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{relay.url}/metrics") as response:
        text = await response.text()
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text,
                                                   re.MULTILINE))


def kill_relay(relay: RelayProcess) -> None:
    for pid in relay.worker_pids():
        os.kill(pid, signal.SIGKILL)
    relay.send(signal.SIGKILL)


async def accept_everything(relays: list[RelayProcess]) -> tuple[set[str], dict[str, int]]:
    """POST the events (50 per request) and the /engage updates round-robin over the relays;
    every answer must be the SDK's success. Returns the accepted event names and updates."""
    accepted: set[str] = set()
    gate = asyncio.Semaphore(12)
    now = time.time() - 60

    async with aiohttp.ClientSession() as session:
        async def post(relay: RelayProcess, target: str, body: bytes) -> None:
            async with gate, session.post(f"{relay.url}{target}", data=body,
                                          headers=FORM) as response:
                answer = await response.read()
                assert response.status == 200, answer
                assert answer in (b"1", b'{"status":1,"error":null}'), answer

        async def batch(n: int) -> None:
            names = [f"ev-{n}-{i}" for i in range(PER_REQUEST)]
            payload = [event(US_TOKEN, name, time=now, **{"$insert_id": name}) for name in names]
            await post(relays[n % 3], "/track/", browser_form(payload))
            accepted.update(names)

        async def updates(project: int) -> None:
            token = TOKENS[project]
            for step in range(UPDATES):   # one at a time: the order a project's SDK sends in
                update = [{"$token": token, "$distinct_id": "u", "$set": {"step": step}}]
                await post(relays[(step + project) % 3], "/engage/", python_sdk_form(update))

        await asyncio.gather(*(batch(n) for n in range(EVENTS // PER_REQUEST)),
                             *(updates(project) for project in range(3)))
    return accepted, {token: UPDATES for token in TOKENS}


async def test_three_relays_sigkill_and_redis_restart_lose_nothing(
        upstreams: dict[str, FakeUpstream], durable_redis: RedisServer, tmp_path: Path) -> None:
    config = relay_config(upstreams, {
        "server": {"workers": 1},            # one process each: /metrics shows all of it
        "spool": {"enabled": True, "backend": "redis", "path": str(tmp_path / "unused.db"),
                  "backoff_min": 0.05, "backoff_max": 0.5, "poll_interval": 0.2,
                  "claim_after": 2.0, "partitions": 4, "drain_concurrency": 8},
        "redis": {"url": durable_redis.url, "retry_interval": 0.2, "timeout": 2.0}},
        projects=True)
    relays = []
    for n in range(3):
        (tmp_path / f"relay{n}").mkdir()
        relays.append(RelayProcess(tmp_path / f"relay{n}", config))
    held = Held("redis", tmp_path, durable_redis)
    for fake in upstreams.values():
        await fake.go_down()
    try:
        for relay in relays:
            await relay.start()
        accepted, _ = await accept_everything(relays)
        assert len(accepted) == EVENTS
        assert len(held.waiting()) == EVENTS // PER_REQUEST + 3 * UPDATES

        for fake in upstreams.values():
            fake.delay = 0.1                   # slow acceptance: sends are in flight
            await fake.come_back()
        us = upstreams["us"]
        await eventually(lambda: len(us.received) >= 40, timeout=60, what="the drain")
        kill_relay(relays[0])                  # mid-send: its pending entries stay in Redis
        durable_redis.kill()

        async def outage_seen() -> bool:       # by a relay still draining
            return 0 in [await metric(relay, "mixpanel_proxy_redis_up") for relay in relays[1:]]

        await eventually(outage_seen, what="a relay to see Redis down")
        durable_redis.start()                  # the AOF replayed: nothing acknowledged lost
        for fake in upstreams.values():
            fake.delay = 0.0

        def arrived() -> set[str]:
            return {record["event"] for item in us.received if item.path == "/track/"
                    for record in item.records()}

        await eventually(lambda: arrived() >= accepted and not held.waiting(), timeout=120,
                         what="every accepted event upstream")
        track = [item.body for item in us.received if item.path == "/track/"]
        engage = {token: [item.records()[0]["$set"]["step"]
                          for item in fake.received if item.path == "/engage/"]
                  for token, fake in zip(TOKENS, upstreams.values(), strict=True)}
        duplicates = (len(track) - len(set(track))) + sum(
            len(steps) - len(set(steps)) for steps in engage.values())
        redelivered = sum([await metric(relay, "mixpanel_proxy_spool_redeliveries_total")
                           for relay in relays[1:]])
        claimed = sum([await metric(relay, "mixpanel_proxy_spool_claimed_total")
                       for relay in relays[1:]])
        counts = {"accepted_events": len(accepted), "arrived_events": len(arrived()),
                  "track_requests": len(track), "duplicate_requests": duplicates,
                  "redeliveries_counted": redelivered, "claimed_from_other_relays": claimed}
        print("fleet proof counts:", counts)
        (tmp_path / "counts.txt").write_text(repr(counts))
        assert arrived() == accepted
        assert duplicates <= redelivered, counts
        for token, steps in engage.items():
            # First arrivals in the order accepted; a redelivery repeats the head, never
            # overtakes: the sequence never goes back.
            assert list(dict.fromkeys(steps)) == list(range(UPDATES)), (token, steps)
            assert steps == sorted(steps), (token, steps)
    finally:
        for relay in relays[1:]:
            await relay.stop()
        if not relays[0].process_exited():
            kill_relay(relays[0])
