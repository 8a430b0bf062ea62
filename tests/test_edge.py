"""The lean edge (proxy/server/edge/): plain SDK requests answered by it, everything else handed to
aiohttp with its bytes intact, on the same connection, in order.

Every test talks raw HTTP/1.1 over a loopback socket (the exact bytes matter here) to a relay
served as a worker serves it (`make_relay` listens with EdgeSite), and asserts on what the fake
upstream received and on the `edge_handovers` counter, which says who answered.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.config import parse_config
from proxy.ops.metrics import EDGE_HANDOVER_REASONS
from tests.conftest import US_TOKEN, RelayFactory, relay_config
from tests.support import rawhttp
from tests.support.edge_server import EdgeTestServer
from tests.support.fakes import FakeUpstream
from tests.support.helpers import browser_form, event
from tests.support.metrics import sample
from tests.support.rawhttp import Answer, read_answer
from tests.support.waits import eventually

Client = TestClient[Any, Any]
BODY = browser_form([event(US_TOKEN)])


def track(body: bytes = BODY, target: str = "/track/?ip=1&verbose=1", version: str = "1.1",
          extra: str = "") -> bytes:
    return (f"POST {target} HTTP/{version}\r\nHost: relay\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"


async def exchange(client: Client, data: bytes, answers: int, pieces: int = 1,
                   until_close: bool = False) -> tuple[list[Answer], bool]:
    assert client.port is not None
    return await rawhttp.exchange(client.port, data, answers, pieces, until_close)


def handovers(registry: CollectorRegistry) -> dict[str, float]:
    return {reason: sample(registry, "mixpanel_proxy_edge_handovers_total", reason=reason)
            for reason in EDGE_HANDOVER_REASONS}


async def test_plain_requests_stay_on_the_edge_in_order(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay(registry=registry)
    bodies = [browser_form([event(US_TOKEN, f"e{n}")]) for n in range(3)]
    # Pipelined in one write, and split mid-head and mid-body across writes.
    answers, _ = await exchange(client, b"".join(track(body) for body in bodies), 3)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [json.loads(body) for _, _, body in answers] == [{"status": 1, "error": None}] * 3
    answers, _ = await exchange(client, track(bodies[0], extra="Origin: https://shop.example\r\n"),
                                1, pieces=7)
    status, headers, _ = answers[0]
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://shop.example"
    assert headers["server"] == "mixpanel-proxy" and "date" in headers
    received = upstreams["us"].received
    assert [r.body for r in received] == [*bodies, bodies[0]]
    assert all(r.query == "ip=1&verbose=1" and r.path == "/track/" for r in received)
    assert set(handovers(registry).values()) == {0.0}


async def test_a_connection_is_handed_over_with_the_request_intact(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """plain, then not plain, then plain again: aiohttp keeps the connection after the second."""
    registry = CollectorRegistry()
    client = await make_relay(registry=registry)
    first, last = (browser_form([event(US_TOKEN, name)]) for name in ("first", "last"))
    answers, _ = await exchange(client, track(first) + HEALTHZ + track(last), 3)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert answers[1][2] == b"ok" or b"ok" in answers[1][2]
    assert [r.body for r in upstreams["us"].received] == [first, last]
    assert handovers(registry)["target"] == 1


async def test_not_plain_shapes_are_served_by_aiohttp(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    registry = CollectorRegistry()
    client = await make_relay(registry=registry)
    # A chunked body: relayed whole, its bytes as the client meant them.
    chunked = (b"POST /track/ HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
               + f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n")
    # A head past 8 KiB (a first-party site's cookies): served by the edge itself (heads up to
    # 64 KiB), the cookie never forwarded.
    cookie = track(extra="Cookie: " + "c" * 5000 + "\r\nX-Site: " + "s" * 5000 + "\r\n")
    for request in (chunked, cookie):
        answers, _ = await exchange(client, request, 1)
        assert answers[0][0] == 200
    assert [r.body for r in upstreams["us"].received] == [BODY, BODY]
    assert all("Cookie" not in r.headers for r in upstreams["us"].received)
    # A body past /track's limit: aiohttp reads the head, the relay answers 413 in JSON.
    answers, _ = await exchange(client, track(b"x" * (3 * 1024 * 1024)), 1)
    assert answers[0][0] == 413 and answers[0][1]["content-type"] == "application/json"
    # An unknown method and an absolute-form target: refused in JSON, never forwarded.
    answers, _ = await exchange(client, b"DELETE /track/ HTTP/1.1\r\nHost: relay\r\n\r\n", 1)
    assert answers[0][0] == 405
    answers, _ = await exchange(
        client, b"GET http://evil.example/track HTTP/1.1\r\nHost: evil.example\r\n\r\n", 1)
    assert answers[0][0] == 400
    assert len(upstreams["us"].received) == 2
    assert handovers(registry) == {"target": 1, "method": 1, "framing": 2}


async def test_bare_lf_heads_are_refused_by_the_edge(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """The edge frames on CRLF CRLF; a head with bare LFs could hide a second request from that
    framing, so the edge refuses it at once in JSON and closes, handing nothing over."""
    registry = CollectorRegistry()
    client = await make_relay(registry=registry)
    smuggle = (b"POST /track/ HTTP/1.1\nHost: relay\nContent-Length: 0\n\n"
               b"GET /engage/ HTTP/1.1\r\nHost: relay\r\n\r\n")
    answers, closed = await exchange(client, smuggle, 1, until_close=True)
    assert answers[0][0] == 400 and closed
    assert answers[0][1]["content-type"] == "application/json"
    assert b"Host" not in answers[0][2]                      # never the client's bytes
    assert handovers(registry) == {"target": 0, "method": 0, "framing": 0}
    assert sample(registry, "mixpanel_proxy_rejections_total", reason="bad_request") == 1
    assert upstreams["us"].received == []


async def test_http10_and_connection_close_end_the_connection(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    client = await make_relay()
    for request in (track(version="1.0"), track(extra="Connection: close\r\n")):
        answers, closed = await exchange(client, request, 1, until_close=True)
        assert answers[0][0] == 200 and answers[0][1]["connection"] == "close"
        assert closed
    keep = track(version="1.0", extra="Connection: keep-alive\r\n")
    answers, _ = await exchange(client, keep + keep, 2)     # the second answer: still open
    assert [a[0] for a in answers] == [200, 200]
    assert [a[1]["connection"] for a in answers] == ["keep-alive", "keep-alive"]
    assert len(upstreams["us"].received) == 4


async def test_a_client_that_leaves_mid_request_loses_nothing(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """The client hangs up while the upstream is answering: the request still reaches the
    upstream once, and the relay goes on serving."""
    client = await make_relay()
    us = upstreams["us"]
    us.hold()
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(track())
    await writer.drain()
    await eventually(lambda: len(us.received) == 1, "the request to reach the upstream")
    writer.close()                      # gone before the upstream answers
    await writer.wait_closed()
    us.release()
    answers, _ = await exchange(client, track(), 1)
    assert answers[0][0] == 200
    assert len(us.received) == 2


async def test_stopping_lets_requests_in_flight_finish(upstreams: dict[str, FakeUpstream]) -> None:
    """The site stops (as a draining worker's does) while the upstream is still answering: the
    client gets its answer, saying Connection: close, and idle connections are closed."""
    config = parse_config(relay_config(upstreams))
    server = EdgeTestServer(create_app(config, registry=CollectorRegistry()), host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    us = upstreams["us"]
    us.hold()
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
    busy_writer.write(track())
    await busy_writer.drain()
    await eventually(lambda: len(us.received) == 1, "the request to reach the upstream")
    stopping = asyncio.create_task(server.close())
    # The idle connection is closed while the busy one still waits on the upstream ...
    assert await asyncio.wait_for(idle_reader.read(1), 5) == b""
    assert not stopping.done()
    us.release()
    # ... which is answered once the upstream answers, and told the connection ends.
    status, headers, _ = await asyncio.wait_for(read_answer(busy_reader), 5)
    await stopping
    assert status == 200 and headers["connection"] == "close"
    assert len(us.received) == 1
    busy_writer.close()
    idle_writer.close()


async def test_random_mixes_and_splits_keep_every_request_in_order(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """Seeded random sequences of plain and not-plain requests on one connection, cut into
    writes at random places: every request is answered, in order, and the upstream receives
    exactly the /track bodies, in order, whichever side (edge or aiohttp) served them."""
    client = await make_relay()
    assert client.port is not None
    rng = random.Random(20261128)
    for _ in range(30):
        upstreams["us"].clear()
        data, statuses, bodies = b"", [], []
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["track", "track", "healthz", "chunked", "preflight"])
            body = browser_form([event(US_TOKEN, f"e{rng.randrange(10**6)}")])
            if kind == "track":
                data += track(body)
            elif kind == "chunked":
                data += (b"POST /track/ HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
                         + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
            elif kind == "preflight":
                data += (b"OPTIONS /track/ HTTP/1.1\r\nHost: relay\r\nOrigin: https://a.example"
                         b"\r\nAccess-Control-Request-Method: POST\r\n\r\n")
            else:
                data += HEALTHZ
            statuses.append(204 if kind == "preflight" else 200)
            if kind in ("track", "chunked"):
                bodies.append(body)
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(5, len(data) - 1))))
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
                writer.write(data[start:end])
                await writer.drain()
                await asyncio.sleep(0.005)      # paces traffic: each cut arrives as its own read
            answers = [await asyncio.wait_for(read_answer(reader), 5) for _ in statuses]
        finally:
            writer.close()
        assert [status for status, _, _ in answers] == statuses
        assert [r.body for r in upstreams["us"].received] == bodies


async def test_an_answer_waiting_in_the_outbox_goes_out_before_a_refusal_behind_it(
        make_relay: RelayFactory, upstreams: dict[str, FakeUpstream]) -> None:
    """Pipelined: a /track the upstream answers, then a head the edge refuses. The /track
    answer waits for the end of the loop's turn in the outbox (plain path), the refusal is
    written at once in the same turn: the outbox is flushed first, so the client reads the
    answers in the order of its requests."""
    client = await make_relay()
    port = client.server.port
    assert port is not None
    body = browser_form([event(US_TOKEN)])
    track = (b"POST /track/ HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n"
             b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" % len(body) + body)
    bad = b"GET /track/ HTTP/1.1\r\nHost: relay\r\nBad Name: x\r\n\r\n"
    answers, closed = await rawhttp.exchange(port, track + bad, 2, until_close=True)
    assert [status for status, _, _ in answers] == [200, 400] and closed
    assert len(upstreams["us"].received) == 1
