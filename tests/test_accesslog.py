"""Access logs: one JSON line per request, with what an operator needs and nothing private."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from proxy.app import METRICS_KEY
from proxy.ops.accesslog import (
    _MILLISECONDS_KEPT,
    ACCESS_LOGGER,
    AccessRecorder,
    RequestFacts,
    _milliseconds,
    _milliseconds_text,
    ip_policy,
    truncate_ip,
)
from proxy.ops.metrics import Metrics
from proxy.server.edge.wire import LeanRequest
from tests.conftest import EU_TOKEN, US_TOKEN, RelayFactory
from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.logcapture import MessageCapture
from tests.support.metrics import sample

FIELDS = {"time", "method", "endpoint", "region", "status", "reason", "bytes_in", "bytes_out",
          "duration_ms", "upstream_ms", "client_ip", "path", "outcome"}


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(record.getMessage()) for record in caplog.records
            if record.name == ACCESS_LOGGER.name]


async def test_one_line_per_request_with_sizes_durations_and_region(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER.name)
    client = await make_relay({"server": {"trusted_proxies": ["127.0.0.1/32"]}}, projects=True)
    upstreams["eu"].delay = 0.05
    body = browser_form([event(EU_TOKEN)])
    response = await client.post("/track?verbose=1", data=body,
                                 headers={**FORM, "X-Forwarded-For": "203.0.113.77"})
    answer = await response.read()
    await client.get("/healthz")                      # passing probes are not logged
    [line] = lines(caplog)
    assert set(line) == FIELDS
    assert line["method"] == "POST"
    assert (line["endpoint"], line["region"], line["status"]) == ("track", "eu", 200)
    assert (line["bytes_in"], line["bytes_out"]) == (len(body), len(answer))
    assert line["reason"] == "" and line["path"] == "/track"
    assert line["outcome"] == "forwarded"
    assert 50 <= line["upstream_ms"] <= line["duration_ms"]
    assert line["client_ip"] == "203.0.113.0"        # truncated to its /24 by default
    # ISO 8601 UTC with milliseconds, the time the request ended.
    stamped = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 5
    assert len(line["time"]) == len("2026-01-01T00:00:00.000Z")


async def test_refusals_name_their_reason_and_never_the_payload(
        make_relay: RelayFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER.name)
    client = await make_relay({"routing": {"strict": True}, "log": {"client_ip": "full"}})
    secret = browser_form([event("tok_not_listed_secret", email="ann@example.com")])
    await client.post(f"/track?data={secret.decode()[5:]}", data=secret, headers=FORM)
    await client.get("/wp-admin/" + "x" * 300 + "?token=" + US_TOKEN)
    refused, unknown = lines(caplog)
    assert (refused["endpoint"], refused["region"], refused["status"]) == ("track", "-", 403)
    assert refused["reason"] == "unknown_token"
    assert refused["client_ip"] == "127.0.0.1"
    assert (unknown["endpoint"], unknown["status"], unknown["reason"]) == ("none", 404,
                                                                           "not_found")
    assert unknown["path"] == ("/wp-admin/" + "x" * 300)[:96]       # cut short, no query
    text = "\n".join(record.getMessage() for record in caplog.records)
    for private in ("tok_not_listed_secret", "ann@example.com", secret.decode()[5:40], US_TOKEN):
        assert private not in text


async def test_a_split_batch_names_every_region(
        make_relay: RelayFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER.name)
    client = await make_relay({"log": {"client_ip": "omitted"}}, projects=True)
    body = browser_form([event(US_TOKEN), event(EU_TOKEN)])
    assert (await client.post("/track", data=body, headers=FORM)).status == 200
    [line] = lines(caplog)
    assert sorted(line["region"].split("+")) == ["eu", "us"]
    assert line["client_ip"] == ""


async def test_access_logs_can_be_turned_off(
        make_relay: RelayFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER.name)
    client = await make_relay({"log": {"access": False}})
    assert (await client.post("/track", data=browser_form([event(US_TOKEN)]),
                              headers=FORM)).status == 200
    assert lines(caplog) == []


@pytest.mark.parametrize(("ip", "truncated"), [
    ("198.51.100.23", "198.51.100.0"),
    ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
    ("not an ip", ""),
])
def test_truncation_keeps_the_network_only(ip: str, truncated: str) -> None:
    assert truncate_ip(ip) == truncated


@pytest.mark.parametrize(("privacy", "log_policy", "logged"), [
    ({"ip": "truncated", "ipv4_prefix": 16}, "full", "203.0.0.0"),    # privacy's own prefix
    ({"ip": "truncated", "ipv4_prefix": 16}, "truncated", "203.0.0.0"),
    ({"ip": "omitted"}, "full", ""),
    ({"ip": "full"}, "full", "203.0.113.77"),
])
async def test_the_log_never_shows_more_than_the_privacy_policy(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream],
        caplog: pytest.LogCaptureFixture, privacy: dict[str, Any], log_policy: str,
        logged: str) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER.name)
    client = await make_relay({"privacy": privacy, "log": {"client_ip": log_policy},
                               "server": {"trusted_proxies": ["127.0.0.1/32"]}})
    response = await client.post("/track", data=browser_form([event(US_TOKEN)]),
                                 headers={**FORM, "X-Forwarded-For": "203.0.113.77"})
    assert response.status == 200
    [line] = lines(caplog)
    assert line["client_ip"] == logged
    # ...and the upstream saw the same policy applied (or no client IP at all).
    [got] = upstreams["us"].received
    assert got.headers.get("X-Forwarded-For", "") == (logged if privacy["ip"] != "full"
                                                      else "203.0.113.77")


async def test_asset_requests_are_labelled_assets(
        make_relay: RelayFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER.name)
    cdn = FakeCdn()
    await cdn.start()
    try:
        client = await make_relay({"assets": {"cdn_url": cdn.url}})
        response = await client.get("/libs/mixpanel-2-latest.min.js",
                                    headers={"Accept-Encoding": "identity"})
        body = await response.read()
    finally:
        await cdn.close()
    assert response.status == 200 and body == cdn.files["mixpanel-2-latest.min.js"]
    [line] = lines(caplog)
    assert (line["endpoint"], line["status"], line["bytes_out"]) == ("assets", 200, len(body))
    assert line["path"] == "/libs/mixpanel-2-latest.min.js"
    registry = client.app[METRICS_KEY].registry
    assert sample(registry, "mixpanel_proxy_response_bytes_total", endpoint="assets") == len(body)


@given(st.floats(min_value=0, max_value=3600, allow_nan=False))
def test_durations_are_milliseconds_with_two_decimals(seconds: float) -> None:
    written = _milliseconds(seconds)
    whole, _, hundredths = written.partition(".")
    assert whole.isdigit() and len(hundredths) == 2 and hundredths.isdigit()
    # As "%.2f" writes them, give or take the rounding of a half hundredth.
    assert abs(float(written) - seconds * 1000) <= 0.005 + 1e-9 * seconds * 1000


def test_remembered_durations_are_bounded_and_still_right() -> None:
    for hundredths in range(_MILLISECONDS_KEPT * 2):
        assert _milliseconds(hundredths / 100_000) == f"{hundredths / 100:.2f}"
    assert len(_milliseconds_text) <= _MILLISECONDS_KEPT


def test_remembered_client_ips_are_bounded_and_shown_by_policy() -> None:
    """A client chooses its X-Forwarded-For: the recorder's memory of the IPs it has shown
    stays bounded, and every line still shows its own client's network."""
    recorder = AccessRecorder(Metrics(CollectorRegistry()), True, ip_policy("truncated"))
    capture = MessageCapture()
    ACCESS_LOGGER.addHandler(capture)
    level = ACCESS_LOGGER.level
    ACCESS_LOGGER.setLevel(logging.INFO)
    try:
        count = 5000
        for n in range(count):
            facts = RequestFacts()
            facts.endpoint, facts.client_ip = "track", f"10.{n // 256 % 256}.{n % 256}.7"
            request = LeanRequest("POST", "/track?ip=1", CIMultiDictProxy(CIMultiDict()),
                                  "127.0.0.1", 0, b"")
            recorder.record(request, facts, 200, 1, 0.0)
    finally:
        ACCESS_LOGGER.removeHandler(capture)
        ACCESS_LOGGER.setLevel(level)
    shown = [json.loads(line)["client_ip"] for line in capture.lines]
    assert shown == [f"10.{n // 256 % 256}.{n % 256}.0" for n in range(count)]
    assert len(recorder._shown_ips) <= 4096
