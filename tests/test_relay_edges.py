"""Upstream failures, CORS, body limits and refusals: each answered in JSON the SDK acts on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.faulty import closed_port
from tests.support.helpers import FORM, basic
from tests.support.rawhttp import exchange_to_eof

ORIGIN = {"Origin": "https://shop.example"}


async def test_upstream_down_is_503_with_retry_after(make_relay: RelayFactory) -> None:
    client = await make_relay({"regions": {"us": {"url": f"http://127.0.0.1:{closed_port()}"}}})
    for path, body in (("/track/", b"data=x"), ("/record/?seq=0", b"\x1f\x8b")):
        response = await client.post(path, data=body, headers={**FORM, **ORIGIN})
        assert response.status == 503
        assert response.headers["Retry-After"] == "10"
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]
        assert "upstream unavailable" in (await response.json())["error"]


async def test_slow_upstream_times_out_to_503(make_relay: RelayFactory,
                                              upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"upstream": {"read_timeout": 0.2, "retry_after": 3}})
    upstreams["us"].hold()                  # it never answers
    response = await client.post("/track/", data=b"data=x", headers=FORM)
    assert (response.status, response.headers["Retry-After"]) == (503, "3")
    assert "did not answer in time" in (await response.json())["error"]


async def test_settings_has_its_own_short_timeout(make_relay: RelayFactory,
                                                  upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"upstream": {"settings_timeout": 0.1, "read_timeout": 60.0}})
    us = upstreams["us"]
    us.hold()                         # the upstream never answers while held
    # Answered while the upstream still holds the request: only settings_timeout can have ended
    # it (read_timeout would take a minute; the bound here only catches that).
    response = await asyncio.wait_for(
        client.get("/settings/", headers={"Authorization": basic("t")}), 30)
    assert response.status == 503
    assert [r.path for r in us.received] == ["/settings/"]
    us.release()
    assert (await client.post("/track/", data=b"data=x", headers=FORM)).status == 200


@pytest.mark.parametrize(("status", "expected"), [(500, 503), (502, 503), (503, 503),
                                                  (301, 503)])
async def test_upstream_errors_become_retryable(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream], status: int,
        expected: int) -> None:
    client = await make_relay()
    upstreams["us"].answer(status, b"<html>oops</html>", {"Location": "https://elsewhere"})
    response = await client.post("/record/?seq=1", data=b"x", headers=ORIGIN)
    assert response.status == expected
    assert "Location" not in response.headers
    assert (await response.json())["error"] == f"upstream answered {status}"


async def test_upstream_429_keeps_retry_after_and_4xx_pass(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    upstreams["us"].answer(429, b"Too many", {"Retry-After": "42"})
    response = await client.post("/track/", data=b"data=x", headers={**FORM, **ORIGIN})
    assert (response.status, response.headers["Retry-After"]) == (503, "42")
    assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"
    assert (await response.json())["error"] == "upstream rate limit"
    upstreams["us"].answer(401, {"error": "Invalid credentials"},
                           {"Content-Type": "application/json"})
    response = await client.get("/flags/?token=t")
    assert (response.status, await response.json()) == (401, {"error": "Invalid credentials"})
    upstreams["us"].answer(400, b"plain text")
    response = await client.post("/track/", data=b"data=x", headers=FORM)
    assert response.status == 400 and (await response.json())["error"] == "upstream answered 400"


async def test_cors_preflight_and_credentialed_answers(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"cors": {"extra_headers": ["X-Site"]}})
    preflight = await client.options("/record/", headers={
        **ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert preflight.headers["Access-Control-Allow-Headers"] == (
        "Authorization, Content-Type, traceparent, X-Site")
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert not upstreams["us"].received                        # preflights never go upstream
    response = await client.post("/track/", data=b"data=x", headers={**FORM, **ORIGIN})
    assert response.headers.getall("Access-Control-Allow-Origin") == [ORIGIN["Origin"]]
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]
    no_origin = await client.post("/track/", data=b"data=x", headers=FORM)
    assert "Access-Control-Allow-Origin" not in no_origin.headers


async def test_allowed_origins(make_relay: RelayFactory,
                               upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay({"cors": {"allowed_origins": ["https://shop.example",
                                                            "https://*.brand.example"]}})
    for origin, status in (("https://shop.example", 200), ("https://eu.brand.example", 200),
                           ("https://evil.example", 403), ("https://brand.example", 403)):
        response = await client.post("/track/", data=b"data=x",
                                     headers={**FORM, "Origin": origin})
        assert response.status == status, origin
    evil = await client.options("/track/", headers={"Origin": "https://evil.example"})
    assert evil.status == 403 and "Access-Control-Allow-Origin" not in evil.headers
    assert len(upstreams["us"].received) == 2


@pytest.mark.parametrize(("endpoint", "limit"), [("track", 1024), ("record", 4096)])
async def test_body_limits_on_both_sides(make_relay: RelayFactory,
                                         upstreams: dict[str, FakeUpstream], endpoint: str,
                                         limit: int) -> None:
    client = await make_relay({"limits": {"body": {endpoint: limit}}})
    at_limit = await client.post(f"/{endpoint}/", data=b"d" * limit, headers=ORIGIN)
    assert at_limit.status == 200
    over = await client.post(f"/{endpoint}/", data=b"d" * (limit + 1), headers=ORIGIN)
    assert over.status == 413
    assert over.headers["Access-Control-Allow-Origin"] == ORIGIN["Origin"]
    assert (await over.json())["error"] == (
        f"the body exceeds the {limit}-byte limit for /{endpoint}")

    # No Content-Length: the limit must hold while reading.
    async def chunked(size: int) -> AsyncIterator[bytes]:
        yield b"d" * size

    over_chunked = await client.post(f"/{endpoint}/", data=chunked(limit + 1))
    assert over_chunked.status == 413
    assert [len(r.body) for r in upstreams["us"].received] == [limit]


async def test_decompression_is_bounded_when_routing_decodes(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    import gzip
    client = await make_relay({"limits": {"body": {"track": 10_000}}}, projects=True)
    bomb = gzip.compress(b"data=" + b"A" * 5_000_000)
    assert len(bomb) < 10_000
    response = await client.post("/track/", data=bomb,
                                 headers={**FORM, "Content-Encoding": "gzip"})
    assert response.status == 413
    assert "decompressed body exceeds the 10000-byte limit" in (await response.json())["error"]
    assert not upstreams["us"].received


async def test_refusals_are_json_and_never_forwarded(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    port = client.port
    assert port is not None
    cases = [
        (b"GET http://evil.example/track/ HTTP/1.1\r\nHost: evil.example\r\n", 400),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n", 405),
        (b"GET /undefined?data=x HTTP/1.1\r\nHost: x\r\n", 404),
        (b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n", 404),
        (b"DELETE /track/ HTTP/1.1\r\nHost: x\r\n", 405),
        (b"GET //evil.example/track HTTP/1.1\r\nHost: x\r\n", 404),
    ]
    for request, status in cases:
        got, head, body = await exchange_to_eof(port, request + b"Connection: close\r\n\r\n")
        assert got == status, request
        assert b"application/json" in head and body.startswith(b'{"status":0,"error":'), body
    assert not any(fake.received for fake in upstreams.values())
