"""The lean edge's request, and the bytes of its answers.

`LeanRequest` carries exactly what the relay and the access line read of a request
(`incoming.Incoming`); `answer_bytes` writes a relay answer as HTTP/1.1 the way
aiohttp would (Content-Length, Date, Server, Connection when it is not implied).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDictProxy

from ...relay.answers import SERVER, Answer

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_EMPTY_BODY = frozenset({204, 304})


class LeanRequest:
    """One request the edge parsed itself: its body is already whole."""

    __slots__ = ("method", "raw_path", "headers", "remote", "content_length", "_body")

    def __init__(self, method: str, raw_path: str, headers: CIMultiDictProxy[str],
                 remote: str | None, content_length: int | None, body: bytes) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.remote = remote
        self.content_length = content_length
        self._body = body

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def body(self) -> bytes:
        return self._body

    async def read(self) -> bytes:
        return self._body


def answer_bytes(answer: Answer, keep_alive: bool, http10: bool) -> bytes:
    """Status line, headers and body of one relay answer; `keep_alive` decides Connection.

    The head around the Date line is built once per shape of answer (status, headers, body
    length, connection) and kept: the same few answers (`1`, the verbose JSON, with or without
    one site's CORS headers) make nearly all of a relay's traffic."""
    body = b"" if answer.status in _EMPTY_BODY else answer.body
    key = (answer.status, *answer.headers.items(), len(body), keep_alive, http10)
    parts = _heads.get(key)
    if parts is None:
        if len(_heads) >= _HEADS_KEPT:       # header values may echo the client (Origin)
            _heads.clear()
        parts = _heads[key] = _head_parts(answer, len(body), keep_alive, http10)
    return b"".join((parts[0], _date_line(), parts[1], body))


_HEADS_KEPT = 256
_heads: dict[tuple[object, ...], tuple[bytes, bytes]] = {}


def _head_parts(answer: Answer, length: int, keep_alive: bool,
                http10: bool) -> tuple[bytes, bytes]:
    """The head before the Date line, and after it."""
    status = answer.status
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in answer.headers.items()]
    if status not in _EMPTY_BODY:
        if "Content-Type" not in answer.headers:
            lines.append("Content-Type: application/octet-stream")
        lines.append(f"Content-Length: {length}")
    after = [f"Server: {SERVER}"]
    if not keep_alive:
        after.append("Connection: close")
    elif http10:
        after.append("Connection: keep-alive")
    # Header values came from the client's bytes decoded with surrogateescape: this undoes it.
    return (("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape"),
            ("\r\n".join(after) + "\r\n\r\n").encode())


_date: list[int | bytes] = [-1, b""]      # the last whole second, and its Date line


def _date_line() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
    line = _date[1]
    assert isinstance(line, bytes)
    return line
