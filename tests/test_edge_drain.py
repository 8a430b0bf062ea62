"""The edge site stopping: connections that arrive as it stops accepting are answered at once
(issue 19 item 10), and requests still in flight past the shutdown timeout are cancelled, not
leaked. A real EdgeSite on loopback, on asyncio's own loop (uvloop does not have the accept race).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.server.edge import EdgeSite
from proxy.server.worker import _Draining
from tests.conftest import US_TOKEN
from tests.support.edge_wire import offline_app
from tests.support.fakes import FakeUpstream
from tests.support.helpers import browser_form, event
from tests.support.waits import eventually

PREFLIGHT = (b"OPTIONS /track/ HTTP/1.1\r\nHost: relay\r\nOrigin: https://shop.example\r\n"
             b"Access-Control-Request-Method: POST\r\n\r\n")


async def started(app: web.Application, shutdown_timeout: float = 5.0, fast_path: bool = True,
                  ) -> tuple[web.AppRunner, EdgeSite, int]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = EdgeSite(runner, sock, shutdown_timeout=shutdown_timeout, fast_path=fast_path)
    await site.start()
    return runner, site, port


async def arrivals_as_accepting_stops(ticks: int) -> int:
    """20 connections reach the listening socket, the site stops accepting `ticks` turns of the
    loop later; how many of them then get neither an answer nor a close within a second."""
    loop = asyncio.get_running_loop()
    runner, site, port = await started(offline_app())
    clients = []
    try:
        for _ in range(20):
            client = socket.socket()
            client.setblocking(False)
            try:
                client.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            clients.append(client)
        for _ in range(ticks):
            await asyncio.sleep(0)   # a loop turn, not a timed wait: the race is in loop turns
        site.stop_accepting()
        hung = 0
        for client in clients:
            try:
                await loop.sock_sendall(client, PREFLIGHT)
                await asyncio.wait_for(loop.sock_recv(client, 4096), 1.0)
            except TimeoutError:
                hung += 1
            except OSError:
                pass                     # never accepted: reset with the listening socket
        return hung
    finally:
        for client in clients:
            client.close()
        await runner.cleanup()


async def test_a_connection_arriving_as_accepting_stops_is_not_left_hanging() -> None:
    hung = [await arrivals_as_accepting_stops(ticks) for ticks in range(5)]
    assert hung == [0] * 5


@pytest.fixture
async def held_upstream() -> AsyncIterator[FakeUpstream]:
    """A region that takes requests and answers none until the test ends."""
    fake = FakeUpstream("us")
    fake.server = TestServer(fake.app(), host="127.0.0.1")
    await fake.server.start_server()
    fake.hold()
    yield fake
    fake.release()
    await fake.server.close()


@pytest.mark.parametrize("fast_path", [True, False], ids=["plain_path", "general_path"])
async def test_requests_in_flight_past_the_shutdown_timeout_are_cancelled(
        held_upstream: FakeUpstream, fast_path: bool) -> None:
    """On the general path the request's Task is cancelled; on the plain path (no Task) the
    connection gives the request up and closes."""
    app = offline_app({"regions": {name: {"url": held_upstream.url}
                                   for name in ("us", "eu", "in")},
                       "upstream": {"read_timeout": 60.0}})
    runner, site, port = await started(app, shutdown_timeout=0.2, fast_path=fast_path)
    body = browser_form([event(US_TOKEN)])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /track/ HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" % len(body) + body)
    await eventually(lambda: held_upstream.received, what="the request upstream")
    edge = site.edge
    assert edge is not None and edge.busy == 1
    assert len(edge.tasks) == (0 if fast_path else 1)
    # The upstream never answers while stop() runs: stop() ending at all is the timeout's doing
    # (the bound below only keeps a broken drain from hanging the suite).
    await asyncio.wait_for(site.stop(), 30)
    assert not edge.tasks and edge.busy == 0
    assert await asyncio.wait_for(reader.read(), 2) == b""     # closed, not left open
    writer.close()
    await runner.cleanup()


async def test_answers_aiohttp_makes_while_draining_say_they_close() -> None:
    """proxy/server/worker.py: during the drain grace every answer closes its connection, and
    must say so (aiohttp decides its Connection header before the prepare hook runs)."""
    app = offline_app()
    draining = _Draining()
    app.on_response_prepare.append(draining.on_response_prepare)
    runner, site, port = await started(app)
    try:
        draining.active = True
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")     # aiohttp's path
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Connection: close" in head
        writer.close()
    finally:
        await runner.cleanup()
