"""The fault matrix, with the relay as a real process (`python -m proxy serve`): SIGKILLed in the
middle of requests (spool off, and spool `always`), and its spool's file system full (a file size
limit, RLIMIT_FSIZE, set on the running relay: the kernel refuses writes past it with EFBIG, as a
full disk refuses them with ENOSPC; sqlite reports both as SQLITE_FULL). Nothing answered 200 may
be lost. SIGKILL in the middle of a spool drain is tests/test_spool_crash.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import EU_TOKEN, US_TOKEN, relay_config
from tests.support.fakes import FakeUpstream
from tests.support.faulty import Ledger, insert_ids, numbered_events
from tests.support.helpers import FORM
from tests.support.processes import RelayProcess
from tests.support.waits import eventually

pytestmark = pytest.mark.slow   # relay process trees, SIGKILLed and restarted

REQUESTS = 8


async def post_all(url: str, token: str, prefix: str, count: int = REQUESTS) -> Ledger:
    """Send concurrently; a dropped connection is recorded as status 0 (the client got nothing)."""
    ledger = Ledger()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async def one(insert_id: str, body: bytes) -> None:
            try:
                async with session.post(f"{url}/track/", data=body, headers=FORM) as response:
                    ledger.record(insert_id, response.status, await response.read(),
                                  response.headers.get("Retry-After"))
            except aiohttp.ClientError as exc:
                ledger.record(insert_id, 0, repr(exc).encode())

        await asyncio.gather(*(one(key, body) for key, body in numbered_events(token, count,
                                                                                 prefix)))
    return ledger


def spool(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"spool": {"enabled": True, "path": str(tmp_path / "spool.db"), "backoff_min": 0.05,
                      "backoff_max": 0.2, "poll_interval": 0.1, **extra}}


async def test_sigkill_mid_request_without_spool(
        upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    """Killed while the upstream holds the requests: the clients get no answer (not a 200), so
    their SDKs keep the events and resend them; nothing was vouched for."""
    us = upstreams["us"]
    us.hold()
    relay = RelayProcess(tmp_path, relay_config(upstreams))
    await relay.start()
    sending = asyncio.create_task(post_all(relay.url, US_TOKEN, "kill-plain"))
    await eventually(lambda: len(us.received) == REQUESTS, what="the requests to be upstream")
    relay.kill_all()
    ledger = await sending
    assert ledger.statuses() == {0}                    # connection dropped, no answer at all
    assert insert_ids(us.received) == set(ledger.answers)   # they did reach the upstream
    assert ledger.lost(us.received) == set()


async def test_sigkill_after_store_first_loses_nothing(
        upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    """Spool `always`: 200 once durable, killed before forwarding; the next start sends all."""
    us = upstreams["us"]
    us.answer(503)                                     # the background forward cannot succeed
    config = relay_config(upstreams, spool(tmp_path, mode="always"))
    first = RelayProcess(tmp_path, config)
    await first.start()
    ledger = await post_all(first.url, US_TOKEN, "kill-spooled")
    assert ledger.statuses() == {200}
    first.kill_all()
    await first.wait()
    us.answer(200)
    us.clear()            # every attempt so far was answered 503: nothing was delivered yet
    second = RelayProcess(tmp_path, config)
    await second.start()
    try:
        await eventually(lambda: not ledger.lost(us.received), timeout=20,
                         what="the stored events to be sent after the restart")
    finally:
        await second.stop()


def limit_file_size(relay: RelayProcess, limit: int) -> None:
    """The soft limit only: lifting it again needs no privilege."""
    for pid in (relay.pid, *relay.worker_pids()):
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


async def test_spool_disk_full_answers_503_and_loses_nothing(
        upstreams: dict[str, FakeUpstream], tmp_path: Path) -> None:
    us, eu = upstreams["us"], upstreams["eu"]
    us.answer(503)                                     # every us request has to be stored
    relay = RelayProcess(tmp_path, relay_config(upstreams, spool(tmp_path)))
    await relay.start()
    try:
        before = await post_all(relay.url, US_TOKEN, "before-full", count=3)
        assert before.statuses() == {200}
        files = list(tmp_path.glob("spool.db*"))
        limit_file_size(relay, max(path.stat().st_size for path in files) + 64 * 1024)
        full = await post_big(relay.url, "full", count=6)
        assert 503 in full.statuses() and full.statuses() <= {200, 503}, full.answers
        for answer in full.answers.values():
            if answer.status == 503:
                assert "spool" in answer.body["error"] and answer.retry_after, answer
        served = await post_all(relay.url + "/eu", EU_TOKEN, "meanwhile", count=2)
        assert served.statuses() == {200}                  # a healthy region is not affected
        assert insert_ids(eu.received) == served.accepted
        assert not relay.process_exited()
        limit_file_size(relay, resource.RLIM_INFINITY)    # space freed: the drain can finish
        us.answer(200)
        us.clear()
        accepted = before.accepted | full.accepted
        await eventually(lambda: accepted <= insert_ids(us.received), timeout=20,
                         what="every accepted event to reach the upstream")
    finally:
        await relay.stop()


async def post_big(url: str, prefix: str, count: int) -> Ledger:
    """Sequential ~300 KB events of random (incompressible) text: each needs new file space."""
    ledger = Ledger()
    async with aiohttp.ClientSession() as session:
        for insert_id, _ in numbered_events(US_TOKEN, count, prefix):
            body = big_event(insert_id)
            async with session.post(f"{url}/track/", data=body, headers=FORM) as response:
                ledger.record(insert_id, response.status, await response.read(),
                              response.headers.get("Retry-After"))
    return ledger


def big_event(insert_id: str) -> bytes:
    blob = base64.b64encode(os.urandom(220 * 1024)).decode()
    payload = [{"event": "big", "properties": {"token": US_TOKEN, "distinct_id": "u",
                                               "time": time.time() - 60,
                                               "$insert_id": insert_id, "blob": blob}}]
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return f"data={quote(data, safe='')}".encode()
