"""One client connection on the lean edge: frames requests, answers the plain ones, hands the
rest to aiohttp.

A request is *plain* when its head is at most 8 KiB of CRLF-terminated lines that llhttp (the
parser aiohttp uses too) accepts, its target is an SDK endpoint, its method is GET, POST or
OPTIONS, its version HTTP/1.0 or 1.1, and its body has a Content-Length within the endpoint's
limit: no Transfer-Encoding, no Expect, no Upgrade, at most 100 fields. That is every request the
SDKs and the nginx front send. Anything else (assets, probes, refusals, smuggling shapes, chunked
bodies, oversized heads) is handed over, with every byte received since the start of that
request, to aiohttp's own protocol, which keeps the connection from then on: every refusal and
every limit stays exactly as aiohttp and the relay's handlers make them.

Framing is ours (head ends at the first CRLF CRLF, body is Content-Length bytes), so the start of
each request in the byte stream is always known, and a hand-over can replay it exactly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import Counter

from ...decide.paths import PathMatch
from ...ops.accesslog import AccessRecorder
from ...relay import answers
from ...relay.handler import ApiRelay
from .wire import LeanRequest, answer_bytes

log = logging.getLogger("mixpanel_proxy.edge")

MAX_HEAD = 8192            # aiohttp's own line limit is 8190: a longer head is aiohttp's to judge
MAX_FIELDS = 100           # aiohttp allows 128
PAUSE_ABOVE = 256 * 1024   # bytes buffered behind a request in flight (pipelining) before pausing
_PLAIN_METHODS = {b"GET": "GET", b"POST": "POST", b"OPTIONS": "OPTIONS"}


@dataclass(eq=False)
class Edge:
    """What every connection of one listening site shares."""

    relay: ApiRelay
    recorder: AccessRecorder
    limits: Mapping[str, int]                          # body limit per endpoint
    aiohttp_protocol: Callable[[], asyncio.Protocol]   # aiohttp's web.Server
    handovers: Mapping[str, Counter]                    # by reason
    connections: set[EdgeConnection] = field(default_factory=set)
    draining: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)   # set when nothing is in flight
    busy: int = 0


@dataclass(slots=True)
class _Head:
    method: str
    target: str
    match: PathMatch
    headers: CIMultiDictProxy[str]
    length: int | None
    body_start: int
    keep_alive: bool
    http10: bool

    @property
    def end(self) -> int:
        return self.body_start + (self.length or 0)


class EdgeConnection(asyncio.Protocol):
    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        # Looked up once: asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._busy = False
        self._paused = False
        self.idle_since = time.monotonic()
        # llhttp callbacks land here
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_complete = False

    @property
    def busy(self) -> bool:
        return self._busy

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) else None
        self._edge.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._busy:
            if len(self._buffer) > PAUSE_ABOVE and not self._paused and self._transport:
                self._paused = True
                self._transport.pause_reading()
            return
        if self._head is not None:
            self.idle_since = time.monotonic()        # a body arriving is progress
        self._advance()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._edge.connections.discard(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # llhttp callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_complete = True

    # framing
    def _advance(self) -> None:
        while self._transport is not None and not self._busy:
            if self._head is None:
                self._head = self._read_head()
                if self._head is None:
                    return
            head = self._head
            if len(self._buffer) < head.end:
                return
            self._head = None
            with memoryview(self._buffer) as view:    # one copy of the body, not two
                body = bytes(view[head.body_start:head.end])
            del self._buffer[:head.end]
            self._dispatch(head, body)

    def _read_head(self) -> _Head | None:
        """The next request's head if it is complete and plain; hands over if it is not plain."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
        if end < 0:
            if len(buffer) >= MAX_HEAD:
                self._hand_over("head")
            return None
        raw = bytes(buffer[:end + 4])
        head = "head" if raw.count(b"\n") != raw.count(b"\r\n") else self._parse(raw)
        if isinstance(head, str):
            self._hand_over(head)
            return None
        return head

    def _parse(self, raw: bytes) -> _Head | str:
        """The head, or why the request is not plain (a `edge_handovers` reason)."""
        self._url, self._fields, self._head_complete = b"", [], False
        parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(raw)
        except httptools.HttpParserUpgrade:
            return "framing"               # CONNECT, or an Upgrade header
        except httptools.HttpParserError:
            return "head"
        version = parser.get_http_version()
        if (not self._head_complete or version not in ("1.1", "1.0")
                or len(self._fields) > MAX_FIELDS):
            return "head"
        if not self._url.startswith(b"/"):
            return "target"
        method = _PLAIN_METHODS.get(parser.get_method())
        if method is None:
            return "method"
        target = self._url.decode("utf-8", "surrogateescape")
        match = self._edge.relay.match(target)
        if match is None:
            return "target"
        headers = CIMultiDict([(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
                               for name, value in self._fields])
        if ("Transfer-Encoding" in headers or "Expect" in headers or "Upgrade" in headers
                or parser.should_upgrade()):
            return "framing"
        declared = headers.get("Content-Length")
        length = None if declared is None else int(declared)   # llhttp allows one, digits only
        if length is not None and length > self._edge.limits[match.endpoint]:
            return "framing"               # the relay answers 413 in JSON, over aiohttp
        return _Head(method, target, match, CIMultiDictProxy(headers), length, len(raw),
                     parser.should_keep_alive(), version == "1.0")

    def _hand_over(self, reason: str) -> None:
        """aiohttp's protocol takes this connection, starting with the bytes of this request."""
        transport = self._transport
        if transport is None:
            return
        self._edge.handovers[reason].inc()
        self._transport = None
        self._edge.connections.discard(self)
        protocol = self._edge.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        pending, self._buffer = bytes(self._buffer), bytearray()
        if pending:
            protocol.data_received(pending)
        if self._paused:
            transport.resume_reading()

    # answering
    def _dispatch(self, head: _Head, body: bytes) -> None:
        self._busy = True
        self._edge.busy += 1
        self._edge.idle.clear()
        request = LeanRequest(head.method, head.target, head.headers, self._remote, head.length,
                              body)
        self._loop.create_task(self._respond(request, head))

    async def _respond(self, request: LeanRequest, head: _Head) -> None:
        recorder = self._edge.recorder
        facts, token = recorder.open()
        started = time.perf_counter()
        keep_alive = False
        data = b""
        try:
            try:
                response = await self._edge.relay.handle(request, head.match)
            except Exception:
                log.exception("the relay failed on %s /%s", head.method, head.match.endpoint)
                response = answers.problem(500, "internal error")
            keep_alive = head.keep_alive and not self._edge.draining
            data = answer_bytes(response, keep_alive, head.http10)
            recorder.close(request, facts, token, response.status,
                           response.content_length or 0, started)
        finally:
            self._finish(data, keep_alive)     # even when cancelled: the site counts busy ones

    def _finish(self, data: bytes, keep_alive: bool) -> None:
        self._busy = False
        self._edge.busy -= 1
        if self._edge.busy == 0:
            self._edge.idle.set()
        self.idle_since = time.monotonic()
        transport = self._transport
        if transport is None:
            return                         # the client left; the upstream had its request
        if data:
            transport.write(data)
        if not keep_alive:
            transport.close()
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._buffer:
            self._advance()
