"""The upstream connection pool against real loopback servers: one deadline per exchange (slot,
connect, TLS, answer), the idle sweep, and slots that expired or cancelled waits never leak."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from yarl import URL

from proxy.config.sections import UpstreamConfig
from proxy.upstream.client import UpstreamClient, UpstreamFailure
from proxy.upstream.pool import ConnectionPool
from tests.support.rawhttp import OK, raw_server, read_request
from tests.support.waits import eventually


async def test_the_pool_wait_counts_against_the_one_deadline() -> None:
    """A /settings call (0.45 s budget) behind a saturated pool fails within its budget,
    before the exchange that holds the only connection is answered."""
    upstream = UpstreamClient(UpstreamConfig(connect_timeout=1, read_timeout=10, pool_size=1))
    await upstream.start()
    order: list[str] = []
    arrived, settings_done = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            arrived.set()
            # A slow upstream: it answers once /settings has had its outcome, or after 10 s
            # (a pool wait outside the deadline then shows as "slow answered" coming first).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settings_done.wait(), 10)
            writer.write(OK)
            await writer.drain()

    async def slow(url: URL) -> None:
        await upstream.send("GET", url, {}, None)
        order.append("slow answered")

    async def settings(url: URL) -> None:
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send("GET", url, {}, None, 0.45)
        order.append(f"settings failed: {caught.value.kind}")
        settings_done.set()

    async with raw_server(handler) as url:
        holder = asyncio.create_task(slow(url))
        await arrived.wait()
        await settings(url)
        await holder
    await upstream.close()
    # Its timeout, before the exchange holding the only connection was answered: the wait
    # for the connection spent the 0.45 s budget.
    assert order == ["settings failed: timeout", "slow answered"]


async def test_connect_and_tls_count_against_the_one_deadline() -> None:
    """An upstream that accepts TCP and never speaks TLS: the request's own budget ends the
    handshake, not the (longer) connect timeout."""
    upstream = UpstreamClient(UpstreamConfig(connect_timeout=60, read_timeout=0.3))
    await upstream.start()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()                             # silent until the client gives up

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamFailure) as caught:
            # Only the 0.3 s budget can end it before this guard: the connect timeout is 60 s.
            await asyncio.wait_for(
                upstream.send("GET", URL(f"https://localhost:{port}/"), {}, None), 30)
    finally:
        server.close()
        await upstream.close()
    assert caught.value.kind == "timeout"


async def test_idle_connections_past_their_timeout_are_swept() -> None:
    """LIFO reuse leaves the oldest idle connections where no request looks: a sweep closes
    them once idle past the idle timeout, and the server sees each close."""
    closed: list[int] = []
    connections = 0
    requests = 0
    three_arrived = asyncio.Event()   # no answer until three requests are upstream at once

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, requests
        connections += 1
        number = connections
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                closed.append(number)
                return
            requests += 1
            if requests == 3:
                three_arrived.set()
            await three_arrived.wait()
            writer.write(OK)
            await writer.drain()

    async with raw_server(handler) as url:
        pool = ConnectionPool("127.0.0.1", url.port or 0, None, 4, 1.0, idle_timeout=0.3)
        raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        await asyncio.gather(*(pool.request(raw, 2.0, True) for _ in range(3)))
        assert (connections, pool.idle_count) == (3, 3)
        await pool.request(raw, 2.0, True)       # reuses the warmest; the others age
        await eventually(lambda: len(closed) == 3, what="the sweep to close all three")
        swept = sorted(closed)
        pool.close()
    assert swept == [1, 2, 3] and connections == 3


async def test_waits_that_expire_or_are_cancelled_give_no_slot_away() -> None:
    """One slot: a wait that times out and a wait that is cancelled leave it whole, so the
    next request still gets it (and never two at once)."""
    in_flight, most = 0, 0
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, most
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            in_flight += 1
            most = max(most, in_flight)
            await release.wait()
            in_flight -= 1
            writer.write(OK)
            await writer.drain()

    upstream = UpstreamClient(UpstreamConfig(connect_timeout=1, read_timeout=5, pool_size=1))
    await upstream.start()
    async with raw_server(handler) as url:
        holder = asyncio.create_task(upstream.send("GET", url, {}, None))
        await eventually(lambda: in_flight == 1, what="the holder's request upstream")
        with pytest.raises(UpstreamFailure, match="busy"):
            await upstream.send("GET", url, {}, None, 0.1)          # expires waiting
        cancelled = asyncio.create_task(upstream.send("GET", url, {}, None))
        await asyncio.sleep(0)   # one loop turn, not a timed wait: the task queues for the slot
        assert not cancelled.done()
        cancelled.cancel()
        release.set()
        assert (await holder).status == 200
        answers = await asyncio.gather(*(upstream.send("GET", url, {}, None) for _ in range(3)))
    await upstream.close()
    assert [answer.status for answer in answers] == [200] * 3 and most == 1
    assert cancelled.cancelled()
