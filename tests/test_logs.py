"""`[log] format = "json"`: every line the relay writes is one JSON object with its time and level,
the access lines included (with their path), and refused scrapes are logged as such.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest

from proxy.config import LogConfig
from proxy.ops.logs import JsonFormatter
from tests.conftest import relay_config
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.processes import RelayProcess
from tests.support.waits import eventually


@pytest.mark.slow
async def test_every_line_is_json_with_time_and_level(upstreams: dict[str, FakeUpstream],
                                                       tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path, relay_config(upstreams, {"log": {"format": "json"},
                                                            "server": {"workers": 2}}))
    await relay.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{relay.url}/track/", data=browser_form([event("t")]),
                                    headers=FORM) as response:
                assert response.status == 200
            async with session.get(f"{relay.url}/metrics",
                                   headers={"X-Forwarded-For": "203.0.113.9"}) as response:
                assert response.status == 403
        await relay.reload()
        await eventually(lambda: relay.stderr.count('"endpoint":"ops"') >= 1,
                         what="the refused scrape's line")
    finally:
        await relay.stop()
    lines = [json.loads(line) for line in (relay.stderr + relay.stdout).splitlines()]
    assert all(line["time"].endswith("Z") and line["level"] for line in lines), lines
    messages = [line.get("message", "") for line in lines]
    assert any("listening on http://127.0.0.1:" in message for message in messages)
    assert any(message.startswith("reloaded ") for message in messages)
    access = [line for line in lines if line.get("logger") == "mixpanel_proxy.access"]
    assert [(line["path"], line["status"], line["reason"]) for line in access] == [
        ("/track/", 200, ""), ("/metrics", 403, "ops_refused")]


def test_json_formatter_keeps_exceptions_and_splices_access_lines() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = logging.LogRecord("mixpanel_proxy.x", logging.ERROR, __file__, 1, "failed %s",
                                   ("once",), sys.exc_info())
    line = json.loads(formatter.format(record))
    assert (line["level"], line["message"]) == ("error", "failed once")
    assert "ValueError: boom" in line["error"]
    access = logging.LogRecord("mixpanel_proxy.access", logging.INFO, __file__, 0,
                               '{"time":"2026-01-01T00:00:00.000Z","path":"/track"}', None, None)
    assert json.loads(formatter.format(access)) == {
        "level": "info", "logger": "mixpanel_proxy.access", "time": "2026-01-01T00:00:00.000Z",
        "path": "/track"}
    assert LogConfig().format == "text"
