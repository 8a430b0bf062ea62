"""The upstream client against real loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.config.sections import UpstreamConfig
from proxy.upstream.client import UpstreamClient, UpstreamFailure, trust_context
from proxy.upstream.http1 import MAX_RESPONSE_BYTES
from tests.support.rawhttp import OK, raw_server, read_request
from tests.support.waits import eventually


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(UpstreamConfig(connect_timeout=0.5, read_timeout=0.5))
    await upstream.start()
    yield upstream
    await upstream.close()


async def test_request_bytes_and_keep_alive_reuse(client: UpstreamClient) -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(OK)
            await writer.drain()

    async with raw_server(handler) as url:
        for _ in range(3):
            answer = await client.send("POST", url, {"Content-Type": "text/plain"}, b"data=x")
            assert (answer.status, answer.body) == (200, b"1")
    assert connections == 1
    host = f"127.0.0.1:{url.port}"
    assert seen[0] == (f"POST /track/?ip=1 HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain"
                       "\r\nContent-Length: 6\r\n\r\ndata=x").encode()


async def test_an_ipv6_upstream_gets_a_bracketed_host(client: UpstreamClient) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = URL(f"http://[::1]:{port}/engage?verbose=1", encoded=True)
        answer = await client.send("GET", url, {}, None)
    finally:
        server.close()
    assert answer.status == 200
    assert seen == [f"GET /engage?verbose=1 HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n".encode()]


async def test_kept_alive_connection_dropped_unanswered_is_retried_once(
        client: UpstreamClient) -> None:
    served: list[tuple[int, bytes]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        served.append((number, await read_request(reader)))
        writer.write(OK)
        await writer.drain()
        if number == 1:
            # The first connection takes the second request, then dies without answering:
            # what a server's keep-alive timeout looks like from the client's side.
            served.append((number, await read_request(reader)))
            writer.close()

    async with raw_server(handler) as url:
        assert (await client.send("POST", url, {}, b"first", replayable=True)).status == 200
        assert (await client.send("POST", url, {}, b"second", replayable=True)).status == 200
    bodies = [(number, request.partition(b"\r\n\r\n")[2]) for number, request in served]
    assert bodies == [(1, b"first"), (1, b"second"), (2, b"second")]


async def test_an_answer_that_started_is_never_retried(client: UpstreamClient) -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        requests += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")   # then dies
        writer.close()

    async with raw_server(handler) as url:
        await client.send("POST", url, {}, b"one")
        with pytest.raises(UpstreamFailure, match="closed before"):
            await client.send("POST", url, {}, b"two")
    assert requests == 2


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world",
])
async def test_chunked_and_close_delimited_bodies(client: UpstreamClient,
                                                  response: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response)
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        answer = await client.send("GET", url, {}, None)
    assert answer.body == b"hello world"


@pytest.mark.parametrize(("response", "kind", "message"), [
    (b"NOT HTTP AT ALL\r\n\r\n", "protocol", "malformed response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "protocol", "closed before"),
    (b"", "protocol", "closed before"),
    (None, "timeout", "did not answer in time"),
])
async def test_broken_answers_become_failures(client: UpstreamClient, response: bytes | None,
                                              kind: str, message: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if response is None:
            await asyncio.sleep(2)          # paces the answer: hang past the read timeout
        writer.write(response or b"")
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        with pytest.raises(UpstreamFailure) as caught:
            await client.send("POST", url, {}, b"x")
    assert caught.value.kind == kind and message in caught.value.message


async def test_oversized_answer_is_refused(client: UpstreamClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        size = MAX_RESPONSE_BYTES + 1
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b"x" * 1024 * 1024
        try:
            for _ in range(size // len(chunk) + 1):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass

    async with raw_server(handler) as url:
        with pytest.raises(UpstreamFailure, match="too large"):
            await client.send("GET", url, {}, None)


async def test_connection_refused_and_header_injection(client: UpstreamClient) -> None:
    async with raw_server(lambda r, w: asyncio.sleep(0)) as url:   # no-op handler, no wait
        pass                                 # closed: nothing listens on that port now
    with pytest.raises(UpstreamFailure) as caught:
        await client.send("GET", url, {}, None)
    assert caught.value.kind == "connect"
    # The reason, never the resolved address and port (the client sees this message).
    assert caught.value.message == "cannot connect to 127.0.0.1 (Connection refused)"
    with pytest.raises(UpstreamFailure, match="line break"):
        await client.send("GET", url, {"X-Evil": "a\r\nHost: evil"}, None)


async def test_tls_upstream_trusted_only_with_its_ca() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    async def track(request: web.Request) -> web.Response:
        return web.Response(text="1")

    app = web.Application()
    app.router.add_get("/track/", track)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_context)
    url = URL(f"https://localhost:{server.port}/track/?ip=1", encoded=True)
    untrusting = UpstreamClient(UpstreamConfig(connect_timeout=1, read_timeout=1))
    await untrusting.start()
    with pytest.raises(UpstreamFailure) as caught:
        await untrusting.send("GET", url, {}, None)
    assert caught.value.kind == "connect" and "TLS" in caught.value.message
    await untrusting.close()
    with authority.cert_pem.tempfile() as ca_file:
        trusting = UpstreamClient(UpstreamConfig(ca_file=ca_file))
        await trusting.start()
    answer = await trusting.send("GET", url, {}, None)
    assert (answer.status, answer.body) == (200, b"1")
    await trusting.close()
    await server.close()


async def test_bytes_on_an_idle_connection_retire_it(client: UpstreamClient) -> None:
    """A partial answer nobody asked for, sent while the connection lies idle in the pool,
    would otherwise be glued to the next request's answer."""
    connections = 0
    closed: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + str(number).encode())
        if number == 1:
            writer.write(b"HTTP/1.1 500 Stray\r\nContent-Len")       # while idle
        await writer.drain()
        await reader.read()                                          # until the client closes
        closed.append(number)

    async with raw_server(handler) as url:
        first = await client.send("GET", url, {}, None)
        await eventually(lambda: 1 in closed, what="the client to drop the stray bytes' connection")
        second = await client.send("GET", url, {}, None)
    assert (first.body, second.body) == (b"1", b"2")
    assert connections == 2


async def test_a_post_is_not_sent_twice_unless_replayable(client: UpstreamClient) -> None:
    """The keep-alive race: the server closes a pooled connection as the next request goes
    on it. A GET, or a caller that says the request may be replayed (/track, /import), gets
    a fresh connection; any other POST is a failure (RFC 9110 9.2.2: a proxy must not retry
    non-idempotent requests on its own)."""
    served: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()
        served.append(await read_request(reader))
        writer.close()                                   # the second dies unanswered

    async with raw_server(handler) as url:
        await client.send("POST", url, {}, b"one")
        with pytest.raises(UpstreamFailure, match="closed before"):
            await client.send("POST", url, {}, b"two")
        assert [request.partition(b"\r\n\r\n")[2] for request in served] == [b"one", b"two"]
        served.clear()
        await client.send("POST", url, {}, b"three")
        assert (await client.send("GET", url, {}, None)).status == 200
    assert [request.split(b" ", 1)[0] for request in served] == [b"POST", b"GET", b"GET"]


async def test_head_is_refused_before_anything_is_sent(client: UpstreamClient) -> None:
    """The answer parser cannot know that a HEAD answer has no body: it would wait for one."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    async with raw_server(handler) as url:
        with pytest.raises(ValueError, match="HEAD"):
            await client.send("HEAD", url, {}, None)
    assert connections == 0


async def test_ca_file_adds_to_the_system_authorities(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[upstream] ca_file is trusted besides the system's CAs, not instead of them. The
    "system" store is a second test CA here (OpenSSL's SSL_CERT_FILE), so both sides are
    proved with a real handshake each."""
    public, corporate = trustme.CA(), trustme.CA()
    public.cert_pem.write_to_path(str(tmp_path / "system.pem"))
    corporate.cert_pem.write_to_path(str(tmp_path / "corporate.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "system.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    upstream = UpstreamClient(UpstreamConfig(connect_timeout=2, read_timeout=2,
                                             ca_file=str(tmp_path / "corporate.pem")))
    await upstream.start()
    bodies = []
    try:
        for authority in (public, corporate):
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            authority.issue_cert("localhost").configure_cert(context)

            async def handler(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
                await read_request(reader)
                writer.write(OK)
                await writer.drain()
                writer.close()

            async with raw_server(handler, context) as url:
                bodies.append((await upstream.send("GET", url, {}, None)).body)
    finally:
        await upstream.close()
    assert bodies == [b"1", b"1"]


def test_ca_file_grows_the_default_store(tmp_path: Path) -> None:
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    context = trust_context(str(tmp_path / "ca.pem"))
    assert context.cert_store_stats()["x509_ca"] == system + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
