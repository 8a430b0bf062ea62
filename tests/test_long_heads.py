"""Real-world head sizes and what the edge refuses, over a loopback socket to a relay served as a
worker serves it (EdgeSite), asserting on what reached the fake upstream.

Heads up to 64 KiB (proxy/server/limits.py) are served on the edge and on aiohttp's path alike:
a first-party site's cookies, mixpanel-node's `GET /track?data=` (lib/mixpanel-node.js); past
that, 431 / 414 JSON, or 413 on an SDK endpoint so mixpanel-js halves its batch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from proxy.server.edge import EdgeSite
from proxy.server.limits import MAX_HEAD
from tests.conftest import US_TOKEN, RelayFactory
from tests.support.fakes import FakeUpstream
from tests.support.helpers import basic, browser_form, event

Client = TestClient[Any, Any]


async def send(client: Client, data: bytes, answers: int, *, then_closed: bool = False,
               ) -> list[tuple[int, bytes, bytes]]:
    """Send raw bytes, read `answers` answers (status, head, body); `then_closed`: and then
    nothing more until the relay ends the connection."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(data)
        await writer.drain()
        out = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = await asyncio.wait_for(reader.readexactly(length), 5)
            out.append((int(head.split(b" ")[1]), head, body))
        if then_closed:
            try:
                rest = await asyncio.wait_for(reader.read(), 5)
            except TimeoutError:
                raise AssertionError(f"still open after {out[-1][1]!r}") from None
            assert rest == b"", rest[:300]
        return out
    finally:
        writer.close()


async def take_long_lines(fake: FakeUpstream) -> None:
    """Mixpanel takes long request lines; the fake's aiohttp server is told to as well."""
    assert fake.server is not None and fake.server.port is not None
    port = fake.server.port
    await fake.server.close()
    fake.server = TestServer(fake.app(), host="127.0.0.1", port=port)
    await fake.server.start_server(max_line_size=MAX_HEAD, max_field_size=MAX_HEAD)


def node_track(properties_size: int) -> bytes:
    """mixpanel-node's track(): `GET /track?data=<base64 JSON>&ip=1&verbose=1`."""
    payload = event(US_TOKEN, "node event", blob="n" * properties_size)
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return f"/track?data={data}&ip=1&verbose=1".encode()


async def test_node_sdk_get_with_a_30_kb_request_line_is_relayed_byte_for_byte(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    await take_long_lines(upstreams["us"])
    client = await make_relay()
    target = node_track(22_000)
    assert 29_000 < len(target) < 31_000
    [(status, _, body)] = await send(
        client, b"GET " + target + b" HTTP/1.1\r\nHost: relay\r\nConnection: keep-alive\r\n\r\n",
        1)
    assert status == 200 and json.loads(body)["status"] == 1, body
    [received] = upstreams["us"].received
    assert received.method == "GET"
    assert f"{received.path}?{received.query}".encode() == target


async def test_a_16_kb_cookie_head_is_served_and_never_forwarded(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    body = browser_form([event(US_TOKEN)])
    cookie = "; ".join(f"c{n}={'v' * 60}" for n in range(250))
    assert len(cookie) > 16_000
    request = (f"POST /track/?ip=1 HTTP/1.1\r\nHost: relay\r\nCookie: {cookie}\r\n"
               f"Content-Type: application/x-www-form-urlencoded\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    [(status, _, _)] = await send(client, request, 1)
    assert status == 200
    [received] = upstreams["us"].received
    assert received.body == body and "Cookie" not in received.headers


async def test_a_handed_over_connection_takes_64_kib_heads_and_refuses_in_json(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """After a hand-over aiohttp parses what the client pipelines: the same head limits, and its
    refusals are JSON that never quote the client's bytes (proxy/server/refusals.py)."""
    await take_long_lines(upstreams["us"])
    registry = CollectorRegistry()
    client = await make_relay(registry=registry)
    healthz = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
    long_get = b"GET " + node_track(40_000) + b" HTTP/1.1\r\nHost: relay\r\n\r\n"
    answers = await send(client, healthz + long_get, 2)
    assert [a[0] for a in answers] == [200, 200]
    assert len(upstreams["us"].received) == 1
    assert client.port is not None
    for bad in (b"GET /track/ HTTP/1.1\r\nHost: relay\r\nX-Evil: a\x00<script>\r\n\r\n",
                b"GET /track/?data=e30 HTTP/1.1\nHost: relay\n\n"):           # bare LF
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(healthz)
        await asyncio.wait_for(reader.readuntil(b'{"status": "ok"}'), 5)
        writer.write(bad)                          # parsed by aiohttp: the edge handed over
        answer = await asyncio.wait_for(reader.read(), 5)     # at once, then closed
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and b"Content-Type: application/json" in head
        assert json.loads(body) == {"status": 0, "error": "malformed HTTP request"}
    assert registry.get_sample_value("mixpanel_proxy_rejections_total",
                                     {"reason": "bad_request"}) == 2
    assert len(upstreams["us"].received) == 1


async def test_http10_chunked_smuggling_is_never_relayed(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 cannot be trusted; a request hidden after
    the chunked body must not reach the upstream, on the edge or after a hand-over."""
    registry = CollectorRegistry()
    client = await make_relay(registry=registry)
    hidden = (b"GET /engage/?data=e30 HTTP/1.1\r\nHost: relay\r\n\r\n")
    body = browser_form([event(US_TOKEN)])
    smuggle = (b"POST /track/ HTTP/1.0\r\nHost: relay\r\nConnection: keep-alive\r\n"
               b"Transfer-Encoding: chunked\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
               + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" + hidden)
    healthz = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
    for data in (smuggle, healthz + smuggle):
        # Read until the relay closes: a request it read from this connection went upstream
        # before its answer, and its answer before the close.
        answers = await send(client, data, 1 if data is smuggle else 2, then_closed=True)
        status, head, text = answers[-1]
        # Refused by the edge; after a hand-over, aiohttp relays the chunked request but closes.
        assert b"Connection: close" in head, (head, text)
        assert status == 400 if data is smuggle else status in (200, 400)
    assert [r.path for r in upstreams["us"].received] in ([], ["/track/"])
    assert all(not fake.received for fake in upstreams.values() if fake.name != "us")


async def test_pipelining_without_reading_holds_bounded_memory(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """400 pipelined `GET /flags/definitions` with a 100 KB upstream answer, never read: the edge
    starts a few exchanges, then stops (write side above its high-water mark, reading paused)."""
    upstreams["us"].answer(200, b"f" * 100_000, {"Content-Type": "application/json"})
    client = await make_relay()
    assert client.server.runner is not None
    site = next(s for s in client.server.runner.sites if isinstance(s, EdgeSite))
    assert site.edge is not None
    request = (f"GET /flags/definitions HTTP/1.1\r\nHost: relay\r\n"
               f"Authorization: {basic(US_TOKEN)}\r\n\r\n").encode()
    assert client.port is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)   # before connecting
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", client.port))
    _, writer = await asyncio.open_connection(sock=sock)
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    transport.pause_reading()                     # the client never reads an answer
    writer.write(request * 400)
    peak = 0
    # A stall is the absence of progress: no event says it happened, so the test lets 1.5 s
    # pass while the client never reads, sampling what the edge holds.
    for _ in range(30):
        await asyncio.sleep(0.05)   # paces the samples over the time the test is about
        peak = max([peak, *(c.buffered for c in site.edge.connections)])
    exchanges = len(upstreams["us"].received)
    writer.close()
    print(f"exchanges started: {exchanges}, peak bytes held by the connection: {peak}")
    # The kernel's socket buffers take a few dozen answers (tcp_wmem's 4 MiB); past them the
    # edge holds at most one answer and the transport's high-water mark of unsent bytes, plus
    # the unparsed requests, and starts no exchange.
    assert exchanges < 60, exchanges             # before: all 400
    assert peak < 300_000, peak                   # before: ~36 MB
