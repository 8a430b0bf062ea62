"""Misbehaving upstreams for the fault matrix, and the ledger that proves nothing was lost.

`RawUpstream` is a real asyncio server on loopback that reads each HTTP/1.1 request completely
(and records it, as `Received`), then does what its `mode` says: answer like Mixpanel, never
answer, answer too late, or reset the connection halfway through the answer body. It can go down
(connection refused) and come back on the same port.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from tests.support.fakes import Received
from tests.support.helpers import as_base64, event
from tests.support.ports import free_port
from tests.support.rawhttp import read_message

Mode = Literal["ok", "hang", "slow", "reset_mid_body"]
OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n1"
# Promises 100 bytes, sends 10, then a TCP reset.
PARTIAL_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100"
                  b"\r\n\r\n{\"status\":")


@dataclass
class RawUpstream:
    mode: Mode = "ok"
    slow_seconds: float = 1.5
    received: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)   # those answered 200 in full
    connections: int = 0
    port: int = 0
    tls: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None
    _hung: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every connection: later connects are refused."""
        if self._server is not None:
            self._server.close()
            for writer in self._hung:
                writer.transport.abort()
            self._hung.clear()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                received = await _read_request(reader)
                if received is None:
                    break
                self.received.append(received)
                if not await self._answer(writer):
                    break
                self.accepted.append(received)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter) -> bool:
        """Answer per `mode`; False when the connection must not be used again."""
        if self.mode == "hang":
            self._hung.append(writer)
            await asyncio.Event().wait()        # until stop() aborts the connection
        if self.mode == "slow":
            await asyncio.sleep(self.slow_seconds)   # paces the answer: a slow upstream
        if self.mode == "reset_mid_body":
            writer.write(PARTIAL_ANSWER)
            await writer.drain()
            writer.transport.abort()            # RST, not FIN: a crashed upstream
            return False
        writer.write(OK_ANSWER)
        await writer.drain()
        return True


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head, body = await read_message(reader)
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    path, _, query = target.partition("?")
    return Received(method=method, path=path, query=query, headers=headers, body=body)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    return free_port()


def numbered_events(token: str, count: int, prefix: str) -> list[tuple[str, bytes]]:
    """`count` single-event /track bodies, each with its own $insert_id, of a minute ago."""
    bodies = []
    for n in range(count):
        insert_id = f"{prefix}-{n:05d}"
        payload = [event(token, "fault", **{"$insert_id": insert_id, "time": time.time() - 60})]
        bodies.append((insert_id, f"data={quote(as_base64(payload), safe='')}".encode()))
    return bodies


def insert_ids(received: Iterable[Received]) -> set[str]:
    """The $insert_id of every record that reached an upstream."""
    return {str(record["properties"]["$insert_id"])
            for item in received if item.path.startswith("/track")
            for record in item.records()}


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any                      # parsed JSON, or the text when it is not JSON
    retry_after: str | None


@dataclass
class Ledger:
    """What the client was told per $insert_id, checked against what the upstream received."""

    answers: dict[str, Answer] = field(default_factory=dict)

    def record(self, insert_id: str, status: int, body: bytes,
               retry_after: str | None = None) -> None:
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body.decode(errors="replace")
        self.answers[insert_id] = Answer(status, parsed, retry_after)

    @property
    def accepted(self) -> set[str]:
        return {key for key, answer in self.answers.items() if answer.status == 200}

    def lost(self, received: Iterable[Received]) -> set[str]:
        """Answered 200 but never reached the upstream: must always be empty."""
        return self.accepted - insert_ids(received)

    def statuses(self) -> set[int]:
        return {answer.status for answer in self.answers.values()}

    def bodies(self) -> list[Any]:
        return [answer.body for answer in self.answers.values()]
