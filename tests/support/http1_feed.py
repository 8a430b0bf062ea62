"""Socket-free driving of the upstream client's connection protocol (proxy/upstream/http1.py):
a tiny transport that records what the protocol writes and reports its close the way asyncio's
transports do, and `feed`, which runs one exchange on byte lists and returns its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.upstream.http1 import ExchangeError, RawAnswer, _Connection

REQUEST = b"GET /settings HTTP/1.1\r\nHost: upstream.test\r\n\r\n"


@dataclass
class FakeTransport:
    protocol: _Connection
    written: list[bytes] = field(default_factory=list)
    closed: bool = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write on a closed transport"
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True      # asyncio reports the loss on a later turn of the loop
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def peer_closes(self) -> None:
        """The server's FIN: the protocol's default eof_received lets the transport close."""
        self.close()


@dataclass
class Fed:
    """One exchange's outcome, and the connection and transport it ran on."""

    outcome: RawAnswer | ExchangeError | None     # None: still waiting for more bytes
    connection: _Connection
    transport: FakeTransport

    @property
    def answer(self) -> RawAnswer:
        assert isinstance(self.outcome, RawAnswer), self.outcome
        return self.outcome

    @property
    def error(self) -> ExchangeError:
        assert isinstance(self.outcome, ExchangeError), self.outcome
        return self.outcome


def connect() -> tuple[_Connection, FakeTransport]:
    """A connection 'made' on a fake transport (needs a running loop)."""
    connection = _Connection()
    transport = FakeTransport(connection)
    connection.connection_made(transport)      # type: ignore[arg-type]
    return connection, transport


async def feed(chunks: Iterable[bytes], *, eof: bool = True, reused: bool = False,
               on: tuple[_Connection, FakeTransport] | None = None,
               timeout: float = 30.0) -> Fed:
    """Start one exchange, deliver `chunks` one data_received each, then (`eof`) the server's
    close; return the outcome once settled."""
    connection, transport = on or connect()
    connection.reused = reused
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(connection.exchange(REQUEST, loop.time() + timeout, "up.test"))
    await asyncio.sleep(0)                      # a loop turn: the exchange writes and waits
    for chunk in chunks:
        if transport.closed:
            break                               # a closed transport reads nothing more
        if chunk:                               # as a transport: never an empty read
            connection.data_received(chunk)
    if eof:
        transport.peer_closes()
    # Nothing to await: an exchange still waiting for more bytes is an outcome too.
    for _ in range(3):
        await asyncio.sleep(0)                  # a loop turn: connection_lost, then the task
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return Fed(None, connection, transport)
    error = task.exception()
    if error is not None:
        assert isinstance(error, ExchangeError), error
        return Fed(error, connection, transport)
    return Fed(task.result(), connection, transport)
