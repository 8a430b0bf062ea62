"""HTTP/1.1 over a raw loopback socket, for tests where the exact bytes matter: a client that
writes any bytes and reads the answers, and the server-side reading of one request (raw
upstreams). Framing is Content-Length only: what our relay and the fakes send."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from yarl import URL

Answer = tuple[int, dict[str, str], bytes]          # status, lower-cased headers, body
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def parse_head(head: bytes) -> tuple[list[str], dict[str, str]]:
    """The start line's parts and the headers (names lower-cased) of a head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0].split(" ", 2), headers


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One message's head (through its blank line) and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    _, headers = parse_head(head)
    return head, await reader.readexactly(int(headers.get("content-length", "0")))


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1"    # the smallest complete answer


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request, server side, as it crossed the wire: its head and its body."""
    head, body = await read_message(reader)
    return head + body


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head, body = await read_message(reader)
    start, headers = parse_head(head)
    return int(start[1]), headers, body


async def exchange(port: int, data: bytes, answers: int, pieces: int = 1,
                   until_close: bool = False) -> tuple[list[Answer], bool]:
    """Send `data` (in `pieces` writes) and read `answers` answers. With `until_close`, then
    wait for the relay to close the connection, and say whether it did (without, False: no
    waiting for something that is not expected to happen)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            writer.write(data[start:start + step])
            await writer.drain()
            if pieces > 1:
                await asyncio.sleep(0.05)   # paces traffic: each piece reaches the relay alone
        results = [await asyncio.wait_for(read_answer(reader), 5) for _ in range(answers)]
        closed = until_close and await asyncio.wait_for(reader.read(1), 5) == b""
    finally:
        writer.close()
    return results, closed


async def exchange_to_eof(port: int, request: bytes,
                          timeout: float = 5.0) -> tuple[int, bytes, bytes]:
    """Send raw bytes; the status, the head and the body of the answer (read to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


@asynccontextmanager
async def raw_server(handler: Handler,
                     ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[URL]:
    """An asyncio server on loopback running `handler` per connection; yields a /track URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    host = "localhost" if ssl_context else "127.0.0.1"
    try:
        yield URL(f"{scheme}://{host}:{port}/track/?ip=1", encoded=True)
    finally:
        server.close()
