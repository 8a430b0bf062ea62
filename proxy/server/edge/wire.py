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
from mypy_extensions import mypyc_attr

from ...relay.answers import SERVER, Answer

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_EMPTY_BODY = frozenset({204, 304})


# A Python class under mypyc too: the interpreted relay reads its fields (proxy/compiled.py)
@mypyc_attr(native_class=False)
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

    async def read(self) -> bytes:
        return self._body


def answer_bytes(answer: Answer, keep_alive: bool, http10: bool) -> bytes:
    """Status line, headers and body of one relay answer; `keep_alive` decides Connection."""
    body = answer.body
    status = answer.status
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in answer.headers.items()]
    headers = answer.headers
    if status in _EMPTY_BODY:
        body = b""
    else:
        if "Content-Type" not in headers:
            lines.append("Content-Type: application/octet-stream")
        lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Date: {_http_date()}")
    lines.append(f"Server: {SERVER}")
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    # Header values came from the client's bytes decoded with surrogateescape: this undoes it.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


_date: list[int | str] = [-1, ""]      # the last whole second formatted, and its text


def _http_date() -> str:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True)
    return str(_date[1])
