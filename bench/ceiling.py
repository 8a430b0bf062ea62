"""The ceiling: a relay with no logic, to show what Python can do on this event loop and parser.

Callbacks only, on uvloop + httptools: each client connection gets its own upstream connection,
a request is framed by the parser's callbacks and written upstream, the upstream's answer is
framed the same way and written back. No Task and no coroutine per request (one per connection,
to connect upstream), Content-Length bodies only, no routing, no checks. Not a product: a yardstick
for bench/run.py's plain /track scenario.

    python bench/ceiling.py --listen 127.0.0.1:8081 --upstream 127.0.0.1:8082 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """One client connection's own upstream connection; hands each framed answer back."""

    def __init__(self, client: Client) -> None:
        self.client, self.body, self.content_type = client, bytearray(), b"application/json"
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client.upstream_ready(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.client.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.client.answer(self.parser.get_status_code(), self.content_type, bytes(self.body))
        self.body.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Client(asyncio.Protocol):
    """A client connection: frames requests and writes them to its upstream connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream_address = upstream
        self.upstream: asyncio.Transport | None = None
        self.queued: list[bytes] = []           # requests framed before upstream connected
        self.url, self.body, self.content_type = b"", bytearray(), b""
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")[0].encode()
        loop = asyncio.get_running_loop()
        connecting = loop.create_task(loop.create_connection(
            lambda: Upstream(self), *self.upstream_address))
        connecting.add_done_callback(self.connected)

    def connected(self, connecting: asyncio.Future[Any]) -> None:
        if connecting.cancelled() or connecting.exception() is not None:
            self.close()

    def upstream_ready(self, transport: asyncio.Transport) -> None:
        if self.transport.is_closing():            # the client left while we were connecting
            transport.close()
            return
        self.upstream = transport
        transport.writelines(self.queued)
        self.queued.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        request = b"%s %s HTTP/1.1\r\nHost: api.mixpanel.com\r\nContent-Type: %s\r\n" \
                  b"Content-Length: %d\r\nX-Forwarded-For: %s\r\n\r\n%s" % (
                      self.parser.get_method(), self.url, self.content_type, len(self.body),
                      self.peer, self.body)
        self.url, self.content_type = b"", b""
        self.body.clear()
        if self.upstream is None:
            self.queued.append(request)
        else:
            self.upstream.write(request)

    def answer(self, status: int, content_type: bytes, body: bytes) -> None:
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, b"OK" if status == 200 else b"Relayed", content_type,
                                len(body), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()

    def close(self) -> None:
        self.transport.close()


async def serve(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream), *listen, reuse_port=True,
                                      backlog=1024)
    await server.serve_forever()


def address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=address, required=True)
    parser.add_argument("--upstream", type=address, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    workers = []
    for _ in range(args.workers):          # each worker listens on the port too (SO_REUSEPORT)
        pid = os.fork()
        if pid == 0:
            uvloop.run(serve(args.listen, args.upstream))
            os._exit(0)
        workers.append(pid)

    def stop(*_: object) -> None:
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    for pid in workers:
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
