"""The answers the relay makes itself: SDK-shaped successes and JSON errors naming the problem.

Every error is JSON, because mixpanel-browser's recorder drops a `/record` batch whose answer it
cannot parse, and every error carries the status the SDKs act on correctly: 413 halves a batch,
429/503 retry it, other 4xx drop it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from ..codec import CodecError, DecodeLimits, decode_payload, form_field, inflate
from ..decide.routing import RoutedRequest

SERVER = "mixpanel-proxy"     # the Server header, whoever answers (the edge or aiohttp)
SUCCESS_VERBOSE = b'{"status":1,"error":null}'
SUCCESS_PLAIN = b"1"
RECORD_SUCCESS = b'{"code":200,"status":"OK"}'


@dataclass(slots=True, init=False)   # the __init__ is ours: see RoutedRequest (routing.py)
class Answer:
    """A relay answer before any server writes it: the lean edge writes its bytes itself, and
    `as_response` makes it aiohttp's (building a `web.Response` costs more than the answer)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def __init__(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.status, self.headers, self.body = status, headers, body

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
    """Mixpanel's success for track/engage/groups and /record: `1`, or the verbose JSON."""
    if endpoint == "record":
        return RECORD_SUCCESS, "application/json"
    if verbose:
        return SUCCESS_VERBOSE, "application/json"
    return SUCCESS_PLAIN, "text/plain"


def success_for(request: RoutedRequest, records: int | None = None) -> tuple[bytes, str]:
    """The success Mixpanel itself would have answered to this request, for answers the relay
    vouches for (split batches, spooled requests, telemetry answered locally).

    /import with a JSON or NDJSON body gets `{"code":200,"num_records_imported":N,...}`: the
    only shape mixpanel-go decodes, and one mixpanel-java accepts under strict=1 and 0. Form
    bodies (Python, Ruby, Node, and every /track, /engage, /groups) get
    `{"status":1,"error":null}` when `verbose=1` is in the query or the form body (Python and
    Ruby put it in the body), else `1` (Node, Java and PHP want exactly `1`).
    """
    if request.endpoint == "record":
        return success_body("record", False)
    plain = _plain(request)
    if request.endpoint == "import" and _is_json_body(request.content_type, plain):
        count = _count(request, plain) if records is None else records
        body = json.dumps({"code": 200, "num_records_imported": count, "status": "OK"},
                          separators=(",", ":"))
        return body.encode(), "application/json"
    verbose = (form_field(request.query, b"verbose") == b"1"
               or (not _is_json_body(request.content_type, plain)
                   and form_field(plain, b"verbose") == b"1"))
    return success_body(request.endpoint, verbose)


def _plain(request: RoutedRequest) -> bytes:
    """The body with its Content-Encoding undone (Android may gzip a form carrying verbose=1)."""
    if not request.content_encoding or not request.body:
        return request.body
    try:
        return inflate(request.body, request.content_encoding, request.inflate_limit)
    except CodecError:
        return b""


def _is_json_body(content_type: str, plain: bytes) -> bool:
    return "json" in content_type.lower() or plain.lstrip()[:1] in (b"[", b"{")


def _count(request: RoutedRequest, plain: bytes) -> int:
    try:
        decoded = decode_payload(plain, request.query, request.content_type, "",
                                 DecodeLimits(request.inflate_limit, request.inflate_limit))
    except CodecError:
        return 0
    return len(decoded.records)
