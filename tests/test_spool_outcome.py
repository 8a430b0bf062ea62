"""Spooled requests do not look delivered: the access line and /status say "stored", and the
drainer logs when a region recovers and how many entries it drained."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from proxy.ops.accesslog import ACCESS_LOGGER
from tests.conftest import RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.waits import eventually
from tests.test_status_page import Rows


async def test_stored_requests_are_told_apart_and_their_drain_logged(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    client = await make_relay({"spool": {"enabled": True, "path": str(tmp_path / "s.db"),
                                         "backoff_min": 0.05, "backoff_max": 0.1,
                                         "poll_interval": 0.05, "track_max_age": 1e10}})
    body = browser_form([event("tok")])
    assert (await client.post("/track", data=body, headers=FORM)).status == 200   # forwarded
    await upstreams["us"].go_down()
    assert (await client.post("/track", data=body, headers=FORM)).status == 200   # stored
    lines = [json.loads(record.getMessage()) for record in caplog.records
             if record.name == ACCESS_LOGGER.name]
    assert [(line["status"], line["outcome"]) for line in lines] == [
        (200, "forwarded"), (200, "stored")]

    page = Rows()
    page.feed(await (await client.get("/status")).text())
    track = page.row(endpoint="track")
    assert (track[1], track[2], track[-1]) == ("2", "2", "1")   # 2 answered 2xx, 1 of them stored

    def logged(words: str) -> bool:
        return any(words in record.getMessage() for record in caplog.records)

    await eventually(lambda: logged("spool: region us backs off"),
                     what="the drainer to fail a round")
    await upstreams["us"].come_back()
    await eventually(lambda: logged("drained 1 entries"), what="the drain")
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("spool: region us recovered after") for message in messages)
    assert "spool: region us: drained 1 entries" in messages
    assert len(upstreams["us"].received) == 2        # the first, then the stored one, once
