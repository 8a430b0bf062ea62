"""The bad-input matrix: every shape is refused with a clear status, nothing is forwarded, and a
good request sent at the same moment is served.

Shapes the relay sees as requests get a JSON body naming the problem and a rejection metric.
Shapes that are not HTTP/1.1 at all (oversized or too many headers, smuggling shapes, bytes that
are not a request line) are refused by the lean edge before anything reaches aiohttp
(proxy/server/edge/head.py): JSON naming the problem, connection closed, counted.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.config import parse_config
from proxy.endpoints import ENDPOINTS
from tests.conftest import US_TOKEN, RelayFactory, relay_config
from tests.support.bombs import brotli_zeros, gzip_zeros, zlib_zeros
from tests.support.edge_server import EdgeTestServer
from tests.support.fake_cdn import FakeCdn
from tests.support.fakes import FakeUpstream
from tests.support.faulty import insert_ids, numbered_events
from tests.support.helpers import FORM, basic, browser_form, event
from tests.support.metrics import sample
from tests.support.rawhttp import exchange_to_eof as raw_exchange

Client = TestClient[Any, Any]
SMALL = 4096                 # every endpoint's body limit here, but /track's
TRACK_LIMIT = 64 * 1024      # room for a compressed bomb whose inflated size is far past it


@dataclass
class Relay:
    client: Client
    registry: CollectorRegistry
    upstreams: dict[str, FakeUpstream]
    cdn: FakeCdn
    good_sent: int = 0

    @property
    def port(self) -> int:
        port = self.client.port
        assert port is not None
        return port

    def rejections(self, reason: str) -> float:
        return sample(self.registry, "mixpanel_proxy_rejections_total", reason=reason)

    async def good(self) -> int:
        """A well-formed /track request; its status."""
        self.good_sent += 1
        [(_, body)] = numbered_events(US_TOKEN, 1, f"good-{self.good_sent}")
        response = await self.client.post("/track/", data=body, headers=FORM)
        return response.status

    def forwarded_only_good(self) -> None:
        """Nothing but the good requests crossed to any upstream or to the CDN."""
        received = [item for fake in self.upstreams.values() for item in fake.received]
        assert len(received) == self.good_sent, [item.path for item in received]
        assert all(key.startswith("good-") for key in insert_ids(received))
        assert not self.cdn.requests


@pytest.fixture
async def relay(make_relay: RelayFactory, upstreams: dict[str, FakeUpstream],
                fake_cdn: FakeCdn) -> Relay:
    registry = CollectorRegistry()
    limits = {name: SMALL for name in ENDPOINTS} | {"track": TRACK_LIMIT, "import": IMPORT_LIMIT}
    client = await make_relay({"routing": {"strict": True}, "limits": {"body": limits},
                               "assets": {"cdn_url": fake_cdn.url}},
                              projects=True, registry=registry)
    return Relay(client, registry, upstreams, fake_cdn)


async def beside_good(relay: Relay, bad: Awaitable[Any]) -> Any:
    """Send the bad request and a good one at once: the good one must be served."""
    result, good_status = await asyncio.gather(bad, relay.good())
    assert good_status == 200
    return result


# -- shapes the relay answers itself: JSON, metric, nothing forwarded -------------------------
def form(data: bytes) -> bytes:
    return b"data=" + quote(data, safe="").encode()


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@dataclass(frozen=True)
class Bad:
    name: str
    target: str
    body: bytes
    headers: dict[str, str]
    status: int
    reason: str
    error: str


def over_limit_cases() -> list[Bad]:
    cases = []
    for name in ENDPOINTS:
        limit = {"track": TRACK_LIMIT, "import": IMPORT_LIMIT}.get(name, SMALL)
        cases.append(Bad(f"over_limit_{name}", f"/{name}/", b"d" * (limit + 1), FORM, 413,
                         "limit", f"exceeds the {limit}-byte limit for /{name}"))
    return cases


IMPORT_EVENT = {"event": "e", "properties": {"token": US_TOKEN, "distinct_id": "u",
                                             "time": 1764330000, "$insert_id": "i"}}
IMPORT_LIMIT = 1024 * 1024   # room for 2,001 small records
BOMB_MIB = 16      # about 16 KiB compressed (under /track's 64 KiB), 16 MiB inflated
BAD_BODIES = [
    *over_limit_cases(),
    Bad("gzip_bomb", "/track/", gzip_zeros(BOMB_MIB), {**FORM, "Content-Encoding": "gzip"},
        413, "limit", "decompressed body exceeds"),
    Bad("deflate_bomb", "/track/", zlib_zeros(BOMB_MIB), {**FORM, "Content-Encoding": "deflate"},
        413, "limit", "decompressed body exceeds"),
    Bad("br_bomb", "/track/", brotli_zeros(BOMB_MIB), {**FORM, "Content-Encoding": "br"},
        413, "limit", "decompressed body exceeds"),
    Bad("bad_base64", "/track/", b"data=%21%21not*base64%21%21", FORM, 400, "bad_payload",
        "base64"),
    Bad("bad_json", "/track/", form(base64.b64encode(b'[{"event": "x", ')), FORM, 400,
        "bad_payload", "JSON"),
    Bad("bad_utf8", "/track/", form(base64.b64encode(b'[{"event": "\xff\xfe"}]')), FORM, 400,
        "bad_payload", "UTF-8"),
    Bad("bad_percent_encoding", "/track/", b"data=%ZZ%E0%A4", FORM, 400, "bad_payload", ""),
    Bad("2001_records", "/import", json.dumps([IMPORT_EVENT] * 2001).encode(),
        {"Content-Type": "application/json", "Authorization": basic(US_TOKEN)}, 413, "limit",
        "2001 records"),
    Bad("deep_nesting", "/track/", form(json.dumps([{"event": "x", "properties": {
        "token": US_TOKEN, "deep": nested(80)}}]).encode()), FORM, 400, "bad_payload", "nest"),
    Bad("unknown_token_strict", "/track/", browser_form([event("tok_nobody_0000")]), FORM, 403,
        "unknown_token", "not a project this relay serves"),
    Bad("no_token_strict", "/engage/", browser_form([{"$distinct_id": "u"}]), FORM, 403,
        "unknown_token", "no project token"),
]


@pytest.mark.parametrize("bad", BAD_BODIES, ids=lambda bad: bad.name)
async def test_bad_body_is_refused_in_json(relay: Relay, bad: Bad) -> None:
    async def send() -> tuple[int, str, Any]:
        response = await relay.client.post(bad.target, data=bad.body, headers=bad.headers)
        return response.status, response.content_type, await response.json()

    status, content_type, body = await beside_good(relay, send())
    assert (status, content_type) == (bad.status, "application/json"), body
    assert body["status"] == 0 and bad.error.lower() in body["error"].lower(), body
    assert relay.rejections(bad.reason) == 1
    relay.forwarded_only_good()


CLOSE = b"Connection: close\r\n\r\n"
TARGETS = [
    # (name, raw request head without the final CRLF, status, reason)
    ("absolute_uri", b"POST http://evil.example/track/ HTTP/1.1\r\nHost: evil.example\r\n",
     400, "bad_request"),
    ("connect", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n", 405,
     "method"),
    ("libs_traversal", b"GET /libs/../../etc/passwd HTTP/1.1\r\nHost: x\r\n", 404, "not_found"),
    ("libs_encoded_traversal", b"GET /libs/%2e%2e%2f%2e%2e%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n",
     404, "not_found"),
    ("libs_double_encoded", b"GET /libs/%252e%252e%252fetc%252fpasswd HTTP/1.1\r\nHost: x\r\n",
     404, "not_found"),
    ("libs_backslash", b"GET /libs/..\\..\\etc\\passwd HTTP/1.1\r\nHost: x\r\n", 404,
     "not_found"),
    ("api_encoded_traversal", b"GET /track/%2e%2e/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n", 404,
     "not_found"),
]


@pytest.mark.parametrize("name, head, status, reason", TARGETS, ids=[t[0] for t in TARGETS])
async def test_bad_target_is_refused_in_json(relay: Relay, name: str, head: bytes, status: int,
                                             reason: str) -> None:
    got, answer_head, body = await beside_good(relay, raw_exchange(relay.port,
                                                                   head + CLOSE))
    assert got == status, answer_head
    assert b"application/json" in answer_head
    assert json.loads(body)["status"] == 0
    assert relay.rejections(reason) == 1
    relay.forwarded_only_good()


async def test_host_header_spoofing_never_reaches_the_upstream(relay: Relay) -> None:
    """The client's Host is not forwarded: the upstream always gets its own."""
    us = relay.upstreams["us"]
    response = await relay.client.post(
        "/track/", data=browser_form([event(US_TOKEN)]),
        headers={**FORM, "Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    assert response.status == 200
    [received] = us.received
    assert received.headers["Host"] == us.url.removeprefix("http://")
    assert "evil.example" not in json.dumps(received.headers)


# -- shapes that are not well-formed HTTP/1.1: refused by the edge in JSON, connection closed ---
HOST = b"Host: x\r\n"
PROTOCOL = [
    # (name, request, status, words of the JSON error, rejection reason)
    ("oversized_header", b"GET /track/ HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 70000
     + b"\r\n\r\n", 431, "header fields exceed 65536 bytes", "bad_request"),
    ("too_many_headers", b"GET /track/ HTTP/1.1\r\n" + HOST
     + b"".join(b"X-%d: 1\r\n" % n for n in range(200)) + b"\r\n", 431,
     "more than 128 request header fields", "bad_request"),
    ("oversized_target", b"GET /engage/?" + b"a" * 70000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
     413, "send fewer events per request", "limit"),          # an SDK halves on 413
    ("oversized_other_target", b"GET /elsewhere?" + b"a" * 70000 + b" HTTP/1.1\r\n" + HOST
     + b"\r\n", 414, "the request line exceeds 65536 bytes", "bad_request"),
    ("duplicate_content_length", b"POST /track/ HTTP/1.1\r\n" + HOST
     + b"Content-Length: 6\r\nContent-Length: 60\r\n\r\ndata=x", 400, "malformed request head",
     "bad_request"),
    ("content_length_and_chunked", b"POST /track/ HTTP/1.1\r\n" + HOST
     + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "malformed request head", "bad_request"),
    ("obfuscated_transfer_encoding", b"POST /track/ HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400,
     "malformed request head", "bad_request"),
    ("nul_in_header", b"GET /track/ HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n", 400,
     "malformed request head", "bad_request"),
    ("tls_on_http_port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n", 400,
     "malformed request head", "bad_request"),
]


@pytest.mark.parametrize("name, request_bytes, status, says, reason", PROTOCOL,
                         ids=[p[0] for p in PROTOCOL])
async def test_protocol_violation_is_refused_by_the_parser(
        relay: Relay, name: str, request_bytes: bytes, status: int, says: str,
        reason: str) -> None:
    answered, head, body = await beside_good(relay, raw_exchange(relay.port, request_bytes))
    assert answered == status and says in json.loads(body)["error"], (head, body)
    assert b"Content-Type: application/json" in head
    assert request_bytes[:12] not in body                # never the client's bytes
    assert b"Connection: close" in head
    assert relay.rejections(reason) == 1
    relay.forwarded_only_good()


# -- slowloris --------------------------------------------------------------------------------
async def trickle(port: int, request: bytes, pause: float) -> bytes:
    """Send the request one byte at a time; what the relay answered (b'' if it hung up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for byte in request:
            if reader.at_eof():
                break                           # the relay hung up
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(pause)          # paces traffic: the trickle
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        return b""
    finally:
        writer.close()


@pytest.mark.slow   # waits out the keep-alive timeout
async def test_slowloris_is_cut_off_and_others_are_served(
        upstreams: dict[str, FakeUpstream]) -> None:
    """Headers trickled in: the connection is dropped at the keep-alive timeout
    (proxy/server/worker.py KEEPALIVE_TIMEOUT, 1 s here; the edge's sweeper enforces it),
    nothing is forwarded, and meanwhile other clients are served."""
    config = parse_config(relay_config(upstreams))
    server = EdgeTestServer(create_app(config, registry=CollectorRegistry()), host="127.0.0.1",
                            keepalive_timeout=1.0)
    await server.start_server()
    try:
        port = server.port
        assert port is not None
        request = (b"POST /track/ HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 200 + b"\r\n"
                   b"Content-Length: 0\r\n\r\n")
        slow = [asyncio.create_task(trickle(port, request, 0.05)) for _ in range(30)]
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.post(server.make_url("/track/"), headers=FORM,
                                        data=browser_form([event(US_TOKEN)])) as response:
                    assert response.status == 200
                await asyncio.sleep(0.02)   # paces traffic: spread over the trickles
        answers = await asyncio.gather(*slow)
        # Hung up on, never answered: a trickle the relay let finish (~12 s) would be answered.
        assert set(answers) == {b""}
        assert len(upstreams["us"].received) == 20
    finally:
        await server.close()
