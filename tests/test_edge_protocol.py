"""The lean edge's protocol, socket-free: bytes fed to `EdgeConnection`, answers read back from a
fake transport (tests/support/edge_wire.py). Milliseconds each.

What is asserted is what the edge wrote, whether it closed, what it handed to aiohttp, and the
rejection metric: refusals are JSON naming the problem, never the client's bytes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from proxy.server.edge.connection import PAUSE_ABOVE, Edge, EdgeConnection
from tests.support.edge_wire import (
    FakeTransport,
    HandedOver,
    answers_in,
    connect,
    edge_for,
    offline_app,
)

ORIGIN = "https://shop.example"


class Harness:
    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.handed: list[HandedOver] = []
        self.edge: Edge = edge_for(offline_app(extra, self.registry), self.handed)

    def connect(self, high_water: int = 64 * 1024) -> tuple[EdgeConnection, FakeTransport]:
        return connect(self.edge, high_water)

    def rejections(self, reason: str) -> float:
        return self.registry.get_sample_value("mixpanel_proxy_rejections_total",
                                              {"reason": reason}) or 0.0

    def handovers(self) -> float:
        return sum(self.registry.get_sample_value("mixpanel_proxy_edge_handovers_total",
                                                  {"reason": reason}) or 0.0
                   for reason in ("target", "method", "framing", "head"))

    async def settle(self) -> None:
        """Let every request in flight finish."""
        for _ in range(100):
            if not self.edge.tasks:
                return
            await asyncio.gather(*self.edge.tasks)
            await asyncio.sleep(0)   # one loop turn, not a timed wait: the done callbacks
            #                          drop the finished tasks from edge.tasks


@pytest.fixture
async def harness() -> Harness:
    return Harness()


def preflight(extra: str = "", target: str = "/track/") -> bytes:
    """A CORS preflight: the relay answers it itself (204), no upstream involved."""
    return (f"OPTIONS {target} HTTP/1.1\r\nHost: relay\r\nOrigin: {ORIGIN}\r\n"
            f"Access-Control-Request-Method: POST\r\n{extra}\r\n").encode()


def refused(transport: FakeTransport, status: int, words: str) -> dict[str, Any]:
    [(answered, headers, body)] = answers_in(transport.written)
    assert answered == status, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert transport.eof or transport.closed          # no further request is read
    problem: dict[str, Any] = json.loads(body)
    assert words in problem["error"]
    return problem


# -- item 7: bare LF / bare CR line ends, refused at once ----------------------------------------
BARE = [
    ("lf_request_line", b"POST /track/ HTTP/1.1\nHost: relay\r\n"),
    ("lf_field", b"POST /track/ HTTP/1.1\r\nHost: relay\nContent-Length: 0\r\n"),
    ("lf_lf_end", b"GET /track/ HTTP/1.1\r\nHost: relay\n\n"),
    ("cr_field", b"GET /track/ HTTP/1.1\r\nHost: relay\rX-Hidden: 1\r\n"),
    ("lf_smuggle", b"POST /track/ HTTP/1.1\nHost: relay\nContent-Length: 0\n\n"
                   b"GET /engage/ HTTP/1.1\r\nHost: relay\r\n\r\n"),
]


@pytest.mark.parametrize("name, data", BARE, ids=[b[0] for b in BARE])
@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "byte_by_byte"])
async def test_bare_line_ends_are_refused_at_once(harness: Harness, name: str, data: bytes,
                                            trickle: bool) -> None:
    connection, transport = harness.connect()
    for piece in ([data[i:i + 1] for i in range(len(data))] if trickle else [data]):
        connection.data_received(piece)          # after the refusal: read away, unanswered
    refused(transport, 400, "line ends in the request head must be CRLF")
    assert harness.rejections("bad_request") == 1
    assert not harness.edge.tasks and not harness.handed


# -- item 8 and smuggling shapes: Transfer-Encoding the edge cannot trust --------------------------
def with_coding(version: str, codings: list[str], length: str | None = None) -> bytes:
    fields = "".join(f"Transfer-Encoding: {coding}\r\n" for coding in codings)
    if length is not None:
        fields += f"Content-Length: {length}\r\n"
    return (f"POST /track/ HTTP/{version}\r\nHost: relay\r\nConnection: keep-alive\r\n{fields}"
            f"\r\n5\r\ndata=\r\n0\r\n\r\nGET /engage/?data=e30 HTTP/1.1\r\nHost: relay\r\n\r\n"
            ).encode()


CODINGS = [
    ("http10_chunked", with_coding("1.0", ["chunked"]), "Transfer-Encoding on an HTTP/1.0"),
    ("http10_chunked_twice", with_coding("1.0", ["chunked", "chunked"]), ""),
    ("chunked_then_identity", with_coding("1.1", ["chunked", "identity"]), ""),
    ("identity", with_coding("1.1", ["identity"]), ""),
    ("gzip_chunked", with_coding("1.1", ["gzip, chunked"]), ""),
    ("chunked_and_length", with_coding("1.1", ["chunked"], "5"), ""),
]


@pytest.mark.parametrize("name, data, words", CODINGS, ids=[c[0] for c in CODINGS])
async def test_untrustworthy_transfer_encoding_is_refused(harness: Harness, name: str, data: bytes,
                                                    words: str) -> None:
    connection, transport = harness.connect()
    connection.data_received(data)
    refused(transport, 400, words)
    assert not harness.handed and not harness.edge.tasks     # nothing reaches aiohttp or upstream


async def test_plain_chunked_on_http11_goes_to_aiohttp_intact(harness: Harness) -> None:
    connection, transport = harness.connect()
    data = with_coding("1.1", ["chunked"])
    connection.data_received(data)
    assert transport.written == b""
    [handed] = harness.handed
    assert handed.data == data


# -- item 6: heads up to 64 KiB; past it 431 / 414 / 413, never echoing ---------------------------
async def test_a_60_kb_cookie_head_stays_on_the_edge(harness: Harness) -> None:
    connection, transport = harness.connect()
    cookie = "; ".join(f"c{n}={'v' * 90}" for n in range(640))
    assert 59_000 < len(cookie) < 63_000
    connection.data_received(preflight(f"Cookie: {cookie}\r\n"))
    await harness.settle()
    [(status, headers, _)] = answers_in(transport.written)
    assert status == 204 and headers.get("connection") != "close"
    assert harness.handovers() == 0 and not harness.handed


OVERSIZE = [
    ("field", preflight("Cookie: " + "c" * 70_000 + "\r\n"), 431,
     "request header fields exceed 65536 bytes", "bad_request"),
    ("many_fields", preflight("".join(f"X-{n}: 1\r\n" for n in range(129))), 431,
     "more than 128 request header fields", "bad_request"),
    ("sdk_line", b"GET /track/?data=" + b"e" * 70_000 + b" HTTP/1.1\r\n", 413,
     "send fewer events per request", "limit"),
    ("other_line", b"GET /somewhere?q=" + b"e" * 70_000 + b" HTTP/1.1\r\n", 414,
     "the request line exceeds 65536 bytes", "bad_request"),
    ("version", b"GET /track/ HTTP/2.0\r\nHost: relay\r\n\r\n", 505, "HTTP/1.0 and HTTP/1.1",
     "bad_request"),
]


@pytest.mark.parametrize("name, data, status, words, reason", OVERSIZE,
                         ids=[o[0] for o in OVERSIZE])
async def test_past_the_limits_the_edge_names_the_problem(harness: Harness, name: str, data: bytes,
                                                    status: int, words: str,
                                                    reason: str) -> None:
    connection, transport = harness.connect()
    for start in range(0, len(data), 16 * 1024):              # as a socket delivers it
        connection.data_received(data[start:start + 16 * 1024])
    refused(transport, status, words)
    assert b"eeee" not in transport.written and b"cccc" not in transport.written
    assert harness.rejections(reason) == 1
    assert not harness.handed


async def test_a_get_whose_query_exceeds_the_endpoint_limit_gets_413() -> None:
    """Issue 15 item 7: `?data=` is the body of a GET; it counts against the endpoint's limit."""
    harness = Harness({"limits": {"body": {"engage": 1024}}})
    connection, transport = harness.connect()
    connection.data_received(b"GET /engage/?data=" + b"e" * 2000 + b" HTTP/1.1\r\nHost: r\r\n"
                             + f"Origin: {ORIGIN}\r\n\r\n".encode())
    refused(transport, 413, "exceeds the 1024-byte limit for /engage")
    [(_, headers, _)] = answers_in(transport.written)
    assert headers["access-control-allow-origin"] == ORIGIN     # a browser SDK reads the 413
    assert harness.rejections("limit") == 1


# -- found by the framing fuzzer (tests/test_fuzz_edge.py) --------------------------------------
@pytest.mark.parametrize("version, connection", [("1.1", "close"), ("1.1", "Keep-Alive, close"),
                                                 ("1.0", ""), ("1.0", "close")])
async def test_a_request_without_a_body_that_asks_to_close_is_the_last(
        harness: Harness, version: str, connection: str) -> None:
    """llhttp's should_keep_alive() said True for these (it had reset for the next message):
    the edge then read and answered the requests pipelined after them."""
    connection_field = f"Connection: {connection}\r\n" if connection else ""
    last = (f"OPTIONS /track/ HTTP/{version}\r\nHost: relay\r\nOrigin: {ORIGIN}\r\n"
            f"Access-Control-Request-Method: POST\r\n{connection_field}\r\n").encode()
    edge_connection, transport = harness.connect()
    edge_connection.data_received(last + preflight())
    await harness.settle()
    [(status, headers, _)] = answers_in(transport.written)
    assert status == 204 and headers["connection"] == "close" and transport.closed


# -- item 5: write-side flow control ------------------------------------------------------------
async def test_no_pipelined_request_starts_while_the_client_is_not_reading(
        harness: Harness) -> None:
    connection, transport = harness.connect(high_water=100)   # one answer is past the mark
    connection.data_received(preflight() * 5)
    await harness.settle()
    assert len(answers_in(transport.written)) == 1
    assert not transport.reading                               # paused while writing is
    for answered in range(2, 6):
        transport.drain()
        await harness.settle()
        assert len(answers_in(transport.written)) == answered
    transport.drain()
    assert transport.reading


async def test_memory_per_connection_is_bounded_whatever_the_client_sends(
        harness: Harness) -> None:
    """400 pipelined requests, answers never read: the edge stops at the write buffer's mark,
    and stops reading once PAUSE_ABOVE unparsed bytes wait."""
    connection, transport = harness.connect()
    data = preflight() * 4000
    fed = 0
    while transport.reading and fed < len(data):
        connection.data_received(data[fed:fed + 64 * 1024])
        fed += 64 * 1024
        await harness.settle()
    answered = len(answers_in(transport.written))
    assert answered < 4000 and not transport.reading
    assert transport.unsent <= transport.high_water + 1024     # the mark, plus one answer
    assert connection.buffered <= PAUSE_ABOVE + 64 * 1024 + transport.unsent
    transport.drain()
    await harness.settle()
    assert len(answers_in(transport.written)) > answered       # it goes on once read


async def test_requests_in_flight_are_held_by_the_edge(harness: Harness) -> None:
    connection, _ = harness.connect()
    connection.data_received(preflight())
    assert len(harness.edge.tasks) == 1 and connection.busy
    await harness.settle()
    assert not harness.edge.tasks and not connection.busy
