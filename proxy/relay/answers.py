"""The answers the relay makes itself: SDK-shaped successes and JSON errors naming the problem.

Every error is JSON, because mixpanel-browser's recorder drops a `/record` batch whose answer it
cannot parse, and every error carries the status the SDKs act on correctly: 413 halves a batch,
429/503 retry it, other 4xx drop it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

SERVER = "mixpanel-proxy"     # the Server header, whoever answers (the edge or aiohttp)
SUCCESS_VERBOSE = b'{"status":1,"error":null}'
SUCCESS_PLAIN = b"1"
RECORD_SUCCESS = b'{"code":200,"status":"OK"}'


@dataclass(slots=True)
class Answer:
    """A relay answer before any server writes it: the lean edge writes its bytes itself, and
    `as_response` makes it aiohttp's (building a `web.Response` costs more than the answer)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_length(self) -> int:
        return len(self.body)

    def as_response(self) -> web.Response:
        # The Server header the edge sends too (aiohttp's own names its versions).
        return web.Response(status=self.status, body=self.body or None,
                            headers={"Server": SERVER, **self.headers})


def problem(status: int, message: str, headers: dict[str, str] | None = None,
            **extra: object) -> Answer:
    """A JSON error naming the problem."""
    body = json.dumps({"status": 0, "error": message, **extra}, separators=(",", ":"))
    return Answer(status, {**(headers or {}), "Content-Type": "application/json"}, body.encode())


def error(status: int, message: str, headers: dict[str, str] | None = None,
          **extra: object) -> web.Response:
    """`problem`, as aiohttp's response."""
    return problem(status, message, headers, **extra).as_response()


def success_body(endpoint: str, verbose: bool) -> tuple[bytes, str]:
    """What the SDK expects when the relay itself vouches for acceptance (split batches, spool)."""
    if endpoint == "record":
        return RECORD_SUCCESS, "application/json"
    if endpoint == "import" or verbose:
        # The Python SDK requires {"status": 1} from every endpoint, /import included.
        return SUCCESS_VERBOSE, "application/json"
    return SUCCESS_PLAIN, "text/plain"
