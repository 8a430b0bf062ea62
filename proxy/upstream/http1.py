"""A lean HTTP/1.1 keep-alive client for the relay's upstream calls.

Why not aiohttp's ClientSession: profiling the /track path showed the generic client (timeouts,
tracing, cookie and redirect machinery, URL rebuilding) costing most of each relayed request. The
relay needs far less: write one pre-built request on a pooled connection and parse one response.
Parsing is httptools' (llhttp, the parser Node.js uses); this module frames the exchange and pools
connections, held to h11's and httpcore's rules (tests/test_http1_protocol.py, and the
differential fuzzer against h11 in tests/test_fuzz_upstream.py):

- an answer counts only when complete: a whole head, then a body complete by Content-Length, by
  the chunked terminator, or (no Content-Length, no Transfer-Encoding) by the connection's end;
- interim answers (1xx) are skipped for the final one (RFC 9110 15.2); a 101 was never asked for;
- a byte that arrives when no exchange is waiting for it retires the connection;
- one deadline per exchange covers the wait for a slot, connect, TLS, write and the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from .outbox import Outbox

MAX_RESPONSE_BYTES = 32 * 1024 * 1024   # a bundle map is ~1.4 MB; anything near this is hostile
_CLOCK_SLACK = 0.001                     # seconds: uvloop's timers have millisecond resolution


class ExchangeError(Exception):
    """The exchange failed; `kind` is connect | timeout | protocol, `retryable` means no byte of
    an answer arrived on a reused connection, so the request may be sent again on a fresh one."""

    def __init__(self, kind: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


@dataclass(slots=True, init=False)   # the __init__ is ours: see RoutedRequest (routing.py)
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


Outcome = RawAnswer | ExchangeError
Done = Callable[[Outcome], None]


class _StopParsing(Exception):
    """Raised inside an llhttp callback to stop the parse: the exchange already has its outcome
    (or none is waiting), and the connection is closed."""


class _Connection:
    """One upstream connection: a transport, an llhttp parser, at most one exchange at a time.

    An asyncio protocol by its methods, not by deriving from asyncio.Protocol: compiled
    (proxy/compiled.py), a class that derives from a Python class keeps its attributes in a
    dict, and this one's are read and written on every exchange. `as_protocol` gives it to
    asyncio."""

    def __init__(self, outbox: Outbox | None = None) -> None:
        """`outbox`: requests are written at the end of the loop's turn (outbox.py); None:
        at once."""
        self._outbox = outbox
        self.transport: asyncio.Transport | None = None
        # Looked up once: asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self.idle_since = 0.0
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        # The exchange waiting for an answer: called once with its outcome. None when no
        # exchange waits (any byte then retires the connection).
        self._done: Done | None = None
        # One deadline timer per connection, not one per exchange (`_arm`).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0        # when `_timer` fires, on the loop's clock
        self._deadline = 0.0        # the exchange in flight's deadline
        self._host = ""             # ... and its upstream, for the timeout's message
        self._parsing = False
        self._ready: tuple[Done, Outcome] | None = None   # settled in a parse, handed over after
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._received = False
        self._head_done = False     # the current message's head is complete
        self._chunked = False       # it said Transfer-Encoding: chunked
        self._keep_alive = False

    def as_protocol(self) -> asyncio.Protocol:
        return cast(asyncio.Protocol, self)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def eof_received(self) -> bool | None:
        return None                     # the transport closes; connection_lost follows

    def pause_writing(self) -> None:
        """A request is written whole; the next waits for this one's answer anyway."""

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self._done is None:
            # Nobody asked: a stray answer, or the rest of one given up on. Whatever it is, the
            # next exchange's answer would be read after it, so the connection is done for.
            self.close()
            return
        if not self._received:
            self._received = True
            if data[0] in b"\r\n":     # llhttp skips empty lines before a status line; h11
                self._fail(ExchangeError("protocol", "malformed response (empty line before "
                                                     "the status line)"))
                self.close()
                return
        self._parsing = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ExchangeError("protocol", "the upstream switched protocols (101), which "
                                                 "the relay never asks for"))
            self.close()
        except httptools.HttpParserError as exc:
            if not isinstance(exc.__context__, _StopParsing):
                self._fail(ExchangeError("protocol", f"malformed response ({exc})"))
            self.close()
        finally:
            self._parsing = False
        ready = self._ready
        if ready is not None:
            # Handed over only now, outside llhttp's callbacks: the exchange's owner may start
            # the next exchange on this connection at once, and its errors are not the parser's.
            self._ready = None
            ready[0](ready[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._disarm()
        if self._done is not None:
            if self._head_done and not self._framed():
                self._finish()                  # a body delimited by the connection's end
                return
            self._fail(ExchangeError("protocol", "the connection closed before a complete answer",
                                     retryable=self.reused and not self._received))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._done is None:          # bytes after the answer, in the same read
            raise _StopParsing
        # Fresh lists per message: an interim answer's fields are not the final answer's.
        self._headers, self._body, self._size, self._chunked = [], [], 0, False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:         # after the head: a chunked body's trailer, never merged
            return
        value = value.rstrip(b" \t")   # llhttp keeps trailing whitespace (RFC 9110 5.5: not
        if len(name) == 17 and name.lower() == b"transfer-encoding":     # part of the value)
            self._check_coding(value)
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _check_coding(self, value: bytes) -> None:
        """Only `chunked`, once (as h11): llhttp would undo the chunking of `gzip, chunked` and
        hand over a body still gzipped, as if it were the answer."""
        if self._chunked or value.lower() != b"chunked":
            self._fail(ExchangeError("protocol", "the response uses a transfer coding other "
                                                 "than chunked"))
            raise _StopParsing
        self._chunked = True

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(ExchangeError("protocol", "the response body is too large"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._head_done = False
        if self._parser.get_status_code() < 200:
            # Interim (RFC 9110 15.2): the final answer follows; a 101 raises after this.
            if self._body:          # a 1xx has no content: a framing nobody agrees on
                self._fail(ExchangeError("protocol", "an interim (1xx) answer carried a body"))
                raise _StopParsing
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # the exchange
    def begin(self, request: bytes, deadline: float, host: str, done: Done) -> None:
        """Write `request`; `done` is called once, later (never from inside this call), with its
        whole answer or the ExchangeError, by `deadline` (the loop's clock) at the latest."""
        assert self.transport is not None and self._done is None
        self._done = done
        self._received = False
        self._deadline, self._host = deadline, host
        self._arm(deadline)
        if self._outbox is not None:
            self._outbox.write(self.transport, request)
        else:
            self.transport.write(request)

    async def exchange(self, request: bytes, deadline: float, host: str) -> RawAnswer:
        """`begin`, awaited: the answer, or the ExchangeError raised."""
        waiter: asyncio.Future[RawAnswer] = self._loop.create_future()
        self.begin(request, deadline, host, lambda outcome: _settle(waiter, outcome))
        try:
            return await waiter
        finally:
            self._abandon()        # cancelled: no outcome is handed over later

    def _arm(self, deadline: float) -> None:
        """Make the connection's timer fire by `deadline`. Arming and cancelling a timer for
        every exchange cost about a microsecond of each relayed request; instead the timer stays
        armed between exchanges and is moved only when it would fire too late. Exchanges on a
        keep-alive connection come with later and later deadlines, so the timer armed for an
        earlier one fires first, finds the exchange in flight not yet due, and re-arms for it."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return
            timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._done is None:
            return                      # no exchange in flight: the next one arms again
        # Due within the loop's clock resolution: loops may fire a timer that much early.
        if self._loop.time() + _CLOCK_SLACK < self._deadline:
            self._arm(self._deadline)   # an exchange begun after the timer was armed
            return
        self._fail(ExchangeError("timeout", f"{self._host} did not answer in time"))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _abandon(self) -> None:
        """No outcome is handed over any more (the timer stays armed: see `_arm`)."""
        self._done = None

    @property
    def reusable(self) -> bool:
        return self._keep_alive and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self._disarm()
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _framed(self) -> bool:
        """Whether the head promised a length (Content-Length, or a Transfer-Encoding): then
        the connection's end cannot be the body's end."""
        return any(name.lower() in ("content-length", "transfer-encoding")
                   for name, _ in self._headers)

    def _finish(self) -> None:
        if self._done is not None:
            self._settle(RawAnswer(self._parser.get_status_code(), self._headers,
                                   b"".join(self._body)))

    def _fail(self, error: ExchangeError) -> None:
        if self._done is not None:
            self._settle(error)

    def _settle(self, outcome: Outcome) -> None:
        """The exchange's outcome. From now on no exchange waits (so any further byte retires
        the connection); settled inside a parse, it is handed over once the parse returns."""
        done = self._done
        self._abandon()
        if done is None:
            return
        if self._parsing:
            self._ready = (done, outcome)
        else:
            done(outcome)


def _settle(waiter: asyncio.Future[RawAnswer], outcome: Outcome) -> None:
    if waiter.done():
        return
    if isinstance(outcome, ExchangeError):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)
