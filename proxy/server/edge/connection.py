"""One client connection on the lean edge: frames requests, answers the plain ones, refuses the
malformed ones, hands the rest to aiohttp.

A request is *plain* when its head (at most 64 KiB of CRLF-terminated lines that llhttp, the
parser aiohttp uses too, accepts) targets an SDK endpoint with GET, POST or OPTIONS over HTTP/1.0
or 1.1, and its body has a Content-Length within the endpoint's limit: no Transfer-Encoding, no
Expect, no Upgrade. That is every request the SDKs and the nginx front send. A head that is not
well-formed, or is shaped for smuggling, is refused here in JSON and the connection closed
(head.py). Anything else (assets, probes, chunked bodies, Expect, other methods) is handed over,
with every byte received since the start of that request, to aiohttp's own protocol, which keeps
the connection from then on.

Framing is ours (head ends at the first CRLF CRLF, body is Content-Length bytes), so the start of
each request in the byte stream is always known, and a hand-over can replay it exactly.

Answering: a framed request goes to the plain path (relay/plain.py), which answers it in
callbacks, no Task and no coroutine per request; the requests framed in one turn of the loop
start together at its end (`Edge.start_framed`), and keep-alive answers are written together at
the end of a turn (`Edge.outbox`). What the plain path cannot decide without awaiting (the
fleet's rate limits on Redis) runs `ApiRelay.handle` in a Task, as every request does when the
plain path is off (`EdgeSite(fast_path=False)`).

Flow control (uvicorn's FlowControl is the model): one request in flight per connection; the next
pipelined request is not started while the transport's write buffer is above its high-water mark
(pause_writing .. resume_writing), and reading pauses while writing is paused or while more than
PAUSE_ABOVE unparsed bytes wait behind a request in flight. A connection therefore holds at most:
one request (head <= 64 KiB + body <= the endpoint's limit), PAUSE_ABOVE + one read of unparsed
bytes behind it, and one answer + the transport's high-water mark (64 KiB) of unsent bytes; and it
starts at most one upstream exchange at a time, whatever the client does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from mypy_extensions import mypyc_attr
from prometheus_client import Counter

from ...decide.headers import CorsPolicy
from ...ops.accesslog import AccessRecorder, RequestFacts
from ...relay import answers
from ...relay.answers import Answer
from ...relay.handler import ApiRelay
from ...relay.plain import PlainPath
from ...upstream.outbox import Outbox
from .head import LINE_TOO_LONG, Head, HeadReader, Refusal, scan, too_long_line_answer
from .wire import LeanRequest, answer_bytes

log = logging.getLogger("mixpanel_proxy.edge")

PAUSE_ABOVE = 256 * 1024   # unparsed bytes behind a request in flight before reading pauses
LINGER_SECONDS = 2.0       # after a refusal: how long the client's further bytes are read away
LINGER_BYTES = 1024 * 1024  # ... and how many at most


@dataclass(eq=False)
class Edge:
    """What every connection of one listening site shares."""

    relay: ApiRelay
    recorder: AccessRecorder
    limits: Mapping[str, int]                          # body limit per endpoint
    aiohttp_protocol: Callable[[], asyncio.Protocol]   # aiohttp's web.Server
    handovers: Mapping[str, Counter]                    # by reason
    reject: Callable[[str], None]                       # the rejections metric, by reason
    cors: CorsPolicy                                    # for refusals a browser must read
    connections: set[EdgeConnection] = field(default_factory=set)
    # Strong references to the requests in flight (the loop keeps only weak ones), so a stop
    # can cancel the stragglers.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    draining: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)   # set when nothing is in flight
    busy: int = 0
    # The plain path (relay/plain.py): requests answered in callbacks, no Task each. None: off,
    # every framed request runs `ApiRelay.handle` in a Task (the general path).
    plain: PlainPath | None = None
    # Keep-alive answers written at the end of the loop's turn (upstream/outbox.py); None: at
    # once. Every direct write to a client flushes it first, so a connection's bytes keep their
    # order.
    outbox: Outbox | None = None
    # Requests framed in this turn of the loop, started together at its end (`start_framed`).
    framed: list[tuple[EdgeConnection, LeanRequest, Head]] = field(default_factory=list)

    def flush(self) -> None:
        if self.outbox is not None:
            self.outbox.flush()

    def start_framed(self) -> None:
        """Start the requests framed in the last turn of the loop, in one go. Measured: started
        one by one as each is framed, each upstream write wakes the upstream for one request;
        started together, the writes go out in a burst that the upstream answers in a burst,
        and the relay's CPU per request is lower (the general path batched the same way, one
        Task step per request on the next turn)."""
        framed, self.framed = self.framed, []
        for connection, request, head in framed:
            connection.start_plain(request, head)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A request's Task, kept (a stop cancels the stragglers)."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


# Compiled (proxy/compiled.py), and still a base: the edge fuzzer's probe derives from it.
# An asyncio protocol by its methods, not by deriving from asyncio.Protocol: compiled, a class
# derived from a Python class keeps its attributes in a dict, and these are read and written
# many times a request. `as_protocol` gives it to asyncio.
@mypyc_attr(allow_interpreted_subclasses=True)
class EdgeConnection:
    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        # Looked up once: asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._buffer = bytearray()
        self._scanned = 0                  # bytes of the next head already scanned
        self._heads = HeadReader()
        self._head: Head | None = None
        self._busy = False
        self._read_paused = False
        self._write_paused = False
        self._lingering: asyncio.TimerHandle | None = None     # after a refusal
        self._lingered = 0
        self._refused: asyncio.Transport | None = None
        # The request the plain path is answering (one at a time): what `replied` needs.
        self._request: LeanRequest | None = None
        self._keep_alive = False
        self._http10 = False
        self._facts = RequestFacts()
        self._started = 0.0
        self.idle_since = time.monotonic()

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def buffered(self) -> int:
        """Bytes this connection holds: unparsed input, and answers the client has not taken."""
        transport = self._transport
        unsent = transport.get_write_buffer_size() if transport is not None else 0
        return len(self._buffer) + unsent

    def as_protocol(self) -> asyncio.Protocol:
        return cast(asyncio.Protocol, self)

    # asyncio.Protocol
    def eof_received(self) -> bool | None:
        return None                     # the transport closes; connection_lost follows

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) else None
        self._edge.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._linger(len(data))
            return
        self._buffer += data
        if self._busy or self._write_paused:
            if len(self._buffer) > PAUSE_ABOVE:
                self._pause_reading()
            return
        if self._head is not None:
            self.idle_since = time.monotonic()        # a body arriving is progress
        self._advance()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._edge.connections.discard(self)
        if self._lingering is not None:
            self._lingering.cancel()

    def pause_writing(self) -> None:
        """The client is not reading our answers: start no request, read nothing more."""
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy:
            self._resume_reading()
            self._advance()

    def close(self) -> None:
        if self._transport is not None:
            self._edge.flush()             # an answer still in the outbox goes first
            self._transport.close()

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()

    # framing
    def _advance(self) -> None:
        while self._transport is not None and not self._busy and not self._write_paused:
            if self._head is None:
                if not self._buffer:
                    return
                self._head = self._next_head()
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

    def _next_head(self) -> Head | None:
        """The next request's head if it is complete and plain; refuses it or hands it over if
        it is not."""
        buffer = self._buffer
        end = scan(buffer, self._scanned)
        if end is None:
            self._scanned = len(buffer)
            return None
        self._scanned = 0
        if isinstance(end, Refusal):
            self._refuse(too_long_line_answer(buffer, self._edge.relay.match)
                         if end is LINE_TOO_LONG else end)
            return None
        head = self._heads.read(bytes(buffer[:end]), self._edge.relay.match, self._edge.limits)
        if isinstance(head, Head):
            return head
        if isinstance(head, Refusal):
            self._refuse(head)
        else:
            self._hand_over(head)
        return None

    def _refuse(self, refusal: Refusal) -> None:
        """Answer in JSON (never the client's bytes), and close once the client has it."""
        transport = self._transport
        if transport is None:
            return
        self._edge.reject(refusal.reason)
        origin = refusal.origin
        cors = self._edge.cors
        answer = answers.problem(refusal.status, refusal.message,
                                 cors.headers(origin) if cors.allows(origin) else None)
        self._edge.flush()
        transport.write(answer_bytes(answer, False, False))
        self._buffer = bytearray()
        self._edge.connections.discard(self)
        # Closing a socket with unread bytes sends a reset, which can destroy the answer before
        # the client reads it: half-close, read the client's further bytes away for a bounded
        # time and amount, then close (nginx's lingering close).
        self._refused = transport
        self._lingering = self._loop.call_later(LINGER_SECONDS, transport.close)
        self._resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self._transport = None

    def _linger(self, size: int) -> None:
        self._lingered += size
        if self._lingered > LINGER_BYTES and self._refused is not None:
            self._refused.close()

    def _hand_over(self, reason: str) -> None:
        """aiohttp's protocol takes this connection, starting with the bytes of this request."""
        transport = self._transport
        if transport is None:
            return
        self._edge.handovers[reason].inc()
        self._edge.flush()                 # aiohttp writes directly from now on
        self._transport = None
        self._edge.connections.discard(self)
        protocol = self._edge.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        pending, self._buffer = bytes(self._buffer), bytearray()
        if pending:
            protocol.data_received(pending)
        if self._read_paused:
            transport.resume_reading()

    # answering
    def _dispatch(self, head: Head, body: bytes) -> None:
        self._busy = True
        edge = self._edge
        edge.busy += 1
        edge.idle.clear()
        request = LeanRequest(head.method, head.target, head.headers, self._remote, head.length,
                              body)
        if edge.plain is None:
            edge.spawn(self._respond(request, head))
            return
        self._request, self._keep_alive, self._http10 = request, head.keep_alive, head.http10
        self._facts, self._started = RequestFacts(), time.perf_counter()
        if not edge.framed:
            self._loop.call_soon(edge.start_framed)
        edge.framed.append((self, request, head))

    def start_plain(self, request: LeanRequest, head: Head) -> None:
        plain = self._edge.plain
        if self._request is not request or plain is None:
            return                         # abandoned by a stop in the meantime
        if not plain.start(request, head.match, self._facts, self):
            self._request = None
            self._edge.spawn(self._respond(request, head))

    def replied(self, answer: Answer | None) -> None:
        """The plain path's answer to the request in flight (None: close without one)."""
        request, self._request = self._request, None
        if request is None:
            return                         # abandoned by a stop (`abandon`)
        if answer is None:
            self._finish(b"", False)
            return
        keep_alive = self._keep_alive and not self._edge.draining
        try:
            data = answer_bytes(answer, keep_alive, self._http10)
            self._edge.recorder.record(request, self._facts, answer.status,
                                       answer.content_length, self._started)
        except Exception:
            log.exception("answering %s /%s failed", request.method, self._facts.endpoint)
            data, keep_alive = b"", False
        self._finish(data, keep_alive)

    async def _respond(self, request: LeanRequest, head: Head) -> None:
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

    def abandon(self) -> None:
        """A stop past its timeout: the plain path's request in flight gets no answer (its
        exchange ends by its own deadline), and the connection closes."""
        if self._request is not None:
            self._request = None
            self._finish(b"", False)

    def _finish(self, data: bytes, keep_alive: bool) -> None:
        self._busy = False
        self._edge.busy -= 1
        if self._edge.busy == 0:
            self._edge.idle.set()
        self.idle_since = time.monotonic()
        transport = self._transport
        if transport is None:
            return                         # the client left; the upstream had its request
        outbox = self._edge.outbox
        if keep_alive and outbox is not None:
            outbox.write(transport, data)  # pause_writing, if it comes, comes then
        else:
            self._edge.flush()
            if data:
                transport.write(data)      # may call pause_writing at once
            if not keep_alive:
                transport.close()
                return
        if self._write_paused:
            return                         # resume_writing takes it from here
        self._resume_reading()
        if self._buffer:
            self._advance()
