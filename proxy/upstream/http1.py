"""A lean HTTP/1.1 keep-alive client for the relay's upstream calls.

Why not aiohttp's ClientSession: profiling the /track path showed the generic client (timeouts,
tracing, cookie and redirect machinery, URL rebuilding) costing most of each relayed request. The
relay needs far less: write one pre-built request on a pooled connection and parse one response.
Parsing is httptools' (llhttp, the parser Node.js uses); this module only pools connections.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

MAX_RESPONSE_BYTES = 32 * 1024 * 1024   # a bundle map is ~1.4 MB; anything near this is hostile


class ExchangeError(Exception):
    """The exchange failed; `kind` is connect | timeout | protocol, `retryable` means no byte of
    an answer arrived on a reused connection, so the request may be sent again on a fresh one."""

    def __init__(self, kind: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


@dataclass(slots=True)
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One upstream connection: a transport, an llhttp parser, at most one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # Looked up once: asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self.idle_since = 0.0
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[RawAnswer] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._received = False
        self._keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ExchangeError("protocol", f"malformed response ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._waiter is not None and not self._waiter.done():
            if self._received and self._parser.get_status_code() and not self._expects_length():
                self._finish()                  # a body delimited by the connection's end
                return
            self._fail(ExchangeError("protocol", "the connection closed before an answer",
                                     retryable=self.reused and not self._received))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(ExchangeError("protocol", "the response body is too large"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # the exchange
    async def exchange(self, request: bytes, read_timeout: float, host: str) -> RawAnswer:
        assert self.transport is not None
        loop = self._loop
        waiter: asyncio.Future[RawAnswer] = loop.create_future()
        self._waiter = waiter
        self._headers, self._body, self._size, self._received = [], [], 0, False
        # A bare timer rather than asyncio.timeout(): this runs once per relayed request.
        timer = loop.call_later(read_timeout, self._time_out, host)
        try:
            self.transport.write(request)
            return await waiter
        finally:
            timer.cancel()

    @property
    def reusable(self) -> bool:
        return self._keep_alive and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _expects_length(self) -> bool:
        return any(name.lower() in ("content-length", "transfer-encoding")
                   for name, _ in self._headers)

    def _finish(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(RawAnswer(self._parser.get_status_code(), self._headers,
                                              b"".join(self._body)))

    def _time_out(self, host: str) -> None:
        self._fail(ExchangeError("timeout", f"{host} did not answer in time"))

    def _fail(self, error: ExchangeError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


class _Slots:
    """A semaphore whose uncontended acquire costs no coroutine machinery (asyncio.Semaphore's
    checks every waiter on each acquire): one slot per open upstream exchange."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """A slot if one is free now (no waiting)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait for the slot `release` hands over."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter                  # release() hands its slot over directly
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()            # handed a slot just as it was cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class ConnectionPool:
    """Idle keep-alive connections to one origin, at most `limit` open at once."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, limit: int,
                 connect_timeout: float, idle_timeout: float = 15.0) -> None:
        self._host, self._port, self._ssl = host, port, ssl_context
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: deque[_Connection] = deque()
        self._slots = _Slots(limit)

    async def request(self, raw: bytes, read_timeout: float) -> RawAnswer:
        # The common case (a free slot, an idle connection) awaits nothing but the answer: this
        # runs once per relayed request, and every coroutine level costs.
        if not self._slots.take():
            await self._slots.wait()
        try:
            connection = self._idle_connection() or await self._connect()
            try:
                answer = await self._exchange(connection, raw, read_timeout)
            except ExchangeError as error:
                if not error.retryable:
                    raise
                # A kept-alive connection the server had already closed: nothing was answered,
                # so the same bytes go once more on a fresh connection.
                connection = await self._connect()
                answer = await self._exchange(connection, raw, read_timeout)
            self._release(connection)
            return answer
        finally:
            self._slots.release()

    async def _exchange(self, connection: _Connection, raw: bytes,
                        read_timeout: float) -> RawAnswer:
        try:
            return await connection.exchange(raw, read_timeout, self._host)
        except (ExchangeError, asyncio.CancelledError):
            connection.close()   # mid-exchange: its next bytes would belong to this answer
            raise

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()            # most recently used: warmest, least stale
            if connection.reusable and now - connection.idle_since < self._idle_timeout:
                connection.reused = True
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None)
        except TimeoutError:
            raise ExchangeError("timeout", f"connecting to {self._host} timed out") from None
        except ssl.SSLError as exc:
            raise ExchangeError("connect", f"TLS with {self._host} failed ({exc.reason})") from exc
        except OSError as exc:
            raise ExchangeError("connect", f"cannot connect to {self._host} "
                                           f"({_os_reason(exc)})") from exc
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _os_reason(exc: OSError) -> str:
    """Why a connection failed, without the resolved address and port that asyncio writes into
    its messages: a client-facing answer has no business telling them."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "name resolution failed"
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__
