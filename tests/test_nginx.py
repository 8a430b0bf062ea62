"""The shipped nginx/ config, run by the real nginx (adapted only in ports and paths), in front of a
real multi-worker relay process and real fake upstreams: client IP, body limits, the /libs cache,
the operator endpoints, HTTP/2, and `nginx -t`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from proxy.assets.names import is_immutable
from proxy.endpoints import DEFAULT_BODY_LIMITS
from tests.conftest import relay_config, running_cdn, running_upstreams
from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream
from tests.support.helpers import FORM, browser_form, event
from tests.support.processes import NginxFront, RelayProcess

pytestmark = pytest.mark.nginx
# The stack's relay, nginx and fakes live for the whole module, on one event loop: every test
# that uses them runs on that loop too.
on_module_loop = pytest.mark.asyncio(loop_scope="module")

ORIGIN = "https://shop.example"


@dataclass
class Stack:
    relay: RelayProcess
    front: NginxFront
    upstreams: dict[str, FakeUpstream]
    cdn: FakeCdn

    def session(self, source_ip: str = "127.0.0.1") -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=False, local_addr=(source_ip, 0))
        return aiohttp.ClientSession(self.front.url, connector=connector)


@asynccontextmanager
async def running_stack(workdir: Path) -> AsyncIterator[Stack]:
    """A 2-worker relay behind the shipped nginx, with its own fake regions and CDN."""
    async with running_upstreams() as upstreams, running_cdn() as cdn:
        config = relay_config(upstreams, {"server": {"workers": 2},
                                          "assets": {"cdn_url": cdn.url}})
        relay = RelayProcess(workdir, config)
        await relay.start()
        front = NginxFront(relay.port)
        try:
            await front.start()
            yield Stack(relay, front, upstreams, cdn)
        finally:
            front.stop()
            await relay.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="module")
async def stack(shared_stack: Stack) -> Stack:
    """The module's stack, its fakes as new: nothing recorded, answering like Mixpanel. (Tests
    that stop a part of it, or need a cold nginx cache, use `own_stack`.)"""
    assert not shared_stack.relay.process_exited(), shared_stack.relay.stderr
    for fake in shared_stack.upstreams.values():
        fake.reset()
    return shared_stack


@pytest_asyncio.fixture(loop_scope="module")
async def own_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as stack:
        yield stack


def test_shipped_config_passes_nginx_t() -> None:
    front = NginxFront(relay_port=8080)
    try:
        front.prepare()
        result = front.test_config()
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr
    finally:
        front.stop()


def test_cloudflare_variant_passes_nginx_t() -> None:
    front = NginxFront(relay_port=8080)
    try:
        front.prepare()
        server = front.conf / "mixpanel-proxy.conf"
        server.write_text(server.read_text().replace("snippets/real-ip.conf",
                                                     "snippets/real-ip-cloudflare.conf"))
        result = front.test_config()
        assert result.returncode == 0, result.stderr
    finally:
        front.stop()


async def _track(session: aiohttp.ClientSession, insert_id: str,
                 headers: dict[str, str] | None = None) -> tuple[int, str]:
    body = browser_form([event("tok_any", **{"$insert_id": insert_id})])
    async with session.post("/track/?ip=1&verbose=1", data=body,
                            headers={**FORM, **(headers or {})}) as response:
        return response.status, await response.text()


def _received_from(upstream: FakeUpstream, insert_id: str) -> dict[str, str]:
    for received in upstream.received:
        if any(record["properties"]["$insert_id"] == insert_id for record in received.records()):
            return received.headers
    raise AssertionError(f"{insert_id} never reached the upstream")


@pytest.mark.parametrize(("source_ip", "xff", "expected"), [
    # A client straight at nginx: its own address, whatever it claims.
    ("127.0.0.2", None, "127.0.0.2"),
    ("127.0.0.2", "198.51.100.7", "127.0.0.2"),
    # A trusted load balancer (loopback only, by default, in snippets/real-ip.conf) vouches.
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ("127.0.0.1", "203.0.113.9, 127.0.0.1", "203.0.113.9"),
    # What a client wrote left of the first untrusted hop is not believed: a private-network
    # hop is not trusted by default (any host of the VPC could name any client).
    ("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3", "10.1.2.3"),
])
@on_module_loop
async def test_client_ip_reaches_the_upstream(stack: Stack, source_ip: str, xff: str | None,
                                              expected: str) -> None:
    insert_id = f"ip-{source_ip}-{xff}".replace(" ", "")
    headers = {"X-Forwarded-For": xff} if xff else {}
    async with stack.session(source_ip) as session:
        status, text = await _track(session, insert_id, headers)
    assert status == 200, text + stack.front.errors()
    received = _received_from(stack.upstreams["us"], insert_id)
    assert received["X-Forwarded-For"] == expected
    assert received["X-Real-IP"] == expected


@on_module_loop
async def test_a_forged_cf_connecting_ip_does_not_reach_the_relay(stack: Stack) -> None:
    async with stack.session("127.0.0.2") as session:
        status, _ = await _track(session, "cf-forged", {"CF-Connecting-IP": "6.6.6.6"})
    assert status == 200
    received = _received_from(stack.upstreams["us"], "cf-forged")
    assert received["X-Forwarded-For"] == "127.0.0.2"
    assert "6.6.6.6" not in json.dumps(received)


def _body_of_size(size: int) -> bytes:
    """A valid track form of exactly `size` bytes: the event, then a padding field."""
    head = browser_form([event("tok_any", **{"$insert_id": f"size-{size}"})]) + b"&pad="
    assert len(head) < size
    return head + b"x" * (size - len(head))


@pytest.mark.parametrize("path", ["/track/", "/import", "/record/?format=body"])
@on_module_loop
async def test_bodies_at_the_limit_pass_and_over_it_get_a_json_413(stack: Stack,
                                                                   path: str) -> None:
    endpoint = path.strip("/").split("/")[0].split("?")[0]
    limit = DEFAULT_BODY_LIMITS[endpoint]
    async with stack.session() as session:
        async with session.post(path, data=_body_of_size(limit), headers=FORM) as response:
            assert response.status == 200, await response.text()
        assert [len(r.body) for r in stack.upstreams["us"].received] == [limit]
        async with session.post(path, data=_body_of_size(limit + 1),
                                headers={**FORM, "Origin": ORIGIN}) as response:
            assert response.status == 413
            assert response.headers["Content-Type"] == "application/json"
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
            answer = await response.json()
    assert answer["status"] == 0
    assert f"{limit}-byte limit" in answer["error"]
    assert len(stack.upstreams["us"].received) == 1   # the oversize body never left nginx


@pytest.mark.parametrize(("path", "limit"), [
    ("/engage/", DEFAULT_BODY_LIMITS["engage"]), ("/groups", DEFAULT_BODY_LIMITS["groups"]),
    ("/flags/", DEFAULT_BODY_LIMITS["flags"]), ("/settings/", DEFAULT_BODY_LIMITS["settings"]),
    ("/eu/track/", DEFAULT_BODY_LIMITS["track"]),
])
@on_module_loop
async def test_every_endpoint_limit_matches_the_relay(stack: Stack, path: str, limit: int) -> None:
    async with stack.session() as session:
        async with session.post(path, data=b"x" * (limit + 1), headers=FORM) as response:
            assert response.status == 413
            assert f"{limit}-byte limit" in (await response.json())["error"]
    assert all(not fake.received for fake in stack.upstreams.values())


@on_module_loop
async def test_metrics_and_status_are_refused_from_outside(stack: Stack) -> None:
    async with stack.session() as session:
        for path in ("/metrics", "/status", "//metrics", "/%6Detrics", "/./status"):
            async with session.get(URL(stack.front.url + path, encoded=True)) as response:
                assert response.status == 403, path
                assert "scrape the relay directly" in (await response.json())["error"]
        async with session.get("/healthz") as response:
            assert response.status == 200
    async with aiohttp.ClientSession() as direct:   # the relay itself serves them on loopback
        async with direct.get(f"{stack.relay.url}/metrics") as response:
            assert response.status == 200


@on_module_loop
async def test_libs_are_served_from_the_nginx_cache(own_stack: Stack) -> None:
    stack = own_stack              # it stops the relay, and needs nginx's cache cold
    hashed = next(name for name in stack.cdn.files if is_immutable(name)
                  and name.endswith(".min.js"))
    paths = ["/libs/mixpanel-2-latest.min.js", f"/libs/{hashed}", "/lib.min.js"]
    bodies: dict[str, bytes] = {}
    async with stack.session() as session:
        for path in paths:
            async with session.get(path) as response:
                assert response.status == 200
                assert response.headers["X-Cache-Status"] == "MISS"
                assert "max-age=" in response.headers["Cache-Control"]
                assert ("immutable" in response.headers["Cache-Control"]) == (hashed in path)
                bodies[path] = await response.read()
        fetched = stack.cdn.count()
        # Stop the relay: whatever answers now can only be nginx's cache.
        await stack.relay.stop()
        for path in paths:
            async with session.get(path) as response:
                assert response.status == 200
                assert response.headers["X-Cache-Status"] == "HIT"
                assert await response.read() == bodies[path]
        async with session.post("/track/", data=b"data=x", headers=FORM) as response:
            assert response.status == 503        # the API is not cached: the relay is down
            assert response.headers["Retry-After"] == "10"
            assert (await response.json())["status"] == 0
    assert stack.cdn.count() == fetched


@on_module_loop
async def test_http_redirects_to_https_keeping_the_method(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{stack.front.http_port}/track/",
                                data=b"data=x", allow_redirects=False) as response:
            assert response.status == 308
            assert response.headers["Location"].startswith("https://")
        async with session.get(f"http://127.0.0.1:{stack.front.http_port}/healthz") as response:
            assert response.status == 200               # for plain-HTTP health checks


@on_module_loop
async def test_http2_is_offered() -> None:
    """Checked with curl, which speaks HTTP/2 (Python's aiohttp client does not)."""
    front = NginxFront(relay_port=9)       # nothing listens there: nginx answers a JSON 503
    try:
        await front.start()
        result = subprocess.run(
            ["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             f"{front.url}/track/"], capture_output=True, text=True, timeout=30)
        assert result.stdout == "2 503", result.stderr
    finally:
        front.stop()


@on_module_loop
async def test_rate_limit_is_per_client_ip_and_answers_a_json_503(stack: Stack) -> None:
    refusals: list[tuple[dict[str, str], Any]] = []

    async def one(session: aiohttp.ClientSession, client: str | None) -> int:
        headers = {"X-Forwarded-For": client, "Origin": ORIGIN} if client else {}
        async with session.get("/no-such-endpoint", headers=headers) as response:
            if response.status == 503:
                refusals.append((dict(response.headers), await response.json()))
            await response.read()
            return response.status

    async with stack.session() as session:
        started = asyncio.get_running_loop().time()
        statuses = await asyncio.gather(*(one(session, "198.51.100.50") for _ in range(1000)))
        elapsed = asyncio.get_running_loop().time() - started
        admitted = statuses.count(404)            # reached the relay, which knows no such path
        # snippets/api.conf: a burst of 400, then 100 per second.
        assert 400 <= admitted <= 401 + 100 * elapsed + 1
        assert statuses.count(503) == len(refusals) == 1000 - admitted
        headers, answer = refusals[0]
        assert headers["Retry-After"] == "5"
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
        assert answer["error"].startswith("rate limit")
        assert await one(session, "198.51.100.51") == 404   # another client is not limited
        assert await one(session, None) == 404              # nor loopback (server SDKs, probes)
