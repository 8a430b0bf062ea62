"""Pooled keep-alive connections to one origin: slots, idle connections, the one deadline of an
exchange, and the one case where a request goes twice (see `ConnectionPool.request`)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from collections.abc import Coroutine
from functools import partial
from typing import Any

from .http1 import Done, ExchangeError, Outcome, RawAnswer, _Connection
from .outbox import Outbox


class _Slots:
    """A semaphore whose uncontended acquire costs no coroutine machinery (asyncio.Semaphore's
    checks every waiter on each acquire): one slot per open upstream exchange."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[bool]] = deque()

    def take(self) -> bool:
        """A slot if one is free now (no waiting)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self, deadline: float) -> bool:
        """Wait for the slot `release` hands over: True, or False when `deadline` (the loop's
        clock) comes first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_at(deadline, self._expire, waiter)
        try:
            return await waiter           # release() hands its slot over directly
        except asyncio.CancelledError:
            if waiter.cancelled():
                if waiter in self._waiters:   # release() may have dropped it already
                    self._waiters.remove(waiter)
            elif waiter.result():
                self.release()            # handed a slot just as it was cancelled: pass it on
            raise
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._waiters.remove(waiter)
            waiter.set_result(False)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1


class ConnectionPool:
    """Idle keep-alive connections to one origin, at most `limit` open at once."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, limit: int,
                 connect_timeout: float, idle_timeout: float = 15.0) -> None:
        self._host, self._port, self._ssl = host, port, ssl_context
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: deque[_Connection] = deque()   # oldest left, most recently used right
        self._slots = _Slots(limit)
        self._loop = asyncio.get_running_loop()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()    # submitted exchanges that must wait
        self._outbox = Outbox(self._loop)

    async def request(self, raw: bytes, timeout: float, replayable: bool) -> RawAnswer:
        """Send `raw`, return its whole answer. `timeout` is the exchange's one budget: waiting
        for a slot, connecting (TLS included), writing and the answer all spend it."""
        # The common case (a free slot, an idle connection) awaits nothing but the answer: this
        # runs once per relayed request, and every coroutine level costs.
        deadline = self._loop.time() + timeout
        if not self._slots.take() and not await self._slots.wait(deadline):
            raise ExchangeError("timeout", f"{self._host} did not answer in time (every "
                                           "connection to it was busy)")
        try:
            connection = self._idle_connection() or await self._connect(deadline)
            try:
                answer = await self._exchange(connection, raw, deadline)
            except ExchangeError as error:
                if not (error.retryable and replayable):
                    raise
                # When a request goes twice: a kept-alive connection closed by the server just
                # as this request went out on it (its idle timeout racing our reuse), with not
                # one byte of an answer. The server most likely never read the request, but a
                # proxy cannot know, so RFC 9110 9.2.2 / 9112 9.3.1 allow this only where
                # sending twice is harmless, which the caller says with `replayable`:
                # - GET (/decide, /flags, /settings, probes, the CDN): safe methods;
                # - POST /track and /import: Mixpanel drops an event it already has by its
                #   $insert_id, which every Mixpanel SDK sets;
                # - not POST /engage, /groups (`$add` counts twice, `$append` appends twice)
                #   nor /record: those fail here, and the SDK's own retry after the 503 (or the
                #   spool) sends them again, the client's or the operator's choice, not ours.
                connection = await self._connect(deadline)
                answer = await self._exchange(connection, raw, deadline)
            self._release(connection)
            return answer
        finally:
            self._slots.release()

    def submit(self, raw: bytes, timeout: float, replayable: bool, done: Done) -> None:
        """`request` in callbacks: `done` is called once, later, with the whole answer or the
        ExchangeError. The common case (a free slot, an idle connection) makes no Task and no
        coroutine: the connection's protocol calls back when the answer is complete. Waiting for
        a slot, connecting and a replay are `request`'s coroutine work, in a Task."""
        deadline = self._loop.time() + timeout
        if self._slots.take():
            connection = self._idle_connection()
            if connection is not None:
                connection.begin(raw, deadline, self._host, partial(
                    self._settled, connection, raw, deadline, replayable, done))
                return
            self._slots.release()
        self._spawn(self._request_then(raw, timeout, replayable, done))

    def _settled(self, connection: _Connection, raw: bytes, deadline: float, replayable: bool,
                 done: Done, outcome: Outcome) -> None:
        """A submitted exchange's outcome, under `request`'s rules (its slot held till now)."""
        if isinstance(outcome, ExchangeError):
            connection.close()     # mid-exchange: its next bytes would belong to this answer
            if outcome.retryable and replayable:       # the one replay (see `request`)
                self._spawn(self._replay(raw, deadline, done))
                return
        else:
            self._release(connection)
        self._slots.release()
        done(outcome)

    async def _request_then(self, raw: bytes, timeout: float, replayable: bool,
                            done: Done) -> None:
        try:
            outcome: Outcome = await self.request(raw, timeout, replayable)
        except ExchangeError as error:
            outcome = error
        done(outcome)

    async def _replay(self, raw: bytes, deadline: float, done: Done) -> None:
        """The second and last attempt of a submitted exchange, on a fresh connection; it
        holds the first attempt's slot."""
        try:
            connection = await self._connect(deadline)
            outcome: Outcome = await self._exchange(connection, raw, deadline)
            self._release(connection)
        except ExchangeError as error:
            outcome = error
        finally:
            self._slots.release()
        done(outcome)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(work)
        self._tasks.add(task)        # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _exchange(self, connection: _Connection, raw: bytes,
                        deadline: float) -> RawAnswer:
        try:
            return await connection.exchange(raw, deadline, self._host)
        except (ExchangeError, asyncio.CancelledError):
            connection.close()   # mid-exchange: its next bytes would belong to this answer
            raise

    def _idle_connection(self) -> _Connection | None:
        now = self._loop.time()
        while self._idle:
            connection = self._idle.pop()            # most recently used: warmest, least stale
            if connection.reusable and now - connection.idle_since < self._idle_timeout:
                connection.reused = True
                return connection
            connection.close()
        return None

    async def _connect(self, deadline: float) -> _Connection:
        loop = self._loop
        limit = loop.time() + self._connect_timeout
        connection = _Connection(self._outbox)
        try:
            async with asyncio.timeout_at(min(deadline, limit)):
                await loop.create_connection(
                    connection.as_protocol, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None)
        except TimeoutError:
            if deadline <= limit:
                raise ExchangeError("timeout", f"{self._host} did not answer in time") from None
            raise ExchangeError("timeout", f"connecting to {self._host} timed out") from None
        except ssl.SSLError as exc:
            raise ExchangeError("connect", f"TLS with {self._host} failed ({exc.reason})") from exc
        except OSError as exc:
            raise ExchangeError("connect", f"cannot connect to {self._host} "
                                           f"({_os_reason(exc)})") from exc
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable:
            connection.idle_since = self._loop.time()
            self._idle.append(connection)
            if self._sweeper is None:
                self._sweeper = self._loop.call_later(self._idle_timeout, self._sweep)
        else:
            connection.close()

    def _sweep(self) -> None:
        """Close the connections idle past the idle timeout: LIFO reuse leaves the oldest at
        the left, where `_idle_connection` never looks. Then come back when the next expires."""
        self._sweeper = None
        idle, now = self._idle, self._loop.time()
        while idle and (now - idle[0].idle_since >= self._idle_timeout
                        or not idle[0].reusable):
            idle.popleft().close()
        if idle:
            self._sweeper = self._loop.call_later(
                idle[0].idle_since + self._idle_timeout - now, self._sweep)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            self._idle.pop().close()
        for task in list(self._tasks):
            task.cancel()


def _os_reason(exc: OSError) -> str:
    """Why a connection failed, without the resolved address and port that asyncio writes into
    its messages: a client-facing answer has no business telling them."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "name resolution failed"
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__
